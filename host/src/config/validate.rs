//! Turning the TOML text into the validated model: every problem is collected (with the line,
//! column and dotted key it is at), none stops the others from being found, and nothing of a
//! config with problems is used.

use super::*;
use crate::capabilities::http::spin::MAX_SPIN_WAIT_US;

/// `[compile]`'s ceilings: an hour, and more memory than a compile of any plugin needs.
const MAX_COMPILE_SECONDS: u64 = 3600;
const MAX_COMPILE_MEMORY_MIB: u64 = 64 * 1024;

pub(super) struct Validator<'a> {
    pub(super) file: PathBuf,
    pub(super) base: PathBuf,
    pub(super) map: SourceMap<'a>,
    pub(super) errors: Vec<ConfigError>,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) aws: AwsFetch<'a>,
}

impl<'a> Validator<'a> {
    pub(super) fn error(&mut self, path: &[&str], message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            location: self.map.locate(path),
            key: path.join("."),
            message: message.into(),
        });
    }

    /// The config's text read into its raw model: a key no model has is an error here
    /// (every one, with its place), as is text that is not TOML of the model's shape (the
    /// first, and then `None`).
    pub(super) fn read_raw(&mut self, text: &str) -> Option<RawConfig> {
        let mut unknown = Vec::new();
        let raw: RawConfig = match toml::de::Deserializer::parse(text)
            .and_then(|de| serde_ignored::deserialize(de, |p| unknown.push(segments(&p))))
        {
            Ok(raw) => raw,
            Err(e) => {
                let location = e.span().map(|s| self.map.location_of(s.start));
                // The reader's error (a value of the wrong type) has a place but no key: the
                // key is the one whose value is there.
                let key = e
                    .span()
                    .and_then(|s| self.map.key_at(s.start))
                    .map(|path| path.join("."))
                    .unwrap_or_default();
                self.errors.push(ConfigError {
                    file: self.file.clone(),
                    location,
                    key,
                    message: e.message().trim().to_string(),
                });
                return None;
            }
        };
        for path in &unknown {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            self.error(&refs, "unknown key");
        }
        Some(raw)
    }

    pub(super) fn run(mut self, text: &str) -> Result<Config, ConfigErrors> {
        let Some(raw) = self.read_raw(text) else {
            return Err(ConfigErrors(self.errors));
        };

        let store_file = raw.store.path.as_deref().unwrap_or("warden.db");
        if store_file.trim().is_empty() {
            self.error(
                &["store", "path"],
                "is empty: name the store's file (by default `warden.db` beside this config)",
            );
        }
        let store_path = self.resolve(store_file);
        // Not beside the store by default: the cache must be a folder only this user can
        // change, and the store's folder need not be one.
        let cache_dir = match raw.cache.dir.as_deref() {
            Some(dir) if dir.trim().is_empty() => {
                // Resolved, it would be this config's own folder.
                self.error(
                    &["cache", "dir"],
                    "is empty: name the folder compiled plugins are kept in, or leave `dir` out for the user's cache folder",
                );
                None
            }
            Some(dir) => Some(self.resolve(dir)),
            None => crate::runtime::plugin::user_cache_dir(),
        };
        let secrets = self.secrets(&raw.secrets);
        let http = self.http(&raw.http);
        let compile = self.compile(&raw.compile);
        let store_url = self.store_url(&raw.store, &raw.secrets, &secrets);
        let integrations = self.integrations(&raw, &secrets);
        let environments = self.environments(&raw, &integrations);
        let serve = self.serve(&raw.serve);
        let groups = self.groups(&raw.groups);
        let channels = self.channels(&raw, &secrets);
        let flows = raw
            .flows
            .iter()
            .filter_map(|(name, flow)| {
                let mut built = self.flow(name, flow, &environments, &groups)?;
                built.notify = self.notify(name, &flow.notify, &raw.channels)?;
                Some((name.clone(), Arc::new(built)))
            })
            .collect();

        if self.errors.is_empty() {
            Ok(Config {
                source: self.file,
                store_path,
                store_url,
                cache_dir,
                http,
                compile,
                secrets,
                integrations,
                environments,
                flows,
                serve,
                groups,
                channels,
            })
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    pub(super) fn resolve(&self, relative: &str) -> PathBuf {
        self.base.join(relative)
    }

    fn compile(&mut self, raw: &RawCompile) -> CompileLimits {
        let mut limits = CompileLimits::default();
        match raw.timeout_seconds {
            None => {}
            Some(seconds) if (1..=MAX_COMPILE_SECONDS).contains(&seconds) => {
                limits.timeout = std::time::Duration::from_secs(seconds);
            }
            Some(seconds) => self.error(
                &["compile", "timeout_seconds"],
                format!("must be between 1 and {MAX_COMPILE_SECONDS}, not {seconds}"),
            ),
        }
        let (min, max) = (CompileLimits::MIN_MEMORY_MIB, MAX_COMPILE_MEMORY_MIB);
        match raw.memory_mib {
            None => {}
            Some(mib) if (min..=max).contains(&mib) => limits.memory_bytes = mib << 20,
            Some(mib) => self.error(
                &["compile", "memory_mib"],
                format!("must be between {min} and {max}, not {mib}"),
            ),
        }
        limits
    }

    fn http(&mut self, raw: &RawHttp) -> HttpSettings {
        let extra_roots = raw.ca_file.as_deref().and_then(|file| {
            RootCerts::read(self.resolve(file), "file")
                .map_err(|e| self.error(&["http", "ca_file"], e))
                .ok()
        });
        let spin_wait = match raw.spin_wait_us {
            None => HttpSettings::default().spin_wait,
            Some(us) if us <= MAX_SPIN_WAIT_US => std::time::Duration::from_micros(us),
            Some(us) => {
                self.error(
                    &["http", "spin_wait_us"],
                    format!("must be between 0 and {MAX_SPIN_WAIT_US}, not {us}"),
                );
                HttpSettings::default().spin_wait
            }
        };
        HttpSettings {
            extra_roots,
            spin_wait,
        }
    }

    pub(super) fn secrets(
        &mut self,
        raw: &BTreeMap<String, RawSecret>,
    ) -> BTreeMap<String, Arc<Secret>> {
        let mut out = BTreeMap::new();
        for (id, secret) in raw {
            let key = ["secrets", id.as_str()];
            let source = secret.source.as_str();
            if source != "aws-secrets-manager" {
                for (field, present) in [
                    ("region", secret.region.is_some()),
                    ("endpoint", secret.endpoint.is_some()),
                    ("cache_seconds", secret.cache_seconds.is_some()),
                ] {
                    if present {
                        self.error(
                            &[key[0], key[1], field],
                            format!("`{field}` is for `source = \"aws-secrets-manager\"`"),
                        );
                    }
                }
            }
            let loaded_at = std::time::Instant::now();
            let (source, path, value) = match source {
                "env" => {
                    let Some(name) = secret.name.clone() else {
                        self.error(
                            &key,
                            "`source = \"env\"` needs `name`, the variable to read",
                        );
                        continue;
                    };
                    if secret.path.is_some() {
                        self.error(
                            &[key[0], key[1], "path"],
                            "`path` is for `source = \"file\"`",
                        );
                    }
                    match (self.env)(&name) {
                        Some(v) if !v.is_empty() => {
                            (SecretSource::Env { name: name.clone() }, name, v)
                        }
                        Some(_) => {
                            self.error(
                                &[key[0], key[1], "name"],
                                format!("environment variable `{name}` is empty"),
                            );
                            continue;
                        }
                        None => {
                            self.error(
                                &[key[0], key[1], "name"],
                                format!("environment variable `{name}` is not set"),
                            );
                            continue;
                        }
                    }
                }
                "file" => {
                    let Some(written) = secret.path.clone() else {
                        self.error(&key, "`source = \"file\"` needs `path`, the file to read");
                        continue;
                    };
                    if secret.name.is_some() {
                        self.error(
                            &[key[0], key[1], "name"],
                            "`name` is for `source = \"env\"`",
                        );
                    }
                    let full = self.resolve(&written);
                    match read_small_file(&full) {
                        Ok(v) => {
                            let v = v.trim_end_matches(['\n', '\r']).to_string();
                            if v.is_empty() {
                                self.error(
                                    &[key[0], key[1], "path"],
                                    format!("secret file {} is empty", full.display()),
                                );
                                continue;
                            }
                            (SecretSource::File { path: full }, written, v)
                        }
                        Err(e) => {
                            self.error(
                                &[key[0], key[1], "path"],
                                format!("cannot read secret file {}: {e}", full.display()),
                            );
                            continue;
                        }
                    }
                }
                "aws-secrets-manager" => {
                    let Some(aws) = self.aws_secret(id, secret) else {
                        continue;
                    };
                    match (self.aws)(&aws) {
                        Ok(v) => {
                            let path = aws.secret_id.clone();
                            (SecretSource::AwsSecretsManager(aws), path, v)
                        }
                        Err(e) => {
                            self.error(&[key[0], key[1], "path"], format!("secret `{id}`: {e}"));
                            continue;
                        }
                    }
                }
                other => {
                    self.error(
                        &[key[0], key[1], "source"],
                        format!(
                            "unknown source `{other}`; expected `env`, `file` or `aws-secrets-manager`"
                        ),
                    );
                    continue;
                }
            };
            let value = match &secret.json_key {
                Some(json_key) => {
                    let what = match &source {
                        SecretSource::AwsSecretsManager(aws) => format!(
                            "secret `{id}`: AWS Secrets Manager secret `{}`",
                            aws.secret_id
                        ),
                        _ => format!("secret `{id}`"),
                    };
                    match json_key_value(&value, json_key, &what) {
                        Ok(v) => v,
                        Err(e) => {
                            self.error(&[key[0], key[1], "json_key"], e);
                            continue;
                        }
                    }
                }
                None => value,
            };
            out.insert(
                id.clone(),
                Arc::new(Secret {
                    id: id.clone(),
                    source,
                    path,
                    value: SecretValue::new(value),
                    loaded_at,
                }),
            );
        }
        out
    }

    /// The AWS side of a `source = "aws-secrets-manager"` secret, or None after reporting
    /// what is wrong with it.
    pub(super) fn aws_secret(&mut self, id: &str, secret: &RawSecret) -> Option<AwsSecret> {
        let key = ["secrets", id];
        let errors_before = self.errors.len();
        if secret.name.is_some() {
            self.error(
                &[key[0], key[1], "name"],
                "`name` is for `source = \"env\"`; AWS secrets are named by `path`",
            );
        }
        let secret_id = match secret.path.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => p.to_string(),
            _ => {
                self.error(
                    &key,
                    "`source = \"aws-secrets-manager\"` needs `path`, the secret's name or ARN",
                );
                String::new()
            }
        };
        if let Some(endpoint) = &secret.endpoint {
            match url::Url::parse(endpoint) {
                Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                _ => self.error(
                    &[key[0], key[1], "endpoint"],
                    format!("`{endpoint}` is not an http(s) URL"),
                ),
            }
        }
        if secret
            .region
            .as_deref()
            .is_some_and(|r| r.trim().is_empty())
        {
            self.error(&[key[0], key[1], "region"], "must not be empty");
        }
        if secret.json_key.as_deref().is_some_and(str::is_empty) {
            self.error(&[key[0], key[1], "json_key"], "must not be empty");
        }
        let cache_seconds = secret.cache_seconds.unwrap_or(DEFAULT_SECRET_CACHE_SECONDS);
        if cache_seconds > MAX_SECRET_CACHE_SECONDS {
            self.error(
                &[key[0], key[1], "cache_seconds"],
                format!("must be between 0 and {MAX_SECRET_CACHE_SECONDS}, not {cache_seconds}"),
            );
        }
        (self.errors.len() == errors_before).then(|| AwsSecret {
            secret_id,
            json_key: secret.json_key.clone(),
            region: secret.region.clone(),
            endpoint: secret.endpoint.clone(),
            cache_ttl: Duration::from_secs(cache_seconds),
        })
    }

    pub(super) fn integrations(
        &mut self,
        raw: &RawConfig,
        secrets: &BTreeMap<String, Arc<Secret>>,
    ) -> BTreeMap<String, Arc<Integration>> {
        let mut out = BTreeMap::new();
        for (name, integration) in &raw.integrations {
            if integration.kind.trim().is_empty() {
                self.error(&["integrations", name, "type"], "must not be empty");
            }
            if integration.external_id.trim().is_empty() {
                self.error(&["integrations", name, "external_id"], "must not be empty");
            }
            let mut attached = Vec::new();
            for id in &integration.secrets {
                match secrets.get(id) {
                    Some(s) => attached.push(s.clone()),
                    // A secret that failed to resolve already has its own error.
                    None if raw.secrets.contains_key(id) => {}
                    None => self.error(
                        &["integrations", name, "secrets"],
                        format!(
                            "integration `{name}` names secret `{id}`, which is not declared under [secrets]{}",
                            declared(raw.secrets.keys())
                        ),
                    ),
                }
            }
            let mut settings = BTreeMap::new();
            for (key, value) in &integration.settings {
                match scalar(value) {
                    Some(v) => {
                        settings.insert(key.clone(), v);
                    }
                    None => self.error(
                        &["integrations", name, "settings", key],
                        "must be a string, number or boolean",
                    ),
                }
            }
            out.insert(
                name.clone(),
                Arc::new(Integration {
                    name: name.clone(),
                    kind: integration.kind.clone(),
                    external_id: integration.external_id.clone(),
                    settings,
                    secrets: attached,
                }),
            );
        }
        out
    }

    pub(super) fn environments(
        &mut self,
        raw: &RawConfig,
        integrations: &BTreeMap<String, Arc<Integration>>,
    ) -> BTreeMap<String, Arc<Environment>> {
        let mut out = BTreeMap::new();
        for (name, env) in &raw.environments {
            let mut aliases = BTreeMap::new();
            for (alias, target) in &env.integrations {
                match integrations.get(target) {
                    Some(i) => {
                        aliases.insert(alias.clone(), i.clone());
                    }
                    None => self.error(
                        &["environments", name, "integrations", alias],
                        format!(
                            "environment `{name}` names integration `{target}`, which is not declared under [integrations]{}",
                            declared(raw.integrations.keys())
                        ),
                    ),
                }
            }
            out.insert(
                name.clone(),
                Arc::new(Environment {
                    name: name.clone(),
                    integrations: aliases,
                }),
            );
        }
        out
    }

    pub(super) fn flow(
        &mut self,
        name: &str,
        raw: &RawFlow,
        environments: &BTreeMap<String, Arc<Environment>>,
        groups: &BTreeMap<String, BTreeSet<String>>,
    ) -> Option<Flow> {
        let errors_before = self.errors.len();
        // A flow is addressed by name in URLs (`/v1/flows/NAME/requests`) and metrics labels.
        let addressable = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !addressable {
            self.error(
                &["flows", name],
                format!(
                    "flow name `{name}` may hold only ASCII letters, digits, `-` and `_` (it is part of the API's URLs)"
                ),
            );
        }
        let environment = environments.get(&raw.environment).cloned();
        if environment.is_none() {
            self.error(
                &["flows", name, "environment"],
                format!(
                    "flow `{name}` names environment `{}`, which is not declared under [environments]{}",
                    raw.environment,
                    declared(environments.keys())
                ),
            );
        }
        let plugin = self.resolve(&raw.plugin);
        if let Some(hint) = crate::cli::build::not_a_component(&plugin) {
            self.error(&["flows", name, "plugin"], hint);
        } else if !plugin.is_file() {
            let why = if plugin.exists() {
                "is not a regular file"
            } else {
                "does not exist"
            };
            self.error(
                &["flows", name, "plugin"],
                format!("plugin file {} {why}", plugin.display()),
            );
        }
        let mut rules = Vec::new();
        for entry in &raw.allowed_hosts {
            match HostRule::parse(entry) {
                Ok(rule) => rules.push(rule),
                Err(e) => self.error(&["flows", name, "allowed_hosts"], e),
            }
        }
        let mut vars = BTreeMap::new();
        for (key, value) in &raw.vars {
            match scalar(value) {
                Some(v) => {
                    vars.insert(key.clone(), v);
                }
                None => self.error(
                    &["flows", name, "vars", key],
                    "must be a string, number or boolean",
                ),
            }
        }
        let limits = self.limits(name, &raw.limits);
        let fields = self.fields(name, &raw.fields);
        let policy = self.approval_policy(
            name,
            raw.approvers.as_deref(),
            raw.approvals_required,
            groups,
        );
        if self.errors.len() > errors_before {
            return None;
        }
        let environment = environment?;
        let secrets = environment
            .integrations
            .values()
            .flat_map(|i| i.secrets.iter())
            .map(|s| (s.id.clone(), s.clone()))
            .collect();
        let services = environment
            .integrations
            .values()
            .map(|i| (i.kind.clone(), i.external_id.clone()))
            .collect();
        Some(Flow {
            name: name.to_string(),
            plugin,
            vars,
            limits,
            grants: Grants {
                environment,
                secrets,
                services,
                hosts: AllowList::new(rules),
                reveal_secrets: raw.reveal_secrets.unwrap_or(true),
                sealed_before: BTreeSet::new(),
            },
            allow_self_approval: raw.allow_self_approval.unwrap_or(false),
            policy,
            fields,
            notify: BTreeMap::new(),
        })
    }

    pub(super) fn limits(&mut self, flow: &str, raw: &RawLimits) -> Limits {
        let defaults = Limits::default();
        let mut bounded = |key: &str, value: Option<u64>, min: u64, max: u64| -> Option<u64> {
            let v = value?;
            if (min..=max).contains(&v) {
                Some(v)
            } else {
                self.error(
                    &["flows", flow, "limits", key],
                    format!("must be between {min} and {max}, not {v}"),
                );
                None
            }
        };
        Limits {
            memory_bytes: bounded("memory_mib", raw.memory_mib, 1, MAX_MEMORY_MIB)
                .map_or(defaults.memory_bytes, |m| m << 20),
            timeout: bounded("timeout_ms", raw.timeout_ms, 1, 600_000)
                .map_or(defaults.timeout, Duration::from_millis),
            http_timeout: bounded("http_timeout_ms", raw.http_timeout_ms, 1, 600_000)
                .map(Duration::from_millis),
            response_max_bytes: bounded("response_max_bytes", raw.response_max_bytes, 1, 1 << 30)
                .unwrap_or(defaults.response_max_bytes),
            log_max_bytes: bounded("log_max_bytes", raw.log_max_bytes, 1024, 16 << 20)
                .map_or(defaults.log_max_bytes, |b| b as usize),
            http_requests: bounded("http_requests", raw.http_requests, 1, 10_000)
                .map_or(defaults.http_requests, |n| n as u32),
        }
    }
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(super) fn declared<'k>(names: impl Iterator<Item = &'k String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        " (none are declared)".to_string()
    } else {
        format!(" (declared: {})", names.join(", "))
    }
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path;
    match path {
        Path::Root => Vec::new(),
        Path::Seq { parent, index } => {
            let mut v = segments(parent);
            v.push(index.to_string());
            v
        }
        Path::Map { parent, key } => {
            let mut v = segments(parent);
            v.push(key.clone());
            v
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent),
    }
}

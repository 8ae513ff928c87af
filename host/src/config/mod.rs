//! The operator's TOML file, parsed once into a validated model that the runtime only reads.

mod hosts;
mod locate;
mod outline;
mod raw;
mod serve;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use hosts::{AllowList, HostRule, is_localhost_name, is_public, origin};
pub use locate::Location;
pub use outline::Outline;
pub use serve::{ApiToken, DURATION_FIELD, FieldSpec, FieldType, Role, ServeSettings};

use locate::SourceMap;
use raw::{RawConfig, RawFlow, RawLimits, RawSecret};

/// A secret's value. It never prints: `Debug` and `Display` show `[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Arc<str>);

impl SecretValue {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The raw value; only for filling in a sealed header or an allowed `retrieve-value`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env { name: String },
    File { path: PathBuf },
    AwsSecretsManager(AwsSecret),
}

/// A secret kept in AWS Secrets Manager; re-read while warden runs (see `SecretStore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSecret {
    /// The secret's name or ARN.
    pub secret_id: String,
    /// The secret is a JSON object; its value is this key's.
    pub json_key: Option<String>,
    /// None: from the standard AWS environment (`AWS_REGION`, profile, ...).
    pub region: Option<String>,
    /// None: AWS's own, or `AWS_ENDPOINT_URL[_SECRETS_MANAGER]`.
    pub endpoint: Option<String>,
    /// How long a fetched value may be used; it is refreshed after half of this.
    pub cache_ttl: Duration,
}

pub const DEFAULT_SECRET_CACHE_SECONDS: u64 = 300;
const MAX_SECRET_CACHE_SECONDS: u64 = 86_400;

#[derive(Debug)]
pub struct Secret {
    pub id: String,
    pub source: SecretSource,
    /// Where the operator keeps it, as plugins see it (`path` in Sym's terms).
    pub path: String,
    /// The value read at load. A secret from AWS Secrets Manager may since have rotated:
    /// ask the `SecretStore` for the current one.
    pub value: SecretValue,
    /// When `value` was read.
    pub loaded_at: std::time::Instant,
}

/// Reads an AWS secret's raw string (before `json_key`); an error says why it cannot.
pub type AwsFetch<'a> = &'a dyn Fn(&AwsSecret) -> Result<String, String>;

/// The value under `key` of the JSON object `raw`. `what` names the secret in errors, which
/// never quote the value.
pub fn json_key_value(raw: &str, key: &str, what: &str) -> Result<String, String> {
    let parsed: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
        format!(
            "{what} is not valid JSON (line {}, column {}), so `json_key` cannot be applied",
            e.line(),
            e.column()
        )
    })?;
    let serde_json::Value::Object(map) = parsed else {
        return Err(format!(
            "{what} is JSON but not an object, so `json_key` cannot be applied"
        ));
    };
    match map.get(key) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
        Some(serde_json::Value::String(_)) => Err(format!("{what}: key `{key}` is empty")),
        Some(_) => Err(format!(
            "{what}: key `{key}` holds an object, list or null, not a string"
        )),
        None => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            Err(format!(
                "{what} has no key `{key}` (its keys: {})",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    keys.join(", ")
                }
            ))
        }
    }
}

#[derive(Debug)]
pub struct Integration {
    pub name: String,
    pub kind: String,
    pub external_id: String,
    pub settings: BTreeMap<String, String>,
    pub secrets: Vec<Arc<Secret>>,
}

#[derive(Debug)]
pub struct Environment {
    pub name: String,
    /// Alias seen by plugins → integration.
    pub integrations: BTreeMap<String, Arc<Integration>>,
}

/// The most memory a flow may give its plugin (wasm32's address space).
pub const MAX_MEMORY_MIB: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// The whole hook, host calls included.
    pub timeout: Duration,
    /// One HTTP request; never more than what is left of `timeout`.
    pub http_timeout: Option<Duration>,
    pub response_max_bytes: u64,
    /// Captured stdout/stderr and log messages, per event.
    pub log_max_bytes: usize,
    /// HTTP requests a plugin may send per event (to hosts it is allowed).
    pub http_requests: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            timeout: Duration::from_millis(5000),
            http_timeout: None,
            response_max_bytes: 1 << 20,
            log_max_bytes: 64 << 10,
            http_requests: 100,
        }
    }
}

/// What a flow's plugin may reach, derived once from its environment.
#[derive(Debug)]
pub struct Grants {
    pub environment: Arc<Environment>,
    /// Secrets attached to the environment's integrations, by id.
    pub secrets: BTreeMap<String, Arc<Secret>>,
    /// `(service, service-id)` pairs identities may be read and written for: each
    /// integration's type and external id.
    pub services: BTreeSet<(String, String)>,
    pub hosts: AllowList,
    pub reveal_secrets: bool,
}

#[derive(Debug)]
pub struct Flow {
    pub name: String,
    pub plugin: PathBuf,
    pub vars: BTreeMap<String, String>,
    pub limits: Limits,
    pub grants: Grants,
    /// Whether a requester may approve their own request (`warden serve`).
    pub allow_self_approval: bool,
    /// The request fields `warden serve` accepts; empty: any fields.
    pub fields: BTreeMap<String, FieldSpec>,
}

#[derive(Debug)]
pub struct Config {
    /// The file this was read from; relative paths in it are relative to its folder.
    pub source: PathBuf,
    pub store_path: PathBuf,
    /// Where compiled plugins are kept between runs: `[cache] dir`, else the user's own
    /// cache folder ([`crate::plugin::user_cache_dir`]); `None` when neither is known, and
    /// plugins are compiled every time.
    pub cache_dir: Option<PathBuf>,
    pub secrets: BTreeMap<String, Arc<Secret>>,
    pub integrations: BTreeMap<String, Arc<Integration>>,
    pub environments: BTreeMap<String, Arc<Environment>>,
    pub flows: BTreeMap<String, Arc<Flow>>,
    pub serve: ServeSettings,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub location: Option<Location>,
    /// Dotted key path, e.g. `flows.sensitive-access.environment`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(loc) = self.location {
            write!(f, ":{loc}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a config file; nothing of it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads, parses and validates `path`, resolving secrets from the process environment
    /// and files.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                location: None,
                key: String::new(),
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses `text` as if read from `path`, reading `env` secrets through `env` and AWS
    /// secrets from AWS Secrets Manager.
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Self::parse_with(text, path, env, &crate::secret_store::fetch_blocking)
    }

    /// [`Config::parse`], reading AWS secrets through `aws`.
    pub fn parse_with(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        aws: AwsFetch<'_>,
    ) -> Result<Config, ConfigErrors> {
        Validator {
            file: path.to_path_buf(),
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            map: SourceMap::new(text),
            errors: Vec::new(),
            env,
            aws,
        }
        .run(text)
    }

    pub fn flow(&self, name: &str) -> Option<&Arc<Flow>> {
        self.flows.get(name)
    }

    /// Every secret value, longest first, for redaction.
    pub fn secret_values(&self) -> Vec<SecretValue> {
        let mut values: Vec<SecretValue> = self.secrets.values().map(|s| s.value.clone()).collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.expose().len()));
        values.dedup();
        values
    }
}

struct Validator<'a> {
    file: PathBuf,
    base: PathBuf,
    map: SourceMap<'a>,
    errors: Vec<ConfigError>,
    env: &'a dyn Fn(&str) -> Option<String>,
    aws: AwsFetch<'a>,
}

impl<'a> Validator<'a> {
    fn error(&mut self, path: &[&str], message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            location: self.map.locate(path),
            key: path.join("."),
            message: message.into(),
        });
    }

    fn run(mut self, text: &str) -> Result<Config, ConfigErrors> {
        let mut unknown = Vec::new();
        let raw: RawConfig = match toml::de::Deserializer::parse(text)
            .and_then(|de| serde_ignored::deserialize(de, |p| unknown.push(segments(&p))))
        {
            Ok(raw) => raw,
            Err(e) => {
                let location = e.span().map(|s| self.map.location_of(s.start));
                self.errors.push(ConfigError {
                    file: self.file.clone(),
                    location,
                    key: String::new(),
                    message: e.message().trim().to_string(),
                });
                return Err(ConfigErrors(self.errors));
            }
        };
        for path in &unknown {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            self.error(&refs, "unknown key");
        }

        let store_path = self.resolve(raw.store.path.as_deref().unwrap_or("warden.db"));
        // Not beside the store by default: the cache must be a folder only this user can
        // change, and the store's folder need not be one.
        let cache_dir = match raw.cache.dir.as_deref() {
            Some(dir) => Some(self.resolve(dir)),
            None => crate::plugin::user_cache_dir(),
        };
        let secrets = self.secrets(&raw.secrets);
        let integrations = self.integrations(&raw, &secrets);
        let environments = self.environments(&raw, &integrations);
        let serve = self.serve(&raw.serve);
        let flows = raw
            .flows
            .iter()
            .filter_map(|(name, flow)| {
                let built = self.flow(name, flow, &environments)?;
                Some((name.clone(), Arc::new(built)))
            })
            .collect();

        if self.errors.is_empty() {
            Ok(Config {
                source: self.file,
                store_path,
                cache_dir,
                secrets,
                integrations,
                environments,
                flows,
                serve,
            })
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    fn resolve(&self, relative: &str) -> PathBuf {
        self.base.join(relative)
    }

    fn secrets(&mut self, raw: &BTreeMap<String, RawSecret>) -> BTreeMap<String, Arc<Secret>> {
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
    fn aws_secret(&mut self, id: &str, secret: &RawSecret) -> Option<AwsSecret> {
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

    fn integrations(
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

    fn environments(
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

    fn flow(
        &mut self,
        name: &str,
        raw: &RawFlow,
        environments: &BTreeMap<String, Arc<Environment>>,
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
        if let Some(hint) = crate::build::not_a_component(&plugin) {
            self.error(&["flows", name, "plugin"], hint);
        } else if !plugin.is_file() {
            self.error(
                &["flows", name, "plugin"],
                format!("plugin file {} does not exist", plugin.display()),
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
            },
            allow_self_approval: raw.allow_self_approval.unwrap_or(false),
            fields,
        })
    }

    fn limits(&mut self, flow: &str, raw: &RawLimits) -> Limits {
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

fn declared<'k>(names: impl Iterator<Item = &'k String>) -> String {
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

/// The most a secret or token file may hold: these are single values, and a path pointed at
/// a log, an archive or `/dev/zero` by mistake must not be read whole.
pub const MAX_VALUE_FILE_BYTES: u64 = 64 * 1024;

/// Reads a file that holds one value (a secret, a token), refusing one over
/// [`MAX_VALUE_FILE_BYTES`] without reading past that.
pub(crate) fn read_small_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_VALUE_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_VALUE_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "it holds more than {} KiB; it should hold the value alone",
            MAX_VALUE_FILE_BYTES / 1024
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests;

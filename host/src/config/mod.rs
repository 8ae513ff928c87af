//! The operator's TOML file, parsed once into a validated model that the runtime only reads.

mod hosts;
mod locate;
mod raw;
mod serve;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use hosts::{AllowList, HostRule, is_localhost_name, is_public, origin};
pub use locate::Location;
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
}

#[derive(Debug)]
pub struct Secret {
    pub id: String,
    pub source: SecretSource,
    /// Where the operator keeps it, as plugins see it (`path` in Sym's terms).
    pub path: String,
    pub value: SecretValue,
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            timeout: Duration::from_millis(5000),
            http_timeout: None,
            response_max_bytes: 1 << 20,
            log_max_bytes: 64 << 10,
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

    /// Parses `text` as if read from `path`, reading `env` secrets through `env`.
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        Validator {
            file: path.to_path_buf(),
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            map: SourceMap::new(text),
            errors: Vec::new(),
            env,
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
            let (source, path, value) = match secret.source.as_str() {
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
                    match std::fs::read_to_string(&full) {
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
                other => {
                    self.error(
                        &[key[0], key[1], "source"],
                        format!("unknown source `{other}`; expected `env` or `file`"),
                    );
                    continue;
                }
            };
            out.insert(
                id.clone(),
                Arc::new(Secret {
                    id: id.clone(),
                    source,
                    path,
                    value: SecretValue::new(value),
                }),
            );
        }
        out
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
        if !plugin.is_file() {
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
            memory_bytes: bounded("memory_mib", raw.memory_mib, 1, 4096)
                .map_or(defaults.memory_bytes, |m| m << 20),
            timeout: bounded("timeout_ms", raw.timeout_ms, 1, 600_000)
                .map_or(defaults.timeout, Duration::from_millis),
            http_timeout: bounded("http_timeout_ms", raw.http_timeout_ms, 1, 600_000)
                .map(Duration::from_millis),
            response_max_bytes: bounded("response_max_bytes", raw.response_max_bytes, 1, 1 << 30)
                .unwrap_or(defaults.response_max_bytes),
            log_max_bytes: bounded("log_max_bytes", raw.log_max_bytes, 1024, 16 << 20)
                .map_or(defaults.log_max_bytes, |b| b as usize),
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

#[cfg(test)]
mod tests;

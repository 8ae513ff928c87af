//! The TOML file as written. Nothing here is trusted: `super::validate` turns it into the model.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub compile: RawCompile,
    #[serde(default)]
    pub secrets: BTreeMap<String, RawSecret>,
    #[serde(default)]
    pub integrations: BTreeMap<String, RawIntegration>,
    #[serde(default)]
    pub environments: BTreeMap<String, RawEnvironment>,
    #[serde(default)]
    pub flows: BTreeMap<String, RawFlow>,
    #[serde(default)]
    pub serve: RawServe,
    #[serde(default)]
    pub groups: BTreeMap<String, super::policy::RawGroup>,
    #[serde(default)]
    pub channels: BTreeMap<String, super::channels::RawChannel>,
}

/// `[serve]`: the `warden serve` API.
#[derive(Debug, Default, Deserialize)]
pub struct RawServe {
    pub listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub max_in_flight: Option<u64>,
    pub max_connections: Option<u64>,
    pub max_connections_per_address: Option<u64>,
    pub client_timeout_ms: Option<u64>,
    pub new_requests_per_minute: Option<u64>,
    pub unknown_tokens_per_minute: Option<u64>,
    /// Proxies whose `X-Forwarded-For` names the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The console's session cookie is marked `Secure` on every response.
    #[serde(default)]
    pub behind_tls: bool,
    /// Where people reach the console; notifications link to `{public_url}/requests/{id}`.
    pub public_url: Option<String>,
    /// `/metrics` asks for this bearer token when one is set.
    pub metrics_token_env: Option<String>,
    pub metrics_token_file: Option<String>,
    #[serde(default)]
    pub tokens: BTreeMap<String, RawToken>,
}

/// `[serve.tokens.<name>]`: one API bearer token and who holds it.
#[derive(Debug, Deserialize)]
pub struct RawToken {
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    pub user: String,
    pub role: String,
}

/// `[flows.<flow>.fields.<name>]`: one request field.
#[derive(Debug, Deserialize)]
pub struct RawField {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawStore {
    pub path: Option<String>,
    /// A PostgreSQL store instead (`config::store_url`).
    pub url: Option<String>,
    /// The `[secrets.<name>]` holding its password; else `PGPASSWORD`.
    pub password_secret: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCache {
    /// Compiled plugins, relative to the config file.
    pub dir: Option<String>,
}

/// `[compile]`: what compiling one plugin may take.
#[derive(Debug, Default, Deserialize)]
pub struct RawCompile {
    pub timeout_seconds: Option<u64>,
    pub memory_mib: Option<u64>,
}

/// `[http]`: the network plugins' `http.send` goes out on.
#[derive(Debug, Default, Deserialize)]
pub struct RawHttp {
    /// Certificate authorities (PEM) trusted for `https` besides the public web's, relative
    /// to the config file.
    pub ca_file: Option<String>,
    /// Microseconds a request to a fast server polls for its answer; 0 never.
    pub spin_wait_us: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawSecret {
    pub source: String,
    /// For `env`: the variable's name.
    pub name: Option<String>,
    /// For `file`: the file, relative to the config file. For `aws-secrets-manager`: the
    /// secret's name or ARN.
    pub path: Option<String>,
    /// The value is a JSON object; use this key's value.
    pub json_key: Option<String>,
    /// For `aws-secrets-manager`; default from the standard AWS environment.
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub cache_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct RawIntegration {
    #[serde(rename = "type")]
    pub kind: String,
    pub external_id: String,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub settings: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
pub struct RawEnvironment {
    /// Alias seen by plugins → integration name.
    #[serde(default)]
    pub integrations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct RawFlow {
    pub environment: String,
    pub plugin: String,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub limits: RawLimits,
    pub reveal_secrets: Option<bool>,
    pub allow_self_approval: Option<bool>,
    /// Who may decide: emails and `group:NAME`; absent: any approver.
    pub approvers: Option<Vec<String>>,
    pub approvals_required: Option<u64>,
    #[serde(default)]
    pub fields: BTreeMap<String, RawField>,
    #[serde(default)]
    pub notify: super::channels::RawNotify,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    pub memory_mib: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub http_timeout_ms: Option<u64>,
    pub response_max_bytes: Option<u64>,
    pub log_max_bytes: Option<u64>,
    pub http_requests: Option<u64>,
}

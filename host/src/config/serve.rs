//! `[serve]` (the API's listener, limits and bearer tokens) and the per-flow settings only
//! `warden serve` reads: `allow_self_approval` and the request field schema.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use super::Validator;
use super::raw::{RawField, RawServe};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 10;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_CLIENT_TIMEOUT_MS: usize = 10_000;
/// New requests one user (not an admin) may file a minute, per replica: far more than a
/// person asks for, far fewer than a script filling the store.
pub const DEFAULT_NEW_REQUESTS_PER_MINUTE: u32 = 120;
/// Unknown bearer tokens one client address may send a minute: a working client sends none.
pub const DEFAULT_UNKNOWN_TOKENS_PER_MINUTE: u32 = 20;

/// What a token's holder may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Requester,
    Approver,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requester => "requester",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "requester" => Ok(Self::Requester),
            "approver" => Ok(Self::Approver),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role `{other}`; expected requester, approver or admin"
            )),
        }
    }
}

/// One API bearer token, kept only as its digest: the token itself is not held past load.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub name: String,
    pub user: String,
    pub role: Role,
    pub token: TokenDigest,
}

/// A bearer token's SHA-256. A token a caller sends is compared by its digest, so the
/// comparison's time depends on neither the configured tokens' lengths nor where a guess
/// first differs; and nothing in memory after load is the token itself.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        use sha2::{Digest, Sha256};
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `sent` is this digest, in time independent of where they differ.
    pub fn matches(&self, sent: &TokenDigest) -> bool {
        self.0
            .iter()
            .zip(&sent.0)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }

    /// Lower-case hex, as the console's sessions keep it.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// API requests handled at once; more are refused with 503 rather than queued.
    pub max_in_flight: usize,
    /// Connections open at once; more wait in the listen backlog (`serve/connections.rs`).
    pub max_connections: usize,
    /// Connections one client address may have open at once (a trusted proxy's are not
    /// counted); more are closed as they arrive. By default a quarter of `max_connections`.
    pub max_connections_per_address: usize,
    /// New requests one user (not an admin) may file a minute; 0: no limit.
    pub new_requests_per_minute: u32,
    /// Unknown bearer tokens one client address may send a minute before all its requests
    /// are refused for the rest of it; 0: no limit.
    pub unknown_tokens_per_minute: u32,
    /// How long a client may take to send a request's head, and again its body, and each
    /// write of an answer may wait for it to read; an idle kept-alive connection is closed
    /// after as long.
    pub client_timeout: std::time::Duration,
    pub tokens: Vec<ApiToken>,
    /// The bearer token `/metrics` asks for (`metrics_token_env`/`_file`); `None`: none.
    pub metrics_token: Option<TokenDigest>,
    /// `behind_tls`: warden is reached only through a TLS-terminating proxy, so the
    /// console's session cookie is always marked `Secure`.
    pub behind_tls: bool,
    /// `public_url`, without a trailing `/`: the console's address as people reach it.
    pub public_url: Option<String>,
    /// Proxies in front of warden: a request from one of them is counted against its
    /// client's address, the last in `X-Forwarded-For` that is not one of them.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS / 4,
            new_requests_per_minute: DEFAULT_NEW_REQUESTS_PER_MINUTE,
            unknown_tokens_per_minute: DEFAULT_UNKNOWN_TOKENS_PER_MINUTE,
            client_timeout: std::time::Duration::from_millis(DEFAULT_CLIENT_TIMEOUT_MS as u64),
            tokens: Vec::new(),
            metrics_token: None,
            behind_tls: false,
            public_url: None,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Int,
    Bool,
    List,
    Duration,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int => "int",
            Self::Bool => "bool",
            Self::List => "list",
            Self::Duration => "duration",
        }
    }
}

/// One declared request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    pub kind: FieldType,
    pub required: bool,
}

/// The request field whose value, once access is granted, says when it is removed.
pub const DURATION_FIELD: &str = "duration";

impl Validator<'_> {
    pub(super) fn serve(&mut self, raw: &RawServe) -> ServeSettings {
        let defaults = ServeSettings::default();
        let listen = match &raw.listen {
            None => defaults.listen,
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => {
                    self.error(
                        &["serve", "listen"],
                        format!("`{text}` is not an address like 127.0.0.1:8080"),
                    );
                    defaults.listen
                }
            },
        };
        let mut bounded =
            |key: &str, value: Option<u64>, min: u64, max: u64, default: usize| match value {
                None => default,
                Some(v) if (min..=max).contains(&v) => v as usize,
                Some(v) => {
                    self.error(
                        &["serve", key],
                        format!("must be between {min} and {max}, not {v}"),
                    );
                    default
                }
            };
        let max_body_bytes = bounded(
            "max_body_bytes",
            raw.max_body_bytes,
            1024,
            64 << 20,
            defaults.max_body_bytes,
        );
        let max_in_flight = bounded(
            "max_in_flight",
            raw.max_in_flight,
            1,
            100_000,
            defaults.max_in_flight,
        );
        let max_connections = bounded(
            "max_connections",
            raw.max_connections,
            1,
            1_000_000,
            defaults.max_connections,
        );
        let max_connections_per_address = bounded(
            "max_connections_per_address",
            raw.max_connections_per_address,
            1,
            max_connections as u64,
            (max_connections / 4).max(1),
        );
        let new_requests_per_minute = bounded(
            "new_requests_per_minute",
            raw.new_requests_per_minute,
            0,
            1_000_000,
            defaults.new_requests_per_minute as usize,
        ) as u32;
        let unknown_tokens_per_minute = bounded(
            "unknown_tokens_per_minute",
            raw.unknown_tokens_per_minute,
            0,
            1_000_000,
            defaults.unknown_tokens_per_minute as usize,
        ) as u32;
        let client_timeout_ms = bounded(
            "client_timeout_ms",
            raw.client_timeout_ms,
            100,
            600_000,
            DEFAULT_CLIENT_TIMEOUT_MS,
        );
        let mut trusted_proxies = Vec::new();
        for (i, text) in raw.trusted_proxies.iter().enumerate() {
            match text.trim().parse() {
                Ok(addr) => trusted_proxies.push(addr),
                Err(_) => self.error(
                    &["serve", "trusted_proxies", &i.to_string()],
                    format!("`{text}` is not an IP address"),
                ),
            }
        }
        let mut tokens: Vec<ApiToken> = Vec::new();
        for (name, token) in &raw.tokens {
            let key = |last: &'static str| ["serve", "tokens", name.as_str(), last];
            let role = match token.role.parse::<Role>() {
                Ok(role) => Some(role),
                Err(e) => {
                    self.error(&key("role"), e);
                    None
                }
            };
            let user = token.user.trim();
            if !user.contains('@') {
                self.error(&key("user"), format!("`{user}` is not an email address"));
            }
            let value = self.token_value(
                &["serve", "tokens", name],
                token.token_env.as_deref(),
                token.token_file.as_deref(),
                "token_env",
                "token_file",
            );
            let (Some(role), Some(value)) = (role, value) else {
                continue;
            };
            let digest = TokenDigest::of(&value);
            if let Some(other) = tokens.iter().find(|t| t.token == digest) {
                self.error(
                    &["serve", "tokens", name],
                    format!(
                        "has the same token as `{}`; every token must be different",
                        other.name
                    ),
                );
                continue;
            }
            tokens.push(ApiToken {
                name: name.clone(),
                user: user.to_string(),
                role,
                token: digest,
            });
        }
        let metrics_token = match (&raw.metrics_token_env, &raw.metrics_token_file) {
            (None, None) => None,
            (env, file) => self.token_value(
                &["serve"],
                env.as_deref(),
                file.as_deref(),
                "metrics_token_env",
                "metrics_token_file",
            ),
        };
        let metrics_token = metrics_token.map(|value| TokenDigest::of(&value));
        if let Some(digest) = &metrics_token
            && let Some(other) = tokens.iter().find(|t| t.token == *digest)
        {
            let set = match raw.metrics_token_file {
                Some(_) => "metrics_token_file",
                None => "metrics_token_env",
            };
            self.error(
                &["serve", set],
                format!(
                    "is the token of `serve.tokens.{}`: a scraper's token must not be an API token",
                    other.name
                ),
            );
        }
        ServeSettings {
            listen,
            metrics_token,
            max_body_bytes,
            max_in_flight,
            max_connections,
            max_connections_per_address,
            new_requests_per_minute,
            unknown_tokens_per_minute,
            client_timeout: std::time::Duration::from_millis(client_timeout_ms as u64),
            tokens,
            behind_tls: raw.behind_tls,
            public_url: self.public_url(raw.public_url.as_deref()),
            trusted_proxies,
        }
    }

    /// A bearer token from environment variable `env` or file `file` (exactly one), trimmed;
    /// errors name `table`.`env_key` or `table`.`file_key`.
    fn token_value(
        &mut self,
        table: &[&str],
        env: Option<&str>,
        file: Option<&str>,
        env_key: &'static str,
        file_key: &'static str,
    ) -> Option<String> {
        let key = |last: &'static str| table.iter().copied().chain([last]).collect::<Vec<_>>();
        match (env, file) {
            (Some(var), None) => match (self.env)(var) {
                Some(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                Some(_) => {
                    self.error(
                        &key(env_key),
                        format!("environment variable `{var}` is empty"),
                    );
                    None
                }
                None => {
                    self.error(
                        &key(env_key),
                        format!("environment variable `{var}` is not set"),
                    );
                    None
                }
            },
            (None, Some(file)) => {
                let full = self.resolve(file);
                match super::read_small_file(&full) {
                    Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                    Ok(_) => {
                        self.error(
                            &key(file_key),
                            format!("token file {} is empty", full.display()),
                        );
                        None
                    }
                    Err(e) => {
                        self.error(
                            &key(file_key),
                            format!("cannot read token file {}: {e}", full.display()),
                        );
                        None
                    }
                }
            }
            _ => {
                let message = format!("needs exactly one of `{env_key}` or `{file_key}`");
                match table {
                    ["serve"] => self.error(&key(env_key), message),
                    _ => self.error(table, message),
                }
                None
            }
        }
    }

    pub(super) fn fields(
        &mut self,
        flow: &str,
        raw: &BTreeMap<String, RawField>,
    ) -> BTreeMap<String, FieldSpec> {
        let mut out = BTreeMap::new();
        for (name, field) in raw {
            let kind = match field.kind.as_str() {
                "string" => FieldType::String,
                "int" => FieldType::Int,
                "bool" => FieldType::Bool,
                "list" => FieldType::List,
                "duration" => FieldType::Duration,
                other => {
                    self.error(
                        &["flows", flow, "fields", name, "type"],
                        format!(
                            "unknown type `{other}`; expected string, int, bool, list or duration"
                        ),
                    );
                    continue;
                }
            };
            if name == DURATION_FIELD && kind != FieldType::Duration {
                self.error(
                    &["flows", flow, "fields", name, "type"],
                    format!(
                        "field `{DURATION_FIELD}` says how long access lasts and must have type = \"duration\""
                    ),
                );
                continue;
            }
            out.insert(
                name.clone(),
                FieldSpec {
                    kind,
                    required: field.required,
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, ConfigErrors};
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plugin.wasm"), b"\0asm").unwrap();
        std::fs::write(dir.path().join("admin.token"), "file-token\n").unwrap();
        let path = dir.path().join("warden.toml");
        Config::parse(text, Path::new(&path), &|name| match name {
            "ALICE_TOKEN" => Some("env-token".into()),
            "SAME_AS_FILE" => Some("file-token".into()),
            _ => None,
        })
    }

    fn errors(text: &str) -> String {
        parse(text).expect_err("should be rejected").to_string()
    }

    const FLOW: &str =
        "[environments.e]\n[flows.f]\nenvironment = \"e\"\nplugin = \"plugin.wasm\"\n";

    #[test]
    fn tokens_roles_and_limits_are_read() {
        let config = parse(&format!(
            "{FLOW}allow_self_approval = true\n[flows.f.fields.duration]\ntype = \"duration\"\nrequired = true\n\
             [serve]\nlisten = \"127.0.0.1:9000\"\nmax_in_flight = 3\nmax_connections = 50\nclient_timeout_ms = 2500\n\
             new_requests_per_minute = 0\nunknown_tokens_per_minute = 5\n\
             trusted_proxies = [\"10.0.0.5\", \"::1\"]\n[serve.tokens.alice]\ntoken_env = \"ALICE_TOKEN\"\nuser = \"alice@x.com\"\nrole = \"approver\"\n\
             [serve.tokens.admin]\ntoken_file = \"admin.token\"\nuser = \"root@x.com\"\nrole = \"admin\"\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let serve = &config.serve;
        assert_eq!(serve.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(serve.max_in_flight, 3);
        assert_eq!(serve.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(serve.max_connections, 50);
        assert_eq!(serve.client_timeout, std::time::Duration::from_millis(2500));
        assert_eq!(serve.new_requests_per_minute, 0);
        assert_eq!(serve.unknown_tokens_per_minute, 5);
        assert_eq!(
            serve.trusted_proxies,
            [
                "10.0.0.5".parse::<std::net::IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        let defaults = parse(FLOW).unwrap_or_else(|e| panic!("{e}")).serve;
        assert_eq!(defaults.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            defaults.new_requests_per_minute,
            DEFAULT_NEW_REQUESTS_PER_MINUTE
        );
        assert_eq!(defaults.client_timeout, std::time::Duration::from_secs(10));
        let admin = serve.tokens.iter().find(|t| t.name == "admin").unwrap();
        assert_eq!(
            (admin.role, &admin.token),
            (Role::Admin, &TokenDigest::of("file-token"))
        );
        assert_eq!(format!("{:?}", admin.token), "[REDACTED]");
        let flow = config.flow("f").unwrap();
        assert!(flow.allow_self_approval);
        assert_eq!(
            flow.fields["duration"],
            FieldSpec {
                kind: FieldType::Duration,
                required: true
            }
        );
    }

    #[test]
    fn bad_serve_settings_are_each_named() {
        let text = errors(&format!(
            "{FLOW}[flows.f.fields.duration]\ntype = \"string\"\n[flows.f.fields.n]\ntype = \"float\"\n\
             [serve]\nlisten = \"localhost\"\nmax_in_flight = 0\nmax_connections = 0\nclient_timeout_ms = 50\n\
             trusted_proxies = [\"10.0.0.5\", \"the-proxy\"]\n[serve.tokens.a]\nuser = \"a@x.com\"\nrole = \"boss\"\n\
             [serve.tokens.b]\ntoken_env = \"UNSET\"\nuser = \"nobody\"\nrole = \"requester\"\n\
             [serve.tokens.c]\ntoken_file = \"admin.token\"\nuser = \"c@x.com\"\nrole = \"admin\"\n\
             [serve.tokens.d]\ntoken_env = \"SAME_AS_FILE\"\nuser = \"d@x.com\"\nrole = \"admin\"\n"
        ));
        for expected in [
            "flows.f.fields.duration.type: field `duration` says how long access lasts",
            "flows.f.fields.n.type: unknown type `float`",
            "serve.listen: `localhost` is not an address",
            "serve.max_in_flight: must be between 1 and 100000, not 0",
            "serve.max_connections: must be between 1 and 1000000, not 0",
            "serve.client_timeout_ms: must be between 100 and 600000, not 50",
            "serve.trusted_proxies.1: `the-proxy` is not an IP address",
            "serve.tokens.a.role: unknown role `boss`",
            "serve.tokens.a: needs exactly one of `token_env` or `token_file`",
            "serve.tokens.b.user: `nobody` is not an email address",
            "serve.tokens.b.token_env: environment variable `UNSET` is not set",
            "serve.tokens.d: has the same token as `c`",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(!text.contains("file-token"), "a token leaked: {text}");
    }

    #[test]
    fn a_token_is_kept_and_matched_as_its_digest_alone() {
        let kept = TokenDigest::of("s3cret");
        assert!(kept.matches(&TokenDigest::of("s3cret")));
        for near in ["s3cre", "s3cret ", "S3cret", ""] {
            assert!(!kept.matches(&TokenDigest::of(near)), "{near:?}");
        }
        // The console's sessions keep this hex; a change here signs every browser out.
        assert_eq!(
            kept.hex(),
            "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"
        );
        assert_eq!(format!("{kept:?}"), "[REDACTED]");
    }

    #[test]
    fn a_metrics_token_is_read_once_set_and_must_be_nobodys_api_token() {
        let defaults = parse(FLOW).unwrap_or_else(|e| panic!("{e}")).serve;
        assert!(
            defaults.metrics_token.is_none(),
            "/metrics is open unless one is set"
        );
        let set = parse(&format!(
            "{FLOW}[serve]\nmetrics_token_env = \"ALICE_TOKEN\"\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"))
        .serve;
        assert_eq!(set.metrics_token, Some(TokenDigest::of("env-token")));

        let both = errors(&format!(
            "{FLOW}[serve]\nmetrics_token_env = \"ALICE_TOKEN\"\nmetrics_token_file = \"admin.token\"\n"
        ));
        assert!(
            both.contains(
                "serve.metrics_token_env: needs exactly one of `metrics_token_env` or `metrics_token_file`"
            ),
            "{both}"
        );
        let unset = errors(&format!("{FLOW}[serve]\nmetrics_token_env = \"UNSET\"\n"));
        assert!(
            unset.contains("serve.metrics_token_env: environment variable `UNSET` is not set"),
            "{unset}"
        );
        let shared = errors(&format!(
            "{FLOW}[serve]\nmetrics_token_file = \"admin.token\"\n\
             [serve.tokens.c]\ntoken_file = \"admin.token\"\nuser = \"c@x.com\"\nrole = \"admin\"\n"
        ));
        assert!(
            shared.contains(
                "serve.metrics_token_file: is the token of `serve.tokens.c`: a scraper's token must not be an API token"
            ),
            "{shared}"
        );
        assert!(!shared.contains("file-token"), "a token leaked: {shared}");
    }
}

//! `[serve]` (the API's listener, limits and bearer tokens) and the per-flow settings only
//! `warden serve` reads: `allow_self_approval` and the request field schema.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use super::raw::{RawField, RawServe};
use super::{SecretValue, Validator};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 10;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

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

/// One API bearer token. The token itself never prints.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub name: String,
    pub user: String,
    pub role: Role,
    pub token: SecretValue,
}

#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// API requests handled at once; more are refused with 503 rather than queued.
    pub max_in_flight: usize,
    pub tokens: Vec<ApiToken>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            tokens: Vec::new(),
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
            let value = match (&token.token_env, &token.token_file) {
                (Some(var), None) => match (self.env)(var) {
                    Some(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                    Some(_) => {
                        self.error(
                            &key("token_env"),
                            format!("environment variable `{var}` is empty"),
                        );
                        None
                    }
                    None => {
                        self.error(
                            &key("token_env"),
                            format!("environment variable `{var}` is not set"),
                        );
                        None
                    }
                },
                (None, Some(file)) => {
                    let full = self.resolve(file);
                    match std::fs::read_to_string(&full) {
                        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                        Ok(_) => {
                            self.error(
                                &key("token_file"),
                                format!("token file {} is empty", full.display()),
                            );
                            None
                        }
                        Err(e) => {
                            self.error(
                                &key("token_file"),
                                format!("cannot read token file {}: {e}", full.display()),
                            );
                            None
                        }
                    }
                }
                _ => {
                    self.error(
                        &["serve", "tokens", name],
                        "needs exactly one of `token_env` or `token_file`",
                    );
                    None
                }
            };
            let (Some(role), Some(value)) = (role, value) else {
                continue;
            };
            if let Some(other) = tokens.iter().find(|t| t.token.expose() == value) {
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
                token: SecretValue::new(value),
            });
        }
        ServeSettings {
            listen,
            max_body_bytes,
            max_in_flight,
            tokens,
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

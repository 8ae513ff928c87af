//! What a secret is: where the operator keeps it and its value, which never prints. The config
//! declares secrets with these types; [`super::SecretStore`] serves their current values.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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

/// A secret kept in AWS Secrets Manager; re-read while warden runs (see [`super::SecretStore`]).
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
        // Whole numbers are written back as they were; another (`1.50`, `1e3`, one past 64
        // bits) would be the value rewritten (`1.5`, `1000.0`, rounded), not the one stored.
        Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(serde_json::Value::Number(_)) => Err(format!(
            "{what}: key `{key}` holds a number that is not a whole one of at most 64 bits, which would be used rewritten; store it as a JSON string"
        )),
        Some(serde_json::Value::Bool(b)) => Ok(b.to_string()),
        Some(serde_json::Value::String(_)) => Err(format!("{what}: key `{key}` is empty")),
        Some(_) => Err(format!(
            "{what}: key `{key}` holds an object, list or null, not a string"
        )),
        None => {
            // The secret's own keys (AWS's, for a secret there): escaped, and at most 20.
            let keys: Vec<String> = map
                .keys()
                .take(20)
                .map(|k| crate::cli::escape::escape_control(k).into_owned())
                .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_under_json_key_is_used_only_as_it_was_written() {
        assert_eq!(json_key_value(r#"{"k": 1234}"#, "k", "s").unwrap(), "1234");
        assert_eq!(json_key_value(r#"{"k": -7}"#, "k", "s").unwrap(), "-7");
        assert_eq!(json_key_value(r#"{"k": true}"#, "k", "s").unwrap(), "true");
        // Each would be used rewritten: 1.5, 1000.0, 1.2345678901234568e23.
        for raw in [
            r#"{"k": 1.50}"#,
            r#"{"k": 1e3}"#,
            r#"{"k": 123456789012345678901234}"#,
        ] {
            let refused = json_key_value(raw, "k", "secret `s`").unwrap_err();
            assert!(refused.ends_with("store it as a JSON string"), "{refused}");
            assert!(
                !refused.contains("1.5") && !refused.contains("1000"),
                "{refused}"
            );
        }
    }
}

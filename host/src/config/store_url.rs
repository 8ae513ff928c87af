//! `[store] url`: a PostgreSQL store for `warden serve` replicas (issue 19). The URL names
//! where the database is and who connects; the password never appears in the config's text
//! (a file that is read by many and checked into repositories), so a URL holding one is
//! refused. The password is the secret `[store] password_secret` names (`[secrets.<name>]`:
//! an environment variable, a file or AWS Secrets Manager), else the environment's
//! `PGPASSWORD`, as every PostgreSQL client takes it.

use std::fmt;
use std::sync::Arc;

use crate::secrets::Secret;

/// A validated `postgres://` URL with no password in it, and the secret holding the password.
#[derive(Clone)]
pub struct StoreUrl {
    text: String,
    /// `[store] password_secret`; None: `PGPASSWORD`.
    password: Option<Arc<Secret>>,
}

impl PartialEq for StoreUrl {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
            && self.password.as_ref().map(|s| &s.id) == other.password.as_ref().map(|s| &s.id)
    }
}

impl Eq for StoreUrl {}

impl StoreUrl {
    /// Checks `text`; the error says what is wrong with it, for the `store.url` key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!(
                "the scheme must be `postgres://` (for SQLite, set `path` instead), not `{}://`",
                url.scheme()
            ));
        }
        if url.password().is_some() || url.query_pairs().any(|(k, _)| k == "password") {
            return Err("must not hold a password: name a secret holding it with \
                 `[store] password_secret`, or set PGPASSWORD in the environment of every \
                 warden that connects"
                .into());
        }
        if let Some((_, mode)) = url.query_pairs().find(|(k, _)| k == "sslmode")
            && mode != "disable"
        {
            return Err(format!(
                "sslmode `{mode}`: TLS to PostgreSQL is not supported yet; use \
                 `sslmode=disable` on a trusted network or a local socket"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("names no host".into());
        }
        text.parse::<tokio_postgres::Config>()
            .map_err(|e| format!("not a PostgreSQL connection URL: {e}"))?;
        Ok(Self {
            text: text.to_string(),
            password: None,
        })
    }

    /// The password is `secret`'s value (not `PGPASSWORD`).
    pub fn with_password_secret(mut self, secret: Arc<Secret>) -> Self {
        self.password = Some(secret);
        self
    }

    /// The secret holding the password, when the config names one.
    pub fn password_secret(&self) -> Option<&Arc<Secret>> {
        self.password.as_ref()
    }

    /// The URL as written (it holds no password).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The client settings, with the password: the secret's value as read at load, else
    /// `PGPASSWORD` when it is set. (The store asks for the secret's current value, a rotated
    /// one included, each time it connects.)
    pub fn client_config(&self) -> tokio_postgres::Config {
        let mut config: tokio_postgres::Config =
            self.text.parse().expect("checked by StoreUrl::parse");
        match &self.password {
            Some(secret) => {
                config.password(secret.value.expose());
            }
            None => {
                if let Some(password) = std::env::var_os("PGPASSWORD") {
                    config.password(password.as_encoded_bytes());
                }
            }
        }
        if config.get_application_name().is_none() {
            config.application_name("warden");
        }
        // A database that stops answering fails operations (and is noticed by the pool)
        // rather than holding them until the operating system gives up on the connection.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.keepalives(true);
        config.keepalives_idle(std::time::Duration::from_secs(30));
        config
    }
}

/// The URL and the password secret's name: never the password.
impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.password {
            Some(secret) => write!(
                f,
                "StoreUrl({}, password_secret = {})",
                self.text, secret.id
            ),
            None => write!(f, "StoreUrl({})", self.text),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::StoreUrl;

    #[test]
    fn a_postgres_url_without_a_password_is_accepted() {
        let url = StoreUrl::parse("postgres://warden@db.internal:5433/warden").unwrap();
        let config = url.client_config();
        assert_eq!(config.get_user(), Some("warden"));
        assert_eq!(config.get_dbname(), Some("warden"));
        assert_eq!(config.get_ports(), &[5433]);
    }

    #[test]
    fn bad_urls_are_refused_saying_why() {
        for (text, why) in [
            (
                "postgres://warden:hunter2@db/warden",
                "must not hold a password",
            ),
            (
                "postgres://warden@db/warden?password=x",
                "must not hold a password",
            ),
            (
                "mysql://warden@db/warden",
                "the scheme must be `postgres://`",
            ),
            (
                "postgres://warden@db/warden?sslmode=require",
                "TLS to PostgreSQL",
            ),
            ("db/warden", "not a URL"),
        ] {
            let err = StoreUrl::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}

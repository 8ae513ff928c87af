//! `[store] url`: a PostgreSQL store for `warden serve` replicas (issue 19). The URL names
//! where the database is and who connects; the password never appears in the config's text
//! (a file that is read by many and checked into repositories), so a URL holding one is
//! refused. The password is the secret `[store] password_secret` names (`[secrets.<name>]`:
//! an environment variable, a file or AWS Secrets Manager), else the environment's
//! `PGPASSWORD`, as every PostgreSQL client takes it.
//!
//! TLS is set in the URL's query as libpq's: `sslmode` (`disable`, `prefer` — the default —,
//! `require`, `verify-ca`, `verify-full`) and `sslrootcert=<file>`, the CA certificates (PEM)
//! that signed the server's; a relative path is relative to the config file's folder. The
//! file is read when the config is; the connection itself is made in `store/postgres/tls.rs`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::RootCerts;
use crate::secrets::Secret;

/// A validated `postgres://` URL with no password in it, and the secret holding the password.
#[derive(Clone)]
pub struct StoreUrl {
    /// As written: names the store in errors and logs.
    text: String,
    /// What tokio-postgres reads: `text` without the TLS keys this module reads itself
    /// (tokio-postgres knows neither `verify-*` nor `sslrootcert`).
    client: String,
    tls: PgTls,
    /// `[store] password_secret`; None: `PGPASSWORD`.
    password: Option<Arc<Secret>>,
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is checked only against
    /// an `sslrootcert` given (as libpq).
    Prefer,
    /// TLS or no connection; the certificate is checked only against an `sslrootcert`
    /// given (as libpq: then it means `verify-ca`).
    Require,
    /// TLS with a certificate signed by `sslrootcert`'s CAs, for any host name.
    VerifyCa,
    /// TLS with a certificate signed by `sslrootcert`'s CAs and naming the URL's host.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// The URL's TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    /// `sslrootcert`, read.
    pub root: Option<RootCerts>,
}

impl PgTls {
    /// Whether the server's certificate must chain to `root` (any mode but `disable` given
    /// an `sslrootcert`, as libpq), and whether it must also name the host.
    pub fn verifies(&self) -> (bool, bool) {
        let chain = self.root.is_some() && self.mode != SslMode::Disable;
        (chain, chain && self.mode == SslMode::VerifyFull)
    }
}

impl fmt::Display for PgTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sslmode={}", self.mode.as_str())?;
        if let Some(root) = &self.root {
            write!(f, ", sslrootcert={}", root.path.display())?;
        }
        Ok(())
    }
}

/// The query's TLS keys: read here, not passed to tokio-postgres.
const TLS_KEYS: [&str; 2] = ["sslmode", "sslrootcert"];
/// libpq's client-certificate keys, which this store does not support.
const CLIENT_CERT_KEYS: [&str; 4] = ["sslcert", "sslkey", "sslpassword", "sslcrl"];

impl PartialEq for StoreUrl {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
            && self.password.as_ref().map(|s| &s.id) == other.password.as_ref().map(|s| &s.id)
    }
}

impl Eq for StoreUrl {}

impl StoreUrl {
    /// Checks `text`, a relative `sslrootcert` being relative to the working folder.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_in(text, Path::new(""))
    }

    /// Checks `text` (the error says what is wrong with it, for the `store.url` key) and
    /// reads its `sslrootcert`, relative to `base`.
    pub fn parse_in(text: &str, base: &Path) -> Result<Self, String> {
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
        if url.host_str().is_none_or(str::is_empty) {
            return Err("names no host".into());
        }
        let query = |key: &str| {
            url.query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        // libpq takes a key's last value, this check would take its first: once only.
        if let Some(key) = TLS_KEYS
            .into_iter()
            .find(|key| url.query_pairs().filter(|(k, _)| k == key).count() > 1)
        {
            return Err(format!("`{key}` is given more than once: give it once"));
        }
        if let Some(key) = CLIENT_CERT_KEYS.into_iter().find(|k| query(k).is_some()) {
            return Err(format!(
                "`{key}`: client certificates are not supported; the store authenticates \
                 with a password (`[store] password_secret` or PGPASSWORD)"
            ));
        }
        let mode = match query("sslmode") {
            None => SslMode::Prefer,
            Some(mode) => SslMode::parse(&mode).ok_or_else(|| {
                format!(
                    "sslmode `{mode}`: expected disable, prefer, require, verify-ca or verify-full"
                )
            })?,
        };
        let root = match query("sslrootcert") {
            None => None,
            Some(file) if file == "system" => {
                return Err("`sslrootcert=system` (the system's CAs) is not supported; \
                     name the file of the CA certificates that signed the server's"
                    .into());
            }
            Some(_) if mode == SslMode::Disable => {
                return Err("`sslrootcert` with `sslmode=disable`: nothing would be \
                     verified; drop one of them"
                    .into());
            }
            Some(file) => Some(RootCerts::read(base.join(file), "sslrootcert")?),
        };
        if root.is_none() && matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) {
            return Err(format!(
                "`sslmode={}` needs `sslrootcert=<file>`: the CA certificates (PEM) that \
                 signed the server's certificate",
                mode.as_str()
            ));
        }
        let client = without_keys(text, &TLS_KEYS);
        let read = client
            .parse::<tokio_postgres::Config>()
            .map_err(|e| format!("not a PostgreSQL connection URL: {e}"))?;
        // The client reads the URL its own way (the first `@` anywhere ends its user part):
        // it must connect to the host checked here, and be given no password by the URL.
        if read.get_password().is_some() {
            return Err(
                "must not hold a password (the PostgreSQL client reads one in it): \
                 write the URL without `@` outside its user part, and name the password's \
                 secret with `[store] password_secret`"
                    .into(),
            );
        }
        let hosts: Vec<String> = read
            .get_hosts()
            .iter()
            .map(|host| match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let written: Vec<&str> = url
            .host_str()
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .collect();
        if hosts != written {
            return Err(format!(
                "names host `{}`, but the PostgreSQL client would connect to `{}`: an `@` \
                 outside the user part, or a `host` in the query? Write the host once, \
                 after `user@`",
                written.join(","),
                hosts.join(",")
            ));
        }
        Ok(Self {
            text: text.to_string(),
            client,
            tls: PgTls { mode, root },
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

    pub fn tls(&self) -> &PgTls {
        &self.tls
    }

    /// The client settings, with the password: the secret's value as read at load, else
    /// `PGPASSWORD` when it is set. (The store asks for the secret's current value, a rotated
    /// one included, each time it connects.)
    pub fn client_config(&self) -> tokio_postgres::Config {
        let mut config: tokio_postgres::Config =
            self.client.parse().expect("checked by StoreUrl::parse");
        config.ssl_mode(match self.tls.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
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

/// `text` without the query's `keys`, the rest kept byte for byte (tokio-postgres decodes
/// the query itself, and re-encoding it could change a value).
fn without_keys(text: &str, keys: &[&str]) -> String {
    let Some(start) = text.find('?') else {
        return text.to_string();
    };
    let end = text[start..].find('#').map_or(text.len(), |i| start + i);
    let kept: Vec<&str> = text[start + 1..end]
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or(pair);
            !keys.contains(&key)
        })
        .collect();
    let mut out = text[..start].to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    out.push_str(&text[end..]);
    out
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
    use super::{SslMode, StoreUrl};

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
                "postgres://warden@db/warden?sslmode=verify",
                "sslmode `verify`: expected disable, prefer, require, verify-ca or verify-full",
            ),
            (
                "postgres://warden@db/warden?sslmode=verify-full",
                "`sslmode=verify-full` needs `sslrootcert=<file>`",
            ),
            (
                "postgres://warden@db/warden?sslmode=verify-ca",
                "`sslmode=verify-ca` needs `sslrootcert=<file>`",
            ),
            (
                "postgres://warden@db/warden?sslmode=disable&sslrootcert=ca.pem",
                "`sslrootcert` with `sslmode=disable`",
            ),
            (
                "postgres://warden@db/warden?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
                "sslrootcert /nonexistent/ca.pem: cannot read it",
            ),
            (
                "postgres://warden@db/warden?sslmode=verify-full&sslrootcert=system",
                "`sslrootcert=system` (the system's CAs) is not supported",
            ),
            (
                "postgres://warden@db/warden?sslcert=client.pem",
                "`sslcert`: client certificates are not supported",
            ),
            ("db/warden", "not a URL"),
            // libpq would take the last: either one is a guess.
            (
                "postgres://warden@db/warden?sslmode=disable&sslmode=require",
                "`sslmode` is given more than once",
            ),
            // Read two ways: the client would send the password to `prod`.
            (
                "postgres://db.internal/warden?user=warden&application_name=warden@prod",
                "names host `db.internal`, but the PostgreSQL client would connect to `prod`",
            ),
            (
                "postgres://db.internal:5432/w?user=w&application_name=x@y",
                "must not hold a password",
            ),
        ] {
            let err = StoreUrl::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn tls_settings_are_read_and_left_out_of_what_tokio_postgres_reads() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();

        let text = "postgres://warden@db/warden?application_name=a%20b&sslmode=verify-full\
                    &sslrootcert=ca.pem&connect_timeout=3";
        let url = StoreUrl::parse_in(text, dir.path()).unwrap();
        assert_eq!(url.as_str(), text);
        assert_eq!(url.tls().mode, SslMode::VerifyFull);
        let root = url.tls().root.as_ref().unwrap();
        assert_eq!(root.path, dir.path().join("ca.pem"));
        assert_eq!(root.certs, [ca.der().clone()]);
        assert_eq!(url.tls().verifies(), (true, true));
        let config = url.client_config();
        assert_eq!(config.get_application_name(), Some("a b"));
        assert_eq!(
            config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );

        for (query, mode, verifies, client_mode) in [
            ("", SslMode::Prefer, (false, false), "Prefer"),
            (
                "?sslmode=disable",
                SslMode::Disable,
                (false, false),
                "Disable",
            ),
            (
                "?sslmode=require",
                SslMode::Require,
                (false, false),
                "Require",
            ),
            // As libpq: `require` with a CA file checks the certificate against it.
            (
                "?sslmode=require&sslrootcert=ca.pem",
                SslMode::Require,
                (true, false),
                "Require",
            ),
            (
                "?sslmode=verify-ca&sslrootcert=ca.pem",
                SslMode::VerifyCa,
                (true, false),
                "Require",
            ),
        ] {
            let url = StoreUrl::parse_in(&format!("postgres://w@db/w{query}"), dir.path())
                .unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_eq!(url.tls().mode, mode, "{query}");
            assert_eq!(url.tls().verifies(), verifies, "{query}");
            assert_eq!(
                format!("{:?}", url.client_config().get_ssl_mode()),
                client_mode,
                "{query}"
            );
        }
        let empty = StoreUrl::parse_in(
            "postgres://w@db/w?sslmode=verify-full&sslrootcert=empty.pem",
            dir.path(),
        )
        .unwrap_err();
        assert!(empty.contains("empty.pem: holds no certificate"), "{empty}");
        std::fs::write(
            dir.path().join("garbage.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let garbage = StoreUrl::parse_in(
            "postgres://w@db/w?sslmode=verify-full&sslrootcert=garbage.pem",
            dir.path(),
        )
        .unwrap_err();
        assert!(
            garbage.contains("garbage.pem: certificate 1 of the file:"),
            "{garbage}"
        );
    }
}

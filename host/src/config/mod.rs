//! The operator's TOML file, parsed once into a validated model that the runtime only reads.

mod channels;
mod hosts;
mod locate;
mod outline;
mod policy;
mod raw;
mod root_certs;
mod serve;
mod store;
mod store_url;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use channels::slack_webhook_url;
pub use channels::{Channel, ChannelKind, NotifyEvent};
pub use hosts::{AllowList, HostRule, is_localhost_name, is_public, origin};
pub use locate::Location;
pub use outline::Outline;
pub use policy::{ApprovalPolicy, GROUP_PREFIX, MAX_APPROVALS_REQUIRED};
pub use root_certs::RootCerts;
pub use serve::{
    ApiToken, DEFAULT_NEW_REQUESTS_PER_MINUTE, DEFAULT_UNKNOWN_TOKENS_PER_MINUTE, DURATION_FIELD,
    FieldSpec, FieldType, Role, ServeSettings, TokenDigest,
};
pub use store_url::{PgTls, SslMode, StoreUrl};

use locate::SourceMap;
use raw::{RawCompile, RawConfig, RawFlow, RawHttp, RawLimits, RawSecret};
use validate::Validator;

use crate::secrets::{
    AwsFetch, AwsSecret, DEFAULT_SECRET_CACHE_SECONDS, Secret, SecretSource, SecretValue,
    json_key_value,
};

const MAX_SECRET_CACHE_SECONDS: u64 = 86_400;

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
    /// Secrets the flow could seal under a config served before this one (a reload took
    /// them away, renamed them or moved the flow): a server it sent them to may still hold
    /// their values, which stay redacted from everything it receives. Set by a reload.
    pub sealed_before: BTreeSet<String>,
}

impl Grants {
    /// Every secret whose values no response the flow receives may show: those it can seal
    /// now, and those it could before.
    pub fn redacted_ids(&self) -> impl Iterator<Item = &str> {
        self.secrets
            .keys()
            .map(String::as_str)
            .chain(self.sealed_before.iter().map(String::as_str))
    }
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
    /// Who may approve or deny its requests, and how many must approve (`warden serve`).
    pub policy: ApprovalPolicy,
    /// The request fields `warden serve` accepts; empty: any fields.
    pub fields: BTreeMap<String, FieldSpec>,
    /// `[flows.<flow>.notify]`: the channels each kind of event goes to.
    pub notify: BTreeMap<NotifyEvent, Vec<String>>,
}

#[derive(Debug)]
pub struct Config {
    /// The file this was read from; relative paths in it are relative to its folder.
    pub source: PathBuf,
    pub store_path: PathBuf,
    /// `[store] url`: PostgreSQL instead of the SQLite file at `store_path`.
    pub store_url: Option<StoreUrl>,
    /// Where compiled plugins are kept between runs: `[cache] dir`, else the user's own
    /// cache folder ([`crate::runtime::plugin::user_cache_dir`]); `None` when neither is known, and
    /// plugins are compiled every time.
    pub cache_dir: Option<PathBuf>,
    /// `[http]`: what plugins' requests trust.
    pub http: HttpSettings,
    pub compile: CompileLimits,
    pub secrets: BTreeMap<String, Arc<Secret>>,
    pub integrations: BTreeMap<String, Arc<Integration>>,
    pub environments: BTreeMap<String, Arc<Environment>>,
    pub flows: BTreeMap<String, Arc<Flow>>,
    pub serve: ServeSettings,
    /// `[groups.*]`: each group's members (lowercase emails), for flows' `approvers`.
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// `[channels.<name>]`: where notifications go.
    pub channels: BTreeMap<String, Arc<Channel>>,
}

/// `[http]`: settings of the network plugins' requests go out on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// `ca_file`'s authorities: servers' certificates signed by them are trusted for `https`
    /// as well as those signed by the public web's authorities (built in, `webpki-roots`).
    pub extra_roots: Option<RootCerts>,
    /// `spin_wait_us`: how long a request to a server that answers fast polls for its answer
    /// before it sleeps (`capabilities/http/spin.rs`); zero never polls.
    pub spin_wait: std::time::Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            extra_roots: None,
            spin_wait: crate::capabilities::http::spin::DEFAULT_SPIN_WAIT,
        }
    }
}

/// `[compile]`: what compiling one plugin may take before it is stopped and the plugin
/// refused (`runtime/plugin/isolated.rs`). Only the `warden` binary can stop a compile: it
/// compiles in a child process, which these bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileLimits {
    /// `timeout_seconds`, wall time.
    pub timeout: std::time::Duration,
    /// `memory_mib`: the compiling process's address space.
    pub memory_bytes: u64,
}

impl CompileLimits {
    /// Measured here: a Python plugin (18 MB, the interpreter inside) compiles in about 10 s
    /// and 0.6 GB; the Rust plugins in well under a second.
    pub const DEFAULT_TIMEOUT_SECONDS: u64 = 120;
    pub const DEFAULT_MEMORY_MIB: u64 = 4096;
    /// Below this the compiler itself (its threads, its code) cannot start.
    pub const MIN_MEMORY_MIB: u64 = 256;
}

impl Default for CompileLimits {
    fn default() -> Self {
        Self {
            timeout: std::time::Duration::from_secs(Self::DEFAULT_TIMEOUT_SECONDS),
            memory_bytes: Self::DEFAULT_MEMORY_MIB << 20,
        }
    }
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

/// One line: the key and the message quote what the file says, which may hold line breaks
/// and terminal escapes; written out escaped, neither can draw a line of its own.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::cli::escape::escape_control;
        write!(f, "{}", escape_control(&self.file.display().to_string()))?;
        if let Some(loc) = self.location {
            write!(f, ":{loc}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", escape_control(&self.key))?;
        }
        write!(f, ": {}", escape_control(&self.message))
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

impl ConfigErrors {
    /// How many problems, then each on its own line: what every command prints.
    pub fn summary(&self) -> String {
        format!("{} problem(s) in the config:\n{self}", self.0.len())
    }
}

impl Config {
    /// Reads, parses and validates `path`, resolving secrets from the process environment
    /// and files.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = read_bounded_text(path, MAX_CONFIG_BYTES).map_err(|e| {
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
        Self::parse_with(text, path, env, &crate::secrets::fetch_blocking)
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
}

/// The most a secret or token file may hold: these are single values, and a path pointed at
/// a log, an archive or `/dev/zero` by mistake must not be read whole.
pub const MAX_VALUE_FILE_BYTES: u64 = 64 * 1024;

/// Reads a file that holds one value (a secret, a token), refusing one over
/// [`MAX_VALUE_FILE_BYTES`] without reading past that.
pub(crate) fn read_small_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    open_regular(path)?
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

/// Reads a file of at most `max` bytes without reading past that, refusing what is not a
/// regular file: a path pointed at a log, `/dev/zero` or a file of `/proc` (regular files
/// that never end) is named as the problem instead of filling memory.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = open_regular(path)?;
    let too_large = || std::io::Error::other(format!("it holds more than {}", human_size(max)));
    // A regular file says how long it is; a file of `/proc` says 0, and is read to the bound.
    if file.metadata()?.len() > max {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    Ok(bytes)
}

/// `bytes` in KiB or MiB, as limits are written.
fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// A UTF-8 file of at most `max` bytes ([`read_bounded`]).
pub fn read_bounded_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, max)?)
        .map_err(|_| std::io::Error::other("it is not UTF-8 text"))
}

/// The most a config file may hold.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Opens a file the config names for a value or certificates, refusing what is not a regular
/// file. Opening a FIFO for reading waits for a writer, and reading a device or a socket may
/// never end, so a path pointed at one by mistake would hang `warden check` and every start
/// instead of being named as the problem; the open itself does not wait (`O_NONBLOCK`, which
/// changes nothing for a regular file).
pub(crate) fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a folder"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::other(format!("it is {what}")));
    }
    Ok(file)
}

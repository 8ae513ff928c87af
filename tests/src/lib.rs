//! Shared pieces of warden's end-to-end tests: the plugins built for them, and configs
//! written to a scratch folder.

use std::path::{Path, PathBuf};

pub use victorops_standin;

pub mod moto;
pub mod python;
pub mod raw_client;
pub mod receiver;
pub mod shapes;
pub mod tls;
pub mod web;

/// Hex decoded (the probe plugin's `http-hex` answers, webhook signatures): `None` unless
/// it is whole hex pairs.
pub fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Paths of the plugins `build.rs` built: `ALLOWLIST`, `PROBE`, `VICTOROPS`, ... for
/// wasm32-wasip2 and `ALLOWLIST_WASIP1` for wasm32-wasip1.
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
}

/// A scratch folder holding a `warden.toml` and whatever files it refers to.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a scratch folder"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `name` inside the folder and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Writes `warden.toml`.
    pub fn config(&self, toml: &str) -> PathBuf {
        self.write("warden.toml", toml)
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Config lines for tests of what one environment may reach of another's: `main` holds the
/// `victorops` integration (secret `vo_key`, read from `vo.key`) and `finance` the `billing`
/// integration (secret `billing_key`, from `billing.key`). Writes both files; `victorops`
/// lines are added to the victorops integration's table.
pub fn two_environments(
    scratch: &Scratch,
    vo_secret: &str,
    billing_secret: &str,
    victorops: &str,
) -> String {
    scratch.write("vo.key", vo_secret);
    scratch.write("billing.key", billing_secret);
    format!(
        r#"
[secrets.vo_key]
source = "file"
path = "vo.key"

[secrets.billing_key]
source = "file"
path = "billing.key"

[integrations.victorops]
type = "custom"
external_id = "vo-ext"
secrets = ["vo_key"]
{victorops}

[integrations.billing]
type = "custom"
external_id = "bill-ext"
secrets = ["billing_key"]

[environments.main]
integrations = {{ victorops = "victorops" }}

[environments.finance]
integrations = {{ billing = "billing" }}
"#
    )
}

/// `path` as a TOML string literal.
pub fn toml_path(path: &str) -> String {
    format!("{path:?}")
}

/// The probe with every `warden:plugin/...@0.1.0` name renamed to `@0.2.0` (same length, so
/// the binary stays well-formed).
pub fn other_wit_version(bytes: &[u8]) -> Vec<u8> {
    let from = b"warden:plugin/";
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i + from.len() < out.len() {
        if out[i..].starts_with(from) {
            let rest = i + from.len();
            if let Some(at) = out[rest..rest + 40.min(out.len() - rest)]
                .iter()
                .position(|b| *b == b'@')
            {
                let version = rest + at + 1;
                if out[version..].starts_with(b"0.1.0") {
                    out[version + 2] = b'2';
                }
            }
        }
        i += 1;
    }
    out
}

/// [`start_serve`] on `dir/warden.toml`, its log written to `dir/serve-{name}.log`; a
/// failure to start panics with that log, which is what the crash and replica tests need.
pub fn start_serve_logged(binary: &str, dir: &Path, name: &str) -> ServeProcess {
    let log_path = dir.join(format!("serve-{name}.log"));
    let log = std::fs::File::create(&log_path).expect("create the serve log");
    start_serve(binary, &dir.join("warden.toml"), &[], log.into()).unwrap_or_else(|e| {
        panic!(
            "{e}; its log: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    })
}

/// A `warden serve` process started by [`start_serve`].
pub struct ServeProcess {
    pub child: std::process::Child,
    /// Its base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The rest of its stdout, after the `listening on` line.
    pub stdout: std::io::BufReader<std::process::ChildStdout>,
}

/// Starts `binary serve --listen 127.0.0.1:0 [extra] --config config` and waits for the
/// address it prints. `binary` is a test's `env!("CARGO_BIN_EXE_warden")` (only the warden
/// package's tests know it); its log goes to `stderr`. `Err` carries the first line it
/// printed instead, for the caller to report with its log.
pub fn start_serve(
    binary: &str,
    config: &Path,
    extra: &[&str],
    stderr: std::process::Stdio,
) -> Result<ServeProcess, String> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("run warden serve");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("read warden serve's stdout");
    match line.trim().strip_prefix("listening on ") {
        Some(url) => Ok(ServeProcess {
            url: url.to_string(),
            child,
            stdout,
        }),
        None => {
            child.kill().ok();
            child.wait().ok();
            Err(format!(
                "warden serve did not start: its first line was {line:?}"
            ))
        }
    }
}

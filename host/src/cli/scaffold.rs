//! `warden new plugin NAME`: a plugin crate that builds and passes `warden test` as created;
//! with `--lang python`, a Python plugin's folder ([`new_python_plugin`]).

use std::path::{Path, PathBuf};

mod python;
pub use python::new_python_plugin;

/// This repository's guest SDK, the new crate's default `warden-sdk` (the SDK is not
/// published yet).
pub fn bundled_sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk")
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "`{0}` is not a valid plugin name: use lowercase letters, digits, `-` and `_`, starting with a letter"
    )]
    Name(String),
    #[error("{} already exists; choose another name or folder", .0.display())]
    Exists(PathBuf),
    #[error(
        "the warden SDK is not at {}: pass --sdk-path with the folder holding warden-sdk's Cargo.toml",
        .0.display()
    )]
    Sdk(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ScaffoldError::Name(name.to_string()))
    }
}

/// Creates the crate `name` inside `parent`; returns its folder.
pub fn new_plugin(name: &str, parent: &Path, sdk: &Path) -> Result<PathBuf, ScaffoldError> {
    check_name(name)?;
    let sdk = std::path::absolute(sdk).unwrap_or_else(|_| sdk.to_path_buf());
    let sdk = sdk.canonicalize().unwrap_or(sdk);
    if !sdk.join("Cargo.toml").is_file() {
        return Err(ScaffoldError::Sdk(sdk));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let lib = name.replace('-', "_");
    let files = [
        ("Cargo.toml", cargo_toml(name, &lib, &sdk)),
        (
            "src/lib.rs",
            LIB_RS
                .replace("{name}", name)
                .replace("{Type}", &type_name(name)),
        ),
        (
            &format!("tests/{lib}.toml") as &str,
            [TEST_TOML, TEST_CASES].concat().replace("{name}", name),
        ),
        (".gitignore", "/target\n".to_string()),
    ];
    write_files(&dir, files)?;
    Ok(dir)
}

/// Writes each `(path relative to dir, contents)`, making folders as needed; an error names
/// the file.
pub(super) fn write_files<'a>(
    dir: &Path,
    files: impl IntoIterator<Item = (&'a str, String)>,
) -> Result<(), ScaffoldError> {
    for (relative, contents) in files {
        let path = dir.join(relative);
        let write = || {
            std::fs::create_dir_all(path.parent().expect("inside the plugin's folder"))?;
            std::fs::write(&path, contents)
        };
        write().map_err(|source| ScaffoldError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// `on-duty` → `OnDutyPlugin` (the suffix keeps names such as `event` clear of the SDK's
/// types).
fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .chain(["Plugin".to_string()])
        .collect()
}

fn cargo_toml(name: &str, lib: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
name = "{lib}"
# A WebAssembly component: build with `cargo build --release --target wasm32-wasip2`.
crate-type = ["cdylib"]

[dependencies]
warden-sdk = {{ path = {sdk} }}
serde_json = "1"

# Small, fast-loading plugins: optimise for size, no debug info.
[profile.release]
opt-level = "s"
lto = true
debug = false
codegen-units = 1

# A workspace of its own, so the crate builds wherever it is created.
[workspace]
"#,
        sdk = toml::Value::String(sdk.display().to_string())
    )
}

const LIB_RS: &str = r#"//! {name}: a warden plugin.
//!
//! Approves a request when the status API says the requester is on duty; anything else
//! (not on duty, or the API failing) goes to a human.
//!
//! Flow vars: `integration`, the alias of the integration to use (default `status`). That
//! integration's `api_url` setting is the API's base URL and its first secret the API token,
//! sent sealed so the plugin never sees it.

use warden_sdk::prelude::*;

struct {Type};

#[warden_sdk::plugin]
impl Plugin for {Type} {
    fn on_request(event: &Event) -> Result<Decision> {
        let email = &event.requester.email;
        match on_duty(event, email) {
            Ok(true) => {
                let reason = event.text("reason").unwrap_or_default();
                Ok(Decision::approve(format!("Auto-approved: on duty: {reason}")))
            }
            Ok(false) => {
                info!("{email} is not on duty: a human decides");
                Ok(Decision::Continue)
            }
            Err(error) => {
                warn!("cannot ask the status API about {email}: {error}");
                Ok(Decision::Continue)
            }
        }
    }
}

fn on_duty(event: &Event, email: &str) -> Result<bool> {
    let status = integration(event.var_or("integration", "status"))?;
    let Some(api_url) = status.setting("api_url") else {
        bail!("the integration has no `api_url` setting");
    };
    let response = http::get(format!("{}/v1/duty", api_url.trim_end_matches('/')))
        .query("email", email)
        .header("Accept", "application/json")
        .header_secret("Authorization", status.secret(0)?)
        .send()?;
    if !response.ok() {
        bail!("the status API answered {}", response.status());
    }
    let body: serde_json::Value = response.json()?;
    Ok(body["on_duty"].as_bool().unwrap_or(false))
}
"#;

const TEST_TOML: &str = r#"# Tests for {name}: run `warden test` in this crate (after
# `cargo build --release --target wasm32-wasip2`).
#
# Keys at the top are defaults for every [[case]]; a case may override any of them.

[flow]
allowed_hosts = ["https://status.example.com"]

"#;

/// The cases of a new plugin's test file, the same for every language: only the head (how
/// to build, the flow's grants) differs.
pub(super) const TEST_CASES: &str = r#"[secrets]
status_token = "test-token"

[integrations.status]
type = "custom"
external_id = "status"
secrets = ["status_token"]
settings = { api_url = "https://status.example.com" }

[event]
user = { email = "alice@example.com" }
fields = { reason = "fix the deploy" }

[[case]]
name = "on duty: approved"
[[case.mock]]
method = "GET"
url = "https://status.example.com/v1/duty"
query = { email = "alice@example.com" }
headers = { Authorization = { secret = "status_token" } }
times = 1
respond = { status = 200, json = { on_duty = true } }
[case.expect]
decision = "approve"
reason = "Auto-approved: on duty: fix the deploy"

[[case]]
name = "off duty: a human decides"
[[case.mock]]
url = "https://status.example.com/v1/duty"
respond = { json = { on_duty = false } }
[case.expect]
decision = "continue"
logs = [{ level = "info", contains = "not on duty" }]

[[case]]
name = "the API failing: a human decides"
[[case.mock]]
url = "https://status.example.com/v1/duty"
respond = { status = 503, body = "unavailable" }
[case.expect]
decision = "continue"
logs = [{ level = "warn", contains = "answered 503" }]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("on-duty"), "OnDutyPlugin");
        assert_eq!(type_name("a_b-c9"), "ABC9Plugin");
        assert_eq!(type_name("event"), "EventPlugin");
    }
}

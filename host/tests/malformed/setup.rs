//! What the malformed-input tests share: the valid config each case breaks one thing in, a
//! `warden` run fed its input on stdin, and an in-process server to send broken bodies to,
//! so each test is its list of cases.

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};
use warden::Config;
use warden_tests::{Scratch, artifacts, toml_path};

/// A valid config; each case in `malformed.rs` breaks one thing in it. Line numbers matter: the
/// expected errors name them.
pub(crate) const VALID: &str = r#"[secrets.key]
source = "env"
name = "WARDEN_TEST_KEY"

[integrations.vo]
type = "custom"
external_id = "ext-1"
secrets = ["key"]

[environments.main]
integrations = { vo = "vo" }

[flows.access]
environment = "main"
plugin = "plugin.wasm"
"#;

pub(crate) fn parse(scratch: &Scratch, text: &str) -> Result<Config, Vec<String>> {
    scratch.write("plugin.wasm", b"\0asm");
    let env = |name: &str| (name == "WARDEN_TEST_KEY").then(|| "k-123".to_string());
    Config::parse(text, &scratch.path().join("warden.toml"), &env).map_err(|errors| {
        for e in &errors.0 {
            assert!(e.location.is_some(), "no line and column: {e}");
        }
        errors.0.iter().map(ToString::to_string).collect()
    })
}

/// `VALID` with `from` replaced by `to` (which must occur once), or with `to` appended when
/// `from` is empty.
pub(crate) fn broken(from: &str, to: &str) -> String {
    if from.is_empty() {
        return format!("{VALID}{to}");
    }
    assert_eq!(VALID.matches(from).count(), 1, "`{from}` must occur once");
    VALID.replace(from, to)
}

pub(crate) fn warden(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // warden may refuse before reading it all; a broken pipe is not the test's concern.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().unwrap()
}

pub(crate) const ADMIN: &str = "admin-token-malformed-tests";

pub(crate) struct Api {
    pub(crate) server: warden::serve::Server,
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
}

impl Api {
    pub(crate) async fn start(scratch: &Scratch) -> Self {
        scratch.write("admin.token", ADMIN);
        let config = scratch.config(&format!(
            r#"
[store]
path = "warden.db"

[serve]
max_body_bytes = 4096

[serve.tokens.admin]
token_file = "admin.token"
user = "admin@example.com"
role = "admin"

[environments.main]

[flows.human]
environment = "main"
plugin = {probe}
vars = {{ action = "continue" }}

[flows.strict]
environment = "main"
plugin = {probe}
vars = {{ action = "approve:ran" }}
fields.reason = {{ type = "string", required = true }}
fields.count = {{ type = "int" }}
fields.duration = {{ type = "duration" }}

[flows.listed]
environment = "main"
plugin = {probe}
vars = {{ action = "continue" }}
fields.teams = {{ type = "list", required = true }}
"#,
            probe = toml_path(artifacts::PROBE)
        ));
        let server = warden::serve::Server::start(&config, Some("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let base = format!("http://{}", server.local_addr());
        Self {
            server,
            http: reqwest::Client::new(),
            base,
        }
    }

    pub(crate) async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text })),
        )
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        serde_json::from_str(&response.text().await.unwrap()).unwrap()
    }
}

pub(crate) fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

//! Text a plugin chose, in what the `warden` binary prints: a plugin whose log line, stdout,
//! stderr, error, reason, the names it asks for (quoted back by refusals) and the request it
//! sends all hold a newline followed by a fake log entry, terminal escape sequences and other
//! control characters. In `warden hook`'s log, `warden serve`'s human log and `warden test`'s
//! report none of it starts a line or reaches the terminal raw; the JSON outputs keep the text
//! whole, one object per line. The plugin is the `raw` test plugin's `forge` verb.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use serde_json::{Value, json};
use warden_tests::{Scratch, artifacts, start_serve, toml_path};

/// A line break, then what a log entry of the host looks like, then colour, a C1 control
/// sequence introducer (clear the screen), a bell, a carriage return and DEL.
const FORGED: &str = "line1\n2026-01-01T00:00:00.000000Z  INFO warden: forged entry\x1b[31m red\x1b[0m \u{9b}2J\x07\r\x7f end";
/// How the fake entry starts: no printed line may.
const FORGED_START: &str = "2026-01-01T00:00:00.000000Z";
const ADMIN_TOKEN: &str = "admin-token-plugin-text";

/// `text` as a TOML string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// `output` shows the plugin's text (`shown` of it at least) on lines of the host's own,
/// escaped: no line starts with the fake entry and no control character but `\n` is left.
fn assert_escaped(what: &str, output: &str, shown: &str) {
    assert!(
        output.contains(shown),
        "{what}: the text is not shown:\n{output}"
    );
    assert!(
        output.contains("line1\\n2026-01-01T00:00:00.000000Z  INFO warden: forged entry\\x1b[31m"),
        "{what}: the text is not shown escaped:\n{output}"
    );
    for line in output.lines() {
        assert!(
            !line.trim_start().starts_with(FORGED_START),
            "{what}: a forged line:\n{line}\nin:\n{output}"
        );
    }
    if let Some(c) = output.chars().find(|c| *c != '\n' && c.is_control()) {
        panic!("{what}: control character {c:?} printed raw:\n{output:?}");
    }
}

/// A config in `scratch`: flows `forge` (the forged text everywhere), `forged_handle` (a
/// handle the host never gave), and `healthy` (approves), all the raw plugin.
fn write_config(scratch: &Scratch) {
    scratch.write("admin.token", ADMIN_TOKEN);
    scratch.write(
        "event.json",
        json!({ "user": { "email": "admin@example.com" }, "fields": {} }).to_string(),
    );
    let flow = |name: &str, action: &str| {
        format!(
            "[flows.{name}]\nenvironment = \"main\"\nplugin = {}\nvars = {{ action = {} }}\n",
            toml_path(artifacts::RAW),
            toml_string(action)
        )
    };
    scratch.config(&format!(
        r#"
[store]
path = "warden.db"

[serve.tokens.admin]
token_file = "admin.token"
user = "admin@example.com"
role = "admin"

[environments.main]

{}
{}
{}
"#,
        flow("forge", &format!("forge:{FORGED}")),
        flow("forged_handle", "forged-handle"),
        flow("healthy", "approve:ok"),
    ));
}

#[test]
fn warden_hook_prints_a_plugins_text_escaped_and_its_json_whole() {
    let scratch = Scratch::new();
    write_config(&scratch);
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["hook", "--flow", "forge", "--event"])
        .arg(scratch.path().join("event.json"))
        .arg("--config")
        .arg(scratch.path().join("warden.toml"))
        .output()
        .expect("run warden hook");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stdout}\n{stderr}");

    // The plugin's log line, stdout and stderr, its refused secret id and alias, its error.
    assert_escaped("warden hook's log", &stderr, "INFO  plugin: line1\\n");
    for shown in [
        "INFO  plugin stdout: line1",
        "WARN  plugin stderr: line1",
        "secret `line1\\n",
        "alias `line1\\n",
        "the plugin returned an error: line1\\n",
    ] {
        assert!(stderr.contains(shown), "{shown}: {stderr}");
    }
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    // Whole, and with nothing a terminal acts on (serde leaves DEL and C1's CSI raw).
    let raw = stdout.chars().find(|c| *c != '\n' && c.is_control());
    assert_eq!(raw, None, "{stdout:?}");
    let decision: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(decision["decision"], "continue");
    let error = decision["error"].as_str().unwrap();
    assert!(error.ends_with(FORGED), "{error}");
}

#[test]
fn warden_hook_escapes_an_events_text_its_errors_quote() {
    let scratch = Scratch::new();
    write_config(&scratch);
    let event = serde_json::json!({ "name": FORGED, "user": { "email": "alice@example.com" } });
    scratch.write("forged-event.json", event.to_string());
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["hook", "--flow", "healthy", "--event"])
        .arg(scratch.path().join("forged-event.json"))
        .arg("--config")
        .arg(scratch.path().join("warden.toml"))
        .output()
        .expect("run warden hook");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_escaped("warden hook's error", &stderr, "`name` is `line1\\n");
}

/// `warden serve` with `log_format`; runs the three flows through the API (checking the
/// forged handle is blamed on the plugin and the next request is served) and returns its
/// log.
fn serve_log(log_format: &str) -> String {
    let scratch = Scratch::new();
    write_config(&scratch);
    let served = start_serve(
        env!("CARGO_BIN_EXE_warden"),
        &scratch.path().join("warden.toml"),
        &["--log-format", log_format],
        Stdio::piped(),
    );
    let mut process = served.unwrap_or_else(|e| panic!("{e}"));
    let stderr = drain(process.child.stderr.take().unwrap());
    let api = |method: &str, path: &str| -> Value {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let client = reqwest::Client::new();
            let url = format!("{}{path}", process.url);
            let request = match method {
                "POST" => client.post(url).body("{}"),
                _ => client.get(url),
            };
            let response = request.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
            let text = response.text().await.unwrap();
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
        })
    };
    let history = |flow: &str| -> Value {
        let created = api("POST", &format!("/v1/flows/{flow}/requests"));
        assert_eq!(created["state"], "pending", "{flow}: {created:#}");
        let stored = api(
            "GET",
            &format!("/v1/requests/{}", created["id"].as_str().unwrap()),
        );
        stored["history"]
            .as_array()
            .and_then(|h| h.iter().find(|e| e["hook"] == "on_request").cloned())
            .unwrap_or_else(|| panic!("{flow}: no on_request in {stored:#}"))
    };
    let forged = history("forge");
    assert_eq!(forged["blame"], "plugin", "{forged:#}");
    assert!(
        forged["error"].as_str().unwrap().ends_with(FORGED),
        "{forged:#}"
    );
    let handle = history("forged_handle");
    assert_eq!(handle["blame"], "plugin", "{handle:#}");
    assert!(
        handle["error"]
            .as_str()
            .unwrap()
            .contains("the plugin misused the interface: unknown handle index 30583"),
        "{handle:#}"
    );
    let healthy = api("POST", "/v1/flows/healthy/requests");
    assert_eq!(healthy["state"], "escalated", "{healthy:#}");

    let killed = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(process.child.wait().unwrap().success());
    let mut rest = String::new();
    process.stdout.read_to_string(&mut rest).ok();
    stderr.join().unwrap()
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        from.read_to_end(&mut bytes).ok();
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[test]
fn warden_serve_logs_a_plugins_text_escaped_in_the_human_format() {
    let log = serve_log("human");
    assert_escaped(
        "warden serve's log",
        &log,
        "flow `forge`, hook on_request: the plugin returned an error: line1\\n",
    );
    assert!(
        log.contains("flow `forged_handle`, hook on_request: the plugin misused the interface"),
        "{log}"
    );
}

#[test]
fn warden_serve_logs_one_json_object_per_line_with_the_text_whole() {
    let log = serve_log("json");
    let mut found = false;
    for line in log.lines() {
        let entry: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}\nin:\n{log}"));
        let message = entry["fields"]["message"].as_str().unwrap_or_default();
        found |= message.ends_with(FORGED);
    }
    assert!(found, "no entry holds the plugin's error whole:\n{log}");
    let raw = log.chars().find(|c| *c != '\n' && c.is_control());
    assert_eq!(raw, None, "a character a terminal acts on, raw");
}

/// `warden test suite` with the raw plugin, whose two cases both fail: its report.
fn failing_suite(scratch: &Scratch) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["test", "suite", "--plugin", artifacts::RAW])
        .current_dir(scratch.path())
        .output()
        .expect("run warden test");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(report.ends_with("\n0 passed, 2 failed\n"), "{report}");
    report
}

#[test]
fn warden_test_reports_a_plugins_text_escaped() {
    let scratch = Scratch::new();
    scratch.write(
        "suite/raw.toml",
        format!(
            r#"
[flow]
allowed_hosts = ["https://api.example.com"]

[event]
user = {{ email = "alice@example.com" }}

[[case]]
name = "forges"
vars = {{ action = {} }}
expect = {{ decision = "approve" }}

[[case]]
name = "reasons"
vars = {{ action = {} }}
expect = {{ decision = "deny" }}
"#,
            toml_string(&format!("forge:{FORGED}")),
            toml_string(&format!("approve:{FORGED}")),
        ),
    );
    let report = failing_suite(&scratch);
    assert_escaped(
        "warden test's report",
        &report,
        "+ the hook failed: flow `test`, hook on_request: the plugin returned an error: line1\\n",
    );
    for shown in [
        "+ got approve `line1\\n",
        "unexpected refusal (list it under expect.refusals if it is meant):\n  + secret refused: secret `line1\\n",
        // The forged request carries a header value with control characters: the http
        // capability refuses it before any transport (SECURITY.md, routing and framing
        // headers), so it reaches no mock and shows as a refusal.
        "+ header refused: header `x-forged` is refused: its value holds a control character",
        "  INFO  plugin: line1\\n",
    ] {
        assert!(report.contains(shown), "{shown}:\n{report}");
    }
}

#[test]
fn warden_test_escapes_an_events_name_and_a_plugin_files_name() {
    // Text checked by no one on its way to the report: an event's `name` quoted in the
    // error that refuses it, and the plugin's own file name in the error of a plugin that
    // cannot start.
    let scratch = Scratch::new();
    scratch.write(
        "suite/event.toml",
        format!(
            "[event]\nname = {}\nuser = {{ email = \"alice@example.com\" }}\n\n\
             [[case]]\nname = \"event\"\nvars = {{ action = \"approve:ok\" }}\n\
             expect = {{ decision = \"approve\" }}\n",
            toml_string(FORGED)
        ),
    );
    let report = failing_suite_of(&scratch, artifacts::RAW, 1);
    assert_escaped(
        "warden test's report of an event's name",
        &report,
        "`name` is `line1\\n",
    );

    let junk = scratch
        .path()
        .join(format!("junk{FORGED}.wasm").replace(['\n', '/'], "_"));
    std::fs::write(&junk, "not a component").unwrap();
    let report = failing_suite_of(&scratch, junk.to_str().unwrap(), 1);
    assert!(report.contains("junkline1_2026"), "{report}");
    assert!(report.contains("\\x1b[31m red"), "{report}");
    if let Some(c) = report.chars().find(|c| *c != '\n' && c.is_control()) {
        panic!("a control character ({c:?}) reached the report:\n{report}");
    }
}

fn failing_suite_of(scratch: &Scratch, plugin: &str, failed: usize) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["test", "suite", "--plugin", plugin])
        .current_dir(scratch.path())
        .output()
        .expect("run warden test");
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        report.ends_with(&format!("\n0 passed, {failed} failed\n")),
        "{report}"
    );
    report
}

#[test]
fn warden_test_reports_a_test_files_own_text_escaped() {
    // A test file is the plugin's, maybe someone else's: what it expects is quoted back
    // escaped, as the plugin's text is.
    let scratch = Scratch::new();
    // A one-line TOML string: a multi-line one cannot be a key.
    let forged: String = std::iter::once("\"".to_string())
        .chain(FORGED.chars().map(|c| match c {
            '"' | '\\' => format!("\\{c}"),
            c if c.is_control() => format!("\\u{:04x}", c as u32),
            c => c.to_string(),
        }))
        .chain(std::iter::once("\"".to_string()))
        .collect();
    scratch.write(
        "suite/expects.toml",
        format!(
            r#"
[flow]
allowed_hosts = ["https://api.example.com"]

[event]
user = {{ email = "alice@example.com" }}

[[mock]]
url = "https://api.example.com/x"
query = {{ {forged} = {forged} }}
respond = {{ status = 200 }}

[[case]]
name = "reason"
vars = {{ action = "approve:ok" }}
expect = {{ decision = "approve", reason = {forged}, logs = [{{ contains = {forged} }}], refusals = [{forged}] }}

[[case]]
name = "failure"
vars = {{ action = "approve:ok" }}
expect = {{ failure = {forged} }}
"#
        ),
    );
    let report = failing_suite(&scratch);
    assert_escaped(
        "warden test's report of a test file's text",
        &report,
        "  - expected `line1\\n",
    );
    for shown in [
        "expected a line containing `line1\\n",
        "expected a refusal containing `line1\\n",
        "expected the hook to fail with `line1\\n",
    ] {
        assert!(report.contains(shown), "{shown}:\n{report}");
    }
}

/// The `warden` binary run in `scratch` with `args`: its stdout and stderr, and exit code.
fn run_in(scratch: &Scratch, args: &[&str]) -> (String, String, Option<i32>) {
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(scratch.path())
        .output()
        .expect("run warden");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.code(),
    )
}

/// `text` as a one-line TOML basic string, fit for a key (JSON's escapes are TOML's too,
/// but for DEL, which TOML wants escaped and JSON leaves).
fn toml_key(text: &str) -> String {
    serde_json::to_string(text)
        .unwrap()
        .replace('\x7f', "\\u007f")
}

#[test]
fn check_users_and_hook_print_a_configs_and_an_events_names_escaped() {
    let scratch = Scratch::new();
    let forged = toml_key(FORGED);
    scratch.write("key.txt", "k");
    scratch.config(&format!(
        r#"
[secrets.{forged}]
source = "file"
path = "key.txt"

[integrations.{forged}]
type = {forged}
external_id = "vo"
secrets = [{forged}]

[environments.main]
integrations = {{ {forged} = {forged} }}

[flows.f]
environment = "main"
plugin = {}
allowed_hosts = ["https://api.example.com"]
"#,
        toml_path(artifacts::RAW)
    ));
    // `warden check`'s summary lists every name.
    let (stdout, stderr, code) = run_in(&scratch, &["check", "--config", "warden.toml"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_escaped(
        "warden check's summary",
        &stdout,
        "integrations      line1\\n",
    );
    assert!(stdout.contains("secrets           line1\\n"), "{stdout}");
    // `warden users` names the services the config declares.
    let (stdout, stderr, code) = run_in(
        &scratch,
        &[
            "users",
            "--config",
            "warden.toml",
            "set-identity",
            "a@example.com",
            "--service",
            "custom",
            "--service-id",
            "other",
            "--user-id",
            "a",
        ],
    );
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert_escaped("warden users' refusal", &stderr, "declared: line1\\n");
    // An event's own keys, quoted by the error that refuses them.
    scratch.write(
        "event.json",
        json!({ "user": { "email": "a@example.com" }, FORGED: 1 }).to_string(),
    );
    let (stdout, stderr, code) = run_in(
        &scratch,
        &[
            "hook",
            "--config",
            "warden.toml",
            "--flow",
            "f",
            "--event",
            "event.json",
        ],
    );
    assert_ne!(code, Some(0), "{stdout}\n{stderr}");
    assert_escaped(
        "warden hook's event error",
        &stderr,
        "unknown field `line1\\n",
    );
    // A plugin path the config names, in the error that what is there is no plugin.
    let named = format!("bad{FORGED}.wasm");
    scratch.write(&named, "not a plugin");
    scratch.config(&format!(
        "[environments.main]\n[flows.f]\nenvironment = \"main\"\nplugin = {}\n",
        toml_key(&named)
    ));
    let (stdout, stderr, code) = run_in(&scratch, &["check", "--config", "warden.toml"]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert_escaped("warden check's plugin error", &stderr, "badline1\\n");
}

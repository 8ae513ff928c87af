//! The `warden` binary end to end: `check` and `hook`, their output and exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use warden_tests::{Scratch, artifacts, toml_path};

const SECRET: &str = "cli-secret-value-42";

fn config(scratch: &Scratch, plugin: &str, vars: &str, limits: &str) -> std::path::PathBuf {
    scratch.write("key.txt", SECRET);
    scratch.config(&format!(
        r#"
[secrets.key]
source = "file"
path = "key.txt"

[integrations.victorops]
type = "custom"
external_id = "ext-1"
secrets = ["key"]

[environments.main]
integrations = {{ victorops = "victorops" }}

[flows.access]
environment = "main"
plugin = {plugin}
vars = {vars}
limits = {limits}
"#,
        plugin = toml_path(plugin)
    ))
}

fn warden(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run warden");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const ALICE: &str = r#"{"user":{"email":"alice@example.com","username":"alice@example.com"},"fields":{"reason":"fix prod"}}"#;

#[test]
fn check_prints_each_flow_with_its_hooks_and_grants() {
    let scratch = Scratch::new();
    let path = config(&scratch, artifacts::PROBE, "{}", "{ memory_mib = 32 }");
    let out = warden(&["check", "--config", path.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("1 flow(s)"), "{text}");
    assert!(text.contains("flow access"), "{text}");
    assert!(
        text.contains("hooks             on_request, on_escalate, after_request"),
        "{text}"
    );
    assert!(text.contains("integrations      victorops"), "{text}");
    assert!(text.contains("secrets           key"), "{text}");
    assert!(text.contains("identities        custom:ext-1"), "{text}");
    assert!(text.contains("allowed hosts     (none)"), "{text}");
    assert!(text.contains("memory 32 MiB, timeout 5000 ms"), "{text}");
    assert!(!text.contains(SECRET));
}

#[test]
fn check_lists_every_config_error_and_fails() {
    let scratch = Scratch::new();
    let path = scratch.config(
        "[flows.a]\nenvironment = \"nowhere\"\nplugin = \"missing.wasm\"\nallowed_hosts = [\"*\"]\ncolour = \"red\"\n",
    );
    let out = warden(&["check", "--config", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("4 problem(s) in the config"), "{err}");
    assert!(err.contains(":5:1: flows.a.colour: unknown key"), "{err}");
    assert!(
        err.contains("flow `a` names environment `nowhere`"),
        "{err}"
    );
    assert!(err.contains("missing.wasm does not exist"), "{err}");
    assert!(err.contains("`*` would allow every host"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn check_refuses_a_plugin_that_is_not_a_component() {
    let scratch = Scratch::new();
    let bogus = scratch.write("bogus.wasm", "#!/bin/sh\necho hi\n");
    let path = config(&scratch, bogus.to_str().unwrap(), "{}", "{}");
    let out = warden(&["check", "--config", path.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("flow `access`: plugin"), "{err}");
    assert!(err.contains("bogus.wasm: not a WebAssembly file"), "{err}");
}

#[test]
fn hook_prints_exactly_one_decision_and_logs_to_stderr() {
    let scratch = Scratch::new();
    let path = config(
        &scratch,
        artifacts::ALLOWLIST,
        "{ auto_approve = \"alice@example.com\" }",
        "{}",
    );
    let event = scratch.write("event.json", ALICE);
    let out = warden(
        &[
            "hook",
            "--config",
            path.to_str().unwrap(),
            "--flow",
            "access",
            "--hook",
            "on_request",
            "--event",
            event.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "{\"decision\":\"approve\",\"reason\":\"Auto-approved: alice@example.com is on the allowlist\"}\n"
    );
    assert!(stderr(&out).contains("INFO  plugin:"), "{}", stderr(&out));
}

#[test]
fn hook_reads_the_event_from_stdin() {
    let scratch = Scratch::new();
    let path = config(
        &scratch,
        artifacts::ALLOWLIST,
        "{ auto_approve = \"someone@example.com\" }",
        "{}",
    );
    let out = warden(
        &[
            "hook",
            "--config",
            path.to_str().unwrap(),
            "--flow",
            "access",
            "--event",
            "-",
        ],
        Some(ALICE),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"decision\":\"continue\"}\n");
}

#[test]
fn hook_hands_the_events_fields_on_as_serve_does() {
    let scratch = Scratch::new();
    let path = config(
        &scratch,
        artifacts::PROBE,
        "{ action = \"field:duration\" }",
        "{}",
    );
    let run = |event: &str| {
        warden(
            &[
                "hook",
                "--config",
                path.to_str().unwrap(),
                "--flow",
                "access",
                "--event",
                "-",
            ],
            Some(event),
        )
    };
    let out = run(r#"{"user":{"email":"alice@example.com"},"fields":{"duration":"2h"}}"#);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Some(FieldValue::DurationSeconds(7200))"),
        "{}",
        stdout(&out)
    );
    let out = run(r#"{"user":{"email":"alice@example.com"},"fields":{"duration":"forever"}}"#);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the event's fields, as warden serve refuses them: field `duration`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_failing_hook_fails_closed_with_exit_3() {
    let scratch = Scratch::new();
    let path = config(
        &scratch,
        artifacts::PROBE,
        "{ action = \"loop\" }",
        "{ timeout_ms = 200 }",
    );
    let out = warden(
        &[
            "hook",
            "--config",
            path.to_str().unwrap(),
            "--flow",
            "access",
            "--event",
            "-",
        ],
        Some(ALICE),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["decision"], "continue");
    assert_eq!(
        json["error"],
        "flow `access`, hook on_request: deadline exceeded: the hook ran longer than limits.timeout_ms = 200"
    );
    assert!(stderr(&out).contains("failing closed"), "{}", stderr(&out));
}

#[test]
fn secrets_are_redacted_from_plugin_logs_and_decisions() {
    let scratch = Scratch::new();
    let path = config(
        &scratch,
        artifacts::PROBE,
        "{ action = \"log-secret:victorops\" }",
        "{}",
    );
    let out = warden(
        &[
            "hook",
            "--config",
            path.to_str().unwrap(),
            "--flow",
            "access",
            "--event",
            "-",
        ],
        Some(ALICE),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let all = stdout(&out) + &stderr(&out);
    assert!(!all.contains(SECRET), "{all}");
    assert!(all.contains("the key is [REDACTED]"), "{all}");
}

#[test]
fn unknown_flows_hooks_and_bad_events_are_usage_errors() {
    let scratch = Scratch::new();
    let path = config(&scratch, artifacts::PROBE, "{}", "{}");
    let cfg = path.to_str().unwrap();
    let out = warden(
        &["hook", "--config", cfg, "--flow", "nope", "--event", "-"],
        Some(ALICE),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown flow `nope` (flows: access)"),
        "{}",
        stderr(&out)
    );

    let out = warden(
        &[
            "hook",
            "--config",
            cfg,
            "--flow",
            "access",
            "--hook",
            "on_reqest",
            "--event",
            "-",
        ],
        Some(ALICE),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown hook `on_reqest`"),
        "{}",
        stderr(&out)
    );

    let out = warden(
        &["hook", "--config", cfg, "--flow", "access", "--event", "-"],
        Some(r#"{"user":{}}"#),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("missing field `email`"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn bench_refuses_more_iterations_than_it_can_keep_the_times_of() {
    let scratch = Scratch::new();
    let path = config(&scratch, artifacts::PROBE, "{}", "{}");
    let cfg = path.to_str().unwrap();
    let args = |n: &'static str| {
        [
            "bench",
            "--config",
            cfg,
            "--flow",
            "access",
            "--event",
            "-",
            "--iterations",
            n,
        ]
    };
    let out = warden(&args("18446744073709551615"), Some(ALICE));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not in 0..=100000000"),
        "{}",
        stderr(&out)
    );
    let out = warden(&args("3"), Some(ALICE));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["iterations"], 3, "{}", stdout(&out));
}

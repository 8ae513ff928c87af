//! `warden serve` as a process: the address it prints, SIGHUP reloads, SIGTERM stops it
//! cleanly, and `--log-format json` logs.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use warden_tests::{Scratch, artifacts, shapes, start_serve, toml_path};

const ADMIN_TOKEN: &str = "admin-token-for-cli-tests";

fn write_config(scratch: &Scratch, action: &str) {
    scratch.write("admin.token", ADMIN_TOKEN);
    scratch.config(&format!(
        r#"
[store]
path = "warden.db"

[serve.tokens.admin]
token_file = "admin.token"
user = "admin@example.com"
role = "admin"

[environments.main]

[flows.access]
environment = "main"
plugin = {plugin}
vars = {{ action = {action:?} }}
"#,
        plugin = toml_path(artifacts::PROBE)
    ));
}

/// Starts `warden serve` on a free port; returns the child and its base URL.
fn serve(scratch: &Scratch, log_format: &str) -> (Child, String) {
    let served = start_serve(
        env!("CARGO_BIN_EXE_warden"),
        &scratch.path().join("warden.toml"),
        &["--log-format", log_format],
        Stdio::piped(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (served.child, served.url)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn submit(url: &str) -> serde_json::Value {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/flows/access/requests"))
        .bearer_auth(ADMIN_TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

fn stop(mut child: Child) -> String {
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_sigterm_stops_cleanly() {
    let scratch = Scratch::new();
    write_config(&scratch, "deny:before");
    let (child, url) = serve(&scratch, "human");
    assert_eq!(submit(&url).await["reason"], "before");

    write_config(&scratch, "deny:after");
    signal(&child, "HUP");
    let mut reason = String::new();
    for _ in 0..100 {
        reason = submit(&url).await["reason"].as_str().unwrap().to_string();
        if reason == "after" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reason, "after");

    let stderr = stop(child);
    assert!(stderr.contains("config reloaded"), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    assert!(
        !stderr.contains(ADMIN_TOKEN),
        "the token leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_while_a_reload_compiles_stops_warden_at_once() {
    // A reload that adds a plugin Cranelift takes about 45 s over, compiled afresh (a cache
    // of its own): SIGTERM, and SIGINT, arriving meanwhile waited for it, or were lost; one
    // an admin asked for through the API held the drain until it ended.
    for (reload_with, stop_with) in [("HUP", "TERM"), ("HUP", "INT"), ("API", "TERM")] {
        let scratch = Scratch::new();
        write_config(&scratch, "deny:before");
        let (mut child, url) = serve(&scratch, "human");
        let trivial = std::fs::read(artifacts::TRIVIAL).unwrap();
        let slow = shapes::with_extra_module(&trivial, &shapes::module_slow_to_compile(50_000), 1);
        let slow = scratch.write("slow.wasm", slow);
        let text = std::fs::read_to_string(scratch.path().join("warden.toml")).unwrap();
        scratch.config(&format!(
            "[cache]\ndir = \"cache\"\n{text}\n[flows.slow]\nenvironment = \"main\"\nplugin = {}\n",
            toml_path(slow.to_str().unwrap())
        ));
        let asked_over_api = (reload_with == "API").then(|| {
            let reload = reqwest::Client::new()
                .post(format!("{url}/v1/admin/reload"))
                .bearer_auth(ADMIN_TOKEN)
                .send();
            tokio::spawn(async move { reload.await.map(|r| r.status()) })
        });
        if reload_with == "HUP" {
            signal(&child, "HUP");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Still serving the old config meanwhile.
        assert_eq!(submit(&url).await["reason"], "before");
        let asked = std::time::Instant::now();
        signal(&child, stop_with);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if asked.elapsed() > Duration::from_secs(20) {
                child.kill().unwrap();
                panic!("SIG{stop_with} during a {reload_with} reload: still running after 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "SIG{stop_with}: exit {status}");
        if let Some(reload) = asked_over_api {
            // Answered before the process ended: the reload was abandoned, not carried out.
            let answered = reload.await.unwrap().unwrap();
            assert_eq!(answered, reqwest::StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_a_line() {
    let scratch = Scratch::new();
    write_config(&scratch, "approve:ok");
    let (child, url) = serve(&scratch, "json");
    assert_eq!(submit(&url).await["state"], "escalated");
    let stderr = stop(child);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "hook ran" && l["fields"]["hook"] == "on_request"),
        "{stderr}"
    );
}

#[test]
fn serve_without_tokens_refuses_to_start() {
    let scratch = Scratch::new();
    scratch.config(&format!(
        "[environments.main]\n[flows.access]\nenvironment = \"main\"\nplugin = {}\n",
        toml_path(artifacts::PROBE)
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(scratch.path().join("warden.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no API tokens"), "{stderr}");
}

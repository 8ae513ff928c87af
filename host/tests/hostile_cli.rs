//! Hostile plugins through the real binary, both ways an operator runs one: `warden hook`
//! and `warden serve`. One table of cases (a flow each, all in one config) runs through both;
//! each must end in an error naming the flow, hook and cause (or in the bounded, redacted
//! decision the case names), fall back to a human, leave the host serving, and no secret
//! value may appear in anything either process printed or served.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use serde_json::{Value, json};
use warden_tests::web::TestServer;
use warden_tests::{
    Scratch, artifacts, other_wit_version, start_serve, toml_path, two_environments,
};

/// The secret of the integration every hostile flow's environment holds.
const SECRET: &str = "s3cr3t-VALUE-7f3a9c";
/// The secret of another environment's integration.
const FOREIGN_SECRET: &str = "s3cr3t-VALUE-finance-41b2";
const ADMIN_TOKEN: &str = "admin-token-hostile";
const APPROVER_TOKEN: &str = "approver-token-hostile";
const REQUESTER: &str = "admin@example.com";

/// What a case must end in.
enum Expect {
    /// The hook fails; the error names the flow, the hook and contains this cause.
    Fails(&'static str),
    /// The hook decides (`approve`, `deny` or `continue`) with a reason containing this.
    Decides(&'static str, &'static str),
}

struct Case {
    flow: &'static str,
    hook: &'static str,
    /// Lines of the flow's table: `vars`, `limits`, `allowed_hosts`, ...
    table: String,
    expect: Expect,
}

/// The attacks, one line each. `web` is an allowed server, `other` one no flow allows.
#[rustfmt::skip]
fn cases(web: &TestServer, other: &TestServer) -> Vec<Case> {
    use Expect::*;
    let (o, p) = (web.origin(), web.port());
    let hosts = format!("allowed_hosts = [{o:?}]");
    let act = |action: &str| format!("vars = {{ action = {action:?}, errors = \"fail\" }}");
    let with = |action: &str, more: &str| format!("{}\n{more}", act(action));
    let case = |flow, hook, table, expect| Case {
        flow,
        hook,
        table,
        expect,
    };
    let on = "on_request";
    vec![
        case("endless_loop", on, with("loop", "limits = { timeout_ms = 300 }"), Fails("deadline exceeded: the hook ran longer than limits.timeout_ms = 300")),
        case("retry_refused", on, with("http-retry:GET http://127.0.0.1:9/", "limits = { timeout_ms = 300 }"), Fails("deadline exceeded")),
        case("retry_failing", on, with("http-retry:GET http://127.0.0.1:9/", "limits = { timeout_ms = 300 }\nallowed_hosts = [\"http://127.0.0.1:9\"]"), Fails("deadline exceeded")),
        case("memory_bomb", on, with("memory-bomb", "limits = { memory_mib = 16 }"), Fails("memory limit exceeded: the plugin asked for more than limits.memory_mib = 16")),
        case("huge_alloc", on, with("huge-alloc:1610612736", "limits = { memory_mib = 16 }"), Fails("memory limit exceeded")),
        case("recursion", on, act("stack-overflow"), Fails("stack overflow")),
        case("panics", on, act("panic"), Fails("the plugin trapped: ")),
        case("errs", on, act("error"), Fails("the plugin returned an error: probe failed on purpose")),
        case("after_trap", "after_request", "vars = { action = \"continue\", after_action = \"panic\" }".into(), Fails("the plugin trapped: ")),
        case("invalid_decision", "on_escalate", act("continue"), Fails("the plugin returned `deny`, which on_escalate may not decide")),
        case("foreign_secret", on, act("secret-open:billing_key"), Fails("secret `billing_key` is not attached to any integration of environment `main`")),
        case("guessed_secret", on, act("secret-open:no_such_secret"), Fails("secret `no_such_secret` is not attached to any integration of environment `main`")),
        case("foreign_integration", on, act("secret-reveal:billing"), Fails("billing")),
        case("sealed_only", on, with("secret-reveal:victorops", "reveal_secrets = false"), Fails("reveal_secrets = false")),
        case("echoed_secret", on, with(&format!("http-sealed:victorops {o}/echo"), &format!("reveal_secrets = false\n{hosts}")), Decides("approve", "x-echoed-key=[REDACTED]")),
        case("revealed_reason", on, act("secret-reveal:victorops"), Decides("approve", "[REDACTED]")),
        case("logged_secret", on, act("log-secret:victorops"), Decides("continue", "")),
        case("exfiltrate", on, act("exfiltrate:victorops"), Fails("the plugin trapped: ")),
        case("host_not_allowed", on, with(&format!("http:GET {}/echo", other.origin()), &hosts), Fails("is not in the flow's allowed_hosts")),
        case("redirect_other", on, with(&format!("http:GET {o}/redirect?to={}/echo", other.origin()), &hosts), Fails("is not in the flow's allowed_hosts")),
        case("redirect_loopback", on, with(&format!("http:GET {o}/redirect?to=http://localhost:{p}/echo"), &hosts), Fails("http://localhost")),
        case("loopback_wildcard", on, with(&format!("http:GET http://app.localhost:{p}/echo"), &format!("allowed_hosts = [\"http://*.localhost:{p}\"]")), Fails("allowed_hosts must name it exactly")),
        case("giant_response", on, with(&format!("http:GET {o}/big?bytes=5000"), &format!("{hosts}\nlimits = {{ response_max_bytes = 1000 }}")), Fails("too-large: ")),
        case("endless_response", on, with(&format!("http:GET {o}/endless"), &format!("{hosts}\nlimits = {{ response_max_bytes = 100000 }}")), Fails("over the flow's response_max_bytes (100000)")),
        case("slow_response", on, with(&format!("http:GET {o}/slow?ms=3000"), &format!("{hosts}\nlimits = {{ http_timeout_ms = 300 }}")), Fails("timeout: ")),
        case("slow_loris", on, with(&format!("http:GET {o}/trickle?ms=20"), &format!("{hosts}\nlimits = {{ http_timeout_ms = 300 }}")), Fails("timeout: ")),
        case("foreign_identity", on, act("persist:custom bill-ext mallory"), Fails("holds no `custom` integration with external_id `bill-ext`")),
        case("identity_flood", on, act("persist-flood:1000 custom vo-ext"), Fails("at most 16 identities may be persisted per event")),
        case("identity_huge", on, act("persist-huge:100000 custom vo-ext"), Fails("user-id is longer than 320 bytes")),
        // 100,000 log calls take a few seconds of CPU; the case is about what is kept, so a
        // busy machine must not turn it into a deadline case.
        case("log_flood", on, with("log-flood:100000", "limits = { log_max_bytes = 4096, timeout_ms = 60000 }"), Decides("continue", "")),
        case("stdout_flood", on, with("stdout:1000000", "limits = { log_max_bytes = 4096 }"), Decides("continue", "")),
        case("huge_reason", on, act("big-reason:1000000"), Decides("approve", "rrrr")),
        case("cut_secret", on, with("cut-secret:victorops 4066 1014", "limits = { log_max_bytes = 1024 }"), Decides("approve", "rrrr...(")),
    ]
}

/// The config: every case's flow in environment `main` (its integration holds [`SECRET`]),
/// a `finance` environment holding [`FOREIGN_SECRET`], and a well-behaved `healthy` flow.
fn write_config(scratch: &Scratch, cases: &[Case]) {
    scratch.write("admin.token", ADMIN_TOKEN);
    scratch.write("approver.token", APPROVER_TOKEN);
    scratch.write(
        "event.json",
        json!({ "user": { "email": REQUESTER }, "fields": {} }).to_string(),
    );
    let environments = two_environments(scratch, SECRET, FOREIGN_SECRET, "");
    let mut text = format!(
        r#"
[store]
path = "warden.db"

[serve.tokens.admin]
token_file = "admin.token"
user = "{REQUESTER}"
role = "admin"

[serve.tokens.approver]
token_file = "approver.token"
user = "bob@example.com"
role = "approver"

{environments}
[flows.healthy]
environment = "main"
plugin = {allowlist}
vars = {{ auto_approve = "{REQUESTER}" }}
"#,
        allowlist = toml_path(artifacts::ALLOWLIST)
    );
    for case in cases {
        text.push_str(&format!(
            "\n[flows.{}]\nenvironment = \"main\"\nplugin = {}\n{}\n",
            case.flow,
            toml_path(artifacts::PROBE),
            case.table
        ));
    }
    scratch.config(&text);
}

/// Everything a process or the API showed, to search for secret values at the end.
#[derive(Default)]
struct Seen(String);

impl Seen {
    fn add(&mut self, what: &str, text: &str) {
        self.0.push_str(&format!("\n== {what}\n{text}"));
    }

    fn assert_no_secret(&self) {
        let lowered = self.0.to_ascii_lowercase();
        // Their first ten bytes, which both share: a value cut by a bound counts too.
        for secret in [&SECRET[..10], &FOREIGN_SECRET[..10]] {
            if let Some(at) = lowered.find(&secret.to_ascii_lowercase()) {
                let from = at.saturating_sub(300);
                panic!(
                    "secret value leaked:\n...{}",
                    &self.0[from..(at + 100).min(self.0.len())]
                );
            }
        }
        assert!(self.0.len() > 1000, "nothing was collected");
    }
}

/// What `warden hook` printed and its exit code.
struct HookRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_hook(scratch: &Scratch, flow: &str, hook: &str) -> HookRun {
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["hook", "--flow", flow, "--hook", hook, "--event"])
        .arg(scratch.path().join("event.json"))
        .arg("--config")
        .arg(scratch.path().join("warden.toml"))
        .output()
        .expect("run warden hook");
    HookRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn check_hook_run(case: &Case, run: &HookRun) {
    let context = format!(
        "{}: exit {:?}\nstdout: {}\nstderr: {:.3000}",
        case.flow, run.code, run.stdout, run.stderr
    );
    let decision: Value = serde_json::from_str(run.stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {context}"));
    // Whatever the plugin writes, the CLI's output stays bounded.
    assert!(run.stderr.len() < 256 << 10, "{context}");
    match case.expect {
        Expect::Fails(cause) => {
            assert_eq!(run.code, Some(3), "{context}");
            assert_eq!(decision["decision"], "continue", "{context}");
            let error = decision["error"].as_str().unwrap_or_default();
            let named = format!("flow `{}`, hook {}: ", case.flow, case.hook);
            assert!(error.starts_with(&named), "{context}");
            assert!(error.contains(cause), "{context}");
            assert!(
                run.stderr
                    .contains(&format!("{error} (failing closed: a human decides)")),
                "{context}"
            );
        }
        Expect::Decides(kind, reason) => {
            assert_eq!(run.code, Some(0), "{context}");
            assert_eq!(decision["decision"], kind, "{context}");
            let given = decision["reason"].as_str().unwrap_or_default();
            assert!(given.contains(reason), "{context}");
            assert!(given.len() <= 4096, "{context}");
        }
    }
    if case.flow == "log_flood" {
        assert!(
            run.stderr.contains("plugin log line(s) dropped"),
            "{context}"
        );
    }
    if case.flow == "stdout_flood" {
        assert!(
            run.stderr.contains("byte(s) of plugin stdout dropped"),
            "{context}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hostile_plugin_fails_closed_through_warden_hook() {
    let web = TestServer::start().await;
    let other = TestServer::start().await;
    let scratch = std::sync::Arc::new(Scratch::new());
    let cases = std::sync::Arc::new(cases(&web, &other));
    write_config(&scratch, &cases);
    // The first run compiles the probe into the plugin cache; the rest load it.
    let warm = run_hook(&scratch, "healthy", "on_request");
    assert_eq!(warm.code, Some(0), "{}", warm.stderr);

    // Two at a time: each run is a process of its own.
    let workers: Vec<JoinHandle<Vec<(usize, HookRun)>>> = (0..2)
        .map(|worker| {
            let (scratch, cases) = (scratch.clone(), cases.clone());
            std::thread::spawn(move || {
                (worker..cases.len())
                    .step_by(2)
                    .map(|i| (i, run_hook(&scratch, cases[i].flow, cases[i].hook)))
                    .collect()
            })
        })
        .collect();
    let mut seen = Seen::default();
    for worker in workers {
        for (i, run) in worker.join().unwrap() {
            check_hook_run(&cases[i], &run);
            seen.add(&format!("{} stdout", cases[i].flow), &run.stdout);
            seen.add(&format!("{} stderr", cases[i].flow), &run.stderr);
        }
    }
    assert_eq!(
        other.requests(),
        0,
        "no flow may reach the server none allows"
    );
    seen.assert_no_secret();
}

/// `warden serve` on a free loopback port, its output drained as it comes.
struct Served {
    child: Child,
    url: String,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        from.read_to_end(&mut bytes).ok();
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn serve(scratch: &Scratch) -> Served {
    let mut served = start_serve(
        env!("CARGO_BIN_EXE_warden"),
        &scratch.path().join("warden.toml"),
        &[],
        Stdio::piped(),
    );
    let stderr = match &mut served {
        Ok(process) => drain(process.child.stderr.take().unwrap()),
        Err(e) => panic!("{e}"),
    };
    let process = served.unwrap();
    Served {
        child: process.child,
        url: process.url,
        stdout: drain(process.stdout),
        stderr,
    }
}

impl Served {
    /// Stops the server (SIGTERM) and returns what it printed.
    fn stop(mut self) -> (String, String) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        let (stdout, stderr) = (self.stdout.join().unwrap(), self.stderr.join().unwrap());
        assert!(status.success(), "exit {status}: {stderr}");
        (stdout, stderr)
    }
}

struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        seen: &mut Seen,
    ) -> (u16, Value) {
        let (status, text) = self.call(method, path, token, body).await;
        seen.add(path, &text);
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        (status, value)
    }
}

fn history_entry<'a>(request: &'a Value, hook: &str) -> &'a Value {
    request["history"]
        .as_array()
        .and_then(|h| h.iter().rev().find(|e| e["hook"] == hook))
        .unwrap_or_else(|| panic!("no {hook} in the history: {request:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hostile_plugin_fails_closed_through_warden_serve() {
    use reqwest::Method;
    let web = TestServer::start().await;
    let other = TestServer::start().await;
    let scratch = Scratch::new();
    let cases = cases(&web, &other);
    write_config(&scratch, &cases);
    let served = serve(&scratch);
    let api = Api {
        url: served.url.clone(),
        http: reqwest::Client::new(),
    };
    let mut seen = Seen::default();

    for case in &cases {
        let path = format!("/v1/flows/{}/requests", case.flow);
        let (status, mut request) = api
            .json(Method::POST, &path, ADMIN_TOKEN, Some(json!({})), &mut seen)
            .await;
        let context = format!("{}: {request:#}", case.flow);
        assert_eq!(status, 201, "{context}");
        let id = request["id"].as_str().unwrap().to_string();
        if case.hook == "on_escalate" {
            let (status, approved) = api
                .json(
                    Method::POST,
                    &format!("/v1/requests/{id}/approve"),
                    APPROVER_TOKEN,
                    Some(json!({ "reason": "ok" })),
                    &mut seen,
                )
                .await;
            assert_eq!(status, 200, "{context}: {approved:#}");
            // A human approved: the failed hook is recorded, the human's decision stands.
            assert_eq!(approved["state"], "escalated", "{approved:#}");
        }
        let (status, stored) = api
            .json(
                Method::GET,
                &format!("/v1/requests/{id}"),
                ADMIN_TOKEN,
                None,
                &mut seen,
            )
            .await;
        assert_eq!(status, 200, "{context}");
        if case.hook != "on_escalate" {
            assert_eq!(stored["state"], request["state"], "{context}");
        }
        request = stored;
        let context = format!("{}: {request:#}", case.flow);
        let entry = history_entry(&request, case.hook);
        match case.expect {
            Expect::Fails(cause) => {
                assert_eq!(entry["outcome"], "failed", "{context}");
                assert_eq!(entry["blame"], "plugin", "{context}");
                let error = entry["error"].as_str().unwrap_or_default();
                let named = format!("flow `{}`, hook {}: ", case.flow, case.hook);
                assert!(error.starts_with(&named), "{context}");
                assert!(error.contains(cause), "{context}");
                if case.hook == "on_request" {
                    assert_eq!(request["state"], "pending", "{context}");
                    let reason = request["reason"].as_str().unwrap_or_default();
                    assert!(reason.contains(&named), "{context}");
                    assert!(
                        reason.contains("failing closed: a human decides"),
                        "{context}"
                    );
                }
                if case.hook == "after_request" {
                    assert_eq!(request["state"], "pending", "{context}");
                }
            }
            Expect::Decides(kind, reason) => {
                assert_eq!(entry["outcome"], kind, "{context}");
                let state = match kind {
                    "approve" => "escalated",
                    "deny" => "denied",
                    _ => "pending",
                };
                assert_eq!(request["state"], state, "{context}");
                let given = entry["reason"].as_str().unwrap_or_default();
                assert!(given.contains(reason) && given.len() <= 4096, "{context}");
            }
        }
        // The host still serves: a well-behaved flow decides right after.
        let (status, healthy) = api
            .json(
                Method::POST,
                "/v1/flows/healthy/requests",
                ADMIN_TOKEN,
                Some(json!({})),
                &mut seen,
            )
            .await;
        assert_eq!(status, 201, "after {}: {healthy:#}", case.flow);
        assert_eq!(
            healthy["state"], "escalated",
            "after {}: {healthy:#}",
            case.flow
        );
    }

    let (status, audit) = api
        .call(
            Method::GET,
            "/v1/admin/audit?limit=10000",
            ADMIN_TOKEN,
            None,
        )
        .await;
    assert_eq!(status, 200, "{audit}");
    assert!(audit.contains("endless_loop"), "{audit:.2000}");
    seen.add("audit", &audit);
    let (status, list) = api
        .call(Method::GET, "/v1/requests", ADMIN_TOKEN, None)
        .await;
    assert_eq!(status, 200, "{list}");
    seen.add("list", &list);
    let (status, metrics) = api.call(Method::GET, "/metrics", ADMIN_TOKEN, None).await;
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains(
            r#"warden_hook_failures_total{flow="endless_loop",hook="on_request",kind="deadline"} 1"#
        ),
        "{metrics}"
    );
    // Made-up destinations share one label: a plugin cannot grow the series.
    assert!(
        metrics.contains(r#"warden_http_egress_total{flow="host_not_allowed",host="(not allowed)",status="denied"}"#),
        "{metrics}"
    );
    assert!(!metrics.contains("exfil.example"), "{metrics}");
    seen.add("metrics", &metrics);

    let (stdout, stderr) = served.stop();
    assert!(
        stderr.contains("flow `panics`, hook on_request: the plugin trapped"),
        "{stderr:.3000}"
    );
    seen.add("serve stdout", &stdout);
    seen.add("serve stderr", &stderr);
    assert_eq!(
        other.requests(),
        0,
        "no flow may reach the server none allows"
    );
    seen.assert_no_secret();
}

/// Files that are not warden plugins: `warden hook` refuses the config; `warden serve` serves
/// without the flow, sending its requests to a human. Both name the flow, the file and why.
#[tokio::test(flavor = "multi_thread")]
async fn files_that_are_not_plugins_stop_warden_hook_and_their_flow_in_warden_serve() {
    let probe = std::fs::read(artifacts::PROBE).unwrap();
    let files: [(&str, Vec<u8>, &str); 4] = [
        (
            "random.wasm",
            b"\x13\x37 random bytes".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "truncated.wasm",
            probe[..probe.len() / 3].to_vec(),
            "not a valid component",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            "does not export `warden:plugin/hooks@0.1.0`",
        ),
        (
            "other-wit.wasm",
            other_wit_version(&probe),
            "built against warden:plugin@0.2.0",
        ),
    ];
    for (name, bytes, cause) in files {
        let scratch = Scratch::new();
        let plugin = scratch.write(name, bytes);
        scratch.write("admin.token", ADMIN_TOKEN);
        scratch.write(
            "event.json",
            r#"{"user":{"email":"a@example.com"},"fields":{}}"#,
        );
        scratch.config(&format!(
            "[serve.tokens.admin]\ntoken_file = \"admin.token\"\nuser = \"a@example.com\"\nrole = \"admin\"\n\
             [environments.main]\n[flows.bad]\nenvironment = \"main\"\nplugin = {}\n",
            toml_path(plugin.to_str().unwrap())
        ));
        let named = format!("flow `bad`: plugin {}: ", plugin.display());
        let run = run_hook(&scratch, "bad", "on_request");
        assert_eq!(run.code, Some(1), "{name}: {}", run.stderr);
        assert!(
            run.stderr.contains(&named) && run.stderr.contains(cause),
            "{name}: {}",
            run.stderr
        );

        let served = serve(&scratch);
        let api = Api {
            url: served.url.clone(),
            http: reqwest::Client::new(),
        };
        let (status, text) = api
            .call(
                reqwest::Method::POST,
                "/v1/flows/bad/requests",
                ADMIN_TOKEN,
                Some(json!({})),
            )
            .await;
        let request: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(status, 201, "{name}: {request:#}");
        assert_eq!(request["state"], "pending", "{name}: {request:#}");
        let entry = history_entry(&request, "on_request");
        assert_eq!(entry["blame"], "plugin", "{name}: {request:#}");
        let error = entry["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("flow `bad`, hook on_request: the flow's plugin did not load: ")
                && error.contains(cause),
            "{name}: {request:#}"
        );
        let (_, stderr) = served.stop();
        assert!(
            stderr.contains(&named) && stderr.contains(cause),
            "{name}: {stderr}"
        );
    }
}

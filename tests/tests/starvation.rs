//! One plugin must not freeze the host: hooks that spin until their deadline, more of them
//! than the async runtime has worker threads, leave other flows' hooks, `/healthz` and
//! `/metrics` answering; a flow whose plugin spins or traps while being loaded is reported,
//! its requests go to a human, and the other flows serve.
//!
//! These tests check orderings, not latencies: the well-behaved answer must arrive while
//! the spinners are still running (their deadline is seconds away). Before warden moved long
//! wasm runs off the caller's threads, every answer waited for the spinners' deadline.
//! `scripts/bench-starve` measures the latencies.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use warden::serve::Server;
use warden::{
    Blame, Config, Decision, EventInput, FailureKind, HookName, HookReport, StartError, Warden,
};
use warden_tests::{Scratch, artifacts, toml_path};

/// Worker threads of the runtimes these tests run on: fewer than the spinning hooks.
const WORKERS: usize = 2;
/// Spinning hooks in flight at once.
const SPINNERS: usize = 4 * WORKERS;
/// The spinners' deadline: far beyond what a well-behaved answer needs, even on a busy
/// machine, so the ordering checks below cannot pass by luck or fail by slowness.
const SPIN_TIMEOUT_MS: u64 = 6000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .unwrap()
}

fn probe_flow(name: &str, action: &str, extra: &str) -> String {
    format!(
        "[flows.{name}]\nenvironment = \"main\"\nplugin = {}\nvars = {{ action = {action:?} }}\n{extra}\n",
        toml_path(artifacts::PROBE)
    )
}

/// `spin` loops until its deadline; `ok` approves at once.
fn spin_and_ok_flows() -> String {
    [
        probe_flow(
            "spin",
            "loop",
            &format!("limits = {{ timeout_ms = {SPIN_TIMEOUT_MS} }}"),
        ),
        probe_flow("ok", "approve:fine", ""),
    ]
    .concat()
}

fn event() -> EventInput {
    EventInput::from_json(r#"{"user":{"email":"alice@example.com"},"fields":{}}"#).unwrap()
}

/// Waits until every worker thread has had time to pick up a spinner, without needing a
/// worker (this runs on the thread blocking on the runtime).
fn let_spinners_start() {
    std::thread::sleep(Duration::from_millis(300));
}

/// A `Warden` for `flows` (in environment `main`), started on `rt`.
fn warden_on(rt: &tokio::runtime::Runtime, scratch: &Scratch, flows: &str) -> Arc<Warden> {
    let text = format!("[store]\npath = \"warden.db\"\n[environments.main]\n{flows}");
    let config = Config::load(&scratch.config(&text)).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(
        rt.block_on(Warden::start(config))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// Starts [`SPINNERS`] hooks of flow `spin` on `rt`.
fn start_spinners(
    rt: &tokio::runtime::Runtime,
    warden: &Arc<Warden>,
) -> Vec<tokio::task::JoinHandle<HookReport>> {
    let spinners = (0..SPINNERS)
        .map(|_| {
            let warden = warden.clone();
            rt.spawn(async move {
                warden
                    .run_hook("spin", HookName::OnRequest, &event())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let_spinners_start();
    spinners
}

/// Runs a hook of `flow` on one of `rt`'s workers, where the spinners run.
fn run_on_worker(rt: &tokio::runtime::Runtime, warden: &Arc<Warden>, flow: &str) -> HookReport {
    let warden = warden.clone();
    let flow = flow.to_string();
    let task = rt.spawn(async move {
        warden
            .run_hook(&flow, HookName::OnRequest, &event())
            .await
            .unwrap()
    });
    rt.block_on(task).unwrap()
}

fn assert_all_still_spinning<T>(spinners: &[tokio::task::JoinHandle<T>], what: &str) {
    let finished = spinners.iter().filter(|s| s.is_finished()).count();
    assert_eq!(
        finished, 0,
        "{what} came only after spinners reached their deadline"
    );
}

/// Every spinner ends at its deadline, reported as such.
fn assert_spinners_hit_their_deadline(
    rt: &tokio::runtime::Runtime,
    spinners: Vec<tokio::task::JoinHandle<HookReport>>,
) {
    for spinner in spinners {
        let report = rt.block_on(spinner).unwrap();
        assert_eq!(
            report.outcome.unwrap_err().kind,
            FailureKind::Deadline {
                timeout_ms: SPIN_TIMEOUT_MS.into()
            }
        );
    }
}

#[test]
fn a_well_behaved_flow_answers_while_more_hooks_than_worker_threads_spin() {
    let scratch = Scratch::new();
    let rt = runtime();
    let warden = warden_on(&rt, &scratch, &spin_and_ok_flows());
    let spinners = start_spinners(&rt, &warden);

    let other = rt.block_on(rt.spawn(async { "a task with no wasm in it" }));
    let ok = run_on_worker(&rt, &warden, "ok");
    assert_all_still_spinning(&spinners, "the well-behaved hook's answer");
    assert_eq!(other.unwrap(), "a task with no wasm in it");
    assert_eq!(
        ok.outcome,
        Ok(Decision::Approve {
            reason: Some("fine".into())
        })
    );
    assert_spinners_hit_their_deadline(&rt, spinners);
}

#[test]
fn another_flows_long_hook_gets_cpu_while_a_flows_hooks_spin() {
    let scratch = Scratch::new();
    let rt = runtime();
    // Far longer than one tick: it leaves the caller's thread and must finish among the
    // spinners, which by then fill the threads long runs move to.
    let flows = format!(
        "{}{}",
        spin_and_ok_flows(),
        probe_flow(
            "long",
            "burn:100000000",
            &format!("limits = {{ timeout_ms = {SPIN_TIMEOUT_MS} }}")
        )
    );
    let warden = warden_on(&rt, &scratch, &flows);
    let spinners = start_spinners(&rt, &warden);

    let long = run_on_worker(&rt, &warden, "long");
    assert_all_still_spinning(&spinners, "the long hook's answer");
    assert_eq!(
        long.outcome,
        Ok(Decision::Approve {
            reason: Some("burned 100000000".into())
        })
    );
    assert_spinners_hit_their_deadline(&rt, spinners);
}

const ADMIN: &str = "admin-token-starvation";
const APPROVER: &str = "approver-token-starvation";

/// A `warden serve` config: an admin (who requests) and an approver; `rest` adds
/// environments, integrations and flows.
fn serve_config(scratch: &Scratch, rest: &str) -> std::path::PathBuf {
    scratch.write("admin.token", ADMIN);
    scratch.write("approver.token", APPROVER);
    scratch.config(&format!(
        r#"
[store]
path = "warden.db"

[serve.tokens.admin]
token_file = "admin.token"
user = "alice@example.com"
role = "admin"

[serve.tokens.approver]
token_file = "approver.token"
user = "bob@example.com"
role = "approver"

{rest}
"#
    ))
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(server: &Server) -> Self {
        Self {
            base: format!("http://{}", server.local_addr()),
            http: reqwest::Client::new(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
    }

    /// Submits a request to `flow`; the status and the request as JSON.
    fn submit(&self, flow: &str) -> impl Future<Output = (u16, Value)> + Send + 'static {
        let sent = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/flows/{flow}/requests"),
                ADMIN,
            )
            .header("content-type", "application/json")
            .body(json!({ "fields": {} }).to_string())
            .send();
        async move { status_and_json(sent.await.unwrap()).await }
    }

    async fn get(&self, path: &str, token: &str) -> (u16, String) {
        let response = self
            .request(reqwest::Method::GET, path, token)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn approve(&self, id: &str) -> (u16, Value) {
        let response = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/requests/{id}/approve"),
                APPROVER,
            )
            .header("content-type", "application/json")
            .body(json!({ "reason": "a human looked" }).to_string())
            .send()
            .await
            .unwrap();
        status_and_json(response).await
    }
}

async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

fn on_request_entry(request: &Value) -> &Value {
    request["history"]
        .as_array()
        .and_then(|h| h.iter().find(|e| e["hook"] == "on_request"))
        .unwrap_or_else(|| panic!("no on_request in the history: {request:#}"))
}

#[test]
fn healthz_metrics_and_another_flows_request_answer_while_more_hooks_than_worker_threads_spin() {
    let scratch = Scratch::new();
    let config = serve_config(
        &scratch,
        &format!("[environments.main]\n{}", spin_and_ok_flows()),
    );
    let rt = runtime();
    let server = rt
        .block_on(Server::start(&config, Some("127.0.0.1:0".parse().unwrap())))
        .unwrap_or_else(|e| panic!("{e}"));
    let api = Api::new(&server);
    let spinners: Vec<_> = (0..SPINNERS)
        .map(|_| rt.spawn(api.submit("spin")))
        .collect();
    let_spinners_start();

    let (health, metrics, ok) = rt.block_on(async {
        let health = api.get("/healthz", ADMIN).await;
        let metrics = api.get("/metrics", ADMIN).await;
        let ok = rt.spawn(api.submit("ok")).await.unwrap();
        (health, metrics, ok)
    });
    assert_all_still_spinning(&spinners, "the API's answers");
    assert_eq!(health, (200, "ok\n".to_string()));
    assert_eq!(metrics.0, 200);
    assert!(
        metrics
            .1
            .contains(&format!("warden_api_in_flight {SPINNERS}")),
        "{}",
        metrics.1
    );
    assert_eq!(ok.0, 201, "{:#}", ok.1);
    assert_eq!(ok.1["state"], "escalated", "{:#}", ok.1);

    for spinner in spinners {
        let (status, request) = rt.block_on(spinner).unwrap();
        assert_eq!(status, 201, "{request:#}");
        assert_eq!(request["state"], "pending", "{request:#}");
        let error = on_request_entry(&request)["error"]
            .as_str()
            .unwrap_or_default();
        assert!(error.contains("deadline exceeded"), "{request:#}");
    }
    rt.block_on(server.shutdown()).unwrap();
}

/// Flows of the `bad-load` plugin, which reads its environment's aliases while loading:
/// `spin_load` spins there (with a ten-minute `timeout_ms`), `trap_load` traps there, `loads`
/// loads and approves; `good` is the probe, approving.
fn bad_load_flows() -> String {
    let bad_load = toml_path(artifacts::BAD_LOAD);
    format!(
        r#"
[integrations.dummy]
type = "custom"
external_id = "dummy"

[environments.main]

[environments.spinning]
integrations = {{ spin-in-implemented = "dummy" }}

[environments.trapping]
integrations = {{ trap-in-implemented = "dummy" }}

[flows.spin_load]
environment = "spinning"
plugin = {bad_load}
limits = {{ timeout_ms = 600000 }}

[flows.trap_load]
environment = "trapping"
plugin = {bad_load}

[flows.loads]
environment = "main"
plugin = {bad_load}

{}"#,
        probe_flow("good", "approve:fine", "")
    )
}

/// Runs `start` on a worker and panics unless it ends within a minute: far more than
/// `LOAD_CALL_LIMIT` (2 s), far less than `spin_load`'s ten-minute `timeout_ms`.
async fn bounded<T: Send + 'static>(start: impl Future<Output = T> + Send + 'static) -> T {
    tokio::time::timeout(Duration::from_secs(60), tokio::spawn(start))
        .await
        .expect("loading should end at the load limit, not at the flow's timeout_ms")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn warden_start_names_each_flow_whose_plugin_spins_or_traps_while_loading() {
    let scratch = Scratch::new();
    let config =
        Config::load(&serve_config(&scratch, &bad_load_flows())).unwrap_or_else(|e| panic!("{e}"));
    let started = bounded(Warden::start(config)).await;
    let Err(StartError::Plugins(errors)) = started else {
        panic!("the two plugins that misbehave while loading should be refused");
    };
    let named: Vec<(&str, Blame)> = errors.iter().map(|e| (e.flow.as_str(), e.blame)).collect();
    assert_eq!(
        named,
        [("spin_load", Blame::Plugin), ("trap_load", Blame::Plugin)]
    );
    let spin = errors[0].to_string();
    assert!(
        spin.starts_with("flow `spin_load`: plugin ")
            && spin.contains("did not say which hooks it implements within 2000 ms"),
        "{spin}"
    );
    let trap = errors[1].to_string();
    assert!(
        trap.contains("failed when asked which hooks it implements: the plugin trapped: ")
            && trap.contains("panicked at tests/plugins/bad-load/src/lib.rs"),
        "{trap}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flow_whose_plugin_spins_or_traps_while_loading_goes_to_a_human_and_the_others_serve() {
    let scratch = Scratch::new();
    let config = serve_config(&scratch, &bad_load_flows());
    let listen = Some("127.0.0.1:0".parse().unwrap());
    let server = bounded(async move { Server::start(&config, listen).await })
        .await
        .unwrap_or_else(|e| panic!("warden serve should start without the two flows: {e}"));
    let api = Api::new(&server);

    for (flow, reason) in [("good", "fine"), ("loads", "loaded")] {
        let (status, request) = api.submit(flow).await;
        assert_eq!(status, 201, "{request:#}");
        assert_eq!(request["state"], "escalated", "{request:#}");
        assert_eq!(on_request_entry(&request)["reason"], reason, "{request:#}");
    }
    for (flow, cause) in [
        (
            "spin_load",
            "did not say which hooks it implements within 2000 ms",
        ),
        ("trap_load", "panicked at tests/plugins/bad-load/src/lib.rs"),
    ] {
        let (status, request) = api.submit(flow).await;
        assert_eq!(status, 201, "{request:#}");
        assert_eq!(request["state"], "pending", "{request:#}");
        let entry = on_request_entry(&request);
        assert_eq!(entry["outcome"], "failed", "{request:#}");
        assert_eq!(entry["ran"], false, "{request:#}");
        assert_eq!(entry["blame"], "plugin", "{request:#}");
        let error = entry["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(&format!(
                "flow `{flow}`, hook on_request: the flow's plugin did not load: "
            )) && error.contains(cause),
            "{request:#}"
        );
        let reason = request["reason"].as_str().unwrap_or_default();
        assert!(
            reason.ends_with("failing closed: a human decides"),
            "{request:#}"
        );

        // A human still decides; the hooks that cannot run are recorded on the way.
        let id = request["id"].as_str().unwrap();
        let (status, approved) = api.approve(id).await;
        assert_eq!(status, 200, "{approved:#}");
        assert_eq!(approved["state"], "escalated", "{approved:#}");
    }
    let (_, metrics) = api.get("/metrics", ADMIN).await;
    assert!(
        metrics.contains(
            r#"warden_hook_failures_total{flow="trap_load",hook="on_request",kind="not-loaded"} 1"#
        ),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

//! Hostile plugins in the real host, beyond `sandbox.rs`: retry loops around host calls, one
//! huge allocation, redirects to internal addresses, DNS rebinding, endless and trickling
//! responses, identity-store flooding, traps in `after_request`, and a secret smuggled into
//! everything the host records. Each ends in a typed failure or refusal, fails closed, and
//! leaves the host ready for the next event.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use warden::capabilities::http::{
    HopRequest, HopResponse, Lookup, NetworkTransport, Transport, TransportError,
};
use warden::capabilities::refusal::MAX_REFUSALS_PER_EVENT;
use warden::secrets::SecretStore;
use warden::store::Store;
use warden::{
    Config, Decision, EventInput, FailureKind, HookName, HookReport, StartOptions, Warden,
};
use warden_tests::web::TestServer;
use warden_tests::{Scratch, artifacts, toml_path};

/// Mixed case on purpose: a value put into a host name comes back lowercased.
const VO_SECRET: &str = "vo-SECRET-value-0123";

/// One environment `main` holding the `victorops` integration and its secret; `flows` is
/// appended (each flow runs the probe in `main`).
fn config_text(scratch: &Scratch, flows: &[(&str, &str)]) -> String {
    scratch.write("vo.key", VO_SECRET);
    let mut text = r#"
[store]
path = "warden.db"

[secrets.vo_key]
source = "file"
path = "vo.key"

[integrations.victorops]
type = "custom"
external_id = "vo-ext"
secrets = ["vo_key"]

[environments.main]
integrations = { victorops = "victorops" }
"#
    .to_string();
    for (name, extra) in flows {
        text.push_str(&format!(
            "\n[flows.{name}]\nenvironment = \"main\"\nplugin = {}\n{extra}\n",
            toml_path(artifacts::PROBE)
        ));
    }
    text
}

async fn start(
    scratch: &Scratch,
    flows: &[(&str, &str)],
    transport: Option<Arc<dyn Transport>>,
) -> Warden {
    let config = Config::load(&scratch.config(&config_text(scratch, flows)))
        .unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(Store::open(&config.store_path).unwrap());
    let secrets = Arc::new(SecretStore::new(&config.secrets));
    let options = StartOptions {
        engine: None,
        transport,
    };
    Warden::start_with(config, store, secrets, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn event() -> EventInput {
    EventInput::from_json(r#"{"user":{"email":"alice@example.com"},"fields":{}}"#).unwrap()
}

async fn run(warden: &Warden, flow: &str, hook: HookName) -> HookReport {
    warden.run_hook(flow, hook, &event()).await.unwrap()
}

/// `vars = { action = ... }` and more lines.
fn flow(action: &str, extra: &str) -> String {
    format!("vars = {{ action = {action:?} }}\n{extra}")
}

fn denied(report: &HookReport) -> String {
    match &report.outcome {
        Ok(Decision::Deny { reason: Some(r) }) => r.clone(),
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn failure(report: &HookReport) -> (FailureKind, String) {
    match &report.outcome {
        Err(f) => (f.kind.clone(), f.to_string()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// After any hostile event, a well-behaved flow on the same host still decides.
async fn still_serving(warden: &Warden) {
    let report = run(warden, "healthy", HookName::OnRequest).await;
    assert_eq!(
        report.outcome,
        Ok(Decision::Approve {
            reason: Some("ok".into())
        })
    );
}

const HEALTHY: (&str, &str) = ("healthy", "vars = { action = \"approve:ok\" }");

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_sends_at_most_limits_http_requests_per_event_to_an_allowed_host() {
    let web = TestServer::start().await;
    let scratch = Scratch::new();
    // Every answer is over the response cap, so the plugin's retry loop never ends by itself.
    let hammer = flow(
        &format!("http-retry:GET {}/big?bytes=100", web.origin()),
        &format!(
            "limits = {{ timeout_ms = 400, response_max_bytes = 10, http_requests = 5 }}\n\
             allowed_hosts = [{:?}]",
            web.origin()
        ),
    );
    let warden = start(&scratch, &[("hammer", hammer.as_str()), HEALTHY], None).await;
    let report = run(&warden, "hammer", HookName::OnRequest).await;
    assert_eq!(
        failure(&report).0,
        FailureKind::Deadline { timeout_ms: 400 }
    );
    assert_eq!(
        web.requests(),
        5,
        "the server saw only the allowed requests"
    );
    assert!(
        report.refusals.iter().any(|r| r
            .to_string()
            .contains("more than 5 HTTP requests in one event (limits.http_requests)")),
        "{:?}",
        report.refusals
    );
    // The count is per event: the next event may send again.
    run(&warden, "hammer", HookName::OnRequest).await;
    assert_eq!(web.requests(), 10);
    still_serving(&warden).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retrying_a_refused_or_failing_call_ends_at_the_deadline_with_bounded_records() {
    let scratch = Scratch::new();
    let limits = "limits = { timeout_ms = 400 }";
    // Port 9 on loopback: nothing listens, every connection is refused at once.
    let refused = flow("http-retry:GET http://127.0.0.1:9/", limits);
    let failing = flow(
        "http-retry:GET http://127.0.0.1:9/",
        &format!("{limits}\nallowed_hosts = [\"http://127.0.0.1:9\"]"),
    );
    let warden = start(
        &scratch,
        &[
            ("refused", refused.as_str()),
            ("failing", failing.as_str()),
            HEALTHY,
        ],
        None,
    )
    .await;
    for name in ["refused", "failing"] {
        let started = Instant::now();
        let report = run(&warden, name, HookName::OnRequest).await;
        let took = started.elapsed();
        let (kind, message) = failure(&report);
        assert_eq!(kind, FailureKind::Deadline { timeout_ms: 400 }, "{name}");
        assert_eq!(
            message,
            format!(
                "flow `{name}`, hook on_request: deadline exceeded: the hook ran longer than limits.timeout_ms = 400"
            )
        );
        assert!(took < Duration::from_millis(1500), "{name}: {took:?}");
        assert_eq!(report.decision(), Decision::Continue, "fails closed");
        // Thousands of calls, but the report keeps a bounded record of them.
        assert_eq!(
            report.http_calls.len(),
            warden::capabilities::http::MAX_RECORDED_CALLS,
            "{name}"
        );
        assert!(
            report
                .logs
                .iter()
                .any(|l| l.message.contains("more HTTP call(s) not recorded")),
            "{name}: {:?}",
            report.logs
        );
        still_serving(&warden).await;
    }
    let report = run(&warden, "refused", HookName::OnRequest).await;
    assert_eq!(report.refusals.len(), MAX_REFUSALS_PER_EVENT + 1);
    assert!(
        report.refusals[MAX_REFUSALS_PER_EVENT]
            .detail
            .contains("more refusal(s) not recorded"),
        "{:?}",
        report.refusals.last()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_huge_allocation_is_a_memory_error_not_an_abort() {
    let scratch = Scratch::new();
    // 1.5 GiB in one `Vec::with_capacity` (2 GiB is over `isize::MAX` on wasm32: a panic).
    let huge = flow("huge-alloc:1610612736", "limits = { memory_mib = 16 }");
    let warden = start(&scratch, &[("huge", huge.as_str()), HEALTHY], None).await;
    let report = run(&warden, "huge", HookName::OnRequest).await;
    let (kind, message) = failure(&report);
    assert_eq!(kind, FailureKind::Memory { limit_mib: 16 });
    assert!(
        message.starts_with("flow `huge`, hook on_request: memory limit exceeded"),
        "{message}"
    );
    still_serving(&warden).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_in_after_request_fails_closed_and_on_request_is_unaffected() {
    let scratch = Scratch::new();
    let after = "vars = { action = \"continue\", after_action = \"panic\" }";
    let warden = start(&scratch, &[("after", after), HEALTHY], None).await;
    let on_request = run(&warden, "after", HookName::OnRequest).await;
    assert_eq!(on_request.outcome, Ok(Decision::Continue));
    let report = run(&warden, "after", HookName::AfterRequest).await;
    let (kind, message) = failure(&report);
    assert!(matches!(kind, FailureKind::Trap { .. }), "{kind:?}");
    assert!(
        message.starts_with("flow `after`, hook after_request: the plugin trapped"),
        "{message}"
    );
    assert!(message.contains("probe panicked"), "{message}");
    still_serving(&warden).await;
}

/// Sends loopback hops through the real client and refuses every other one, so a regression
/// in the host's checks shows up as a failed assertion, never as traffic to a real internal
/// address.
struct LoopbackOnly {
    real: NetworkTransport,
    outside: Mutex<Vec<String>>,
}

#[async_trait]
impl Transport for LoopbackOnly {
    async fn send(&self, hop: HopRequest<'_>) -> Result<HopResponse, TransportError> {
        let host = hop.url.host_str().unwrap_or_default();
        let loopback = match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => host == "localhost",
        };
        if !loopback {
            self.outside.lock().unwrap().push(hop.url.to_string());
            return Err(TransportError::Connect(
                "the test refuses non-loopback hops".into(),
            ));
        }
        self.real.send(hop).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_to_loopback_metadata_or_private_addresses_are_refused() {
    let allowed = TestServer::start().await;
    let internal = TestServer::start().await;
    let guard = Arc::new(LoopbackOnly {
        real: NetworkTransport::new().unwrap(),
        outside: Mutex::default(),
    });
    let targets = [
        format!("http://127.0.0.1:{}/echo", internal.port()),
        format!("http://localhost:{}/echo", internal.port()),
        format!("http://[::1]:{}/echo", internal.port()),
        "http://169.254.169.254/latest/meta-data/iam/".to_string(),
        "http://10.0.0.1/admin".to_string(),
        "http://192.168.1.1/".to_string(),
        "http://172.16.0.1/".to_string(),
        "http://[::ffff:10.0.0.1]/".to_string(),
    ];
    let flows: Vec<(String, String)> = targets
        .iter()
        .enumerate()
        .map(|(i, to)| {
            let url = format!("{}/redirect?to={to}", allowed.origin());
            (
                format!("redirect{i}"),
                flow(
                    &format!("http:GET {url}"),
                    &format!("allowed_hosts = [{:?}]", allowed.origin()),
                ),
            )
        })
        .collect();
    let mut refs: Vec<(&str, &str)> = flows
        .iter()
        .map(|(n, f)| (n.as_str(), f.as_str()))
        .collect();
    refs.push(HEALTHY);
    let scratch = Scratch::new();
    let warden = start(&scratch, &refs, Some(guard.clone())).await;
    for (i, to) in targets.iter().enumerate() {
        let report = run(&warden, &format!("redirect{i}"), HookName::OnRequest).await;
        let reason = denied(&report);
        assert!(reason.starts_with("denied:"), "{to}: {reason}");
        assert!(
            reason.contains("is not in the flow's allowed_hosts"),
            "{to}: {reason}"
        );
        assert_eq!(
            allowed.requests(),
            i + 1,
            "the allowed host answered the first hop"
        );
    }
    assert_eq!(internal.requests(), 0);
    assert_eq!(*guard.outside.lock().unwrap(), Vec::<String>::new());
    still_serving(&warden).await;
}

/// Resolves names from a fixed table and counts lookups.
#[derive(Default)]
struct FixedLookup {
    names: HashMap<String, Vec<SocketAddr>>,
    lookups: Mutex<Vec<String>>,
}

#[async_trait]
impl Lookup for FixedLookup {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        self.lookups.lock().unwrap().push(host.to_string());
        self.names
            .get(host)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
    }
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter()
        .map(|ip| SocketAddr::new(ip.parse().unwrap(), 0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_rebinding_an_allowed_name_to_an_internal_address_is_refused() {
    let server = TestServer::start().await;
    let port = server.port();
    let rebinds = [
        ("v4.rebind.test", vec!["127.0.0.1"]),
        ("v6.rebind.test", vec!["::1"]),
        ("mapped.rebind.test", vec!["::ffff:127.0.0.1"]),
        ("mixed.rebind.test", vec!["127.0.0.2", "127.0.0.1"]),
    ];
    let mut lookup = FixedLookup::default();
    for (name, ips) in &rebinds {
        lookup.names.insert(name.to_string(), addrs(ips));
    }
    // The control: a localhost name the allowlist names exactly keeps its address.
    lookup
        .names
        .insert("svc.localhost".into(), addrs(&["127.0.0.1"]));
    let lookup = Arc::new(lookup);
    let transport: Arc<dyn Transport> =
        Arc::new(NetworkTransport::with_lookup(lookup.clone()).unwrap());

    let mut flows: Vec<(String, String)> = rebinds
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            // Only the name is allowed, never the address it resolves to.
            let origin = format!("http://{name}:{port}");
            (
                format!("rebind{i}"),
                flow(
                    &format!("http:GET {origin}/echo"),
                    &format!("allowed_hosts = [{origin:?}]"),
                ),
            )
        })
        .collect();
    let control = format!("http://svc.localhost:{port}");
    flows.push((
        "control".into(),
        flow(
            &format!("http:GET {control}/echo"),
            &format!("allowed_hosts = [{control:?}]"),
        ),
    ));
    let refs: Vec<(&str, &str)> = flows
        .iter()
        .map(|(n, f)| (n.as_str(), f.as_str()))
        .collect();
    let scratch = Scratch::new();
    let warden = start(&scratch, &refs, Some(transport)).await;

    for (i, (name, ips)) in rebinds.iter().enumerate() {
        let report = run(&warden, &format!("rebind{i}"), HookName::OnRequest).await;
        let reason = denied(&report);
        assert!(reason.starts_with("denied:"), "{name}: {reason}");
        assert!(
            reason.contains(&format!("`{name}` resolves to {}", ips[0])),
            "{name}: {reason}"
        );
        assert_eq!(server.requests(), 0, "{name}: nothing reached the server");
    }
    // One lookup per request: the addresses checked are the ones the connection uses, with
    // no second lookup that could answer differently.
    assert_eq!(
        *lookup.lookups.lock().unwrap(),
        rebinds
            .iter()
            .map(|(n, _)| n.to_string())
            .collect::<Vec<_>>()
    );

    let report = run(&warden, "control", HookName::OnRequest).await;
    match &report.outcome {
        Ok(Decision::Approve { reason: Some(r) }) => assert!(r.starts_with("status=200"), "{r}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server.requests(),
        1,
        "connected to the address the lookup gave"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_and_trickling_responses_hit_the_size_cap_and_the_overall_deadline() {
    let server = TestServer::start().await;
    let hosts = format!("allowed_hosts = [{:?}]", server.origin());
    let endless = flow(
        &format!("http:GET {}/endless", server.origin()),
        &format!("{hosts}\nlimits = {{ response_max_bytes = 100000 }}"),
    );
    // One byte every 20 ms: no read waits long, so only a deadline on the whole response
    // (not one per read) ends it.
    let trickle = flow(
        &format!("http:GET {}/trickle?ms=20", server.origin()),
        &format!("{hosts}\nlimits = {{ http_timeout_ms = 300 }}"),
    );
    // Without http_timeout_ms, the hook's own deadline bounds the call.
    let trickle_deadline = flow(
        &format!("http:GET {}/trickle?ms=20", server.origin()),
        &format!("{hosts}\nlimits = {{ timeout_ms = 400 }}"),
    );
    let scratch = Scratch::new();
    let warden = start(
        &scratch,
        &[
            ("endless", endless.as_str()),
            ("trickle", trickle.as_str()),
            ("trickle_deadline", trickle_deadline.as_str()),
            HEALTHY,
        ],
        None,
    )
    .await;

    let started = Instant::now();
    let report = run(&warden, "endless", HookName::OnRequest).await;
    let reason = denied(&report);
    assert!(reason.starts_with("too-large:"), "{reason}");
    assert!(reason.contains("response_max_bytes (100000)"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let started = Instant::now();
    let report = run(&warden, "trickle", HookName::OnRequest).await;
    let took = started.elapsed();
    assert!(denied(&report).starts_with("timeout:"), "{report:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );

    let started = Instant::now();
    let report = run(&warden, "trickle_deadline", HookName::OnRequest).await;
    let took = started.elapsed();
    // The call times out with what is left of the hook's time, or the hook's deadline fires
    // first: either way it ends on time.
    match &report.outcome {
        Ok(Decision::Deny { reason: Some(r) }) => assert!(r.starts_with("timeout:"), "{r}"),
        Err(f) => assert_eq!(f.kind, FailureKind::Deadline { timeout_ms: 400 }),
        other => panic!("{other:?}"),
    }
    assert!(took < Duration::from_millis(1500), "{took:?}");
    still_serving(&warden).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flooding_the_identity_store_is_bounded_per_event_and_per_value() {
    let scratch = Scratch::new();
    let warden = start(
        &scratch,
        &[
            (
                "flood",
                flow("persist-flood:1000 custom vo-ext", "").as_str(),
            ),
            (
                "huge",
                flow("persist-huge:100000 custom vo-ext", "").as_str(),
            ),
            HEALTHY,
        ],
        None,
    )
    .await;
    let reason = denied(&run(&warden, "flood", HookName::OnRequest).await);
    let cap = warden::capabilities::identities::MAX_PERSISTS_PER_EVENT;
    assert_eq!(
        reason,
        format!("persist #{cap}: invalid: at most {cap} identities may be persisted per event")
    );
    let store = warden.identity_store();
    assert_eq!(
        store
            .identities_of(&format!("user{}@flood.example", cap - 1))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .identities_of(&format!("user{cap}@flood.example"))
            .await
            .unwrap()
            .is_empty()
    );

    let reason = denied(&run(&warden, "huge", HookName::OnRequest).await);
    assert!(
        reason.contains("user-id is longer than 320 bytes"),
        "{reason}"
    );
    assert!(
        store
            .identities_of("alice@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    still_serving(&warden).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_smuggled_into_urls_ids_and_a_panic_is_redacted_everywhere() {
    let scratch = Scratch::new();
    let warden = start(
        &scratch,
        &[
            ("exfil", flow("exfiltrate:victorops", "").as_str()),
            HEALTHY,
        ],
        None,
    )
    .await;
    let report = run(&warden, "exfil", HookName::OnRequest).await;
    let (kind, message) = failure(&report);
    assert!(matches!(kind, FailureKind::Trap { .. }), "{kind:?}");
    assert!(message.contains("panicked"), "{message}");
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.message == "giving up with [REDACTED]"),
        "{:?}",
        report.logs
    );
    // The refused host name, the unparsable URL, the secret id, the alias and the service id
    // all quoted the value back.
    assert!(report.refusals.len() >= 4, "{:?}", report.refusals);
    assert!(
        report
            .refusals
            .iter()
            .any(|r| r.detail.contains("http://[REDACTED].exfil.example")),
        "{:?}",
        report.refusals
    );
    assert!(report.http_calls.iter().any(|c| c.origin == "(not a URL)"));
    let everything = format!("{report:?}").to_ascii_lowercase();
    assert!(
        !everything.contains(&VO_SECRET.to_ascii_lowercase()),
        "{everything}"
    );
    still_serving(&warden).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_cut_in_half_by_a_bound_leaves_no_start_behind() {
    let scratch = Scratch::new();
    // The reason is cut 20 bytes short of 4096 (room for a marker counting four digits'
    // worth), stdout at 1024: ten bytes of the value fit.
    let reason_pad = warden::runtime::hooks::MAX_REASON_BYTES - 20 - 10;
    let cut = flow(
        &format!("cut-secret:victorops {reason_pad} 1014"),
        "limits = { log_max_bytes = 1024 }",
    );
    let warden = start(&scratch, &[("cut", cut.as_str())], None).await;
    let report = run(&warden, "cut", HookName::OnRequest).await;
    let Ok(Decision::Approve {
        reason: Some(reason),
    }) = &report.outcome
    else {
        panic!("{:?}", report.outcome)
    };
    // What the value's start could take before each cut went with it, counted.
    let (kept, dropped) = warden::runtime::budget::split_marker(reason).unwrap();
    assert!(kept.ends_with('r'), "{}", &reason[reason.len() - 40..]);
    assert!(dropped > 110, "{dropped}");
    let stdout = &report.logs[0].message;
    assert!(stdout.ends_with('x'), "{}", &stdout[stdout.len() - 40..]);
    assert!(stdout.len() < 1014, "{}", stdout.len());
    let everything = format!("{report:?}").to_ascii_lowercase();
    assert!(!everything.contains(&VO_SECRET[..6].to_ascii_lowercase()));
}

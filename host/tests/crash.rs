//! `warden serve` killed with SIGKILL while loopback clients load it, then restarted on the
//! same store, a few times over. What a client was told with a 2xx must survive: the request,
//! its state and the history the response showed; identities a plugin persisted; and access
//! whose time ran out while warden was down ends once, not never and not twice.

mod listing;

use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use warden::store::Store;
use warden_tests::{Scratch, artifacts, start_serve_logged, toml_path};

const ADMIN_TOKEN: &str = "admin-token-for-crash-tests";
const APPROVER: &str = "approver@example.com";
const CLIENTS: usize = 8;
/// Bounds on the load each round: per client, and in time.
const OPERATIONS_PER_CLIENT: usize = 12;
const LOAD_FOR: Duration = Duration::from_millis(900);
const ROUNDS: usize = 3;
/// Every request asks for this long, so access granted just before a kill runs out while
/// warden is down.
const ACCESS_SECONDS: u64 = 1;
const OUTAGE: Duration = Duration::from_millis(1100);

fn write_config(scratch: &Scratch) {
    scratch.write("admin.token", ADMIN_TOKEN);
    scratch.config(&format!(
        r#"
[store]
path = "warden.db"

[serve]
max_in_flight = 256

[serve.tokens.admin]
token_file = "admin.token"
user = "admin@example.com"
role = "admin"

# Identities may be kept for the services the flow's environment holds.
[integrations.pd]
type = "pagerduty"
external_id = "P1"

[environments.main]
integrations = {{ pd = "pd" }}

# The plugin persists the requester's identity, then approves.
[flows.persist]
environment = "main"
plugin = {probe}
vars = {{ action = "persist:pagerduty P1 user-1" }}

# A human decides.
[flows.manual]
environment = "main"
plugin = {probe}
vars = {{ action = "continue" }}
"#,
        probe = toml_path(artifacts::PROBE)
    ));
}

struct Serving {
    child: Child,
    url: String,
}

fn start(scratch: &Scratch, round: usize) -> Serving {
    let served = start_serve_logged(
        env!("CARGO_BIN_EXE_warden"),
        scratch.path(),
        &round.to_string(),
    );
    Serving {
        child: served.child,
        url: served.url,
    }
}

fn kill(mut serving: Serving) {
    serving.child.kill().expect("SIGKILL warden serve");
    serving.child.wait().unwrap();
}

/// A 2xx answer a client got: what warden promised about request `id`.
#[derive(Debug, Clone)]
struct Acknowledged {
    id: String,
    state: String,
    history: Vec<Value>,
    /// The requester whose identity the plugin persisted, for the `persist` flow.
    persisted_for: Option<String>,
}

type Log = Arc<Mutex<Vec<Acknowledged>>>;

async fn post(http: &reqwest::Client, url: String, body: Value) -> Option<Value> {
    let response = http
        .post(url)
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    // A body cut off by the kill is not an acknowledgement a client could act on.
    serde_json::from_str(&response.text().await.ok()?).ok()
}

fn acknowledged(view: &Value, persisted_for: Option<String>) -> Acknowledged {
    Acknowledged {
        id: view["id"].as_str().unwrap().to_string(),
        state: view["state"].as_str().unwrap().to_string(),
        history: view["history"].as_array().unwrap().clone(),
        persisted_for,
    }
}

/// One client: submits to both flows in turn and approves every other manual request.
async fn client(url: String, round: usize, client: usize, until: Instant, log: Log) {
    let http = reqwest::Client::new();
    for n in 0..OPERATIONS_PER_CLIENT {
        if Instant::now() >= until {
            return;
        }
        let requester = format!("r{round}-{client}-{n}@example.com");
        let fields = json!({ "duration": format!("{ACCESS_SECONDS}s") });
        if n % 2 == 0 {
            let body = json!({ "requester": { "email": requester }, "fields": fields });
            if let Some(view) = post(&http, format!("{url}/v1/flows/persist/requests"), body).await
            {
                assert_eq!(view["reason"], "persisted user-1", "{view}");
                log.lock()
                    .unwrap()
                    .push(acknowledged(&view, Some(requester)));
            }
        } else {
            let body = json!({ "requester": { "email": requester }, "fields": fields });
            let Some(view) = post(&http, format!("{url}/v1/flows/manual/requests"), body).await
            else {
                continue;
            };
            log.lock().unwrap().push(acknowledged(&view, None));
            if n % 4 == 1 {
                let id = view["id"].as_str().unwrap();
                let body = json!({ "approver": { "email": APPROVER } });
                if let Some(view) =
                    post(&http, format!("{url}/v1/requests/{id}/approve"), body).await
                {
                    log.lock().unwrap().push(acknowledged(&view, None));
                }
            }
        }
    }
}

/// Loads the server until a kill somewhere inside the load window; returns when it was
/// killed.
async fn load_then_kill(serving: Serving, round: usize, log: Log) -> SystemTime {
    let until = Instant::now() + LOAD_FOR;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(serving.url.clone(), round, c, until, log.clone())))
        .collect();
    // Killed while the clients still send, at a different point each round.
    tokio::time::sleep(LOAD_FOR * (2 + round as u32) / 6).await;
    let killed_at = SystemTime::now();
    kill(serving);
    for c in clients {
        c.await.unwrap();
    }
    killed_at
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

fn transitions_to(history: &[Value], state: &str) -> usize {
    history
        .iter()
        .filter(|e| e["kind"] == "transition" && e["to"] == state)
        .count()
}

/// States a request may have reached since a client saw it in `seen`.
fn may_follow(seen: &str, now: &str) -> bool {
    let later: &[&str] = match seen {
        "pending" => &["pending", "approved", "escalated", "denied", "deescalated"],
        "escalated" => &["escalated", "deescalated"],
        other => &[other],
    };
    later.contains(&now)
}

/// After a restart: every acknowledged request is there, in a state that follows from what
/// the client saw and with that history as the start of its own; nothing rests in a passing
/// state; and every access that has run out has ended exactly once.
async fn check(
    url: &str,
    acks: &[Acknowledged],
    outage: Option<(SystemTime, SystemTime)>,
) -> usize {
    let http = reqwest::Client::new();
    // Timers due during the outage fire on start; give them a moment, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    let requests = loop {
        let requests = listing::all_requests(&http, url, ADMIN_TOKEN).await;
        let now = SystemTime::now();
        let overdue = requests.iter().any(|r| {
            r["state"] == "escalated"
                && humantime::parse_rfc3339(r["expires_at"].as_str().unwrap()).unwrap()
                    + Duration::from_millis(200)
                    < now
        });
        if !overdue {
            break requests;
        }
        assert!(
            Instant::now() < deadline,
            "access past its expiry was not ended after a restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(requests.len() < 1000, "the list endpoint caps at 1000");

    let mut expired_while_down = 0;
    for request in &requests {
        let id = request["id"].as_str().unwrap();
        let state = request["state"].as_str().unwrap();
        assert!(
            state != "requested" && state != "approved",
            "{id} rests in passing state {state} after a restart"
        );
        let view = get(&http, &format!("{url}/v1/requests/{id}")).await;
        let history = view["history"].as_array().unwrap();
        for to in [
            "requested",
            "pending",
            "approved",
            "denied",
            "escalated",
            "deescalated",
        ] {
            assert!(
                transitions_to(history, to) <= 1,
                "{id} entered {to} more than once: {view:#}"
            );
        }
        if state == "deescalated" {
            assert_eq!(transitions_to(history, "deescalated"), 1, "{view:#}");
            let expired = humantime::parse_rfc3339(view["expires_at"].as_str().unwrap()).unwrap();
            let ended = history
                .iter()
                .find(|e| e["kind"] == "transition" && e["to"] == "deescalated")
                .unwrap();
            let ended = humantime::parse_rfc3339(ended["at"].as_str().unwrap()).unwrap();
            assert!(ended >= expired, "{id} ended before it expired: {view:#}");
            if outage.is_some_and(|(killed, restarted)| killed <= expired && expired < restarted) {
                assert!(
                    ended >= outage.unwrap().1,
                    "{id} ended while warden was down?"
                );
                expired_while_down += 1;
            }
        }
    }

    for ack in acks {
        let view = get(&http, &format!("{url}/v1/requests/{}", ack.id)).await;
        let state = view["state"].as_str().unwrap();
        assert!(
            may_follow(&ack.state, state),
            "{} was acknowledged {} and is now {state}",
            ack.id,
            ack.state
        );
        let history = view["history"].as_array().unwrap();
        assert!(
            history.len() >= ack.history.len() && history[..ack.history.len()] == ack.history[..],
            "{}: the history a client was shown is not the start of the stored one\nshown: {:#}\nstored: {:#}",
            ack.id,
            Value::from(ack.history.clone()),
            Value::from(history.clone())
        );
    }
    expired_while_down
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_nothing_acknowledged_and_timers_fire_once() {
    let scratch = Scratch::new();
    write_config(&scratch);
    let log: Log = Arc::default();
    let mut expired_while_down = 0;
    let mut killed_at = None;
    for round in 0..=ROUNDS {
        let restarted_at = SystemTime::now();
        let serving = start(&scratch, round);
        let acks = log.lock().unwrap().clone();
        let outage = killed_at.map(|killed| (killed, restarted_at));
        expired_while_down += check(&serving.url, &acks, outage).await;
        if round == ROUNDS {
            kill(serving);
            break;
        }
        killed_at = Some(load_then_kill(serving, round, log.clone()).await);
        tokio::time::sleep(OUTAGE).await;
    }
    let acks = log.lock().unwrap().clone();
    eprintln!(
        "{} answers acknowledged over {ROUNDS} kills; {expired_while_down} accesses ran out while warden was down",
        acks.len()
    );

    assert!(
        acks.len() > ROUNDS * CLIENTS,
        "too little load got through to test anything: {} acknowledged",
        acks.len()
    );
    assert!(
        expired_while_down > 0,
        "no access ran out while warden was down; the outage is too short to test timers"
    );
    let store = Store::open(&scratch.path().join("warden.db")).unwrap();
    let mut persisted = 0;
    for email in acks.iter().filter_map(|a| a.persisted_for.as_ref()) {
        let identities = store.identities_of(email).unwrap();
        assert!(
            identities
                .iter()
                .any(|i| i.service == "pagerduty" && i.service_id == "P1" && i.user_id == "user-1"),
            "the identity persisted for {email} was lost: {identities:?}"
        );
        persisted += 1;
    }
    assert!(persisted > 0, "no identity write was acknowledged");
}

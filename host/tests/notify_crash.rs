//! The outbox survives SIGKILL: `warden serve` is killed while a notification's delivery
//! is in flight (its receiver never answers) and others wait behind it, then restarted on
//! the same store with the receiver answering. Every notification of every request a client
//! was told about arrives, signed, at least once, and one cut off mid-delivery arrives
//! again under the same delivery id, for the receiver to drop as a duplicate.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use warden_tests::receiver::{Answer, Receiver};
use warden_tests::{Scratch, ServeProcess, artifacts, start_serve_logged, toml_path};

const ADMIN_TOKEN: &str = "admin-token-for-notify-crash";
const SIGNING_KEY: &str = "signing-key-for-notify-crash";
const REQUESTS_PER_FLOW: usize = 3;
const WITHIN: Duration = Duration::from_secs(20);

fn write_config(scratch: &Scratch, receiver: &Receiver) {
    scratch.write("admin.token", ADMIN_TOKEN);
    scratch.write("signing.key", SIGNING_KEY);
    scratch.config(&format!(
        r#"
[store]
path = "warden.db"

[serve.tokens.admin]
token_file = "admin.token"
user = "admin@example.com"
role = "admin"

[secrets.signing]
source = "file"
path = "signing.key"

# A minute per attempt: the first delivery is still in flight when warden is killed.
[channels.hook]
type = "webhook"
url = "{url}"
signing_secret = "signing"
timeout_ms = 60000

[environments.main]

[flows.manual]
environment = "main"
plugin = {probe}
vars = {{ action = "continue" }}
notify = {{ waiting = ["hook"] }}

[flows.auto]
environment = "main"
plugin = {probe}
vars = {{ action = "approve:on call" }}
notify = {{ decided = ["hook"] }}
"#,
        url = receiver.url("/switch/hook"),
        probe = toml_path(artifacts::PROBE)
    ));
}

fn start(scratch: &Scratch, round: usize) -> ServeProcess {
    start_serve_logged(
        env!("CARGO_BIN_EXE_warden"),
        scratch.path(),
        &round.to_string(),
    )
}

async fn submit(http: &reqwest::Client, url: &str, flow: &str, n: usize) -> Value {
    let body = json!({ "requester": { "email": format!("r{n}@example.com") }, "fields": {} });
    let response = http
        .post(format!("{url}/v1/flows/{flow}/requests"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_committed_before_a_sigkill_are_delivered_after_the_restart() {
    let receiver = Receiver::start(SIGNING_KEY, 0).await;
    receiver.set_answer(Answer::Hang);
    let scratch = Scratch::new();
    write_config(&scratch, &receiver);
    let http = reqwest::Client::new();

    let mut serving = start(&scratch, 1);
    // What each acknowledged request must be notified of.
    let mut expected: BTreeMap<String, &str> = BTreeMap::new();
    for n in 0..REQUESTS_PER_FLOW {
        for (flow, event, state) in [
            ("manual", "waiting", "pending"),
            ("auto", "decided", "escalated"),
        ] {
            let view = submit(&http, &serving.url, flow, n).await;
            assert_eq!(view["state"], state, "{view}");
            expected.insert(view["id"].as_str().unwrap().to_string(), event);
        }
    }
    // The first delivery is in flight (its receiver holds it); the rest wait behind it.
    let in_flight = receiver
        .wait_until(WITHIN, "a first attempt", |got| !got.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receiver.got().len(),
        1,
        "one channel delivers one at a time"
    );
    serving.child.kill().expect("SIGKILL warden serve");
    serving.child.wait().unwrap();

    receiver.set_answer(Answer::Ok);
    let before_restart = receiver.got().len();
    let mut serving = start(&scratch, 2);
    let got = receiver
        .wait_until(WITHIN, "every notification after the restart", |got| {
            let after: BTreeSet<&str> = got[before_restart..]
                .iter()
                .filter_map(|r| r.body["request_id"].as_str())
                .collect();
            expected.keys().all(|id| after.contains(id.as_str()))
        })
        .await;
    for r in &got[before_restart..] {
        let id = r.body["request_id"].as_str().unwrap();
        assert_eq!(r.signature_ok, Some(true), "{r:#?}");
        assert_eq!(r.event.as_deref(), Some(expected[id]), "{r:#?}");
        assert_eq!(r.body["event"], expected[id]);
    }
    // The delivery cut off by the kill came again, under the same id.
    let cut_off = in_flight[0].delivery.clone().unwrap();
    assert!(
        got[before_restart..]
            .iter()
            .any(|r| r.delivery.as_deref() == Some(&cut_off)),
        "{cut_off} was not delivered again: {got:#?}"
    );
    // Once delivered, nothing is left to send: no duplicates beyond the one cut off.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered: Vec<_> = receiver.got()[before_restart..]
        .iter()
        .filter_map(|r| r.delivery.clone())
        .collect();
    let distinct: BTreeSet<_> = delivered.iter().collect();
    assert_eq!(
        (delivered.len(), distinct.len()),
        (expected.len(), expected.len())
    );
    serving.child.kill().unwrap();
    serving.child.wait().unwrap();
}

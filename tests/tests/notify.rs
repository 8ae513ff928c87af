//! Notifications end to end: `warden serve` with Slack and webhook channels pointed at a
//! local receiver (which checks each webhook signature itself), the events each flow routes,
//! retries then giving up (on the request's history, in the audit log and the metrics), and
//! a dead receiver that holds up neither the API nor the other channels.

use std::time::Duration;

use serde_json::{Value, json};
use warden::serve::Server;
use warden_tests::receiver::{Received, Receiver};
use warden_tests::{Scratch, artifacts, toml_path};

const ALICE: &str = "alice-token-1111";
const BOB: &str = "bob-token-2222";
const CAROL: &str = "carol-token-3333";
const SIGNING_KEY: &str = "webhook-signing-key-5555";
const PUBLIC_URL: &str = "https://warden.example.com";
const WITHIN: Duration = Duration::from_secs(10);

struct Harness {
    scratch: Scratch,
    server: Server,
    http: reqwest::Client,
}

/// Starts `warden serve` with three tokens (alice requests, bob approves, carol is an
/// admin), the signing key and the Slack URL as secrets, and `rest` (channels and flows).
async fn start(slack_url: &str, rest: &str) -> Harness {
    start_on("path = \"warden.db\"", slack_url, rest).await
}

/// [`start`] with `store`, the lines of its `[store]` table.
async fn start_on(store: &str, slack_url: &str, rest: &str) -> Harness {
    let scratch = Scratch::new();
    for (name, token) in [("alice", ALICE), ("bob", BOB), ("carol", CAROL)] {
        scratch.write(&format!("tokens/{name}"), format!("{token}\n"));
    }
    scratch.write("secrets/signing", SIGNING_KEY);
    scratch.write("secrets/slack", slack_url);
    scratch.config(&format!(
        r#"
[store]
{store}

[serve]
public_url = "{PUBLIC_URL}/"

[serve.tokens.alice]
token_file = "tokens/alice"
user = "alice@example.com"
role = "requester"

[serve.tokens.bob]
token_file = "tokens/bob"
user = "bob@example.com"
role = "approver"

[serve.tokens.carol]
token_file = "tokens/carol"
user = "carol@example.com"
role = "admin"

[secrets.signing]
source = "file"
path = "secrets/signing"

[secrets.slack]
source = "file"
path = "secrets/slack"

[environments.main]

{rest}
"#
    ));
    let server = Server::start(
        &scratch.path().join("warden.toml"),
        Some("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    Harness {
        scratch,
        server,
        http: reqwest::Client::new(),
    }
}

fn probe_flow(name: &str, action: &str, notify: &str) -> String {
    format!(
        "[flows.{name}]\nenvironment = \"main\"\nplugin = {}\nvars = {{ action = {action:?} }}\n\
         [flows.{name}.fields.duration]\ntype = \"duration\"\n[flows.{name}.notify]\n{notify}\n",
        toml_path(artifacts::PROBE)
    )
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.local_addr())
    }

    async fn call(&self, path: &str, token: &str, body: Option<Value>) -> Value {
        let request = match body {
            Some(body) => self
                .http
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body.to_string()),
            None => self.http.get(self.url(path)),
        };
        let response = request.bearer_auth(token).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn submit(&self, flow: &str, fields: Value) -> Value {
        let path = format!("/v1/flows/{flow}/requests");
        self.call(&path, ALICE, Some(json!({ "fields": fields })))
            .await
    }

    /// Request `id` once its history has a notification given up, within [`WITHIN`].
    async fn given_up(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            let request = self.call(&format!("/v1/requests/{id}"), CAROL, None).await;
            let gave_up = request["history"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["kind"] == "notification");
            if gave_up {
                return request;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not given up: {request:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// The console's page at `path`, signed in as carol.
    async fn console_page(&self, path: &str) -> String {
        // The session cookie comes with the redirect after sign-in.
        let no_redirects = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let signed_in = no_redirects
            .post(self.url("/signin"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={CAROL}"))
            .send()
            .await
            .unwrap();
        let cookie = signed_in
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or_else(|| panic!("no session cookie: {signed_in:?}"))
            .to_string();
        let page = self
            .http
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert!(page.status().is_success(), "{page:?}");
        page.text().await.unwrap()
    }

    /// Takes channel `name` and flow `human`'s route to it out of the config (the channel's
    /// table comes just before `[flows.human]`), and reloads.
    async fn reload_without_channel(&self, name: &str) {
        let path = self.scratch.path().join("warden.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let start_of_channel = text.find(&format!("[channels.{name}]")).unwrap();
        let end_of_channel = text.find("[flows.human]").unwrap();
        let text = format!("{}{}", &text[..start_of_channel], &text[end_of_channel..])
            .replace(&format!("waiting = [\"{name}\"]"), "");
        std::fs::write(&path, text).unwrap();
        self.call("/v1/admin/reload", CAROL, Some(json!({}))).await;
    }

    async fn stop(self) {
        self.server.shutdown().await.unwrap();
    }
}

/// What arrived at `path` about request `id`.
fn about<'a>(got: &'a [Received], path: &str, id: &str) -> Vec<&'a Received> {
    got.iter()
        .filter(|r| {
            r.path == path
                && (r.body["request_id"] == id
                    || r.body.to_string().contains(&format!("request {id}")))
        })
        .collect()
}

fn events(received: &[&Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| r.event.clone().unwrap_or_default())
        .collect()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn each_event_reaches_its_channels_signed_and_in_slack_block_kit() {
    let receiver = Receiver::start(SIGNING_KEY, 0).await;
    let channels = format!(
        "[channels.hook]\ntype = \"webhook\"\nurl = {:?}\nsigning_secret = \"signing\"\n\
         [channels.chat]\ntype = \"slack\"\nurl_secret = \"slack\"\n",
        receiver.url("/ok/hook")
    );
    let everything = "waiting = [\"hook\", \"chat\"]\ndecided = [\"hook\", \"chat\"]\nremoved = [\"hook\"]\nhook_failed = [\"hook\"]";
    // The probe fails on_escalate (its action is no answer there): not routed but for `broken`.
    let no_failures = "waiting = [\"hook\", \"chat\"]\ndecided = [\"hook\", \"chat\"]";
    let flows = [
        probe_flow("human", "continue", no_failures),
        probe_flow(
            "auto",
            "approve:on call",
            &format!("{no_failures}\nremoved = [\"hook\"]"),
        ),
        probe_flow("broken", "panic", everything),
        probe_flow("quiet", "continue", ""),
    ]
    .concat();
    let h = start(&receiver.url("/ok/slack"), &format!("{channels}{flows}")).await;

    // A request for a human: waiting, then decided by bob.
    let human = h.submit("human", json!({})).await;
    let human_id = human["id"].as_str().unwrap().to_string();
    assert_eq!(human["state"], "pending");
    let got = receiver
        .wait_until(WITHIN, "the waiting notifications", |got| {
            about(got, "/ok/hook", &human_id).len() == 1
                && about(got, "/ok/slack", &human_id).len() == 1
        })
        .await;
    let hook = about(&got, "/ok/hook", &human_id)[0];
    assert_eq!(hook.signature_ok, Some(true), "{hook:#?}");
    assert_eq!(hook.event.as_deref(), Some("waiting"));
    assert_eq!(
        hook.delivery,
        hook.body["delivery_id"].as_str().map(str::to_string)
    );
    assert!(hook.delivery.as_deref().unwrap().starts_with("dlv-"));
    let body = &hook.body;
    assert_eq!(body["flow"], "human");
    assert_eq!(body["state"], "pending");
    assert_eq!(body["requester"], "alice@example.com");
    assert_eq!(body["decision"], "continue");
    assert_eq!(body["reason"], "awaiting a human");
    assert_eq!(body["link"], format!("{PUBLIC_URL}/requests/{human_id}"));
    assert!(body["time"].as_str().unwrap().ends_with('Z'), "{body}");
    let slack = &about(&got, "/ok/slack", &human_id)[0].body;
    assert_eq!(slack["blocks"][0]["type"], "header");
    assert_eq!(
        slack["blocks"][0]["text"]["text"],
        "Access request waiting for a decision"
    );
    let slack_text = slack.to_string();
    for expected in [
        "*Requester*\\nalice@example.com",
        "*Flow*\\nhuman",
        "*State*\\npending",
        "Reason: awaiting a human",
        &format!("<{PUBLIC_URL}/requests/{human_id}|Open request {human_id}>"),
    ] {
        assert!(
            slack_text.contains(expected),
            "no {expected} in {slack_text}"
        );
    }

    let path = format!("/v1/requests/{human_id}/approve");
    h.call(&path, BOB, Some(json!({ "reason": "ticket 42" })))
        .await;
    let got = receiver
        .wait_until(WITHIN, "the decided notifications", |got| {
            about(got, "/ok/hook", &human_id).len() == 2
                && about(got, "/ok/slack", &human_id).len() == 2
        })
        .await;
    let decided = about(&got, "/ok/hook", &human_id)[1];
    assert_eq!(decided.signature_ok, Some(true));
    assert_eq!(decided.event.as_deref(), Some("decided"));
    assert_eq!(decided.body["state"], "approved");
    assert_eq!(decided.body["decision"], "approve");
    assert_eq!(decided.body["actor"], "bob@example.com");
    assert_eq!(decided.body["reason"], "ticket 42");
    let slack = about(&got, "/ok/slack", &human_id)[1].body.to_string();
    assert!(slack.contains("Access request approved"), "{slack}");
    assert!(slack.contains("*Decided by*\\nbob@example.com"), "{slack}");

    // Approved by the plugin, for a second: decided, then removed when it runs out.
    let auto = h
        .submit("auto", json!({ "duration": { "seconds": 1 } }))
        .await;
    let auto_id = auto["id"].as_str().unwrap().to_string();
    let got = receiver
        .wait_until(WITHIN, "decided and removed", |got| {
            about(got, "/ok/hook", &auto_id).len() == 2
        })
        .await;
    let auto_events = about(&got, "/ok/hook", &auto_id);
    assert_eq!(events(&auto_events), ["decided", "removed"]);
    assert_eq!(auto_events[0].body["actor"], "flow `auto` plugin");
    assert_eq!(auto_events[0].body["reason"], "on call");
    assert_eq!(auto_events[1].body["state"], "deescalated");
    assert!(auto_events.iter().all(|r| r.signature_ok == Some(true)));
    // `removed` goes only to the webhook.
    assert_eq!(events(&about(&got, "/ok/slack", &auto_id)), [""]);

    // A plugin that panics: the failure (flow, hook, error) and the request waiting.
    let broken = h.submit("broken", json!({})).await;
    let broken_id = broken["id"].as_str().unwrap().to_string();
    let got = receiver
        .wait_until(WITHIN, "the hook failure", |got| {
            about(got, "/ok/hook", &broken_id).len() == 3
        })
        .await;
    let broken_events = about(&got, "/ok/hook", &broken_id);
    // on_request fails, the request waits, after_request fails: in the commit's order.
    assert_eq!(
        events(&broken_events),
        ["hook_failed", "waiting", "hook_failed"]
    );
    let failure = &broken_events[0].body;
    assert_eq!(failure["flow"], "broken");
    assert_eq!(failure["hook"], "on_request");
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("probe panicked"),
        "{failure}"
    );

    // A flow that routes nothing sends nothing.
    let quiet = h.submit("quiet", json!({})).await;
    let quiet_id = quiet["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = receiver.got();
    assert!(about(&got, "/ok/hook", &quiet_id).is_empty());

    // Each notification arrived once, with its own delivery id, and was counted; the
    // outbox is empty.
    let ids: std::collections::HashSet<_> = got.iter().filter_map(|r| r.delivery.clone()).collect();
    let to_hook = got.iter().filter(|r| r.path == "/ok/hook").count();
    assert_eq!((ids.len(), to_hook), (got.len() - 4, 7), "{got:#?}");
    let mut metrics = h.metrics().await;
    let delivered = |metrics: &str, channel: &str| {
        metric(
            metrics,
            &format!(
                "warden_notification_deliveries_total{{channel=\"{channel}\",result=\"delivered\"}}"
            ),
        )
    };
    for _ in 0..100 {
        if delivered(&metrics, "hook") == 7.0 && delivered(&metrics, "chat") == 4.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        metrics = h.metrics().await;
    }
    assert_eq!(delivered(&metrics, "hook"), 7.0, "{metrics}");
    assert_eq!(delivered(&metrics, "chat"), 4.0, "{metrics}");
    assert!(!metrics.contains("warden_outbox_depth{"), "{metrics}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_receiver_is_retried_then_given_up_while_others_are_not_held_up() {
    let receiver = Receiver::start(SIGNING_KEY, 0).await;
    let channel = |name: &str, path: &str, extra: &str| {
        format!(
            "[channels.{name}]\ntype = \"webhook\"\nurl = {:?}\nsigning_secret = \"signing\"\n{extra}\n",
            receiver.url(path)
        )
    };
    let config = [
        channel("down", "/fail/down", "retry_for_seconds = 1"),
        // Never answers: each attempt runs into its timeout.
        channel("stuck", "/hang/stuck", "timeout_ms = 60000"),
        channel("up", "/ok/up", ""),
        probe_flow(
            "human",
            "continue",
            "waiting = [\"stuck\", \"down\", \"up\"]",
        ),
    ]
    .concat();
    let h = start(&receiver.url("/ok/slack"), &config).await;
    // Answered although one channel's receiver hangs for a minute.
    let request = h.submit("human", json!({})).await;
    let id = request["id"].as_str().unwrap().to_string();
    assert_eq!(request["state"], "pending");
    receiver
        .wait_until(WITHIN, "the healthy channel's delivery", |got| {
            about(got, "/ok/up", &id).len() == 1
        })
        .await;

    // `down` answers 500: retried (the same delivery id each time), then given up.
    let request = h.given_up(&id).await;
    let got = receiver.got();
    let attempts = about(&got, "/fail/down", &id);
    assert!(attempts.len() >= 2, "{attempts:#?}");
    assert!(attempts.iter().all(|a| a.delivery == attempts[0].delivery));
    assert!(attempts.iter().all(|a| a.signature_ok == Some(true)));
    let entry = request["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "notification")
        .unwrap();
    assert_eq!(entry["channel"], "down");
    assert_eq!(entry["event"], "waiting");
    assert_eq!(entry["delivery"], attempts[0].body["delivery_id"]);
    assert_eq!(entry["attempts"], attempts.len());
    let error = entry["error"].as_str().unwrap();
    assert!(error.contains("500"), "{error}");
    assert!(!error.contains("127.0.0.1"), "the URL leaked: {error}");

    // The console's page of the request shows it too.
    let page = h.console_page(&format!("/requests/{id}")).await;
    assert!(
        page.contains("notification waiting to down: given up"),
        "{page}"
    );

    let audit = h.call("/v1/admin/audit", CAROL, None).await.to_string();
    assert!(audit.contains("notify-failed"), "{audit}");
    let metrics = h.metrics().await;
    let series = |channel: &str, result: &str| {
        metric(
            &metrics,
            &format!(
                "warden_notification_deliveries_total{{channel=\"{channel}\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!(series("down", "failed"), 1.0, "{metrics}");
    assert_eq!(series("down", "retried") as usize, attempts.len() - 1);
    assert_eq!(series("up", "delivered"), 1.0);
    // The stuck one is still waiting, and shows as the outbox's depth.
    assert_eq!(
        metric(&metrics, "warden_outbox_depth{channel=\"stuck\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(about(&receiver.got(), "/hang/stuck", &id).len(), 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_past_their_time_behind_a_hanging_receiver_are_given_up_unsent() {
    let receiver = Receiver::start(SIGNING_KEY, 0).await;
    let config = [
        format!(
            "[channels.slow]\ntype = \"webhook\"\nurl = {:?}\nsigning_secret = \"signing\"\n\
             timeout_ms = 1500\nretry_for_seconds = 1\n",
            receiver.url("/hang/slow")
        ),
        probe_flow("human", "continue", "waiting = [\"slow\"]"),
    ]
    .concat();
    let h = start(&receiver.url("/ok/slack"), &config).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let request = h.submit("human", json!({})).await;
        ids.push(request["id"].as_str().unwrap().to_string());
    }
    // The first waits out its 1.5 s, past its 1 s; the two behind it are past theirs by
    // then, and are given up without being sent.
    for id in &ids {
        h.given_up(id).await;
    }
    let sent: usize = ids
        .iter()
        .map(|id| about(&receiver.got(), "/hang/slow", id).len())
        .sum();
    assert_eq!(sent, 1, "only the first was sent");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_removes_a_channel_gives_up_what_waits_for_it() {
    let receiver = Receiver::start(SIGNING_KEY, 0).await;
    let config = format!(
        "[channels.down]\ntype = \"webhook\"\nurl = {:?}\nsigning_secret = \"signing\"\n{}",
        receiver.url("/fail/down"),
        probe_flow("human", "continue", "waiting = [\"down\"]"),
    );
    let h = start(&receiver.url("/ok/slack"), &config).await;
    let request = h.submit("human", json!({})).await;
    let id = request["id"].as_str().unwrap().to_string();
    receiver
        .wait_until(WITHIN, "a first attempt", |got| {
            !about(got, "/fail/down", &id).is_empty()
        })
        .await;

    // The channel and its route go; what waited for it is given up, and said so.
    h.reload_without_channel("down").await;
    let deadline = tokio::time::Instant::now() + WITHIN;
    let entry = loop {
        let request = h.call(&format!("/v1/requests/{id}"), CAROL, None).await;
        let found = request["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "notification")
            .cloned();
        if let Some(entry) = found {
            break entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not given up: {request:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry["channel"], "down");
    assert_eq!(
        entry["error"], "channel `down` is no longer in the config",
        "{entry}"
    );
    let metrics = h.metrics().await;
    assert!(!metrics.contains("warden_outbox_depth{"), "{metrics}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_a_reload_removes_sends_nothing_more_of_the_batch_it_was_sending() {
    let receiver = Receiver::start(SIGNING_KEY, 0).await;
    let config = format!(
        "[channels.gone]\ntype = \"webhook\"\nurl = {:?}\nsigning_secret = \"signing\"\n\
         timeout_ms = 1000\n{}",
        receiver.url("/hang/gone"),
        probe_flow("human", "continue", "waiting = [\"gone\"]"),
    );
    let h = start(&receiver.url("/ok/slack"), &config).await;
    let sent = || {
        receiver
            .got()
            .iter()
            .filter(|r| r.path == "/hang/gone")
            .count()
    };
    // The first is taken alone and held a second by a receiver that does not answer; the
    // four filed meanwhile are the next batch.
    h.submit("human", json!({})).await;
    receiver
        .wait_until(WITHIN, "a first attempt", |got| {
            got.iter().any(|r| r.path == "/hang/gone")
        })
        .await;
    for _ in 0..4 {
        h.submit("human", json!({})).await;
    }
    receiver
        .wait_until(WITHIN, "the next batch's first attempt", |got| {
            got.iter().filter(|r| r.path == "/hang/gone").count() >= 2
        })
        .await;
    h.reload_without_channel("gone").await;
    // Sent one after another, the batch's other three would take three more seconds.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let sent = sent();
    assert!(sent <= 3, "{sent} sent to a channel the reload removed");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_lengthening_a_channels_timeout_mid_batch_has_the_rest_taken_again_held_longer() {
    // Holds are PostgreSQL's: there, another replica takes the rows once a hold runs out.
    let Some(url) = warden::store::test_cluster::database().await else {
        return;
    };
    let receiver = Receiver::start(SIGNING_KEY, 0).await;
    let config = format!(
        "[channels.slow]\ntype = \"webhook\"\nurl = {:?}\nsigning_secret = \"signing\"\n\
         timeout_ms = 500\n{}",
        receiver.url("/hang/slow"),
        probe_flow("human", "continue", "waiting = [\"slow\"]"),
    );
    let store = format!("url = {:?}", url.as_str());
    let h = start_on(&store, &receiver.url("/ok/slack"), &config).await;
    let attempts = |n: usize| {
        move |got: &[Received]| got.iter().filter(|r| r.path == "/hang/slow").count() >= n
    };
    // The first is taken alone; the four filed while it hangs are the next batch, held for
    // 32 attempts of 0.5 s and 30 s more (46 s) from when it is taken.
    h.submit("human", json!({})).await;
    receiver
        .wait_until(WITHIN, "a first attempt", attempts(1))
        .await;
    for _ in 0..4 {
        h.submit("human", json!({})).await;
    }
    receiver
        .wait_until(WITHIN, "the next batch's first attempt", attempts(2))
        .await;
    // Each attempt may now take a minute: the batch's next would outlast its hold, and
    // another replica would take and send the rows meanwhile.
    let path = h.scratch.path().join("warden.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("timeout_ms = 500", "timeout_ms = 60000");
    std::fs::write(&path, text).unwrap();
    h.call("/v1/admin/reload", CAROL, Some(json!({}))).await;
    let (db, connection) = tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let holds: Vec<i64> = db
            .query("SELECT next_at FROM outbox WHERE channel = 'slow'", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        // Taken again, held for 32 attempts of a minute.
        if holds.iter().filter(|at| **at - now > 32 * 60_000).count() >= 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not taken again: {holds:?} at {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await;
}

/// The example receiver (`example/notify-receiver.py`, which `scripts/example` runs) drops a
/// replayed body by the delivery id the signature covers: a new `X-Warden-Delivery` header,
/// which is not signed, does not make it a new notification.
#[tokio::test(flavor = "multi_thread")]
async fn the_example_receiver_drops_a_replayed_body_whatever_its_delivery_header() {
    use hmac::{Hmac, KeyInit, Mac};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let mut receiver = std::process::Command::new("python3")
        .arg(root.join("example/notify-receiver.py"))
        .arg(port.to_string())
        .env("WARDEN_WEBHOOK_SECRET", "s3cret")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the example receiver");
    let body = json!({
        "delivery_id": "dlv-0123456789abcdef0123456789abcdef",
        "event": "decided", "request_id": "req-1", "flow": "f", "state": "approved",
        "requester": "a@example.com", "decision": "approve", "reason": "on call",
        "actor": "warden", "hook": null, "error": null, "link": null,
        "time": "2026-12-01T14:37:15.261Z",
    })
    .to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(body.as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/");
    let mut answered = Vec::new();
    for header in [
        "dlv-0123456789abcdef0123456789abcdef",
        "dlv-ffffffffffffffffffffffffffffffff",
    ] {
        let sent = loop {
            let attempt = http
                .post(&url)
                .header("X-Warden-Signature", format!("sha256={signature}"))
                .header("X-Warden-Delivery", header)
                .body(body.clone())
                .send()
                .await;
            match attempt {
                Ok(response) => break response,
                // Not listening yet.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        answered.push(sent.status().as_u16());
    }
    receiver.kill().unwrap();
    let output = receiver.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(answered, [200, 200]);
    assert_eq!(
        printed.matches("notification decided").count(),
        1,
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_the_store_cannot_record_is_not_sent_again_meanwhile() {
    // A full disk (here: a trigger refusing every delete from the outbox) kept the row due:
    // it was taken and sent again as fast as the store refused.
    let receiver = Receiver::start(SIGNING_KEY, 0).await;
    let config = [
        format!(
            "[channels.up]\ntype = \"webhook\"\nurl = {:?}\nsigning_secret = \"signing\"\n",
            receiver.url("/ok/up")
        ),
        probe_flow("human", "continue", "waiting = [\"up\"]"),
    ]
    .concat();
    let h = start(&receiver.url("/ok/slack"), &config).await;
    let db = rusqlite::Connection::open(h.scratch.path().join("warden.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER disk_full BEFORE DELETE ON outbox BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let id = h.submit("human", json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    receiver
        .wait_until(WITHIN, "the delivery", |got| {
            !about(got, "/ok/up", &id).is_empty()
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(about(&receiver.got(), "/ok/up", &id).len(), 1);
    // Once the store takes it again, the delivery is recorded, not made again.
    db.execute_batch("DROP TRIGGER disk_full").unwrap();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while metric(&h.metrics().await, "warden_outbox_depth{channel=\"up\"}") != 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(about(&receiver.got(), "/ok/up", &id).len(), 1);
    h.stop().await;
}

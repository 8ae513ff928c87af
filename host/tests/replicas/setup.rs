//! What the replica tests share: the config both replicas run, starting and SIGKILLing one,
//! the clients that load them, and the check that what a client was told with a 2xx still
//! holds, so each test reads as the outage it stages.

use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden_tests::{Scratch, artifacts, start_serve_logged, toml_path};

pub(crate) const ADMIN_TOKEN: &str = "admin-token-for-replica-tests";
pub(crate) const APPROVER: &str = "approver@example.com";
/// The approver's own token: requests the admin filed for others are the admin's to file,
/// not to approve.
pub(crate) const APPROVER_TOKEN: &str = "approver-token-for-replica-tests";
pub(crate) const CLIENTS: usize = 8;
pub(crate) const LOAD_FOR: Duration = Duration::from_millis(2400);
/// Every escalated request asks for this long, so access granted before the kill runs out
/// while the killed replica is down.
pub(crate) const ACCESS_SECONDS: u64 = 1;

/// The config both replicas share; `extra` is appended.
pub(crate) fn write_config(scratch: &Scratch, url: &str, extra: &str) {
    scratch.write("admin.token", ADMIN_TOKEN);
    scratch.write("approver.token", APPROVER_TOKEN);
    scratch.config(&format!(
        r#"
[store]
url = "{url}"

[serve]
max_in_flight = 256

[serve.tokens.admin]
token_file = "admin.token"
user = "admin@example.com"
role = "admin"

[serve.tokens.approver]
token_file = "approver.token"
user = "{APPROVER}"
role = "approver"

[integrations.pd]
type = "pagerduty"
external_id = "P1"

[environments.main]
integrations = {{ pd = "pd" }}

# The plugin persists the requester's identity, then approves: escalated at once.
[flows.persist]
environment = "main"
plugin = {probe}
vars = {{ action = "persist:pagerduty P1 user-1" }}

# A human decides.
[flows.manual]
environment = "main"
plugin = {probe}
vars = {{ action = "continue" }}
{extra}
"#,
        probe = toml_path(artifacts::PROBE)
    ));
}

/// Flow `manual`'s route of its `waiting` event to channel `hook`, a webhook to `url` signed
/// with the key in `signing.key` (for [`write_config`]'s `extra`).
pub(crate) fn webhook_channel(url: &str) -> String {
    format!(
        r#"notify = {{ waiting = ["hook"] }}

[secrets.signing]
source = "file"
path = "signing.key"

[channels.hook]
type = "webhook"
url = "{url}"
signing_secret = "signing"
"#
    )
}

pub(crate) struct Replica {
    pub(crate) child: Child,
    pub(crate) url: String,
}

pub(crate) fn start(scratch: &Scratch, name: &str) -> Replica {
    let served = start_serve_logged(env!("CARGO_BIN_EXE_warden"), scratch.path(), name);
    Replica {
        child: served.child,
        url: served.url,
    }
}

pub(crate) fn kill(mut replica: Replica) {
    replica.child.kill().expect("SIGKILL warden serve");
    replica.child.wait().unwrap();
}

/// What a replica answered: its status, its `Retry-After`, and its JSON body if whole.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<String>,
    pub(crate) body: Option<Value>,
}

/// POSTs `body` as the admin, with `key` as its idempotency key if given.
pub(crate) async fn post(
    http: &reqwest::Client,
    url: String,
    body: Value,
    key: Option<&str>,
) -> Option<Answer> {
    post_as(http, ADMIN_TOKEN, url, body, key).await
}

pub(crate) async fn post_as(
    http: &reqwest::Client,
    token: &str,
    url: String,
    body: Value,
    key: Option<&str>,
) -> Option<Answer> {
    let mut request = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(20))
        .body(body.to_string());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    // A body cut off by a kill is not an acknowledgement a client could act on.
    let body = serde_json::from_str(&response.text().await.ok()?).ok();
    Some(Answer {
        status,
        retry_after,
        body,
    })
}

pub(crate) async fn get(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

pub(crate) fn new_request(requester: &str) -> Value {
    json!({
        "requester": { "email": requester },
        "fields": { "duration": format!("{ACCESS_SECONDS}s") },
    })
}

/// A 2xx answer a client got: what warden promised about request `id`.
#[derive(Debug, Clone)]
pub(crate) struct Acknowledged {
    pub(crate) id: String,
    pub(crate) state: String,
    pub(crate) history: Vec<Value>,
}

pub(crate) type Log = Arc<Mutex<Vec<Acknowledged>>>;

/// An answer's status, `Retry-After` and body, as a client kept it.
pub(crate) type Answered = (u16, Option<String>, Option<Value>);

pub(crate) fn acknowledge(log: &Log, view: &Value) {
    log.lock().unwrap().push(Acknowledged {
        id: view["id"].as_str().unwrap().to_string(),
        state: view["state"].as_str().unwrap().to_string(),
        history: view["history"].as_array().unwrap().clone(),
    });
}

pub(crate) fn count(history: &[Value], kind: &str, key: &str, value: &str) -> usize {
    history
        .iter()
        .filter(|e| e["kind"] == kind && e[key] == value)
        .count()
}

/// States a request may have reached since a client saw it in `seen`.
pub(crate) fn may_follow(seen: &str, now: &str) -> bool {
    let later: &[&str] = match seen {
        "pending" => &["pending", "approved", "escalated", "denied", "deescalated"],
        "escalated" => &["escalated", "deescalated"],
        other => &[other],
    };
    later.contains(&now)
}

/// Every acknowledged request, read from `replica`, is in a state that follows from what the
/// client saw, with that history as the start of its own.
pub(crate) async fn check_acknowledged(replica: &str, acks: &[Acknowledged]) {
    let http = reqwest::Client::new();
    for ack in acks {
        let view = get(&http, &format!("{replica}/v1/requests/{}", ack.id)).await;
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
}

/// One client over both replicas in turn: submits to both flows and approves every other
/// manual request, on the other replica than the one that stored it.
pub(crate) async fn client(urls: [String; 2], client: usize, until: Instant, log: Log) {
    let http = reqwest::Client::new();
    let mut n = 0;
    while Instant::now() < until {
        let (here, there) = (&urls[n % 2], &urls[(n + 1) % 2]);
        let requester = format!("c{client}-{n}@example.com");
        let flow = if n % 2 == 0 { "persist" } else { "manual" };
        let url = format!("{here}/v1/flows/{flow}/requests");
        n += 1;
        let Some(answer) = post(&http, url, new_request(&requester), None).await else {
            continue;
        };
        let Some(view) = answer.body.filter(|_| answer.status == 201) else {
            continue;
        };
        acknowledge(&log, &view);
        if flow == "manual" && n % 4 == 0 {
            let id = view["id"].as_str().unwrap();
            let url = format!("{there}/v1/requests/{id}/approve");
            let body = json!({ "approver": { "email": APPROVER } });
            if let Some(Answer {
                status: 200,
                body: Some(view),
                ..
            }) = post(&http, url, body, None).await
            {
                acknowledge(&log, &view);
            }
        }
    }
}

/// `warden` with `args`, `stdin` fed in; (success, stdout, stderr).
pub(crate) fn warden(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run warden");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in to `replica`'s console with the admin token: the session's cookie.
pub(crate) async fn console_sign_in(http: &reqwest::Client, replica: &str) -> String {
    let signed_in = http
        .post(format!("{replica}/signin"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}&next=%2F"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let set_cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    set_cookie.split(';').next().unwrap().to_string()
}

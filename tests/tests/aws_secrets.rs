//! Secrets kept in AWS Secrets Manager, against moto's implementation of its API on
//! loopback: loading, json_key, rotation, failures and redaction.

use std::sync::Once;
use std::time::{Duration, Instant};

use warden::{Config, Decision, EventInput, HookName, HookReport, Warden};
use warden_tests::moto::{self, Moto};
use warden_tests::web::TestServer;
use warden_tests::{Scratch, artifacts, toml_path};

/// Every test here starts with this, so the variables are set before any test reads the
/// environment (the AWS SDK reads its credentials from it).
fn aws_env() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        for (name, value) in moto::aws_env() {
            // SAFETY: set once, before any thread of this binary reads the environment
            // (each test calls this first).
            unsafe { std::env::set_var(name, value) };
        }
    });
}

/// `vo_key` from AWS (`secret_lines` adds to its table), flow `reveal` returning the value
/// and flow `sealed` sending it to `server` as a sealed header.
fn config_text(moto: &Moto, server: &TestServer, secret_lines: &str) -> String {
    format!(
        r#"
[secrets.vo_key]
source = "aws-secrets-manager"
path = "main/victorops"
endpoint = "{endpoint}"
region = "us-east-1"
{secret_lines}

[integrations.victorops]
type = "custom"
external_id = "vo-ext"
secrets = ["vo_key"]

[environments.main]
integrations = {{ victorops = "victorops" }}

[flows.reveal]
environment = "main"
plugin = {plugin}
vars = {{ action = "secret-reveal:victorops" }}

[flows.sealed]
environment = "main"
plugin = {plugin}
allowed_hosts = [{origin:?}]
vars = {{ action = "http-sealed:victorops {origin}/echo" }}
"#,
        endpoint = moto.endpoint(),
        plugin = toml_path(artifacts::PROBE),
        origin = server.origin(),
    )
}

fn event() -> EventInput {
    EventInput::from_json(r#"{"user":{"email":"alice@example.com"},"fields":{}}"#).unwrap()
}

async fn run(warden: &Warden, flow: &str) -> HookReport {
    warden
        .run_hook(flow, HookName::OnRequest, &event())
        .await
        .unwrap()
}

fn reason(report: &HookReport) -> String {
    match &report.outcome {
        Ok(Decision::Approve { reason: Some(r) } | Decision::Deny { reason: Some(r) }) => r.clone(),
        other => panic!("expected a decision with a reason, got {other:?}"),
    }
}

async fn start(scratch: &Scratch, text: &str) -> Warden {
    let path = scratch.config(text);
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    Warden::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_secret_is_used_without_a_restart_and_every_value_is_redacted() {
    aws_env();
    let moto = Moto::start();
    let server = TestServer::start().await;
    moto.create_secret("main/victorops", r#"{"api_key":"vo-key-one","api_id":"x"}"#);
    let scratch = Scratch::new();
    let text = config_text(&moto, &server, "json_key = \"api_key\"\ncache_seconds = 1");
    let warden = start(&scratch, &text).await;

    let sealed = run(&warden, "sealed").await;
    assert!(reason(&sealed).starts_with("status=200"), "{sealed:?}");
    assert_eq!(server.last_api_key().as_deref(), Some("vo-key-one"));
    assert_eq!(reason(&run(&warden, "reveal").await), "[REDACTED]");

    moto.put_secret_value("main/victorops", r#"{"api_key":"vo-key-two"}"#);
    // Past cache_seconds, the next use fetches the new version.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run(&warden, "sealed").await;
    assert_eq!(server.last_api_key().as_deref(), Some("vo-key-two"));
    let revealed = run(&warden, "reveal").await;
    assert_eq!(
        reason(&revealed),
        "[REDACTED]",
        "the rotated value is redacted too"
    );
    let shown = format!("{revealed:?}");
    assert!(!shown.contains("vo-key-two") && !shown.contains("vo-key-one"));
}

#[tokio::test(flavor = "multi_thread")]
async fn when_aws_fails_the_last_good_value_serves_until_it_expires_then_the_hook_sees_why() {
    aws_env();
    let mut moto = Moto::start();
    let server = TestServer::start().await;
    moto.create_secret("main/victorops", "vo-plain-key");
    let scratch = Scratch::new();
    let warden = start(&scratch, &config_text(&moto, &server, "cache_seconds = 2")).await;

    // Let the value fetched at load expire, so that this hook fetches a fresh one at a time
    // the test knows.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    run(&warden, "sealed").await;
    let fetched_by = Instant::now();
    assert_eq!(server.last_api_key().as_deref(), Some("vo-plain-key"));

    moto.stop();
    // Older than half of cache_seconds: a refresh is tried, fails, and the value in hand
    // is still served.
    tokio::time::sleep_until((fetched_by + Duration::from_millis(1200)).into()).await;
    let stale = run(&warden, "sealed").await;
    assert!(reason(&stale).starts_with("status=200"), "{stale:?}");
    assert!(
        fetched_by.elapsed() < Duration::from_secs(2),
        "the test ran too slowly"
    );

    tokio::time::sleep_until((fetched_by + Duration::from_millis(2300)).into()).await;
    let expired = run(&warden, "sealed").await;
    let error = reason(&expired);
    assert!(
        error.contains(
            "host error: cannot fill in sealed header `X-Api-Key`: secret `vo_key` (AWS Secrets Manager `main/victorops`): cannot read `main/victorops` from AWS Secrets Manager at http://127.0.0.1:"
        ),
        "{error}"
    );
    assert!(error.contains("has expired (cache_seconds = 2)"), "{error}");
    // Recorded (and counted in metrics) as the secret's failure, not the network's.
    let outcomes: Vec<&str> = expired
        .http_calls
        .iter()
        .map(|c| c.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["secret"], "{expired:?}");
    let revealed = run(&warden, "reveal").await;
    assert!(
        reason(&revealed).contains("host error: secret `vo_key`"),
        "{revealed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_a_wrong_key_bad_json_or_no_endpoint_is_a_config_error() {
    aws_env();
    let moto = Moto::start();
    moto.create_secret("main/json", r#"{"api_key":"k"}"#);
    moto.create_secret("main/not-json", "{oops");
    let scratch = Scratch::new();
    let secret = |id: &str, path: &str, extra: &str, endpoint: &str| {
        format!(
            "[secrets.{id}]\nsource = \"aws-secrets-manager\"\npath = \"{path}\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n{extra}\n"
        )
    };
    // A port nothing listens on: bind one, then let it go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let text = [
        secret("missing", "main/absent", "", &moto.endpoint()),
        secret(
            "wrong_key",
            "main/json",
            "json_key = \"token\"",
            &moto.endpoint(),
        ),
        secret(
            "malformed",
            "main/not-json",
            "json_key = \"api_key\"",
            &moto.endpoint(),
        ),
        secret("unreachable", "main/json", "", &unreachable),
        secret(
            "fine",
            "main/json",
            "json_key = \"api_key\"",
            &moto.endpoint(),
        ),
    ]
    .concat();
    let path = scratch.config(&text);
    let errors: Vec<String> = Config::load(&path)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    let expect = |needle: &str| {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "no error contains {needle:?}: {errors:#?}"
        )
    };
    expect(&format!(
        "secrets.missing.path: secret `missing`: AWS Secrets Manager at {} has no secret `main/absent`",
        moto.endpoint()
    ));
    expect(
        "secrets.wrong_key.json_key: secret `wrong_key`: AWS Secrets Manager secret `main/json` has no key `token` (its keys: api_key)",
    );
    expect(
        "secrets.malformed.json_key: secret `malformed`: AWS Secrets Manager secret `main/not-json` is not valid JSON",
    );
    expect(&format!(
        "secrets.unreachable.path: secret `unreachable`: cannot read `main/json` from AWS Secrets Manager at {unreachable}"
    ));
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors
            .iter()
            .all(|e| e.starts_with(&path.display().to_string()))
    );
}

/// An endpoint on loopback answering every request with `head` and then, if `endless`,
/// 64 KiB chunks of a JSON string until the client hangs up.
fn oversized_endpoint(head: &'static str, endless: bool) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if conn.write_all(head.as_bytes()).is_err() || !endless {
                    // Announced, never sent: a client that waits for it waits out the timeout.
                    std::thread::sleep(Duration::from_secs(30));
                    return;
                }
                let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
                let _ = conn.write_all(b"1c\r\n{\"Name\":\"x\",\"SecretString\":\"\r\n");
                while conn.write_all(chunk.as_bytes()).is_ok() {}
            });
        }
    });
    endpoint
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_answering_without_end_or_announcing_gigabytes_is_refused_within_a_bound() {
    aws_env();
    let endless = oversized_endpoint(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        true,
    );
    let announced = oversized_endpoint(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 4294967296\r\n\r\n",
        false,
    );
    let scratch = Scratch::new();
    let secret = |id: &str, endpoint: &str| {
        format!(
            "[secrets.{id}]\nsource = \"aws-secrets-manager\"\npath = \"main/big\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\n"
        )
    };
    let path =
        scratch.config(&[secret("endless", &endless), secret("announced", &announced)].concat());
    let started = Instant::now();
    let errors: Vec<String> = Config::load(&path)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    let bound = warden::secrets::MAX_AWS_ANSWER_BYTES >> 10;
    let expect = |needle: &str| {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "no error contains {needle:?}: {errors:#?}"
        )
    };
    expect(&format!(
        "secrets.endless.path: secret `endless`: cannot read `main/big`: AWS Secrets Manager at {endless} answered past the {bound} KiB a secret's answer may be"
    ));
    expect(&format!(
        "secrets.announced.path: secret `announced`: cannot read `main/big`: AWS Secrets Manager at {announced} announced an answer of 4294967296 bytes, over the {bound} KiB a secret's answer may be"
    ));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    // Refused as the bound is reached, not when the operation's timeout (5 s each) ends it.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A webhook channel's signing key kept in AWS: each notification is signed with the key as it
/// is when it is sent, so a rotation reaches the receiver without a reload, as a plugin's
/// secret does; and a key that can no longer be read fails the attempt, which is retried and
/// then given up on the request like an attempt the receiver refused, nothing sent unsigned.
#[tokio::test(flavor = "multi_thread")]
async fn a_notification_channel_signs_with_its_rotated_key_and_gives_up_without_one() {
    aws_env();
    let mut moto = Moto::start();
    moto.create_secret("main/signing", "signing-key-one");
    // Checks signatures under the key the rotation brings.
    let receiver = warden_tests::receiver::Receiver::start("signing-key-two", 0).await;
    let scratch = Scratch::new();
    scratch.write("tokens/alice", "alice-token-1111\n");
    let path = scratch.config(&format!(
        r#"
[store]
path = "warden.db"

[serve.tokens.alice]
token_file = "tokens/alice"
user = "alice@example.com"
role = "requester"

[secrets.signing]
source = "aws-secrets-manager"
path = "main/signing"
endpoint = "{endpoint}"
region = "us-east-1"
cache_seconds = 1

[environments.main]

[channels.hook]
type = "webhook"
url = "{url}"
signing_secret = "signing"
retry_for_seconds = 1

[flows.human]
environment = "main"
plugin = {plugin}
vars = {{ action = "continue" }}
notify = {{ waiting = ["hook"] }}
"#,
        endpoint = moto.endpoint(),
        url = receiver.url("/hook"),
        plugin = toml_path(artifacts::PROBE),
    ));
    let server = warden::serve::Server::start(&path, Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.local_addr());
    let call = |method: reqwest::Method, path: String| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth("alice-token-1111")
            .header("content-type", "application/json")
    };
    let submit = || async {
        let response = call(reqwest::Method::POST, "/v1/flows/human/requests".into())
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let filed: serde_json::Value =
            serde_json::from_str(&response.text().await.unwrap()).unwrap();
        filed["id"].as_str().unwrap().to_string()
    };
    let signed = |count: usize| {
        let receiver = &receiver;
        async move {
            receiver
                .wait_until(Duration::from_secs(10), "the notifications", |got| {
                    got.len() == count
                })
                .await
                .iter()
                .map(|r| r.signature_ok)
                .collect::<Vec<_>>()
        }
    };

    submit().await;
    assert_eq!(signed(1).await, [Some(false)], "signed with the first key");
    moto.put_secret_value("main/signing", "signing-key-two");
    // Past cache_seconds, the next attempt reads the new version.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    submit().await;
    assert_eq!(
        signed(2).await,
        [Some(false), Some(true)],
        "the second signed with the rotated key"
    );

    // AWS gone and the key in hand past cache_seconds: the attempt fails, naming the secret.
    moto.stop();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let id = submit().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let text = call(reqwest::Method::GET, format!("/v1/requests/{id}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let request: serde_json::Value = serde_json::from_str(&text).unwrap();
        let given_up = request["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "notification")
            .cloned();
        if let Some(entry) = given_up {
            break entry;
        }
        assert!(Instant::now() < deadline, "not given up: {request:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry["channel"], "hook");
    let error = entry["error"].as_str().unwrap();
    assert!(
        error.contains("cannot read secret `signing` now"),
        "{error}"
    );
    assert!(
        !error.contains("main/signing"),
        "where it is kept leaked: {error}"
    );
    assert_eq!(receiver.got().len(), 2, "nothing sent without its key");
    server.shutdown().await.unwrap();
}

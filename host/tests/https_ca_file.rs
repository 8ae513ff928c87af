//! `[http] ca_file` through the whole host: a plugin's `https` request to an API whose
//! certificate a company's own authority signed is answered when the config names that
//! authority, and refused before anything is sent when it does not; a webhook receiver
//! behind that authority gets `warden serve`'s notifications.

use std::sync::Arc;
use std::time::{Duration, Instant};

use warden::serve::Server;
use warden::store::Store;
use warden::{Config, Decision, EventInput, HookName, StartOptions, Warden};
use warden_tests::tls::{Origin, authority};
use warden_tests::{Scratch, artifacts, toml_path};

const ON_CALL: &str = r#"{"onCallNow":[]}"#;

async fn seen_by_plugin(scratch: &Scratch, port: u16, http_section: &str) -> String {
    let text = format!(
        r#"[store]
path = "warden.db"
{http_section}
[environments.main]

[flows.internal]
environment = "main"
plugin = {probe}
allowed_hosts = ["https://127.0.0.1:{port}"]
vars = {{ action = "http-hex:https://127.0.0.1:{port}/oncall" }}
"#,
        probe = toml_path(artifacts::PROBE)
    );
    let config = Config::load(&scratch.config(&text)).unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(Store::open(&config.store_path).unwrap());
    let secrets = Arc::new(warden::secrets::SecretStore::new(&config.secrets));
    let warden = Warden::start_with(config, store, secrets, StartOptions::default())
        .await
        .unwrap();
    let event = EventInput::from_json(r#"{"user":{"email":"a@example.com"},"fields":{}}"#).unwrap();
    let report = warden
        .run_hook("internal", HookName::OnRequest, &event)
        .await
        .unwrap();
    let Ok(Decision::Approve { reason: Some(hex) }) = report.outcome else {
        panic!("expected the probe's approval, got {:?}", report.outcome);
    };
    String::from_utf8(warden_tests::unhex(&hex).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_reaches_an_api_signed_by_the_authority_http_ca_file_names() {
    let ca = authority("company authority");
    let api = Origin::start(&ca, &["127.0.0.1"], ON_CALL).await;
    let port = api.addr.port();
    let scratch = Scratch::new();
    scratch.write("company-ca.pem", ca.pem());

    let without = seen_by_plugin(&scratch, port, "").await;
    assert!(
        without.starts_with("error connect: ") && without.contains("UnknownIssuer"),
        "{without}"
    );
    assert!(api.heads().is_empty(), "nothing sent without ca_file");

    let with = seen_by_plugin(&scratch, port, "[http]\nca_file = \"company-ca.pem\"\n").await;
    assert!(with.starts_with("200\n"), "{with}");
    assert!(with.ends_with(&format!("\n\n{ON_CALL}")), "{with}");
    assert_eq!(api.heads().len(), 1);
}

/// Notifications trust the same authorities: a webhook receiver behind the company's own
/// authority gets its signed notification.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_receiver_signed_by_that_authority_gets_its_notifications() {
    let ca = authority("company authority");
    let api = Origin::start(&ca, &["127.0.0.1"], ON_CALL).await;
    let port = api.addr.port();
    let scratch = Scratch::new();
    scratch.write("company-ca.pem", ca.pem());
    scratch.write("token", "admin-token-for-the-ca-file-test");
    scratch.write("signing.key", "signing-key-for-the-ca-file-test");
    let config = scratch.config(&format!(
        r#"[store]
path = "warden.db"

[http]
ca_file = "company-ca.pem"

[serve.tokens.admin]
token_file = "token"
user = "admin@example.com"
role = "admin"

[secrets.signing]
source = "file"
path = "signing.key"

[channels.internal]
type = "webhook"
url = "https://127.0.0.1:{port}/hooks/warden"
signing_secret = "signing"

[environments.main]

[flows.manual]
environment = "main"
plugin = {probe}
vars = {{ action = "continue" }}
notify = {{ waiting = ["internal"] }}
"#,
        probe = toml_path(artifacts::PROBE)
    ));
    let server = Server::start(&config, Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let made = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/flows/manual/requests",
            server.local_addr()
        ))
        .bearer_auth("admin-token-for-the-ca-file-test")
        .header("content-type", "application/json")
        .body(r#"{"fields":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.heads().is_empty() {
        assert!(Instant::now() < deadline, "the notification did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let head = api.heads()[0].to_ascii_lowercase();
    assert!(
        head.starts_with("post /hooks/warden http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("x-warden-signature"), "{head}");
    server.shutdown().await.unwrap();
}

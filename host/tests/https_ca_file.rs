//! `[http] ca_file` through the whole host: a plugin's `https` request to an API whose
//! certificate a company's own authority signed is answered when the config names that
//! authority, and refused before anything is sent when it does not; a webhook receiver
//! behind that authority gets `warden serve`'s notifications.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden::serve::Server;
use warden::store::Store;
use warden::{Config, Decision, EventInput, HookName, StartOptions, Warden};
use warden_tests::{Scratch, artifacts, toml_path};

/// An HTTPS API on 127.0.0.1 with a certificate `ca` signed, answering every request with
/// `on call!`; the heads of the requests that reached it (once their bodies were read).
async fn api(ca: &CertifiedIssuer<'static, KeyPair>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let private = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], private.into())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let kept = heads.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, kept) = (acceptor.clone(), kept.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut read = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    if let Some(at) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&read[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                while read.len() < head_end + length {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                    }
                }
                kept.lock().unwrap().push(head);
                let answer =
                    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\non call!";
                let _ = tls.write_all(answer).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, heads)
}

fn company_authority() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "company authority");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

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
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_reaches_an_api_signed_by_the_authority_http_ca_file_names() {
    let ca = company_authority();
    let (port, heads) = api(&ca).await;
    let scratch = Scratch::new();
    scratch.write("company-ca.pem", &ca.pem());

    let without = seen_by_plugin(&scratch, port, "").await;
    assert!(
        without.starts_with("error connect: ") && without.contains("UnknownIssuer"),
        "{without}"
    );
    assert!(
        heads.lock().unwrap().is_empty(),
        "nothing sent without ca_file"
    );

    let with = seen_by_plugin(&scratch, port, "[http]\nca_file = \"company-ca.pem\"\n").await;
    assert!(with.starts_with("200\n"), "{with}");
    assert!(with.ends_with("\n\non call!"), "{with}");
    assert_eq!(heads.lock().unwrap().len(), 1);
}

/// Notifications trust the same authorities: a webhook receiver behind the company's own
/// authority gets its signed notification.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_receiver_signed_by_that_authority_gets_its_notifications() {
    let ca = company_authority();
    let (port, heads) = api(&ca).await;
    let scratch = Scratch::new();
    scratch.write("company-ca.pem", &ca.pem());
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
    while heads.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the notification did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let head = heads.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("post /hooks/warden http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("x-warden-signature"), "{head}");
    server.shutdown().await.unwrap();
}

//! `[http] ca_file` through the whole host: a plugin's `https` request to an API whose
//! certificate a company's own authority signed is answered when the config names that
//! authority, and refused before anything is sent when it does not.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warden::store::Store;
use warden::{Config, Decision, EventInput, HookName, StartOptions, Warden};
use warden_tests::{Scratch, artifacts, toml_path};

/// An HTTPS API on 127.0.0.1 with a certificate `ca` signed; counts requests that reached it.
async fn api(ca: &CertifiedIssuer<'static, KeyPair>) -> (u16, Arc<AtomicUsize>) {
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
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let answer =
                    b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\non call!";
                let _ = tls.write_all(answer).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, requests)
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
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "company authority");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let (port, requests) = api(&ca).await;
    let scratch = Scratch::new();
    scratch.write("company-ca.pem", &ca.pem());

    let without = seen_by_plugin(&scratch, port, "").await;
    assert!(
        without.starts_with("error connect: ") && without.contains("UnknownIssuer"),
        "{without}"
    );
    assert_eq!(
        requests.load(Ordering::SeqCst),
        0,
        "nothing sent without ca_file"
    );

    let with = seen_by_plugin(&scratch, port, "[http]\nca_file = \"company-ca.pem\"\n").await;
    assert!(with.starts_with("200\n"), "{with}");
    assert!(with.ends_with("\n\non call!"), "{with}");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

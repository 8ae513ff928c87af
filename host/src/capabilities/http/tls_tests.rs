//! HTTPS through the real network transport: a TLS origin on loopback with a certificate
//! from an authority made here, which the transport either trusts
//! (`NetworkTransport::trusting`) or, like every transport a config makes, does not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use rcgen::{CertifiedIssuer, KeyPair};
use url::Url;
use warden_tests::tls::{Origin, authority};

use super::transport::trusted_roots;
use crate::config::{HttpSettings, RootCerts};

use super::{
    HopRequest, Lookup, NetworkTransport, OutgoingHeader, OutgoingValue, Transport, TransportError,
};

const BODY: &str = r#"{"teamsOnCall":[]}"#;

/// The URLs here name an address, which is reached without a lookup: one would be a bug.
struct NoLookup;

#[async_trait]
impl Lookup for NoLookup {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        panic!("`{host}` was looked up, but the URL names an address");
    }
}

fn trusting(ca: &CertifiedIssuer<'static, KeyPair>) -> NetworkTransport {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    NetworkTransport::trusting(Arc::new(NoLookup), roots).unwrap()
}

fn https_url(origin: &Origin, path: &str) -> Url {
    Url::parse(&format!("https://{}{path}", origin.addr)).unwrap()
}

async fn get(
    transport: &NetworkTransport,
    url: &Url,
    headers: &[OutgoingHeader],
) -> Result<super::HopResponse, TransportError> {
    transport
        .send(HopRequest {
            method: &reqwest::Method::GET,
            url,
            headers: headers.iter().collect(),
            body: None,
            timeout: Duration::from_secs(10),
            within_hook_deadline: false,
            max_body: 1 << 20,
        })
        .await
}

#[tokio::test]
async fn an_https_origin_is_reached_over_verified_tls_and_its_connection_kept() {
    let ca = authority("warden test authority");
    let origin = Origin::start(&ca, &["127.0.0.1"], BODY).await;
    let transport = trusting(&ca);
    let url = https_url(&origin, "/api-public/v1/oncall/current");
    let headers = [OutgoingHeader {
        name: "X-VO-Api-Id".into(),
        value: OutgoingValue::Text("vo-ext".into()),
    }];
    for _ in 0..2 {
        let answer = get(&transport, &url, &headers).await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, BODY.as_bytes());
    }
    assert_eq!(
        origin.accepted.load(Ordering::SeqCst),
        1,
        "the second request went over the first one's TLS connection"
    );
    assert_eq!(transport.idle_connections(), 1);
    let heads = origin.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    let head = heads[0].to_ascii_lowercase();
    assert!(
        head.starts_with("get /api-public/v1/oncall/current http/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("host: {}\r\n", origin.addr)),
        "{head}"
    );
    assert!(head.contains("x-vo-api-id: vo-ext\r\n"), "{head}");
}

#[tokio::test]
async fn a_certificate_from_an_authority_the_transport_does_not_trust_is_refused() {
    let ca = authority("warden test authority");
    let origin = Origin::start(&ca, &["127.0.0.1"], BODY).await;
    let url = https_url(&origin, "/v1/a");
    // Every transport a config makes trusts the public web's authorities only.
    let public = NetworkTransport::with_lookup(Arc::new(NoLookup)).unwrap();
    let other = trusting(&authority("another authority"));
    for transport in [&public, &other] {
        match get(transport, &url, &[]).await {
            Err(TransportError::Connect(message)) => assert!(
                message.contains("TLS") && message.contains("UnknownIssuer"),
                "{message}"
            ),
            other => panic!("expected a refused certificate, got {other:?}"),
        }
        assert_eq!(transport.idle_connections(), 0);
    }
    assert!(origin.heads().is_empty(), "no request was sent");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let ca = authority("warden test authority");
    let origin = Origin::start(&ca, &["api.victorops.test"], BODY).await;
    match get(&trusting(&ca), &https_url(&origin, "/v1/a"), &[]).await {
        Err(TransportError::Connect(message)) => assert!(
            message.contains("TLS") && message.contains("not valid for name"),
            "{message}"
        ),
        other => panic!("expected a certificate for another name refused, got {other:?}"),
    }
    assert_eq!(origin.accepted.load(Ordering::SeqCst), 1);
    assert!(origin.heads().is_empty(), "no request was sent");
}

#[tokio::test]
async fn an_authority_a_configs_ca_file_names_is_trusted_beside_the_public_ones() {
    let ca = authority("company authority");
    let origin = Origin::start(&ca, &["127.0.0.1"], BODY).await;
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("company-ca.pem");
    std::fs::write(&pem, ca.pem()).unwrap();
    let settings = HttpSettings {
        extra_roots: Some(RootCerts::read(pem, "file").unwrap()),
        ..HttpSettings::default()
    };
    let transport = NetworkTransport::for_settings(&settings).unwrap();
    let answer = get(&transport, &https_url(&origin, "/v1/a"), &[])
        .await
        .unwrap();
    assert_eq!(
        (answer.status, answer.body.as_slice()),
        (200, BODY.as_bytes())
    );

    let public = webpki_roots::TLS_SERVER_ROOTS.len();
    assert_eq!(
        trusted_roots(&settings).len(),
        public + 1,
        "the public ones kept"
    );
    assert_eq!(trusted_roots(&HttpSettings::default()).len(), public);
    let default = NetworkTransport::for_settings(&HttpSettings::default()).unwrap();
    match get(&default, &https_url(&origin, "/v1/a"), &[]).await {
        Err(TransportError::Connect(message)) => assert!(message.contains("UnknownIssuer")),
        other => panic!("expected a refused certificate without ca_file, got {other:?}"),
    }
}

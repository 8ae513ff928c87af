//! TLS to PostgreSQL against a throwaway cluster with `ssl = on`, a CA and a server
//! certificate made here, and a `pg_hba.conf` that takes TCP connections only over TLS.

use std::path::Path;

use rcgen::{CertifiedIssuer, KeyPair};

use super::PgStore;
use crate::config::StoreUrl;
use crate::store::test_cluster::{self, Options, Server, ServerTls};
use warden_tests::tls::{authority, server_certificate};

/// The name the server's certificate is for; the tests reach it at 127.0.0.1 (`hostaddr`).
const DB_NAME: &str = "db.warden.test";

/// A cluster that takes TCP connections only over TLS, with a certificate for [`DB_NAME`]
/// signed by `ca`.
fn tls_server(ca: &CertifiedIssuer<'static, KeyPair>) -> Option<Server> {
    let (cert, key) = server_certificate(ca, &[DB_NAME]);
    test_cluster::dedicated_with(Options {
        hba: Some("local all all trust\nhostssl all all 127.0.0.1/32 trust\n".into()),
        tls: Some(ServerTls {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }),
    })
}

/// Opens the store at `url` and answers whether its connection is encrypted (as the server
/// sees it), or the error, as text.
async fn open(url: &str, base: &Path) -> Result<bool, String> {
    let url = StoreUrl::parse_in(url, base).map_err(|e| format!("parse: {e}"))?;
    let store = PgStore::open(&url).await.map_err(|e| e.to_string())?;
    let client = store.client("ask").await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmodes_against_a_server_that_demands_tls() {
    let ca = authority("the database's CA");
    let started = {
        let ca_pem = ca.pem();
        let server = tokio::task::spawn_blocking(move || tls_server(&ca)).await;
        server.unwrap().map(|s| (s, ca_pem))
    };
    let Some((server, ca_pem)) = started else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    std::fs::write(
        dir.path().join("other-ca.pem"),
        authority("another CA").pem(),
    )
    .unwrap();
    let port = server.port;
    let by_name = format!("postgres://warden@{DB_NAME}:{port}/warden?hostaddr=127.0.0.1&");
    let by_address = format!("postgres://warden@127.0.0.1:{port}/warden?");
    let base = dir.path();

    // The right CA and the name on the certificate.
    assert_eq!(
        open(
            &format!("{by_name}sslmode=verify-full&sslrootcert=ca.pem"),
            base
        )
        .await,
        Ok(true)
    );
    // Another CA.
    let error = open(
        &format!("{by_name}sslmode=verify-full&sslrootcert=other-ca.pem"),
        base,
    )
    .await
    .unwrap_err();
    assert!(
        error.contains(&format!(
            "TLS with `{DB_NAME}` (sslmode=verify-full, sslrootcert="
        )) && error.contains("other-ca.pem) failed: invalid peer certificate: UnknownIssuer"),
        "{error}"
    );
    // The right CA, but a host the certificate is not for.
    let error = open(
        &format!("{by_address}sslmode=verify-full&sslrootcert=ca.pem"),
        base,
    )
    .await
    .unwrap_err();
    assert!(
        error.contains("TLS with `127.0.0.1` (sslmode=verify-full")
            && error.contains("not valid for name"),
        "{error}"
    );
    // verify-ca checks the CA and not the name; require with a CA file means verify-ca.
    for mode in ["verify-ca", "require"] {
        let ok = open(
            &format!("{by_address}sslmode={mode}&sslrootcert=ca.pem"),
            base,
        )
        .await;
        assert_eq!(ok, Ok(true), "{mode}");
        let error = open(
            &format!("{by_address}sslmode={mode}&sslrootcert=other-ca.pem"),
            base,
        )
        .await
        .unwrap_err();
        assert!(error.contains("UnknownIssuer"), "{mode}: {error}");
    }
    // Encrypted, the certificate unchecked: `require`, and `prefer` (the default).
    for query in ["sslmode=require", "sslmode=prefer", ""] {
        let ok = open(&format!("{by_address}{query}"), base).await;
        assert_eq!(ok, Ok(true), "{query}");
    }
    // The server takes no connection without TLS.
    let error = open(&format!("{by_address}sslmode=disable"), base)
        .await
        .unwrap_err();
    assert!(
        error.contains("no pg_hba.conf entry for host \"127.0.0.1\"")
            && error.contains("no encryption"),
        "{error}"
    );
}

#[tokio::test]
async fn a_server_without_tls_is_refused_by_require_and_used_plain_by_prefer() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let plain = url.as_str();
    let base = Path::new("");
    let error = open(&format!("{plain}?sslmode=require"), base)
        .await
        .unwrap_err();
    assert!(error.contains("server does not support TLS"), "{error}");
    for query in ["?sslmode=prefer", "?sslmode=disable", ""] {
        let ok = open(&format!("{plain}{query}"), base).await;
        assert_eq!(ok, Ok(false), "{query}");
    }
}

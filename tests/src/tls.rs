//! HTTPS for tests: a certificate authority made for one test, servers' certificates it
//! signs, and an origin on 127.0.0.1 serving one of them (the http capability's and
//! `[http] ca_file`'s tests; the PostgreSQL TLS tests use the certificates).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, Certificate, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed authority named `name`, with a fresh key.
pub fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `names` (host names or addresses) signed by `ca`, and its fresh key.
pub fn server_certificate(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
) -> (Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    (cert, key)
}

/// An HTTPS origin on 127.0.0.1 answering every request `200` with one JSON body, keeping
/// connections open.
pub struct Origin {
    pub addr: SocketAddr,
    /// TCP connections accepted, whether or not their handshake then succeeded.
    pub accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    /// Serves `body` with a certificate for `names` signed by `ca`.
    pub async fn start(
        ca: &CertifiedIssuer<'static, KeyPair>,
        names: &[&str],
        body: &'static str,
    ) -> Self {
        let (cert, key) = server_certificate(ca, names);
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
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (counted, seen) = (accepted.clone(), heads.clone());
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, seen, answer) = (acceptor.clone(), seen.clone(), answer.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(request) = whole_request(&buffer) {
                            let head = String::from_utf8_lossy(&buffer[..request.0]).into_owned();
                            buffer.drain(..request.1);
                            seen.lock().unwrap().push(head);
                            if tls.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Self {
            addr,
            accepted,
            heads,
        }
    }

    /// Each request's head, as it arrived over TLS, once its body had arrived too.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Where the first request in `buffer` ends: its head's length and its whole length (the
/// body's by `content-length`), once all of it is there.
fn whole_request(buffer: &[u8]) -> Option<(usize, usize)> {
    let head = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buffer[..head]).to_ascii_lowercase();
    let body: usize = text
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (buffer.len() >= head + body).then_some((head, head + body))
}

//! A notification receiver on loopback: records every POST it gets (path, the warden
//! headers, the JSON body, and whether `X-Warden-Signature` is the HMAC-SHA256 of the body
//! under its key, checked with the RustCrypto `hmac` crate rather than warden's code).
//!
//! What it answers depends on the path's first segment: `/ok/...` 200, `/fail/...` 500,
//! `/hang/...` never, `/switch/...` whatever [`Receiver::set_answer`] last said.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{KeyInit, Mac};

/// One POST as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub delivery: Option<String>,
    pub event: Option<String>,
    /// `None` without a signature header; else whether it verified.
    pub signature_ok: Option<bool>,
    pub body: serde_json::Value,
}

/// What `/switch/...` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok = 0,
    Fail = 1,
    Hang = 2,
}

struct Shared {
    key: Vec<u8>,
    got: Mutex<Vec<Received>>,
    switch: AtomicU8,
}

/// A running receiver; it stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on 127.0.0.1 (`port` 0: any free one); signatures are checked under `key`.
    pub async fn start(key: &str, port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            key: key.as_bytes().to_vec(),
            got: Mutex::default(),
            switch: AtomicU8::new(Answer::Ok as u8),
        });
        let app = Router::new()
            .route("/{*path}", post(receive))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self { addr, shared, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set_answer(&self, answer: Answer) {
        self.shared.switch.store(answer as u8, Ordering::SeqCst);
    }

    /// Everything received so far, in order.
    pub fn got(&self) -> Vec<Received> {
        self.shared.got.lock().unwrap().clone()
    }

    /// Waits (up to `within`) until `done` holds for what was received, and returns it;
    /// panics with what did arrive otherwise.
    pub async fn wait_until(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let got = self.got();
            if done(&got) {
                return got;
            }
            if start.elapsed() > within {
                panic!("the receiver did not get {what} within {within:?}; it got: {got:#?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn verify(key: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.strip_prefix("sha256=") else {
        return false;
    };
    if hex.len() != 64 {
        return false;
    }
    let Some(sent) = crate::unhex(hex) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    mac.update(body);
    mac.verify_slice(&sent).is_ok()
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let path = uri.path().to_string();
    let received = Received {
        delivery: header("x-warden-delivery"),
        event: header("x-warden-event"),
        signature_ok: header("x-warden-signature").map(|s| verify(&shared.key, &body, &s)),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        path: path.clone(),
    };
    shared.got.lock().unwrap().push(received);
    let answer = match path.split('/').nth(1) {
        Some("ok") => Answer::Ok,
        Some("fail") => Answer::Fail,
        Some("hang") => Answer::Hang,
        _ => match shared.switch.load(Ordering::SeqCst) {
            0 => Answer::Ok,
            1 => Answer::Fail,
            _ => Answer::Hang,
        },
    };
    match answer {
        Answer::Ok => StatusCode::OK,
        Answer::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

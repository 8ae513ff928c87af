//! A small HTTP server on loopback for the sandbox's HTTP tests: echoes, redirects, big,
//! slow, endless and trickling answers, a count of what it received, the headers each
//! `/headers` request arrived with, and sealed values kept (`/keep`) to be returned later
//! (`/recall`), as a server storing what it is sent would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

#[derive(Default)]
struct Counts {
    requests: AtomicUsize,
    /// The `x-api-key` header of the last `/echo` request: what a sealed header carried.
    last_api_key: Mutex<Option<String>>,
    /// The headers of every `/headers` request, in the order received.
    received: Mutex<Vec<Vec<(String, String)>>>,
    /// Every distinct non-empty `x-api-key` sent to `/keep`.
    kept: Mutex<Vec<String>>,
}

/// A running server; it stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Serves on 127.0.0.1 (or `ip`, any loopback address) on a free port.
    pub async fn start_on(ip: &str) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("bind a test server");
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let app = Router::new()
            .route("/echo", get(echo))
            .route("/redirect", get(redirect))
            .route("/big", get(big))
            .route("/slow", get(slow))
            .route("/endless", get(endless))
            .route("/trickle", get(trickle))
            .route("/headers", any(record_headers))
            .route("/keep", get(keep))
            .route("/recall", get(recall))
            .with_state(counts.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self { addr, counts, task }
    }

    pub async fn start() -> Self {
        Self::start_on("127.0.0.1").await
    }

    /// `http://127.0.0.1:PORT`
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> usize {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// The `x-api-key` header `/echo` last received.
    pub fn last_api_key(&self) -> Option<String> {
        self.counts.last_api_key.lock().unwrap().clone()
    }

    /// The headers of each request `/headers` received (names lowercase, as parsed).
    pub fn received_headers(&self) -> Vec<Vec<(String, String)>> {
        self.counts.received.lock().unwrap().clone()
    }

    /// The values `/keep` was sent in `x-api-key`.
    pub fn kept(&self) -> Vec<String> {
        self.counts.kept.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The request's headers and query as JSON, and the `x-api-key` header echoed back as a
/// response header: what a hostile or careless server could do with a sealed secret.
async fn echo(
    State(counts): State<Arc<Counts>>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let headers_json: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    *counts.last_api_key.lock().unwrap() = Some(key.clone());
    let body = serde_json::json!({ "headers": headers_json, "query": query }).to_string();
    (
        [
            ("x-echoed-key", key),
            ("content-type", "application/json".to_string()),
        ],
        body,
    )
        .into_response()
}

async fn redirect(
    State(counts): State<Arc<Counts>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let to = query.get("to").cloned().unwrap_or_default();
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

async fn big(
    State(counts): State<Arc<Counts>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let bytes: usize = query
        .get("bytes")
        .and_then(|b| b.parse().ok())
        .unwrap_or(2 << 20);
    "b".repeat(bytes).into_response()
}

async fn slow(
    State(counts): State<Arc<Counts>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let ms: u64 = query.get("ms").and_then(|b| b.parse().ok()).unwrap_or(3000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "finally".into_response()
}

/// A body that never ends: 64 KiB chunks, as fast as the client reads them.
async fn endless(State(counts): State<Arc<Counts>>) -> Response {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let chunk = axum::body::Bytes::from(vec![b'e'; 64 << 10]);
    let chunks = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
    axum::body::Body::from_stream(chunks).into_response()
}

/// Slow-loris: headers at once, then one byte every `ms` (default 50) milliseconds, forever,
/// so no single read ever waits long.
async fn trickle(
    State(counts): State<Arc<Counts>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let every = Duration::from_millis(query.get("ms").and_then(|b| b.parse().ok()).unwrap_or(50));
    let bytes = futures_util::stream::unfold((), move |()| async move {
        tokio::time::sleep(every).await;
        Some((
            Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"t")),
            (),
        ))
    });
    axum::body::Body::from_stream(bytes).into_response()
}

/// Records the headers the request arrived with (Host among them).
async fn record_headers(State(counts): State<Arc<Counts>>, headers: HeaderMap) -> &'static str {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let seen = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    counts.received.lock().unwrap().push(seen);
    "recorded"
}

/// Keeps the `x-api-key` it is sent, for `/recall` to return to a later request.
async fn keep(State(counts): State<Arc<Counts>>, headers: HeaderMap) -> &'static str {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut kept = counts.kept.lock().unwrap();
    if !key.is_empty() && !kept.iter().any(|k| k == key) {
        kept.push(key.to_string());
    }
    "kept"
}

/// Every kept value, in a header each (`x-recalled-N`) and in the body: `?case=upper` or
/// `lower` changes their ASCII case, `?chunk=N` sends the body N bytes at a time,
/// `?latin1=1` adds an `x-latin1` header that is not UTF-8 (`caf\xe9 ` and the first kept
/// value), `?encoding=NAME` says the body is in that `Content-Encoding` (it is not);
/// `?redirect=1` redirects instead to a host named after the first kept value.
async fn recall(
    State(counts): State<Arc<Counts>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    counts.requests.fetch_add(1, Ordering::SeqCst);
    let case = |v: &str| match query.get("case").map(String::as_str) {
        Some("upper") => v.to_ascii_uppercase(),
        Some("lower") => v.to_ascii_lowercase(),
        _ => v.to_string(),
    };
    let kept: Vec<String> = counts
        .kept
        .lock()
        .unwrap()
        .iter()
        .map(|v| case(v))
        .collect();
    if query.contains_key("redirect") {
        let to = format!(
            "http://{}.exfil.example/",
            kept.first().cloned().unwrap_or_default()
        );
        return (StatusCode::FOUND, [(header::LOCATION, to)]).into_response();
    }
    let mut headers = HeaderMap::new();
    for (i, value) in kept.iter().enumerate() {
        headers.insert(
            header::HeaderName::try_from(format!("x-recalled-{i}")).unwrap(),
            value.parse().unwrap(),
        );
    }
    if query.contains_key("latin1") {
        let mut value = b"caf\xe9 ".to_vec();
        value.extend_from_slice(kept.first().map(String::as_bytes).unwrap_or_default());
        headers.insert("x-latin1", header::HeaderValue::from_bytes(&value).unwrap());
    }
    if let Some(encoding) = query.get("encoding") {
        headers.insert(header::CONTENT_ENCODING, encoding.parse().unwrap());
    }
    let body = format!("recalled {}", kept.join(" ")).into_bytes();
    let chunk = query
        .get("chunk")
        .and_then(|c| c.parse().ok())
        .unwrap_or(body.len())
        .max(1);
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = body
        .chunks(chunk)
        .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
        .collect();
    let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
    (headers, body).into_response()
}

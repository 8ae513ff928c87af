//! A stand-in for the VictorOps (Splunk On-Call) public API, served on
//! 127.0.0.1 for end-to-end tests and demos.
//!
//! It speaks the vendor's wire format for the three calls an on-call check
//! needs, with the `X-VO-Api-Id` / `X-VO-Api-Key` headers:
//!
//! * `GET /api-public/v1/oncall/current`: who is on call, per team and
//!   escalation policy ([`Casing`] picks `oncallNow`/`onCalluser`, as the
//!   live API answers, or the spec's `onCallNow`/`onCallUser`);
//! * `GET /api-public/v2/user[?email=...]`: users, optionally those with an email;
//! * `GET /api-public/v1/team`: teams.
//!
//! Tests can change the roster, the casing, inject failures, add latency and
//! rate limit while it runs, and read back every request it received.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use victorops_standin::{ErrorStyle, Roster, StandIn, StandInConfig};
//! let standin = StandIn::start(StandInConfig::new("id", "key", Roster::sample())).await?;
//! standin.fail_next("/api-public/v1/oncall", 503, ErrorStyle::Html, 1);
//! // ... point the client at standin.url() ...
//! assert_eq!(standin.count("/api-public/v1/oncall/current"), 1);
//! standin.shutdown().await;
//! # Ok(()) }
//! ```

mod roster;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub use roster::{Policy, Roster, Team, User};

/// Path of the on-call call.
pub const ONCALL_CURRENT_PATH: &str = "/api-public/v1/oncall/current";
/// Path of the v2 user list (and lookup by `?email=`).
pub const USERS_V2_PATH: &str = "/api-public/v2/user";
/// Path of the team list.
pub const TEAMS_PATH: &str = "/api-public/v1/team";

/// How the on-call answer spells two of its keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Casing {
    /// `oncallNow` and `onCalluser`: what the live API answers and working
    /// clients read.
    #[default]
    Working,
    /// `onCallNow` and `onCallUser`: what the vendor's API documentation says.
    Spec,
}

impl Casing {
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            Casing::Working => ("oncallNow", "onCalluser"),
            Casing::Spec => ("onCallNow", "onCallUser"),
        }
    }
}

impl FromStr for Casing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "working" => Ok(Casing::Working),
            "spec" => Ok(Casing::Spec),
            other => Err(format!(
                "unknown casing {other:?} (expected `working` or `spec`)"
            )),
        }
    }
}

impl fmt::Display for Casing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Casing::Working => "working",
            Casing::Spec => "spec",
        })
    }
}

/// The body of an error answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorStyle {
    /// `{"message": "..."}`, `application/json`: what the API answers for most errors.
    JsonMessage,
    /// `{"error": "..."}`, `application/json`: what some API calls answer.
    JsonError,
    /// An nginx-style HTML page, `text/html`: what a proxy or gateway answers.
    Html,
    /// No body at all.
    Empty,
}

/// Settings to start a [`StandIn`] with. Everything but the port can be
/// changed while it runs.
#[derive(Clone, Debug)]
pub struct StandInConfig {
    /// Expected `X-VO-Api-Id`.
    pub api_id: String,
    /// Expected `X-VO-Api-Key`.
    pub api_key: String,
    pub roster: Roster,
    pub casing: Casing,
    /// Port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
}

impl StandInConfig {
    /// Working casing, any free port.
    pub fn new(api_id: impl Into<String>, api_key: impl Into<String>, roster: Roster) -> Self {
        StandInConfig {
            api_id: api_id.into(),
            api_key: api_key.into(),
            roster,
            casing: Casing::Working,
            port: None,
        }
    }
}

impl Default for StandInConfig {
    /// Credentials `test-api-id` / `test-api-key`, the sample roster.
    fn default() -> Self {
        StandInConfig::new("test-api-id", "test-api-key", Roster::sample())
    }
}

/// One request the stand-in received, recorded on arrival.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path, as sent (not percent-decoded), without the query.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// Header names lowercased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub at: SystemTime,
    /// The status answered; `None` while the answer is still pending
    /// (latency) and when the log was cleared in between.
    pub status: Option<u16>,
    seq: u64,
}

impl RecordedRequest {
    /// The first value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter, percent-decoded (`+` stays `+`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(self.query.as_deref()?, name).map(|raw| percent_decode(&raw))
    }
}

struct Injection {
    path_prefix: String,
    status: StatusCode,
    style: ErrorStyle,
    remaining: usize,
}

struct Inner {
    api_id: String,
    api_key: String,
    roster: Roster,
    casing: Casing,
    latency: Duration,
    injections: Vec<Injection>,
    rate_limit: Option<usize>,
    rate_limited_calls: usize,
    strict_email: bool,
    log_to_stderr: bool,
    requests: Vec<RecordedRequest>,
    next_seq: u64,
}

struct Shared {
    addr: SocketAddr,
    inner: Mutex<Inner>,
}

/// The run-time controls of a stand-in, shared by [`StandIn`] and
/// [`BlockingStandIn`] (both deref to it). Cheap to clone; every clone
/// controls the same server.
#[derive(Clone)]
pub struct Controls {
    shared: Arc<Shared>,
}

impl fmt::Debug for Controls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controls")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl Controls {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not take the server down with it.
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    pub fn port(&self) -> u16 {
        self.shared.addr.port()
    }

    /// Every request received since start (or the last [`Controls::clear_requests`]),
    /// in arrival order, whatever its answer.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// How many recorded requests had exactly this path (query not included).
    pub fn count(&self, path: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// A copy of the roster being served.
    pub fn roster(&self) -> Roster {
        self.lock().roster.clone()
    }

    /// Serves another roster from the next request on.
    pub fn set_roster(&self, roster: Roster) {
        self.lock().roster = roster;
    }

    /// Edits the roster in place, e.g. `standin.edit_roster(|r| { r.clear_on_call(); })`.
    pub fn edit_roster(&self, edit: impl FnOnce(&mut Roster)) {
        edit(&mut self.lock().roster);
    }

    pub fn set_casing(&self, casing: Casing) {
        self.lock().casing = casing;
    }

    pub fn casing(&self) -> Casing {
        self.lock().casing
    }

    /// Accepts these credentials from now on.
    pub fn set_credentials(&self, api_id: &str, api_key: &str) {
        let mut inner = self.lock();
        inner.api_id = api_id.to_string();
        inner.api_key = api_key.to_string();
    }

    /// The next `times` requests whose path starts with `path_prefix` (`""`
    /// matches every path) are answered `status` with a body in `style`,
    /// before credentials are checked, as a gateway would. Several injections
    /// queue up; the oldest matching one with uses left is used first.
    ///
    /// # Panics
    /// If `status` is not a valid HTTP status code (100..=999).
    pub fn fail_next(&self, path_prefix: &str, status: u16, style: ErrorStyle, times: usize) {
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|_| panic!("{status} is not an HTTP status code"));
        if times == 0 {
            return;
        }
        self.lock().injections.push(Injection {
            path_prefix: path_prefix.to_string(),
            status,
            style,
            remaining: times,
        });
    }

    /// Forgets injected failures not yet used.
    pub fn clear_failures(&self) {
        self.lock().injections.clear();
    }

    /// Delays every answer by this much (zero: no delay).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// `Some(n)`: from now on, the first `n` authenticated API calls are
    /// served and every later one is answered 403
    /// `{"message":"API rate limit exceeded"}`, as VictorOps does.
    /// `None`: no limit. Either way the call count restarts at zero.
    pub fn rate_limit_after(&self, calls: Option<usize>) {
        let mut inner = self.lock();
        inner.rate_limit = calls;
        inner.rate_limited_calls = 0;
    }

    /// The vendor documents that the user endpoints do not decode an `@`
    /// sent as `%40`. Strict: an email query with `%40` matches no user (like
    /// the documented behaviour). Lenient (the default): both forms match.
    pub fn set_strict_email_encoding(&self, strict: bool) {
        self.lock().strict_email = strict;
    }

    /// Prints one line per request (`GET /path?query -> 200`) to stderr.
    pub fn set_log_to_stderr(&self, on: bool) {
        self.lock().log_to_stderr = on;
    }

    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> u64 {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.requests.push(RecordedRequest {
            method: method.as_str().to_string(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            at: SystemTime::now(),
            status: None,
            seq,
        });
        seq
    }

    fn finish(&self, seq: u64, status: StatusCode, method: &Method, uri: &Uri) {
        let mut inner = self.lock();
        if let Some(r) = inner.requests.iter_mut().rev().find(|r| r.seq == seq) {
            r.status = Some(status.as_u16());
        }
        if inner.log_to_stderr {
            eprintln!("{method} {uri} -> {}", status.as_u16());
        }
    }
}

/// A running stand-in on the caller's tokio runtime. Stops on
/// [`StandIn::shutdown`] or when dropped.
#[derive(Debug)]
pub struct StandIn {
    controls: Controls,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl Deref for StandIn {
    type Target = Controls;
    fn deref(&self) -> &Controls {
        &self.controls
    }
}

impl StandIn {
    /// Binds 127.0.0.1 (on `config.port`, or a free port) and serves on the
    /// current tokio runtime. The socket is listening when this returns.
    pub async fn start(config: StandInConfig) -> io::Result<StandIn> {
        let listener =
            tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, config.port.unwrap_or(0))).await?;
        let addr = listener.local_addr()?;
        let controls = Controls {
            shared: Arc::new(Shared {
                addr,
                inner: Mutex::new(Inner {
                    api_id: config.api_id,
                    api_key: config.api_key,
                    roster: config.roster,
                    casing: config.casing,
                    latency: Duration::ZERO,
                    injections: Vec::new(),
                    rate_limit: None,
                    rate_limited_calls: 0,
                    strict_email: false,
                    log_to_stderr: false,
                    requests: Vec::new(),
                    next_seq: 0,
                }),
            }),
        };
        let app = Router::new().fallback(handle).with_state(controls.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(StandIn {
            controls,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Starts a stand-in on a thread of its own, with its own tokio runtime,
    /// for tests that are not async (or that would rather not share their
    /// runtime). Usable from `#[test]` and `#[tokio::test]` alike.
    pub fn start_blocking(config: StandInConfig) -> io::Result<BlockingStandIn> {
        BlockingStandIn::start(config)
    }

    /// A handle on the controls that outlives borrows of `self`.
    pub fn controls(&self) -> Controls {
        self.controls.clone()
    }

    /// Stops accepting, lets requests in flight finish (for up to 5 s), and
    /// returns when the server is down.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A stand-in running on its own thread and runtime; see
/// [`StandIn::start_blocking`]. Stops on [`BlockingStandIn::shutdown`] or
/// when dropped.
#[derive(Debug)]
pub struct BlockingStandIn {
    controls: Controls,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Deref for BlockingStandIn {
    type Target = Controls;
    fn deref(&self) -> &Controls {
        &self.controls
    }
}

impl BlockingStandIn {
    /// Same as [`StandIn::start_blocking`].
    pub fn start(config: StandInConfig) -> io::Result<BlockingStandIn> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("victorops-standin".to_string())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match StandIn::start(config).await {
                        Ok(standin) => {
                            let (stop, stopped) = oneshot::channel::<()>();
                            if started_tx.send(Ok((standin.controls(), stop))).is_ok() {
                                // Resolves on shutdown() and on drop of the handle alike.
                                let _ = stopped.await;
                            }
                            standin.shutdown().await;
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                        }
                    }
                });
            })?;
        match started_rx.recv() {
            Ok(Ok((controls, stop))) => Ok(BlockingStandIn {
                controls,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other(
                    "the stand-in thread ended before starting",
                ))
            }
        }
    }

    /// A handle on the controls that outlives `self`.
    pub fn controls(&self) -> Controls {
        self.controls.clone()
    }

    /// Stops the server and joins its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BlockingStandIn {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

// ---------------------------------------------------------------------------
// Serving

async fn handle(
    State(controls): State<Controls>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let seq = controls.record(&method, &uri, &headers);
    let (latency, injected) = {
        let mut inner = controls.lock();
        let path = uri.path();
        let injected = inner
            .injections
            .iter_mut()
            .find(|i| i.remaining > 0 && path.starts_with(&i.path_prefix))
            .map(|i| {
                i.remaining -= 1;
                (i.status, i.style)
            });
        inner.injections.retain(|i| i.remaining > 0);
        (inner.latency, injected)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = match injected {
        Some((status, style)) => error_response(status, style, "Injected failure"),
        None => answer(&controls, &method, &uri, &headers),
    };
    controls.finish(seq, response.status(), &method, &uri);
    response
}

fn answer(controls: &Controls, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let mut inner = controls.lock();

    let id = headers.get("x-vo-api-id");
    let key = headers.get("x-vo-api-key");
    let (Some(id), Some(key)) = (id, key) else {
        return error_response(
            StatusCode::UNAUTHORIZED,
            ErrorStyle::JsonMessage,
            "Missing X-VO-Api-Id or X-VO-Api-Key header",
        );
    };
    if id.as_bytes() != inner.api_id.as_bytes() || key.as_bytes() != inner.api_key.as_bytes() {
        return error_response(
            StatusCode::FORBIDDEN,
            ErrorStyle::JsonMessage,
            "Invalid API credentials",
        );
    }

    if let Some(limit) = inner.rate_limit {
        inner.rate_limited_calls += 1;
        if inner.rate_limited_calls > limit {
            return error_response(
                StatusCode::FORBIDDEN,
                ErrorStyle::JsonMessage,
                "API rate limit exceeded",
            );
        }
    }

    let path = uri.path();
    if ![ONCALL_CURRENT_PATH, USERS_V2_PATH, TEAMS_PATH].contains(&path) {
        return error_response(StatusCode::NOT_FOUND, ErrorStyle::JsonMessage, "Not Found");
    }
    if method != Method::GET {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorStyle::JsonMessage,
            "Method Not Allowed",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return response;
    }

    let body = match path {
        ONCALL_CURRENT_PATH => oncall_current(&inner.roster, inner.casing),
        USERS_V2_PATH => users_v2(&inner.roster, uri.query(), inner.strict_email),
        _ => teams(&inner.roster),
    };
    json_response(StatusCode::OK, &body)
}

/// `GET /api-public/v1/oncall/current`. Shape as read by working clients
/// (e.g. `team["oncallNow"]`, `user["onCalluser"]["username"]`) and, in spec
/// casing, as documented by the vendor.
fn oncall_current(roster: &Roster, casing: Casing) -> Value {
    let (now_key, user_key) = casing.keys();
    let teams: Vec<Value> = roster
        .teams
        .iter()
        .map(|team| {
            let policies: Vec<Value> = team
                .policies
                .iter()
                .map(|policy| {
                    let users: Vec<Value> = policy
                        .on_call
                        .iter()
                        .map(|username| json!({ user_key: { "username": username } }))
                        .collect();
                    json!({
                        "escalationPolicy": { "name": policy.name, "slug": policy.slug },
                        "users": users,
                    })
                })
                .collect();
            json!({
                "team": { "name": team.name, "slug": team.slug },
                now_key: policies,
            })
        })
        .collect();
    json!({ "teamsOnCall": teams })
}

/// `GET /api-public/v2/user[?email=...]`.
fn users_v2(roster: &Roster, query: Option<&str>, strict_email: bool) -> Value {
    let email = query.and_then(|q| query_param(q, "email"));
    let users: Vec<Value> = match email {
        None => roster.users.iter().map(user_json).collect(),
        Some(raw) if strict_email && raw.to_ascii_lowercase().contains("%40") => Vec::new(),
        Some(raw) => {
            let wanted = percent_decode(&raw).to_lowercase();
            roster
                .users
                .iter()
                .filter(|u| u.email.to_lowercase() == wanted)
                .map(user_json)
                .collect()
        }
    };
    json!({ "users": users, "_selfUrl": USERS_V2_PATH })
}

fn user_json(user: &User) -> Value {
    json!({
        "firstName": user.first_name,
        "lastName": user.last_name,
        "displayName": format!("{} {}", user.first_name, user.last_name),
        "username": user.username,
        "email": user.email,
        "createdAt": user.created_at,
        "passwordLastUpdated": user.password_last_updated,
        "verified": user.verified,
        "_selfUrl": format!("/api-public/v1/user/{}", user.username),
    })
}

/// `GET /api-public/v1/team`: a bare JSON array.
fn teams(roster: &Roster) -> Value {
    let teams: Vec<Value> = roster
        .teams
        .iter()
        .map(|team| {
            let mut value = json!({
                "_selfUrl": format!("/api-public/v1/team/{}", team.slug),
                "_membersUrl": format!("/api-public/v1/team/{}/members", team.slug),
                "_policiesUrl": format!("/api-public/v1/team/{}/policies", team.slug),
                "_adminsUrl": format!("/api-public/v1/team/{}/admins", team.slug),
                "name": team.name,
                "slug": team.slug,
                "memberCount": team.members.len(),
                "version": team.version,
                "isDefaultTeam": team.is_default_team,
            });
            if let Some(description) = &team.description {
                value["description"] = json!(description);
            }
            value
        })
        .collect();
    Value::Array(teams)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(status: StatusCode, style: ErrorStyle, message: &str) -> Response {
    match style {
        ErrorStyle::JsonMessage => json_response(status, &json!({ "message": message })),
        ErrorStyle::JsonError => json_response(status, &json!({ "error": message })),
        ErrorStyle::Html => {
            let title = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error")
            );
            let page = format!(
                "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
                 <center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n\
                 </body>\r\n</html>\r\n"
            );
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                page,
            )
                .into_response()
        }
        ErrorStyle::Empty => (status, Body::empty()).into_response(),
    }
}

/// The raw (undecoded) value of the first `name=` pair in a query string.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| value.to_string())
    })
}

/// Decodes `%XX` escapes; leaves `+` and malformed escapes as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("alice%40example.com"), "alice@example.com");
        assert_eq!(percent_decode("a+b%2Bc"), "a+b+c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(
            query_param("x=1&email=a%40b&email=c", "email").as_deref(),
            Some("a%40b")
        );
        assert_eq!(query_param("x=1", "email"), None);
    }

    #[test]
    fn casing_parses() {
        assert_eq!("working".parse::<Casing>().unwrap(), Casing::Working);
        assert_eq!("Spec".parse::<Casing>().unwrap(), Casing::Spec);
        assert!("camel".parse::<Casing>().is_err());
        assert_eq!(Casing::Spec.to_string(), "spec");
    }
}

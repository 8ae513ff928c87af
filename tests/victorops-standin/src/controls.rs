//! What every handle on one running stand-in shares: the mutable state the handlers answer
//! from, the log of requests received, and the [`Controls`] tests change them through while it
//! runs.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, Method, StatusCode, Uri};

use crate::config::{Casing, ErrorStyle, StandInConfig};
use crate::query::{percent_decode, query_param};
use crate::roster::Roster;

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

pub(crate) struct Injection {
    pub(crate) path_prefix: String,
    pub(crate) status: StatusCode,
    pub(crate) style: ErrorStyle,
    pub(crate) remaining: usize,
}

pub(crate) struct Inner {
    pub(crate) api_id: String,
    pub(crate) api_key: String,
    pub(crate) roster: Roster,
    pub(crate) casing: Casing,
    pub(crate) latency: Duration,
    pub(crate) injections: Vec<Injection>,
    pub(crate) rate_limit: Option<usize>,
    pub(crate) rate_limited_calls: usize,
    pub(crate) strict_email: bool,
    log_to_stderr: bool,
    requests: Vec<RecordedRequest>,
    next_seq: u64,
}

struct Shared {
    addr: SocketAddr,
    inner: Mutex<Inner>,
}

/// The run-time controls of a stand-in, shared by [`StandIn`](crate::StandIn) and
/// [`BlockingStandIn`](crate::BlockingStandIn) (both deref to it). Cheap to clone; every clone
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
    /// The state a stand-in bound to `addr` starts with: `config`'s, no failures, no log.
    pub(crate) fn new(addr: SocketAddr, config: StandInConfig) -> Controls {
        Controls {
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
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
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

    pub(crate) fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> u64 {
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

    pub(crate) fn finish(&self, seq: u64, status: StatusCode, method: &Method, uri: &Uri) {
        let mut inner = self.lock();
        if let Some(r) = inner.requests.iter_mut().rev().find(|r| r.seq == seq) {
            r.status = Some(status.as_u16());
        }
        if inner.log_to_stderr {
            eprintln!("{method} {uri} -> {}", status.as_u16());
        }
    }
}

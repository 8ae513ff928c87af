//! The mock transport: answers plugins' requests from a case's mocks and records each one.
//! Nothing here touches the network. What is recorded and shown of a request is the
//! plugin's, of any size: it is cut to the bounds below (see [`crate::runtime::budget`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use url::Url;

use crate::Unpoisoned;
use crate::capabilities::http::{
    HopRequest, HopResponse, OutgoingValue, Transport, TransportError, too_large,
};
use crate::cli::escape::escape_control;
use crate::config::origin;
use crate::runtime::budget::{self, quote};
use crate::secrets::SecretValue;
use crate::secrets::redact::{REDACTED, Redactor};

/// Requests recorded per case; past this they are counted.
pub const MAX_RECORDED_REQUESTS: usize = 256;
/// The longest URL or body recorded of a request.
const MAX_SHOWN_BYTES: usize = 1024;
/// Headers recorded of a request; past this they are counted.
const MAX_SHOWN_HEADERS: usize = 32;

/// A mock, validated and with its bodies read.
#[derive(Debug, Clone)]
pub struct Mock {
    pub method: Option<String>,
    /// `None`: any origin.
    pub origin: Option<String>,
    pub path: String,
    /// Every pair must be in the request (a key repeated: each of its values).
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, HeaderMatch)>,
    pub body: Option<BodyMatch>,
    pub times: Option<usize>,
    pub responses: Vec<MockResponse>,
}

#[derive(Debug, Clone)]
pub enum HeaderMatch {
    Text(String),
    /// The value of this test secret.
    Secret(String),
}

#[derive(Debug, Clone)]
pub enum BodyMatch {
    Text(String),
    Json(serde_json::Value),
}

#[derive(Debug, Clone)]
pub struct MockResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub error: Option<MockError>,
    pub delay: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockError {
    Timeout,
    Connect,
}

impl Mock {
    /// `GET https://host/path` or `any /path`, as failures name a mock.
    pub fn label(&self) -> String {
        let mut label = format!(
            "{} {}{}",
            self.method.as_deref().unwrap_or("any method"),
            self.origin.as_deref().unwrap_or(""),
            self.path
        );
        if !self.query.is_empty() {
            let pairs: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(label, "?{}", pairs.join("&"));
        }
        // The test file's text: escaped, so it cannot draw lines of the report.
        escape_control(&label).into_owned()
    }
}

/// One request a plugin sent, as it may be shown: secrets redacted, control characters escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// The index of the mock that answered.
    pub matched: Option<usize>,
    /// For an unmatched request: the closest mock and how it differs.
    pub closest: Option<(usize, Vec<String>)>,
}

impl RecordedRequest {
    /// `METHOD url`, as `expect.http_calls` lists calls.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.url)
    }

    /// The request line, its headers and body, indented.
    pub fn render(&self, indent: &str) -> String {
        let mut out = format!("{indent}{}\n", self.line());
        for (name, value) in &self.headers {
            let _ = writeln!(out, "{indent}  {name}: {value}");
        }
        if let Some(body) = &self.body {
            let _ = writeln!(out, "{indent}  body: {body}");
        }
        out
    }
}

#[derive(Default)]
struct Recorded {
    calls: Vec<usize>,
    requests: Vec<RecordedRequest>,
    /// Requests past [`MAX_RECORDED_REQUESTS`], counted only.
    dropped: usize,
}

impl Recorded {
    fn push(&mut self, request: RecordedRequest) {
        if self.requests.len() < MAX_RECORDED_REQUESTS {
            self.requests.push(request);
        } else {
            self.dropped += 1;
        }
    }
}

pub struct MockTransport {
    mocks: Vec<Mock>,
    /// Test secrets by id, for matching `{ secret = "id" }` headers.
    secrets: BTreeMap<String, SecretValue>,
    redactor: Redactor,
    recorded: Mutex<Recorded>,
}

/// What the request looks like to the matcher.
struct Seen<'a> {
    method: &'a str,
    url: &'a Url,
    query: Vec<(String, String)>,
    headers: Vec<(&'a str, &'a OutgoingValue)>,
    body: Option<&'a [u8]>,
}

impl MockTransport {
    pub fn new(mocks: Vec<Mock>, secrets: BTreeMap<String, SecretValue>) -> Self {
        let redactor = Redactor::new(secrets.values().cloned().collect());
        Self {
            recorded: Mutex::new(Recorded {
                calls: vec![0; mocks.len()],
                ..Recorded::default()
            }),
            mocks,
            secrets,
            redactor,
        }
    }

    pub fn mocks(&self) -> &[Mock] {
        &self.mocks
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Requests made past [`MAX_RECORDED_REQUESTS`], not recorded.
    pub fn requests_dropped(&self) -> usize {
        self.lock().dropped
    }

    /// Calls per mock, by index.
    pub fn calls(&self) -> Vec<usize> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unpoisoned()
    }

    /// What differs between `mock` and the request; empty when it matches.
    fn differences(&self, mock: &Mock, seen: &Seen<'_>) -> (Vec<String>, usize) {
        let mut diffs = Vec::new();
        let mut agreed = 0;
        let mut check = |ok: bool, diff: String| {
            if ok {
                agreed += 1;
            } else {
                diffs.push(diff);
            }
        };
        if let Some(method) = &mock.method {
            check(
                method.eq_ignore_ascii_case(seen.method),
                format!(
                    "method: the mock expects {method}, the request is {}",
                    seen.method
                ),
            );
        }
        if let Some(mock_origin) = &mock.origin {
            let request_origin = origin(seen.url);
            check(
                *mock_origin == request_origin,
                format!(
                    "origin: the mock expects {mock_origin}, the request goes to {request_origin}"
                ),
            );
        }
        check(
            mock.path == seen.url.path(),
            format!(
                "path: the mock expects {}, the request has {}",
                mock.path,
                self.shown(seen.url.path())
            ),
        );
        for (name, wanted) in &mock.query {
            let values: Vec<&str> = seen
                .query
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .collect();
            let shown = |v: &str| format!("`{}`", self.shown(v));
            check(
                values.contains(&wanted.as_str()),
                if values.is_empty() {
                    format!(
                        "query `{}`: the mock expects {}, the request has none",
                        self.shown(name),
                        shown(wanted)
                    )
                } else {
                    format!(
                        "query `{}`: the mock expects {}, the request has {}",
                        self.shown(name),
                        shown(wanted),
                        values
                            .iter()
                            .map(|v| shown(v))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            );
        }
        for (name, wanted) in &mock.headers {
            let found: Vec<&OutgoingValue> = seen
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
                .take(MAX_SHOWN_HEADERS)
                .collect();
            let ok = found.iter().any(|v| self.header_matches(wanted, v));
            let expected = match wanted {
                HeaderMatch::Text(text) => format!("`{}`", self.shown(text)),
                HeaderMatch::Secret(id) => format!("the value of secret `{}`", self.shown(id)),
            };
            let got = if found.is_empty() {
                "no such header".to_string()
            } else {
                found
                    .iter()
                    .map(|v| self.show_header(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            check(
                ok,
                format!(
                    "header `{}`: the mock expects {expected}, the request has {got}",
                    self.shown(name)
                ),
            );
        }
        if let Some(body) = &mock.body {
            let (ok, expected) = match body {
                BodyMatch::Text(text) => (
                    seen.body == Some(text.as_bytes()),
                    format!("`{}`", self.shown(text)),
                ),
                BodyMatch::Json(json) => (
                    seen.body
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                        .is_some_and(|b| same_json(&b, json)),
                    format!("JSON {}", escape_control(&json.to_string())),
                ),
            };
            let got = match seen.body {
                None => "no body".to_string(),
                Some(b) => format!("`{}`", self.shown(&String::from_utf8_lossy(b))),
            };
            check(
                ok,
                format!("body: the mock expects {expected}, the request has {got}"),
            );
        }
        (diffs, agreed)
    }

    fn header_matches(&self, wanted: &HeaderMatch, value: &OutgoingValue) -> bool {
        match wanted {
            HeaderMatch::Text(text) => value.expose() == text,
            HeaderMatch::Secret(id) => self
                .secrets
                .get(id)
                .is_some_and(|secret| secret.expose() == value.expose()),
        }
    }

    /// The plugin's text fit to print: redacted, cut to a name's length, control characters
    /// escaped (the plugin chose it; it cannot add lines).
    fn shown(&self, text: &str) -> String {
        escape_control(&self.redactor.redact_cut(&quote(text))).into_owned()
    }

    /// A header value fit to print: a sealed one only by its secret's id.
    fn show_header(&self, value: &OutgoingValue) -> String {
        match value {
            OutgoingValue::Text(text) => format!("`{}`", self.shown(text)),
            OutgoingValue::Sealed { secret_id, .. } => {
                format!("{REDACTED} (sealed secret `{secret_id}`)")
            }
        }
    }

    fn record(&self, seen: &Seen<'_>) -> RecordedRequest {
        let cut = |text: &str| {
            let cut = self
                .redactor
                .redact_cut(&budget::cut(text, MAX_SHOWN_BYTES));
            escape_control(&cut).into_owned()
        };
        let mut headers: Vec<(String, String)> = seen
            .headers
            .iter()
            .take(MAX_SHOWN_HEADERS)
            .map(|(name, value)| {
                let shown = match value {
                    OutgoingValue::Text(text) => self.shown(text),
                    sealed => self.show_header(sealed),
                };
                (self.shown(name), shown)
            })
            .collect();
        if seen.headers.len() > MAX_SHOWN_HEADERS {
            headers.push((
                "(not shown)".into(),
                format!("{} more header(s)", seen.headers.len() - MAX_SHOWN_HEADERS),
            ));
        }
        RecordedRequest {
            method: seen.method.to_string(),
            url: cut(seen.url.as_str()),
            headers,
            body: seen.body.map(|b| cut(&String::from_utf8_lossy(b))),
            matched: None,
            closest: None,
        }
    }
}

#[async_trait]
impl Transport for MockTransport {
    async fn send(&self, hop: HopRequest<'_>) -> Result<HopResponse, TransportError> {
        let seen = Seen {
            method: hop.method.as_str(),
            url: hop.url,
            query: hop.url.query_pairs().into_owned().collect(),
            headers: hop
                .headers
                .iter()
                .map(|h| (h.name.as_str(), &h.value))
                .collect(),
            body: hop.body,
        };
        let mut request = self.record(&seen);
        let mut closest: Option<(usize, Vec<String>, usize)> = None;
        let mut matched = None;
        for (index, mock) in self.mocks.iter().enumerate() {
            let (diffs, agreed) = self.differences(mock, &seen);
            if diffs.is_empty() {
                matched = Some(index);
                break;
            }
            if closest.as_ref().is_none_or(|(_, _, best)| agreed > *best) {
                closest = Some((index, diffs, agreed));
            }
        }
        let Some(index) = matched else {
            request.closest = closest.map(|(index, diffs, _)| (index, diffs));
            let line = request.line();
            self.lock().push(request);
            return Err(TransportError::Connect(format!(
                "no mock matches {line} (the test harness answers only mocked requests)"
            )));
        };
        request.matched = Some(index);
        let response = {
            let mut recorded = self.lock();
            recorded.calls[index] += 1;
            recorded.push(request);
            let responses = &self.mocks[index].responses;
            responses[(recorded.calls[index] - 1).min(responses.len() - 1)].clone()
        };
        if let Some(delay) = response.delay {
            if delay >= hop.timeout {
                tokio::time::sleep(hop.timeout).await;
                return Err(TransportError::Timeout(format!(
                    "{} timed out after {:?} (mocked delay {delay:?})",
                    origin(hop.url),
                    hop.timeout
                )));
            }
            tokio::time::sleep(delay).await;
        }
        match response.error {
            Some(MockError::Timeout) => Err(TransportError::Timeout(format!(
                "{} timed out (mocked)",
                origin(hop.url)
            ))),
            Some(MockError::Connect) => Err(TransportError::Connect(format!(
                "{}: connection refused (mocked)",
                origin(hop.url)
            ))),
            None if response.body.len() as u64 > hop.max_body => {
                Err(too_large(hop.url, hop.max_body))
            }
            None => Ok(HopResponse {
                status: response.status,
                headers: response
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect(),
                body: response.body,
            }),
        }
    }
}

/// JSON values equal as JSON means them: numbers by value (`2` is `2.0`, which a Python
/// plugin sends for `4 / 2`), objects whatever their keys' order.
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64().is_some_and(|x| y.as_f64() == Some(x)),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::http::OutgoingHeader;

    async fn send(transport: &MockTransport, url: &Url, headers: &[OutgoingHeader], body: &[u8]) {
        let method = reqwest::Method::POST;
        let hop = HopRequest {
            method: &method,
            url,
            headers: headers.iter().collect(),
            body: Some(body),
            timeout: Duration::from_secs(1),
            within_hook_deadline: false,
            max_body: 1 << 20,
        };
        transport.send(hop).await.unwrap_err();
    }

    #[tokio::test]
    async fn what_is_recorded_of_a_huge_request_is_bounded() {
        let transport = MockTransport::new(Vec::new(), BTreeMap::new());
        let url = Url::parse(&format!("http://x.example/{}", "p".repeat(1 << 20))).unwrap();
        let headers: Vec<OutgoingHeader> = (0..1000)
            .map(|i| OutgoingHeader {
                name: format!("x-{i}-{}", "n".repeat(10_000)),
                value: OutgoingValue::Text("v".repeat(10_000)),
            })
            .collect();
        send(&transport, &url, &headers, &vec![b'b'; 4 << 20]).await;
        let recorded = &transport.requests()[0];
        assert!(
            recorded.url.len() <= MAX_SHOWN_BYTES,
            "{}",
            recorded.url.len()
        );
        assert!(recorded.url.ends_with("more bytes)"));
        assert_eq!(recorded.headers.len(), MAX_SHOWN_HEADERS + 1);
        assert_eq!(recorded.headers[MAX_SHOWN_HEADERS].1, "968 more header(s)");
        let shown: usize = recorded
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum();
        assert!(shown <= (MAX_SHOWN_HEADERS + 1) * 2 * budget::MAX_NAME_BYTES);
        assert!(recorded.body.as_ref().unwrap().len() <= MAX_SHOWN_BYTES);
        assert!(recorded.render("").len() < 32 << 10);
    }

    /// The http capability refuses header values with control characters before any
    /// transport, but a body, a URL's decoded parts and header names it lets through are
    /// the plugin's text: `warden test` prints them escaped, so they cannot forge lines.
    #[tokio::test]
    async fn a_recorded_requests_control_characters_are_shown_escaped() {
        let forged = "line1\n2026-01-01T00:00:00Z  INFO warden: forged\x1b[31m\u{9b}2J\x07\r\x7f";
        let transport = MockTransport::new(Vec::new(), BTreeMap::new());
        let url = Url::parse("http://x.example/path").unwrap();
        let headers = [OutgoingHeader {
            name: format!("x-{forged}"),
            value: OutgoingValue::Text(forged.to_string()),
        }];
        send(&transport, &url, &headers, forged.as_bytes()).await;
        let rendered = transport.requests()[0].render("");
        assert!(
            rendered.contains("body: line1\\n2026-01-01T00:00:00Z  INFO warden: forged\\x1b[31m"),
            "{rendered}"
        );
        for line in rendered.lines() {
            assert!(!line.starts_with("2026-01-01"), "a forged line: {rendered}");
        }
        let raw = rendered.chars().find(|c| *c != '\n' && c.is_control());
        assert_eq!(raw, None, "a control character printed raw: {rendered:?}");
    }

    #[tokio::test]
    async fn requests_past_the_cap_are_counted_not_recorded() {
        let transport = MockTransport::new(Vec::new(), BTreeMap::new());
        let url = Url::parse("http://x.example/").unwrap();
        for _ in 0..MAX_RECORDED_REQUESTS + 44 {
            send(&transport, &url, &[], b"").await;
        }
        assert_eq!(transport.requests().len(), MAX_RECORDED_REQUESTS);
        assert_eq!(transport.requests_dropped(), 44);
    }

    #[test]
    fn json_bodies_compare_numbers_by_value() {
        use serde_json::json;
        assert!(same_json(
            &json!({"n": 2.0, "a": [1]}),
            &json!({"a": [1.0], "n": 2})
        ));
        assert!(!same_json(&json!({"n": 2.5}), &json!({"n": 2})));
        assert!(!same_json(&json!({"n": 2}), &json!({"n": "2"})));
        assert!(!same_json(&json!({"n": 2, "m": 1}), &json!({"n": 2})));
        assert!(same_json(&json!(u64::MAX), &json!(u64::MAX)));
        assert!(!same_json(&json!(-1), &json!(u64::MAX)));
    }
}

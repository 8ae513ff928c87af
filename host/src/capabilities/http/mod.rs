//! `warden:plugin/http`: outbound requests to the hosts a flow allows.
//!
//! Every hop is checked: the URL against `allowed_hosts`, each redirect's target again, and
//! the address actually connected to (a name that resolves to a loopback, private or
//! link-local address is refused, so DNS cannot be used to reach the host's own network).
//!
//! The plugin chooses headers but not those that route or frame a request (`Host`,
//! `Content-Length`, `X-Forwarded-*`, ...: `http/headers.rs`): a request with one is refused.
//!
//! Every response the flow receives, whatever it sent, has every value that any secret the
//! flow can seal has ever had (rotated ones too) replaced by `[REDACTED]`, ignoring ASCII
//! case, in headers, body and errors: a server that kept a sealed header from an earlier
//! request, or changes its case, hands back nothing the plugin may not read.
//!
//! A request over [`MAX_URL_BYTES`], [`MAX_HEADERS`], [`MAX_HEADER_BYTES`] or
//! [`MAX_BODY_BYTES`] is refused before any of it is parsed or copied (it is measured where
//! the plugin holds it: `http/lifted.rs`), and what is recorded of a call is cut to the
//! event's budget (see [`crate::runtime::budget`]).
//!
//! Each hop goes through a [`Transport`]: the real network ([`NetworkTransport`]) or, in the
//! test harness, mocks. The checks above happen before the transport sees a request, so a
//! mock never widens what a flow may reach.

mod client;
mod headers;
mod lifted;
pub mod spin;
#[cfg(test)]
mod tls_tests;
mod transport;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use url::Url;
use wasmtime::StoreContextMut;
use wasmtime::component::{LinkerInstance, ResourceTable};

use super::log::{LogLevel, LogLine, LogSource};
use super::{AppState, Capability, HostFaults, Outcome};
use crate::capabilities::refusal::{Refusal, RefusalKind, Refusals};
use crate::config::{Flow, HttpSettings, origin};
use crate::runtime::bindings::warden::plugin::http::{HttpError, Method, Request, Response};
use crate::runtime::budget::{self, EventBudget, quote};
use crate::runtime::instance::InstanceState;
use crate::runtime::lease::{Acting, Lease};
use crate::secrets::SecretValue;
use crate::secrets::redact::{REDACTED, Redactor};
use crate::secrets::{SecretStore, SecretUnavailable};

pub const MAX_REDIRECTS: usize = 5;

mod record;

pub use client::{IDLE_TIMEOUT, MAX_IDLE, MAX_IDLE_PER_ORIGIN};
use lifted::{Asked, RequestView};
pub use record::{
    HttpCall, MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_HEADERS, MAX_RECORDED_CALLS, MAX_URL_BYTES,
};
pub use transport::{AddressRefused, Lookup, NetworkTransport, filter_addresses, too_large};

/// One hop of a request, as the host sends it after every check has passed.
#[derive(Debug)]
pub struct HopRequest<'a> {
    pub method: &'a reqwest::Method,
    pub url: &'a Url,
    /// The headers to send on this hop: sealed ones only on the origin the plugin addressed.
    pub headers: Vec<&'a OutgoingHeader>,
    pub body: Option<&'a [u8]>,
    pub timeout: Duration,
    /// `timeout` is what is left of the hook's own time: the hook's deadline ends the hop at
    /// that moment, so the transport needs no timer of its own.
    pub within_hook_deadline: bool,
    /// The flow's `response_max_bytes`: a longer body is [`TransportError::TooLarge`].
    pub max_body: u64,
}

/// What came back for one hop; redirects are followed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// Why a hop got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<TransportError> for HttpError {
    fn from(error: TransportError) -> Self {
        match error {
            TransportError::Denied(m) => HttpError::Denied(m),
            TransportError::Timeout(m) => HttpError::Timeout(m),
            TransportError::Connect(m) => HttpError::Connect(m),
            TransportError::TooLarge(m) => HttpError::TooLarge(m),
            TransportError::Invalid(m) => HttpError::Invalid(m),
        }
    }
}

/// Why a call got no response.
#[derive(Debug)]
pub enum CallError {
    /// What the plugin is told as it is: refused, timed out, unreachable, too large, invalid.
    Http(HttpError),
    /// A sealed header's secret could not be read: the host's failure, not the network's,
    /// recorded (and counted in metrics) as `secret`. `http-error` has no case for it, so the
    /// plugin is told `connect`, with the cause.
    Secret {
        header: String,
        cause: SecretUnavailable,
    },
}

impl CallError {
    /// The call's outcome as it is recorded: the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http(error) => error_kind(error),
            Self::Secret { .. } => "secret",
        }
    }

    /// The error as the plugin receives it.
    pub fn into_wit(self) -> HttpError {
        match self {
            Self::Http(error) => error,
            Self::Secret { header, cause } => HttpError::Connect(format!(
                "host error: cannot fill in sealed header `{header}`: {cause}"
            )),
        }
    }

    /// Redacted for the plugin, except where it quotes `own`, the plugin's own text.
    fn redacted(self, redactor: &Redactor, own: &[&str]) -> Self {
        match self {
            Self::Http(error) => Self::Http(redact_error(redactor, error, own)),
            // The header's name is the plugin's own text; why the secret could not be had is
            // the secret store's.
            Self::Secret { header, cause } => Self::Secret {
                header,
                cause: SecretUnavailable(redactor.redact(&cause.0)),
            },
        }
    }
}

/// Sends one hop: the network, or the test harness's mocks.
#[async_trait]
pub trait Transport: Send + Sync {
    async fn send(&self, hop: HopRequest<'_>) -> Result<HopResponse, TransportError>;
}

/// App-wide state: the transport every instance sends through, and where sealed headers'
/// current values come from.
#[derive(Clone)]
pub struct HttpState {
    transport: Arc<dyn Transport>,
    secrets: Arc<SecretStore>,
}

impl HttpState {
    /// The real network, as `[http]` sets it.
    pub fn new(settings: &HttpSettings, secrets: Arc<SecretStore>) -> Result<Self, TransportError> {
        Ok(Self::with_transport(
            Arc::new(NetworkTransport::for_settings(settings)?),
            secrets,
        ))
    }

    pub fn with_transport(transport: Arc<dyn Transport>, secrets: Arc<SecretStore>) -> Self {
        Self { transport, secrets }
    }

    /// An instance with no time for requests until [`HttpInstance::set_deadline`].
    pub fn instance(&self, flow: Arc<Flow>, budget: EventBudget) -> HttpInstance {
        HttpInstance {
            transport: self.transport.clone(),
            secrets: self.secrets.clone(),
            flow,
            deadline: Instant::now(),
            refusals: Refusals::new(budget.clone()),
            budget,
            calls: Vec::new(),
            calls_dropped: 0,
            sent: 0,
            reached_network: false,
            acting: Acting::Loading,
            host_faults: HostFaults::default(),
        }
    }
}

pub struct HttpInstance {
    transport: Arc<dyn Transport>,
    secrets: Arc<SecretStore>,
    flow: Arc<Flow>,
    deadline: Instant,
    budget: EventBudget,
    refusals: Refusals,
    /// The first [`MAX_RECORDED_CALLS`] calls; `calls_dropped` counts the rest.
    calls: Vec<HttpCall>,
    calls_dropped: usize,
    /// Requests the plugin has sent in this event, against `limits.http_requests`.
    sent: u32,
    /// Whether the call being made has handed a hop to the transport yet.
    reached_network: bool,
    /// Nothing is sent while the plugin loads, nor once its request's claim has ended.
    acting: Acting,
    /// Sealed headers whose secrets could not be read: the host's failures.
    host_faults: HostFaults,
}

pub struct HttpView<'a> {
    pub instance: &'a mut HttpInstance,
    pub table: &'a mut ResourceTable,
}

/// A header as the plugin asked for it, sealed values filled in.
#[derive(Debug)]
pub struct OutgoingHeader {
    pub name: String,
    pub value: OutgoingValue,
}

#[derive(Debug)]
pub enum OutgoingValue {
    Text(String),
    /// Filled in from the secret `secret_id`; shown only as that id.
    Sealed {
        secret_id: String,
        value: SecretValue,
    },
}

impl OutgoingValue {
    /// The value to put on the wire.
    pub fn expose(&self) -> &str {
        match self {
            Self::Text(text) => text,
            Self::Sealed { value, .. } => value.expose(),
        }
    }
}

impl HttpView<'_> {
    /// Sends what the plugin asked for, if its flow allows it, and records the call.
    pub async fn send(&mut self, asked: Asked) -> wasmtime::Result<Result<Response, HttpError>> {
        let method = method_name(asked.method);
        // Parsed once: for the record, and to send.
        let parsed = asked
            .url
            .whole()
            .filter(|url| url.len() <= MAX_URL_BYTES)
            .map(Url::parse);
        let shown = self.instance.describe(parsed.as_ref());
        // Measured before the host copied or parsed any of it.
        let mut request = match asked.request {
            Ok(request) => request,
            Err(why) => {
                let invalid = CallError::Http(HttpError::Invalid(why));
                return Ok(self.instance.record(method, shown, Err(invalid)));
            }
        };
        self.instance.reached_network = false;
        let allowed = self.instance.flow.limits.http_requests;
        let asked_headers = std::mem::take(&mut request.headers);
        // Counted before any sealed value is read: a plugin looping past its limit must not
        // have the host ask AWS for a secret on each turn.
        let result = if self.instance.sent >= allowed {
            Err(CallError::Http(self.instance.refuse(format!(
                "more than {allowed} HTTP requests in one event (limits.http_requests)"
            ))))
        } else {
            match self.outgoing_headers(asked_headers).await? {
                Err(refused) => Err(refused),
                Ok(headers) => {
                    self.instance.sent += 1;
                    let answer = self.instance.execute(request, parsed, headers).await;
                    answer.map_err(CallError::Http)
                }
            }
        };
        // Errors after a hop went out may quote what a server chose (a redirect's target):
        // redacted, around the plugin's own URL (a name it failed to resolve, a host that
        // timed out). Those the host made before (a header, a URL or a host refused) quote
        // only the plugin's own text and the config's, and are told as they are. Redacting
        // the plugin's own text would tell it whether a text it wrote is a secret's value, a
        // guess at a time. (What is recorded is redacted with the report.)
        let result = match result {
            Err(CallError::Http(error)) if !self.instance.reached_network => {
                Err(CallError::Http(error))
            }
            Err(error) => {
                // How such errors quote the plugin's own URL: its origin (as the transport's
                // do), its host alone (a name that does not resolve), the whole of it.
                let url = asked.url.whole().and_then(|url| Url::parse(url).ok());
                let own: Vec<String> = url
                    .map(|url| {
                        let host = url.host_str().unwrap_or_default().to_string();
                        vec![origin(&url), host, url.as_str().to_string()]
                    })
                    .unwrap_or_default();
                let own: Vec<&str> = own.iter().map(String::as_str).collect();
                Err(error.redacted(&self.instance.redactor(), &own))
            }
            ok => ok,
        };
        Ok(self.instance.record(method, shown, result))
    }
}

impl Capability for HttpInstance {
    const INTERFACE: &'static str = "http";

    /// An instance with no time for requests until [`HttpInstance::set_deadline`].
    fn instance(flow: &Arc<Flow>, app: &AppState, budget: &EventBudget) -> Self {
        app.http.instance(flow.clone(), budget.clone())
    }

    fn link(functions: &mut LinkerInstance<'_, InstanceState>) -> wasmtime::Result<()> {
        functions.func_wrap_async(
            "send",
            |mut store: StoreContextMut<'_, InstanceState>, (request,): (RequestView,)| {
                Box::new(async move {
                    let asked = lifted::take(&mut store, request)?;
                    let state = store.data_mut();
                    let mut view = HttpView {
                        instance: &mut state.http,
                        table: &mut state.table,
                    };
                    Ok((view.send(asked).await?,))
                })
            },
        )
    }

    /// The calls recorded, a line counting those that were not, and the refusals.
    fn finish(&mut self) -> Outcome {
        let mut logs = Vec::new();
        if self.calls_dropped > 0 {
            logs.push(LogLine {
                level: LogLevel::Warn,
                source: LogSource::Host,
                message: format!(
                    "{} more HTTP call(s) not recorded: at most {MAX_RECORDED_CALLS} are kept per event, within {} KiB",
                    self.calls_dropped,
                    budget::CALL_BYTES >> 10
                ),
                cut: false,
            });
            self.calls_dropped = 0;
        }
        self.host_faults.finish(Outcome {
            logs,
            refusals: self.refusals.finish(),
            http_calls: std::mem::take(&mut self.calls),
            ..Outcome::default()
        })
    }
}

impl HttpInstance {
    /// Requests made after `deadline` are refused; each one's timeout is the time left.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// A hook begins: requests may be sent, each of their hops only until `lease` (if any)
    /// has ended.
    pub fn begin_hook(&mut self, lease: Option<Lease>) {
        self.acting = Acting::Hook(lease);
    }

    fn refuse(&mut self, detail: String) -> HttpError {
        self.refusals.push(Refusal {
            kind: RefusalKind::Destination,
            detail: detail.clone(),
        });
        HttpError::Denied(detail)
    }

    fn refuse_header(&mut self, detail: String) -> HttpError {
        self.refusals.push(Refusal {
            kind: RefusalKind::Header,
            detail: detail.clone(),
        });
        HttpError::Denied(detail)
    }

    /// Every value ever served of every secret this flow can seal, or could under a config
    /// served before: what no response it receives may show. Asked for per response, so it
    /// knows values fetched during the hook.
    fn redactor(&self) -> Arc<Redactor> {
        self.secrets.redactor_for(self.flow.grants.redacted_ids())
    }

    fn check(&mut self, url: &Url) -> Result<(), HttpError> {
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(HttpError::Invalid(format!(
                "`{}`: only http and https are supported",
                quote(url.as_str())
            )));
        }
        let flow = self.flow.clone();
        flow.grants
            .hosts
            .check(url)
            .map_err(|reason| self.refuse(format!("flow `{}`: {reason}", flow.name)))
    }

    /// The request's timeout, and whether it is what is left of the hook's own time.
    fn timeout(&self, asked: Option<u32>) -> Result<(Duration, bool), HttpError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let shorter = [
            self.flow.limits.http_timeout,
            asked.map(|ms| Duration::from_millis(ms.into())),
        ]
        .into_iter()
        .flatten()
        .min()
        .filter(|shorter| *shorter < left);
        let timeout = shorter.unwrap_or(left);
        if timeout.is_zero() {
            return Err(HttpError::Timeout(
                "no time is left before the hook's deadline".into(),
            ));
        }
        Ok((timeout, shorter.is_none()))
    }

    async fn execute(
        &mut self,
        request: Request,
        parsed: Option<Result<Url, url::ParseError>>,
        headers: Vec<OutgoingHeader>,
    ) -> Result<Response, HttpError> {
        let parsed = parsed.unwrap_or_else(|| Url::parse(&request.url));
        let mut url = parsed.map_err(|e| {
            HttpError::Invalid(format!("`{}` is not a valid URL: {e}", quote(&request.url)))
        })?;
        if !request.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &request.query {
                pairs.append_pair(k, v);
            }
        }
        let first_origin = url.origin();
        let mut method = to_reqwest(request.method);
        let mut body = request.body;
        let (timeout, within_hook_deadline) = self.timeout(request.timeout_ms)?;
        let started = Instant::now();
        let max_body = self.flow.limits.response_max_bytes;

        for hop in 0..=MAX_REDIRECTS {
            if let Some((kind, detail)) = self.acting.refusal("sent") {
                self.refusals.push(Refusal {
                    kind,
                    detail: detail.clone(),
                });
                return Err(HttpError::Denied(detail));
            }
            self.check(&url)?;
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(HttpError::Timeout(format!(
                    "{} timed out after {timeout:?}",
                    origin(&url)
                )));
            }
            // A sealed secret is only ever sent to the origin the plugin addressed.
            let same_origin = url.origin() == first_origin;
            let hop_headers = headers
                .iter()
                .filter(|h| same_origin || !matches!(h.value, OutgoingValue::Sealed { .. }))
                .collect();
            self.reached_network = true;
            let response = self
                .transport
                .send(HopRequest {
                    method: &method,
                    url: &url,
                    headers: hop_headers,
                    body: body.as_deref(),
                    timeout: left,
                    within_hook_deadline,
                    max_body,
                })
                .await?;
            let status = reqwest::StatusCode::from_u16(response.status).map_err(|_| {
                HttpError::Invalid(format!(
                    "{} answered with status {}, which is not valid",
                    origin(&url),
                    response.status
                ))
            })?;
            if status.is_redirection() {
                let location = response
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("location"));
                if let Some((_, location)) = location {
                    if hop == MAX_REDIRECTS {
                        return Err(HttpError::Invalid(format!(
                            "more than {MAX_REDIRECTS} redirects, starting at {}",
                            origin(&url)
                        )));
                    }
                    let location = std::str::from_utf8(location).map_err(|_| {
                        HttpError::Invalid("a redirect's Location is not valid text".into())
                    })?;
                    url = url.join(location).map_err(|e| {
                        HttpError::Invalid(format!(
                            "redirect to `{}` is not a valid URL: {e}",
                            quote(location)
                        ))
                    })?;
                    if status == reqwest::StatusCode::SEE_OTHER
                        || (method == reqwest::Method::POST && matches!(status.as_u16(), 301 | 302))
                    {
                        method = reqwest::Method::GET;
                        body = None;
                    }
                    continue;
                }
            }
            // Redaction reads the body as sent: a compressed one would hide an echoed value.
            let compressed = response.headers.iter().any(|(name, coding)| {
                name.eq_ignore_ascii_case("content-encoding")
                    && !coding.trim_ascii().is_empty()
                    && !coding.trim_ascii().eq_ignore_ascii_case(b"identity")
            });
            if compressed {
                return Err(HttpError::Invalid(format!(
                    "the response from {} is compressed (Content-Encoding), though warden asked for it uncompressed so that secret values in it can be redacted",
                    origin(&url)
                )));
            }
            // The client takes chunks apart and nothing else: a body in any other transfer
            // coding (gzip) comes through still coded, as hidden from redaction.
            let coded = response.headers.iter().any(|(name, codings)| {
                name.eq_ignore_ascii_case("transfer-encoding")
                    && codings
                        .split(|b| *b == b',')
                        .map(<[u8]>::trim_ascii)
                        .any(|coding| {
                            !coding.is_empty() && !coding.eq_ignore_ascii_case(b"chunked")
                        })
            });
            if coded {
                return Err(HttpError::Invalid(format!(
                    "the response from {} is in a Transfer-Encoding other than chunked, which would hide secret values in it from redaction",
                    origin(&url)
                )));
            }
            // The whole body at once, so no value escapes by being split across chunks.
            let redactor = self.redactor();
            // Moved, not copied: a header is copied only if it is not UTF-8 or shows a value.
            let headers = response
                .headers
                .into_iter()
                .map(|(name, value)| {
                    let value = String::from_utf8(value)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    (redactor.redact_owned(name), redactor.redact_owned(value))
                })
                .collect();
            let body = redactor.redact_bytes(response.body);
            // A value shorter than the marker grows the body: the cap holds for what the
            // plugin is given, not only for what the server sent.
            if body.len() as u64 > max_body {
                return Err(HttpError::TooLarge(format!(
                    "the response from {} is over the flow's response_max_bytes ({max_body}) once secret values in it are replaced by {REDACTED}",
                    origin(&url)
                )));
            }
            // Content-Length as sent counts whatever redaction replaced, telling a value's
            // length: the plugin is told the length of the body it is given (and none for a
            // HEAD's, whose body is not there to measure).
            let mut headers: Vec<(String, String)> = headers;
            headers.retain_mut(|(name, value)| {
                if !name.eq_ignore_ascii_case("content-length") {
                    return true;
                }
                *value = body.len().to_string();
                method != reqwest::Method::HEAD
            });
            return Ok(Response {
                status: status.as_u16(),
                headers,
                body,
            });
        }
        unreachable!("the loop returns on its last hop")
    }
}

fn redact_error(redactor: &Redactor, error: HttpError, own: &[&str]) -> HttpError {
    let redact = |m: String| redactor.redact_around(&m, own);
    match error {
        HttpError::Denied(m) => HttpError::Denied(redact(m)),
        HttpError::Timeout(m) => HttpError::Timeout(redact(m)),
        HttpError::Connect(m) => HttpError::Connect(redact(m)),
        HttpError::TooLarge(m) => HttpError::TooLarge(redact(m)),
        HttpError::Invalid(m) => HttpError::Invalid(redact(m)),
    }
}

pub fn error_kind(error: &HttpError) -> &'static str {
    match error {
        HttpError::Denied(_) => "denied",
        HttpError::Timeout(_) => "timeout",
        HttpError::Connect(_) => "connect",
        HttpError::TooLarge(_) => "too-large",
        HttpError::Invalid(_) => "invalid",
    }
}

pub(crate) fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
    }
}

fn to_reqwest(method: Method) -> reqwest::Method {
    reqwest::Method::from_bytes(method_name(method).as_bytes()).expect("standard method")
}

#[cfg(test)]
mod call_error_tests {
    use super::*;
    use crate::secrets::SecretValue;

    #[test]
    fn a_sealed_header_that_cannot_be_filled_in_is_named_as_the_plugin_wrote_it() {
        // The name is the plugin's own text: were it redacted, a plugin could name headers
        // after guesses of another secret and learn which guess is its value, sending
        // nothing. Why the secret could not be had is the store's text, and is redacted.
        let redactor = Redactor::new(vec![SecretValue::new("s3cretvalue123")]);
        let error = CallError::Secret {
            header: "S3CRETVALUE123".into(),
            cause: SecretUnavailable("the store answered s3cretvalue123".into()),
        };
        let HttpError::Connect(told) = error.redacted(&redactor, &[]).into_wit() else {
            panic!("a connect error");
        };
        assert_eq!(
            told,
            "host error: cannot fill in sealed header `S3CRETVALUE123`: the store answered [REDACTED]"
        );
    }
}

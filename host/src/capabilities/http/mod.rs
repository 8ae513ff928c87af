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
//! Each hop goes through a [`Transport`]: the real client ([`ReqwestTransport`]) or, in the
//! test harness, mocks. The checks above happen before the transport sees a request, so a
//! mock never widens what a flow may reach.

mod headers;
mod lifted;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;
use wasmtime::StoreContextMut;
use wasmtime::component::{LinkerInstance, ResourceTable};

use super::log::{LogLevel, LogLine, LogSource};
use super::{AppState, Capability, Outcome};
use crate::capabilities::refusal::{Refusal, RefusalKind, Refusals};
use crate::config::{Flow, SecretValue, is_localhost_name, is_public, origin};
use crate::runtime::bindings::warden::plugin::http::{HttpError, Method, Request, Response};
use crate::runtime::budget::{self, EventBudget, quote};
use crate::runtime::instance::InstanceState;
use crate::secrets::SecretStore;
use crate::secrets::redact::{REDACTED, Redactor};

pub const MAX_REDIRECTS: usize = 5;

mod record;

use lifted::{Asked, RequestView};
pub use record::{
    HttpCall, MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_HEADERS, MAX_RECORDED_CALLS, MAX_URL_BYTES,
};

/// One hop of a request, as the host sends it after every check has passed.
#[derive(Debug)]
pub struct HopRequest<'a> {
    pub method: &'a reqwest::Method,
    pub url: &'a Url,
    /// The headers to send on this hop: sealed ones only on the origin the plugin addressed.
    pub headers: Vec<&'a OutgoingHeader>,
    pub body: Option<&'a [u8]>,
    pub timeout: Duration,
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

/// Sends one hop: the network, or the test harness's mocks.
#[async_trait]
pub trait Transport: Send + Sync {
    async fn send(&self, hop: HopRequest<'_>) -> Result<HopResponse, TransportError>;
}

/// The real network, through one client so connections are pooled across events and flows.
pub struct ReqwestTransport {
    client: reqwest::Client,
}

impl ReqwestTransport {
    pub fn new() -> Result<Self, reqwest::Error> {
        Self::with_lookup(Arc::new(SystemLookup))
    }

    /// The real client with names resolved by `lookup` instead of the system resolver; the
    /// address filter still applies to what it returns. For tests that need a name to
    /// resolve to a chosen address (DNS rebinding); no config setting reaches it.
    pub fn with_lookup(lookup: Arc<dyn Lookup>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            // Redirects are followed by the host, one checked hop at a time.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would connect on the plugin's behalf, out of
            // reach of the address checks.
            .no_proxy()
            // The only resolver the connector uses: the addresses checked here are the ones
            // connected to, so a name cannot pass a check and then resolve elsewhere.
            .dns_resolver(Arc::new(PublicOnlyResolver { lookup }))
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { client })
    }
}

#[async_trait]
impl Transport for ReqwestTransport {
    async fn send(&self, hop: HopRequest<'_>) -> Result<HopResponse, TransportError> {
        let url = hop.url;
        let mut builder = self
            .client
            .request(hop.method.clone(), url.clone())
            .timeout(hop.timeout);
        for h in &hop.headers {
            builder = builder.header(h.name.as_str(), h.value.expose());
        }
        if let Some(b) = hop.body {
            builder = builder.body(b.to_vec());
        }
        let response = builder.send().await.map_err(|e| classify(&e, url))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        if response
            .content_length()
            .is_some_and(|len| len > hop.max_body)
        {
            return Err(too_large(url, hop.max_body));
        }
        let mut collected = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| classify(&e, url))?;
            if (collected.len() + chunk.len()) as u64 > hop.max_body {
                return Err(too_large(url, hop.max_body));
            }
            collected.extend_from_slice(&chunk);
        }
        Ok(HopResponse {
            status,
            headers,
            body: collected,
        })
    }
}

/// App-wide state: the transport every instance sends through, and where sealed headers'
/// current values come from.
#[derive(Clone)]
pub struct HttpState {
    transport: Arc<dyn Transport>,
    secrets: Arc<SecretStore>,
}

impl HttpState {
    /// The real network.
    pub fn new(secrets: Arc<SecretStore>) -> Result<Self, reqwest::Error> {
        Ok(Self::with_transport(
            Arc::new(ReqwestTransport::new()?),
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
        let shown = self.instance.describe(&asked.url);
        // Measured before the host copied or parsed any of it.
        let request = match asked.request {
            Ok(request) => request,
            Err(why) => {
                return Ok(self
                    .instance
                    .record(method, shown, Err(HttpError::Invalid(why))));
            }
        };
        let allowed = self.instance.flow.limits.http_requests;
        let result = match self.outgoing_headers(&request.headers).await? {
            Err(refused) => Err(refused),
            Ok(_) if self.instance.sent >= allowed => Err(self.instance.refuse(format!(
                "more than {allowed} HTTP requests in one event (limits.http_requests)"
            ))),
            Ok(headers) => {
                self.instance.sent += 1;
                self.instance.execute(request, headers).await
            }
        };
        // Errors quote URLs and addresses a server chose (a redirect's target).
        let result = result.map_err(|e| redact_error(&self.instance.redactor(), e));
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
            });
            self.calls_dropped = 0;
        }
        Outcome {
            logs,
            refusals: self.refusals.finish(),
            http_calls: std::mem::take(&mut self.calls),
        }
    }
}

impl HttpInstance {
    /// Requests made after `deadline` are refused; each one's timeout is the time left.
    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
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

    /// Every value ever served of every secret this flow can seal: what no response it
    /// receives may show. Asked for per response, so it knows values fetched during the
    /// hook.
    fn redactor(&self) -> Arc<Redactor> {
        self.secrets
            .redactor_for(self.flow.grants.secrets.keys().map(String::as_str))
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

    fn timeout(&self, asked: Option<u32>) -> Result<Duration, HttpError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let timeout = [
            Some(left),
            self.flow.limits.http_timeout,
            asked.map(|ms| Duration::from_millis(ms.into())),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(left);
        if timeout.is_zero() {
            return Err(HttpError::Timeout(
                "no time is left before the hook's deadline".into(),
            ));
        }
        Ok(timeout)
    }

    async fn execute(
        &mut self,
        request: Request,
        headers: Vec<OutgoingHeader>,
    ) -> Result<Response, HttpError> {
        let mut url = Url::parse(&request.url).map_err(|e| {
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
        let timeout = self.timeout(request.timeout_ms)?;
        let started = Instant::now();
        let max_body = self.flow.limits.response_max_bytes;

        for hop in 0..=MAX_REDIRECTS {
            self.check(&url)?;
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(HttpError::Timeout(format!(
                    "{} timed out after {timeout:?}",
                    origin(&url)
                )));
            }
            // A sealed secret is only ever sent to the origin the plugin addressed.
            let hop_headers = headers
                .iter()
                .filter(|h| {
                    !matches!(h.value, OutgoingValue::Sealed { .. }) || url.origin() == first_origin
                })
                .collect();
            let response = self
                .transport
                .send(HopRequest {
                    method: &method,
                    url: &url,
                    headers: hop_headers,
                    body: body.as_deref(),
                    timeout: left,
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
            // The whole body at once, so no value escapes by being split across chunks.
            let redactor = self.redactor();
            let headers = response
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        redactor.redact(k),
                        redactor.redact(&String::from_utf8_lossy(v)),
                    )
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
            return Ok(Response {
                status: status.as_u16(),
                headers,
                body,
            });
        }
        unreachable!("the loop returns on its last hop")
    }
}

fn redact_error(redactor: &Redactor, error: HttpError) -> HttpError {
    match error {
        HttpError::Denied(m) => HttpError::Denied(redactor.redact(&m)),
        HttpError::Timeout(m) => HttpError::Timeout(redactor.redact(&m)),
        HttpError::Connect(m) => HttpError::Connect(redactor.redact(&m)),
        HttpError::TooLarge(m) => HttpError::TooLarge(redactor.redact(&m)),
        HttpError::Invalid(m) => HttpError::Invalid(redactor.redact(&m)),
    }
}

pub fn too_large(url: &Url, max: u64) -> TransportError {
    TransportError::TooLarge(format!(
        "the response from {} is over the flow's response_max_bytes ({max})",
        origin(url)
    ))
}

fn classify(error: &reqwest::Error, url: &Url) -> TransportError {
    let chain = error_chain(error);
    if let Some(refused) = find_source::<AddressRefused>(error) {
        return TransportError::Denied(refused.to_string());
    }
    if error.is_timeout() {
        TransportError::Timeout(format!("{} timed out: {chain}", origin(url)))
    } else if error.is_builder() {
        TransportError::Invalid(chain)
    } else {
        TransportError::Connect(format!("{}: {chain}", origin(url)))
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn find_source<'e, E: std::error::Error + 'static>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e E> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
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

/// A name resolved only to addresses a plugin may not reach.
#[derive(Debug)]
pub struct AddressRefused {
    host: String,
    ip: IpAddr,
}

impl fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` resolves to {}, a loopback, private or link-local address; only an allowed_hosts entry naming that address itself reaches it",
            self.host, self.ip
        )
    }
}

impl std::error::Error for AddressRefused {}

/// Keeps the public addresses of `host`; `localhost` names keep theirs, since the allowlist
/// only lets them through when named exactly.
pub fn filter_addresses(
    host: &str,
    addrs: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, AddressRefused> {
    if is_localhost_name(host) {
        return Ok(addrs);
    }
    let first = addrs.first().copied();
    let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
    match (public.is_empty(), first) {
        (true, Some(refused)) => Err(AddressRefused {
            host: host.to_string(),
            ip: refused.ip(),
        }),
        _ => Ok(public),
    }
}

/// Turns a host name into addresses; [`PublicOnlyResolver`] filters what it returns.
#[async_trait]
pub trait Lookup: Send + Sync {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system resolver.
struct SystemLookup;

#[async_trait]
impl Lookup for SystemLookup {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, 0)).await?.collect())
    }
}

struct PublicOnlyResolver {
    lookup: Arc<dyn Lookup>,
}

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let addrs = lookup.lookup(&host).await?;
            let kept = filter_addresses(&host, addrs)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 0)
    }

    #[test]
    fn names_resolving_only_to_internal_addresses_are_refused() {
        let err = filter_addresses("rebind.example", vec![addr("127.0.0.1")]).unwrap_err();
        assert!(err.to_string().contains("rebind.example"));
        let err = filter_addresses("meta.example", vec![addr("169.254.169.254")]).unwrap_err();
        assert!(err.to_string().contains("169.254.169.254"));
        let kept = filter_addresses(
            "mixed.example",
            vec![addr("10.0.0.1"), addr("93.184.216.34")],
        )
        .unwrap();
        assert_eq!(kept, vec![addr("93.184.216.34")]);
        assert_eq!(
            filter_addresses("localhost", vec![addr("127.0.0.1")])
                .unwrap()
                .len(),
            1
        );
    }
}

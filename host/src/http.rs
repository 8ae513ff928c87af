//! `warden:plugin/http`: outbound requests to the hosts a flow allows.
//!
//! Every hop is checked: the URL against `allowed_hosts`, each redirect's target again, and
//! the address actually connected to (a name that resolves to a loopback, private or
//! link-local address is refused, so DNS cannot be used to reach the host's own network).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;
use wasmtime::component::{HasData, Linker, ResourceTable};

use crate::bindings::warden::plugin::http::{
    self as wit, HeaderValue, HttpError, Method, Request, Response,
};
use crate::config::{Flow, SecretValue, is_localhost_name, is_public, origin};
use crate::redact::Redactor;
use crate::refusal::{Refusal, RefusalKind};
use crate::secret_store::SecretStore;

pub const MAX_REDIRECTS: usize = 5;

/// App-wide state: one client, so connections are pooled across events and flows.
#[derive(Clone)]
pub struct HttpState {
    client: reqwest::Client,
    secrets: Arc<SecretStore>,
}

impl HttpState {
    pub fn new(secrets: Arc<SecretStore>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            // Redirects are followed here, one checked hop at a time.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would connect on the plugin's behalf, out of
            // reach of the address checks.
            .no_proxy()
            .dns_resolver(Arc::new(PublicOnlyResolver))
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { client, secrets })
    }

    pub fn instance(&self, flow: Arc<Flow>, deadline: Instant) -> HttpInstance {
        HttpInstance {
            client: self.client.clone(),
            secrets: self.secrets.clone(),
            flow,
            deadline,
            refusals: Vec::new(),
            calls: Vec::new(),
        }
    }
}

/// One request a plugin made, for the report and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HttpCall {
    pub method: String,
    pub origin: String,
    pub path: String,
    /// The final status, or the error kind.
    pub outcome: String,
}

pub struct HttpInstance {
    client: reqwest::Client,
    secrets: Arc<SecretStore>,
    flow: Arc<Flow>,
    deadline: Instant,
    pub refusals: Vec<Refusal>,
    pub calls: Vec<HttpCall>,
}

pub struct HttpView<'a> {
    pub instance: &'a mut HttpInstance,
    pub table: &'a mut ResourceTable,
}

struct OutgoingHeader {
    name: String,
    value: String,
    sealed: bool,
}

impl wit::Host for HttpView<'_> {
    async fn send(&mut self, request: Request) -> wasmtime::Result<Result<Response, HttpError>> {
        let mut headers = Vec::with_capacity(request.headers.len());
        let mut sealed = Vec::new();
        for (name, value) in &request.headers {
            match value {
                HeaderValue::Text(text) => headers.push(OutgoingHeader {
                    name: name.clone(),
                    value: text.clone(),
                    sealed: false,
                }),
                HeaderValue::Sealed(handle) => {
                    let secret = self.table.get(handle)?.secret().clone();
                    let value: SecretValue = match self.instance.secrets.current(&secret).await {
                        Ok(value) => value,
                        Err(unavailable) => {
                            return Ok(Err(HttpError::Connect(format!(
                                "host error: cannot fill in sealed header `{name}`: {unavailable}"
                            ))));
                        }
                    };
                    headers.push(OutgoingHeader {
                        name: name.clone(),
                        value: value.expose().to_string(),
                        sealed: true,
                    });
                    sealed.push(value);
                }
            }
        }
        let method = method_name(request.method);
        let shown_url = request.url.clone();
        let result = self.instance.execute(request, headers, &sealed).await;
        let (origin, path) = Url::parse(&shown_url)
            .map(|u| (origin(&u), u.path().to_string()))
            .unwrap_or_else(|_| (shown_url.clone(), String::new()));
        self.instance.calls.push(HttpCall {
            method: method.to_string(),
            origin,
            path,
            outcome: match &result {
                Ok(r) => r.status.to_string(),
                Err(e) => error_kind(e).to_string(),
            },
        });
        Ok(result)
    }
}

impl HttpInstance {
    fn refuse(&mut self, detail: String) -> HttpError {
        self.refusals.push(Refusal {
            kind: RefusalKind::Host,
            detail: detail.clone(),
        });
        HttpError::Denied(detail)
    }

    fn check(&mut self, url: &Url) -> Result<(), HttpError> {
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(HttpError::Invalid(format!(
                "`{url}`: only http and https are supported"
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
        sealed: &[SecretValue],
    ) -> Result<Response, HttpError> {
        let mut url = Url::parse(&request.url).map_err(|e| {
            HttpError::Invalid(format!("`{}` is not a valid URL: {e}", request.url))
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
            let mut builder = self
                .client
                .request(method.clone(), url.clone())
                .timeout(left);
            for h in &headers {
                // A sealed secret is only ever sent to the origin the plugin addressed.
                if h.sealed && url.origin() != first_origin {
                    continue;
                }
                builder = builder.header(h.name.as_str(), h.value.as_str());
            }
            if let Some(b) = &body {
                builder = builder.body(b.clone());
            }
            let response = builder.send().await.map_err(|e| classify(&e, &url))?;
            let status = response.status();
            if status.is_redirection() {
                if let Some(location) = response.headers().get(reqwest::header::LOCATION) {
                    if hop == MAX_REDIRECTS {
                        return Err(HttpError::Invalid(format!(
                            "more than {MAX_REDIRECTS} redirects, starting at {}",
                            origin(&url)
                        )));
                    }
                    let location = location.to_str().map_err(|_| {
                        HttpError::Invalid("a redirect's Location is not valid text".into())
                    })?;
                    url = url.join(location).map_err(|e| {
                        HttpError::Invalid(format!(
                            "redirect to `{location}` is not a valid URL: {e}"
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
            let redactor = Redactor::new(sealed.to_vec());
            let headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        redactor.redact(&String::from_utf8_lossy(v.as_bytes())),
                    )
                })
                .collect();
            if response.content_length().is_some_and(|len| len > max_body) {
                return Err(too_large(&url, max_body));
            }
            let mut collected = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| classify(&e, &url))?;
                if (collected.len() + chunk.len()) as u64 > max_body {
                    return Err(too_large(&url, max_body));
                }
                collected.extend_from_slice(&chunk);
            }
            return Ok(Response {
                status: status.as_u16(),
                headers,
                body: redactor.redact_bytes(collected),
            });
        }
        unreachable!("the loop returns on its last hop")
    }
}

fn too_large(url: &Url, max: u64) -> HttpError {
    HttpError::TooLarge(format!(
        "the response from {} is over the flow's response_max_bytes ({max})",
        origin(url)
    ))
}

fn classify(error: &reqwest::Error, url: &Url) -> HttpError {
    let chain = error_chain(error);
    if let Some(refused) = find_source::<AddressRefused>(error) {
        return HttpError::Denied(refused.to_string());
    }
    if error.is_timeout() {
        HttpError::Timeout(format!("{} timed out: {chain}", origin(url)))
    } else if error.is_builder() {
        HttpError::Invalid(chain)
    } else {
        HttpError::Connect(format!("{}: {chain}", origin(url)))
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

fn method_name(method: Method) -> &'static str {
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

struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = filter_addresses(&host, addrs)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

struct Http;

impl HasData for Http {
    type Data<'a> = HttpView<'a>;
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> HttpView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Http>(linker, get)
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

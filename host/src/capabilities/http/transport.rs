//! The network behind `warden:plugin/http`: one pooled client whose resolver hands the
//! connector only addresses a plugin may reach, and how its errors read.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use super::{HopRequest, HopResponse, OutgoingHeader, OutgoingValue, Transport, TransportError};
use crate::config::{is_localhost_name, is_public, origin};

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

/// The most of a response body reserved before its bytes arrive.
const PREALLOCATED_BODY_BYTES: u64 = 64 << 10;

#[async_trait]
impl Transport for ReqwestTransport {
    async fn send(&self, hop: HopRequest<'_>) -> Result<HopResponse, TransportError> {
        let url = hop.url;
        let response = self
            .client
            .request(hop.method.clone(), url.clone())
            .headers(header_map(&hop.headers, url)?)
            .timeout(hop.timeout);
        let response = match hop.body {
            Some(b) => response.body(b.to_vec()),
            None => response,
        };
        let mut response = response.send().await.map_err(|e| classify(&e, url))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        let declared = response.content_length();
        if declared.is_some_and(|len| len > hop.max_body) {
            return Err(too_large(url, hop.max_body));
        }
        // Sized from a declared length so a usual body is copied into place once, not grown
        // chunk by chunk; at most PREALLOCATED_BODY_BYTES ahead of the bytes, so a server
        // that declares much and sends little does not make the host hold it.
        let mut collected =
            Vec::with_capacity(declared.unwrap_or(0).min(PREALLOCATED_BODY_BYTES) as usize);
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e, url))? {
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

/// The hop's headers as the client sends them, made in one map of the right size. A sealed
/// value is marked sensitive, so the client never indexes or prints it.
fn header_map(headers: &[&OutgoingHeader], url: &Url) -> Result<HeaderMap, TransportError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        // Names and values were checked before the hop (`http/headers.rs`): an error here is
        // one those checks did not foresee. It never quotes the value.
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
            TransportError::Invalid(format!("header name `{}` is not valid", h.name))
        })?;
        let mut value = HeaderValue::from_str(h.value.expose()).map_err(|_| {
            TransportError::Invalid(format!(
                "header `{}` cannot be sent to {}: its value is not a valid HTTP header value",
                h.name,
                origin(url)
            ))
        })?;
        if matches!(h.value, OutgoingValue::Sealed { .. }) {
            value.set_sensitive(true);
        }
        map.append(name, value);
    }
    Ok(map)
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
    fn the_header_map_keeps_repeated_names_and_marks_only_sealed_values_sensitive() {
        use crate::secrets::SecretValue;
        let text = |name: &str, value: &str| OutgoingHeader {
            name: name.into(),
            value: OutgoingValue::Text(value.into()),
        };
        let headers = [
            text("Accept", "application/json"),
            text("X-Tag", "one"),
            text("x-tag", "two"),
            OutgoingHeader {
                name: "X-Api-Key".into(),
                value: OutgoingValue::Sealed {
                    secret_id: "key".into(),
                    value: SecretValue::new("s3cret"),
                },
            },
        ];
        let url = Url::parse("http://127.0.0.1:9/").unwrap();
        let map = header_map(&headers.iter().collect::<Vec<_>>(), &url).unwrap();
        let tags: Vec<_> = map.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["one", "two"]);
        assert!(!map["accept"].is_sensitive());
        assert!(map["x-api-key"].is_sensitive());
        assert_eq!(map["x-api-key"], "s3cret");
        // A value the client cannot send is named by its header, never quoted.
        let bad = OutgoingHeader {
            name: "X-Api-Key".into(),
            value: OutgoingValue::Sealed {
                secret_id: "key".into(),
                value: SecretValue::new("s\u{7f}cret"),
            },
        };
        let TransportError::Invalid(error) = header_map(&[&bad], &url).unwrap_err() else {
            panic!("not invalid");
        };
        assert!(error.contains("`X-Api-Key`"), "{error}");
        assert!(!error.contains("cret"), "{error}");
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

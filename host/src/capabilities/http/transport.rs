//! The network behind `warden:plugin/http`: connections kept per origin and driven on the
//! hook's own task (`http/client.rs`), a resolver that hands the connector only addresses a
//! plugin may reach, and how its errors read.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use tokio::net::TcpStream;
use url::{Host, Position, Url};

use super::client::{Conn, Failed, Key, Pool, RequestBody, Stream};
use super::spin::{DEFAULT_SPIN_WAIT, SpinCounts, SpinWait, Tcp};
use super::{HopRequest, HopResponse, OutgoingHeader, OutgoingValue, Transport, TransportError};
use crate::config::{HttpSettings, is_localhost_name, is_public, origin};

/// The public web's certificate authorities, built in (`webpki-roots`): no system store is
/// read, so what a plugin's `https` trusts does not change with the machine.
fn public_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots
}

/// The public web's authorities and `[http] ca_file`'s.
pub(super) fn trusted_roots(settings: &HttpSettings) -> rustls::RootCertStore {
    let mut roots = public_roots();
    if let Some(extra) = &settings.extra_roots {
        roots.roots.extend(extra.root_store().roots);
    }
    roots
}

const USER_AGENT: &str = concat!("warden/", env!("CARGO_PKG_VERSION"));

/// Pooled connections tried for one request before a new one is opened: each was found
/// closed by the server while idle (the request was handed back unsent).
const STALE_TRIES: usize = 3;

/// The real network. One per host process, so connections are kept across events and flows.
pub struct NetworkTransport {
    lookup: Arc<dyn Lookup>,
    tls: tokio_rustls::TlsConnector,
    pool: Pool,
    spin: Arc<SpinWait>,
}

impl NetworkTransport {
    /// The real network, trusting the public web's certificate authorities only.
    pub fn new() -> Result<Self, TransportError> {
        Self::for_settings(&HttpSettings::default())
    }

    /// The real network as `[http]` sets it: servers' certificates signed by the public
    /// web's authorities or by `ca_file`'s.
    pub fn for_settings(settings: &HttpSettings) -> Result<Self, TransportError> {
        let transport = Self::trusting(Arc::new(SystemLookup), trusted_roots(settings))?;
        Ok(transport.polling_for(settings.spin_wait))
    }

    /// The real network with names resolved by `lookup` instead of the system resolver; the
    /// address filter still applies to what it returns. For tests that need a name to
    /// resolve to a chosen address (DNS rebinding); no config setting reaches it.
    pub fn with_lookup(lookup: Arc<dyn Lookup>) -> Result<Self, TransportError> {
        Self::trusting(lookup, public_roots())
    }

    /// The real network, with servers' certificates checked against `roots` alone: the
    /// public web's authorities ([`NetworkTransport::with_lookup`]), with a config's
    /// `ca_file` ([`NetworkTransport::for_settings`]), or in tests an authority of their own.
    pub(crate) fn trusting(
        lookup: Arc<dyn Lookup>,
        roots: rustls::RootCertStore,
    ) -> Result<Self, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::Invalid(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            lookup,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            pool: Pool::default(),
            spin: Arc::new(SpinWait::new(DEFAULT_SPIN_WAIT)),
        })
    }

    /// Fast answers polled for for at most `limit`, zero for never (`http/spin.rs`).
    pub fn polling_for(mut self, limit: std::time::Duration) -> Self {
        self.spin = Arc::new(SpinWait::new(limit));
        self
    }

    /// [`NetworkTransport::polling_for`], standing down for no other test's served requests.
    #[cfg(test)]
    pub(crate) fn polling_apart_for(mut self, limit: std::time::Duration) -> Self {
        self.spin = Arc::new(SpinWait::apart(limit, Box::leak(Box::default())));
        self
    }

    /// How often a request polled for its answer, and how often that caught it.
    pub fn spin_counts(&self) -> SpinCounts {
        self.spin.counts()
    }

    /// Idle connections kept for later requests.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle()
    }

    /// Sends the hop on a kept connection to its origin, or on a new one, and reads the
    /// whole answer.
    async fn exchange(&self, hop: &HopRequest<'_>) -> Result<HopResponse, TransportError> {
        let url = hop.url;
        let key = key(url)?;
        let mut request = request(hop)?;
        let _in_flight = self.spin.exchange();
        let mut stale = 0;
        loop {
            let (mut conn, pooled) = match self.pool.take(&key) {
                Some(conn) if stale < STALE_TRIES => (conn, true),
                _ => (self.connect(url, &key).await?, false),
            };
            match conn.exchange(request, hop.max_body).await {
                Ok((parts, body)) => {
                    self.pool.put(key, conn);
                    let headers = parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                        .collect();
                    return Ok(HopResponse {
                        status: parts.status.as_u16(),
                        headers,
                        body,
                    });
                }
                // Closed by the server while it waited: nothing was sent, so it goes on another.
                Err(Failed::NotSent(unsent)) if pooled => {
                    stale += 1;
                    request = *unsent;
                }
                Err(Failed::NotSent(_)) => {
                    return Err(TransportError::Connect(format!(
                        "{}: the connection closed before the request was sent",
                        origin(url)
                    )));
                }
                Err(Failed::TooLarge) => return Err(too_large(url, hop.max_body)),
                Err(Failed::Error(e)) => {
                    return Err(TransportError::Connect(format!(
                        "{}: {}",
                        origin(url),
                        error_chain(&e)
                    )));
                }
            }
        }
    }

    /// A new connection to `url`'s origin, at an address the filter kept.
    async fn connect(&self, url: &Url, key: &Key) -> Result<Conn, TransportError> {
        let addrs = match url.host() {
            // An address is reached only when an allowed_hosts entry names it (checked
            // before the hop): no lookup, nothing to filter.
            Some(Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), key.port)],
            Some(Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), key.port)],
            Some(Host::Domain(name)) => {
                let found = self.lookup.lookup(name).await.map_err(|e| {
                    TransportError::Connect(format!(
                        "{}: cannot resolve `{name}`: {e}",
                        origin(url)
                    ))
                })?;
                filter_addresses(name, found)
                    .map_err(|refused| TransportError::Denied(refused.to_string()))?
                    .into_iter()
                    .map(|a| SocketAddr::new(a.ip(), key.port))
                    .collect()
            }
            None => {
                return Err(TransportError::Invalid(format!(
                    "`{}` has no host",
                    origin(url)
                )));
            }
        };
        let connect_error = |e: &dyn fmt::Display| {
            TransportError::Connect(format!("{}: cannot connect: {e}", origin(url)))
        };
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match (tcp, last) {
            (Some(tcp), _) => tcp,
            (None, Some(e)) => return Err(connect_error(&e)),
            (None, None) => return Err(connect_error(&"the name has no address")),
        };
        // Requests are written whole: waiting to coalesce them only adds a round trip.
        tcp.set_nodelay(true).map_err(|e| connect_error(&e))?;
        let tcp = Tcp::new(tcp, self.spin.clone());
        let stream = if key.tls {
            let name = match url.host() {
                Some(Host::Domain(name)) => {
                    rustls::pki_types::ServerName::try_from(name.to_string())
                }
                Some(Host::Ipv4(ip)) => Ok(IpAddr::from(ip).into()),
                Some(Host::Ipv6(ip)) => Ok(IpAddr::from(ip).into()),
                None => unreachable!("a host was found above"),
            }
            .map_err(|e| TransportError::Invalid(format!("{}: {e}", origin(url))))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| TransportError::Connect(format!("{}: TLS: {e}", origin(url))))?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        Conn::handshake(stream)
            .await
            .map_err(|e| connect_error(&error_chain(&e)))
    }
}

#[async_trait]
impl Transport for NetworkTransport {
    async fn send(&self, hop: HopRequest<'_>) -> Result<HopResponse, TransportError> {
        if hop.within_hook_deadline {
            // The hook's own deadline ends the exchange at this same moment.
            return self.exchange(&hop).await;
        }
        match tokio::time::timeout(hop.timeout, self.exchange(&hop)).await {
            Ok(answer) => answer,
            Err(_) => Err(TransportError::Timeout(format!(
                "{} timed out after {} ms",
                origin(hop.url),
                hop.timeout.as_millis()
            ))),
        }
    }
}

/// Where `url`'s connections go.
fn key(url: &Url) -> Result<Key, TransportError> {
    let tls = match url.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(TransportError::Invalid(format!(
                "`{other}` URLs are not sent: only http and https"
            )));
        }
    };
    Ok(Key {
        tls,
        host: url.host_str().unwrap_or_default().to_string(),
        port: url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 }),
    })
}

/// The hop as hyper sends it: origin-form target, `Host` from the checked URL, the headers
/// in one map of the right size.
fn request(hop: &HopRequest<'_>) -> Result<hyper::Request<RequestBody>, TransportError> {
    let url = hop.url;
    let target = &url[Position::BeforePath..Position::AfterQuery];
    let uri = hyper::Uri::try_from(target).map_err(|e| {
        TransportError::Invalid(format!("{}: the path cannot be sent: {e}", origin(url)))
    })?;
    let body = hop.body.map(Bytes::copy_from_slice).unwrap_or_default();
    let mut request = hyper::Request::new(RequestBody::new(body));
    *request.method_mut() = hop.method.clone();
    *request.uri_mut() = uri;
    let mut headers = header_map(&hop.headers, url, 3)?;
    let host = &url[Position::BeforeHost..Position::BeforePath];
    let host = HeaderValue::from_str(host).map_err(|_| {
        TransportError::Invalid(format!("{}: the host cannot be sent", origin(url)))
    })?;
    headers.insert(header::HOST, host);
    if !headers.contains_key(header::USER_AGENT) {
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    }
    if !headers.contains_key(header::ACCEPT) {
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    }
    // Uncompressed, so redaction sees what the server sent (`http/headers.rs`).
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    *request.headers_mut() = headers;
    Ok(request)
}

/// The hop's headers as the client sends them, made in one map of the right size (`extra`:
/// room for the host's own). A sealed value is marked sensitive, so the client never
/// indexes or prints it.
fn header_map(
    headers: &[&OutgoingHeader],
    url: &Url,
    extra: usize,
) -> Result<HeaderMap, TransportError> {
    let mut map = HeaderMap::with_capacity(headers.len() + extra);
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

/// Turns a host name into addresses; [`filter_addresses`] filters what it returns, and
/// only the addresses it keeps are connected to: a name cannot pass a check and then
/// resolve elsewhere.
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
        let map = header_map(&headers.iter().collect::<Vec<_>>(), &url, 0).unwrap();
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
        let TransportError::Invalid(error) = header_map(&[&bad], &url, 0).unwrap_err() else {
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

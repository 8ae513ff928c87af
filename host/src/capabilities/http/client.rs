//! The connections behind [`NetworkTransport`](super::NetworkTransport): HTTP/1.1 over TCP
//! or TLS, each driven by the task that sends on it, and kept per origin for the next
//! request.
//!
//! A connection is a pair: hyper's `SendRequest` and the `Connection` future that does its
//! reading and writing. A pooled client (reqwest's) spawns that future as a task of its own,
//! so every request crosses a channel to it and every response a wake-up back. Here the
//! hook's own task polls it alongside the request ([`Conn::exchange`]), and an idle one
//! waits in the [`Pool`] unpolled: HTTP/1.1 has nothing to do between requests, and a
//! connection the server closed meanwhile is found closed when next taken (its future ends
//! on the first poll, or the request is handed back unsent and goes on a new connection).

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::spin::Tcp;
use crate::Unpoisoned;

/// What a request carries: its whole body, known before it is sent.
pub type RequestBody = Full<Bytes>;

/// Idle connections kept for one origin; more are closed when they come back.
pub const MAX_IDLE_PER_ORIGIN: usize = 8;
/// Idle connections kept in all.
pub const MAX_IDLE: usize = 128;
/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often returning a connection also closes every expired one.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How late past its time the sweeper may close an idle connection: expiries this close
/// together are closed by one wake-up.
const SWEEP_SLACK: Duration = Duration::from_secs(1);

/// The bytes under a connection.
pub enum Stream {
    Plain(Tcp),
    Tls(Box<tokio_rustls::client::TlsStream<Tcp>>),
}

/// One HTTP/1.1 connection: `None` once its future has ended (closed, or failed).
pub struct Conn {
    sender: http1::SendRequest<RequestBody>,
    driver: Option<http1::Connection<TokioIo<Stream>, RequestBody>>,
}

/// Why an exchange gave no response.
pub enum Failed {
    /// The connection had closed before the request was written: it can go on another.
    NotSent(Box<hyper::Request<RequestBody>>),
    /// The connection or the server failed after the request was handed over.
    Error(hyper::Error),
    /// The body is over the flow's cap (declared, or as it arrived).
    TooLarge,
}

/// The most of a response body reserved before its bytes arrive.
const PREALLOCATED_BODY_BYTES: u64 = 64 << 10;

impl Conn {
    /// Opens HTTP/1.1 on `stream`.
    pub async fn handshake(stream: Stream) -> hyper::Result<Self> {
        let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Self {
            sender,
            driver: Some(driver),
        })
    }

    /// Whether the connection can carry another request: its future has not ended.
    pub fn is_open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }

    /// Sends `request` and reads the whole response, at most `max_body` bytes of body,
    /// polling the connection's future alongside on this task. A connection whose exchange
    /// failed is not to be used again.
    pub async fn exchange(
        &mut self,
        request: hyper::Request<RequestBody>,
        max_body: u64,
    ) -> Result<(hyper::http::response::Parts, Vec<u8>), Failed> {
        let Conn { sender, driver } = self;
        let work =
            async move {
                if sender.ready().await.is_err() {
                    return Err(Failed::NotSent(Box::new(request)));
                }
                let response = sender.try_send_request(request).await.map_err(|mut e| {
                    match e.take_message() {
                        Some(request) => Failed::NotSent(Box::new(request)),
                        None => Failed::Error(e.into_error()),
                    }
                })?;
                let (parts, mut body) = response.into_parts();
                let declared = body.size_hint().exact();
                if declared.is_some_and(|len| len > max_body) {
                    return Err(Failed::TooLarge);
                }
                // Sized from a declared length so a usual body is copied into place once, not
                // grown chunk by chunk; at most PREALLOCATED_BODY_BYTES ahead of the bytes, so a
                // server that declares much and sends little does not make the host hold it.
                let mut collected =
                    Vec::with_capacity(declared.unwrap_or(0).min(PREALLOCATED_BODY_BYTES) as usize);
                while let Some(frame) = body.frame().await {
                    let Ok(data) = frame.map_err(Failed::Error)?.into_data() else {
                        continue; // trailers
                    };
                    if (collected.len() + data.len()) as u64 > max_body {
                        return Err(Failed::TooLarge);
                    }
                    collected.extend_from_slice(&data);
                }
                Ok((parts, collected))
            };
        let mut work = pin!(work);
        poll_fn(|cx| {
            drive(driver, cx);
            let done = work.as_mut().poll(cx);
            if done.is_ready() {
                // Once more, so a connection the answer closed (`Connection: close`) ends
                // now and is not pooled, and a kept one is ready for the next request.
                drive(driver, cx);
            }
            done
        })
        .await
    }
}

/// Polls a connection's future; drops it once it has ended, which ends what waits on it.
fn drive(driver: &mut Option<http1::Connection<TokioIo<Stream>, RequestBody>>, cx: &mut Context) {
    if let Some(conn) = driver
        && Pin::new(conn).poll(cx).is_ready()
    {
        *driver = None;
    }
}

/// Where a connection goes: connections are kept per origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// Idle connections, the most recently used of an origin first out. Each is closed once it
/// has been idle for [`IDLE_TIMEOUT`], by a task that sleeps until the next one is due
/// (while any is kept, on the async runtime that kept it), or when the pool is next used.
pub struct Pool {
    idle: Arc<Mutex<Idle>>,
    timeout: Duration,
}

impl Default for Pool {
    fn default() -> Self {
        Self::keeping_for(IDLE_TIMEOUT)
    }
}

#[derive(Default)]
struct Idle {
    by_origin: HashMap<Key, Vec<(Conn, Instant)>>,
    count: usize,
    swept: Option<Instant>,
    /// A sweeper task is waiting for the next expiry.
    sweeping: bool,
}

impl Pool {
    /// A pool whose connections are kept idle for `timeout`.
    fn keeping_for(timeout: Duration) -> Self {
        Self {
            idle: Arc::default(),
            timeout,
        }
    }

    /// An idle connection to `key` that has not expired nor been seen closed.
    pub fn take(&self, key: &Key) -> Option<Conn> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &Key, now: Instant) -> Option<Conn> {
        let mut closed = Vec::new();
        let mut idle = self.idle.lock().unpoisoned();
        let Idle {
            by_origin, count, ..
        } = &mut *idle;
        let conns = by_origin.get_mut(key)?;
        let mut found = None;
        while let Some((conn, since)) = conns.pop() {
            *count -= 1;
            if conn.is_open() && now.duration_since(since) < self.timeout {
                found = Some(conn);
                break;
            }
            closed.push(conn);
        }
        if conns.is_empty() {
            by_origin.remove(key);
        }
        drop(idle);
        drop(closed); // closing sockets outside the lock
        found
    }

    /// Keeps `conn` for the next request to `key`, within [`MAX_IDLE_PER_ORIGIN`] and
    /// [`MAX_IDLE`]; closes it otherwise.
    pub fn put(&self, key: Key, conn: Conn) {
        self.put_at(key, conn, Instant::now())
    }

    fn put_at(&self, key: Key, conn: Conn, now: Instant) {
        if !conn.is_open() {
            return;
        }
        let mut closed = Vec::new();
        let mut idle = self.idle.lock().unpoisoned();
        if idle
            .swept
            .is_none_or(|swept| now.duration_since(swept) >= SWEEP_EVERY)
        {
            idle.swept = Some(now);
            closed = idle.expired(now, self.timeout);
        }
        let room = idle.count < MAX_IDLE;
        let conns = idle.by_origin.entry(key).or_default();
        if room && conns.len() < MAX_IDLE_PER_ORIGIN {
            conns.push((conn, now));
            idle.count += 1;
            if !idle.sweeping
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                idle.sweeping = true;
                runtime.spawn(sweep(Arc::downgrade(&self.idle), self.timeout));
            }
        } else {
            closed.push(conn);
        }
        drop(idle);
        drop(closed);
    }

    /// Idle connections kept, in all.
    pub fn idle(&self) -> usize {
        self.idle.lock().unpoisoned().count
    }
}

/// Closes `idle`'s connections as they expire, sleeping until the next is due; ends when none
/// is left (the next one kept starts another) or the pool is gone.
async fn sweep(idle: Weak<Mutex<Idle>>, timeout: Duration) {
    /// Lets the pool start another sweeper if this one ends early (its runtime shut down).
    struct Sweeping(Weak<Mutex<Idle>>);
    impl Drop for Sweeping {
        fn drop(&mut self) {
            if let Some(idle) = self.0.upgrade() {
                idle.lock().unpoisoned().sweeping = false;
            }
        }
    }
    let _sweeping = Sweeping(idle.clone());
    loop {
        let due = {
            let Some(idle) = idle.upgrade() else { return };
            let idle = idle.lock().unpoisoned();
            let oldest = idle
                .by_origin
                .values()
                .flatten()
                .map(|(_, since)| *since)
                .min();
            match oldest {
                Some(since) => since + timeout,
                None => return,
            }
        };
        tokio::time::sleep_until((due + SWEEP_SLACK).into()).await;
        let Some(idle) = idle.upgrade() else { return };
        let expired = idle.lock().unpoisoned().expired(Instant::now(), timeout);
        drop(expired); // closing sockets outside the lock
    }
}

impl Idle {
    fn expired(&mut self, now: Instant, timeout: Duration) -> Vec<Conn> {
        let mut expired = Vec::new();
        self.by_origin.retain(|_, conns| {
            let (old, kept): (Vec<_>, Vec<_>) =
                std::mem::take(conns)
                    .into_iter()
                    .partition(|(conn, since)| {
                        !conn.is_open() || now.duration_since(*since) >= timeout
                    });
            expired.extend(old.into_iter().map(|(conn, _)| conn));
            *conns = kept;
            !conns.is_empty()
        });
        self.count -= expired.len();
        expired
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use url::Url;

    use super::*;
    use crate::capabilities::http::spin::SpinWait;
    use crate::capabilities::http::{
        HopRequest, NetworkTransport, OutgoingHeader, OutgoingValue, Transport, TransportError,
    };

    #[derive(Clone, Copy)]
    enum Mode {
        KeepAlive,
        /// Closes each connection after its first answer, without saying so.
        CloseQuietly,
        /// Answers `Connection: close`, then closes.
        SaysClose,
        /// Sends the head, then one body byte every 50 ms.
        Trickle,
    }

    /// A loopback HTTP/1.1 server: counts connections and keeps each request's head.
    struct Server {
        port: u16,
        accepted: Arc<AtomicUsize>,
        heads: Arc<Mutex<Vec<String>>>,
    }

    async fn serve(mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (count, kept) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0; 1024];
                        let Ok(n) = socket.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        kept.lock().unwrap().push(String::from_utf8(head).unwrap());
                        let answer: &[u8] = match mode {
                            Mode::KeepAlive | Mode::CloseQuietly => {
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                            }
                            Mode::SaysClose => {
                                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
                            }
                            Mode::Trickle => b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
                        };
                        if socket.write_all(answer).await.is_err() {
                            return;
                        }
                        match mode {
                            Mode::KeepAlive => {}
                            Mode::CloseQuietly | Mode::SaysClose => return,
                            Mode::Trickle => loop {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                if socket.write_all(b"x").await.is_err() {
                                    return;
                                }
                            },
                        }
                    }
                });
            }
        });
        Server {
            port,
            accepted,
            heads,
        }
    }

    async fn get(
        transport: &NetworkTransport,
        url: &str,
        timeout: Duration,
        within_hook_deadline: bool,
    ) -> Result<super::super::HopResponse, TransportError> {
        let url = Url::parse(url).unwrap();
        let accept = OutgoingHeader {
            name: "Accept".into(),
            value: OutgoingValue::Text("application/json".into()),
        };
        transport
            .send(HopRequest {
                method: &hyper::Method::GET,
                url: &url,
                headers: vec![&accept],
                body: None,
                timeout,
                within_hook_deadline,
                max_body: 1 << 20,
            })
            .await
    }

    const SECOND: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn requests_to_one_origin_reuse_one_connection() {
        let server = serve(Mode::KeepAlive).await;
        let transport = NetworkTransport::new().unwrap();
        let url = format!("http://127.0.0.1:{}/a/b?c=d", server.port);
        for _ in 0..3 {
            let answer = get(&transport, &url, SECOND, false).await.unwrap();
            assert_eq!((answer.status, answer.body.as_slice()), (200, &b"ok"[..]));
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(transport.idle_connections(), 1);
        let heads = server.heads.lock().unwrap();
        assert_eq!(heads.len(), 3);
        let head = heads[0].to_ascii_lowercase();
        assert!(head.starts_with("get /a/b?c=d http/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("\r\nhost: 127.0.0.1:{}\r\n", server.port)),
            "{head}"
        );
        assert!(head.contains("\r\naccept: application/json\r\n"), "{head}");
        assert!(head.contains("\r\nuser-agent: warden/"), "{head}");
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced() {
        let server = serve(Mode::CloseQuietly).await;
        let transport = NetworkTransport::new().unwrap();
        let url = format!("http://127.0.0.1:{}/", server.port);
        for round in 1..=3 {
            let answer = get(&transport, &url, SECOND, false).await.unwrap();
            assert_eq!(answer.status, 200);
            assert_eq!(server.accepted.load(Ordering::SeqCst), round);
            // The server's close reaches this side before the next request.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            server.heads.lock().unwrap().len(),
            3,
            "each request sent once"
        );
    }

    #[tokio::test]
    async fn an_answer_that_closes_its_connection_leaves_nothing_pooled() {
        let server = serve(Mode::SaysClose).await;
        let transport = NetworkTransport::new().unwrap();
        let url = format!("http://127.0.0.1:{}/", server.port);
        get(&transport, &url, SECOND, false).await.unwrap();
        assert_eq!(transport.idle_connections(), 0);
        get(&transport, &url, SECOND, false).await.unwrap();
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_timeout_bounds_the_whole_body_and_the_connection_is_not_kept() {
        let server = serve(Mode::Trickle).await;
        let transport = NetworkTransport::new().unwrap();
        let url = format!("http://127.0.0.1:{}/", server.port);
        let started = Instant::now();
        let error = get(&transport, &url, Duration::from_millis(300), false)
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(error, TransportError::Timeout(_)), "{error:?}");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(transport.idle_connections(), 0);
        // Within the hook's deadline, the transport sets no timer: the hook's ends the call.
        let bounded = tokio::time::timeout(
            Duration::from_millis(300),
            get(&transport, &url, Duration::from_millis(100), true),
        )
        .await;
        assert!(
            bounded.is_err(),
            "ended by the caller's deadline, not its own"
        );
    }

    #[tokio::test]
    async fn the_pool_keeps_at_most_its_share_of_idle_connections_per_origin() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::default();
        let key = |port| Key {
            tls: false,
            host: "127.0.0.1".into(),
            port,
        };
        for _ in 0..MAX_IDLE_PER_ORIGIN + 3 {
            let conn = conn(addr).await;
            pool.put(key(addr.port()), conn);
        }
        assert_eq!(pool.idle(), MAX_IDLE_PER_ORIGIN);
        assert!(
            pool.take(&key(addr.port() ^ 1)).is_none(),
            "kept per origin"
        );
        for _ in 0..MAX_IDLE_PER_ORIGIN {
            assert!(pool.take(&key(addr.port())).is_some());
        }
        assert!(pool.take(&key(addr.port())).is_none());
        assert_eq!(pool.idle(), 0);
    }

    /// A connection to `addr`, ready for the pool.
    async fn conn(addr: std::net::SocketAddr) -> Conn {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let spin = Arc::new(SpinWait::new(Duration::ZERO));
        Conn::handshake(Stream::Plain(Tcp::new(tcp, spin)))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_pool_keeps_at_most_max_idle_connections_in_all() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepted and held: more connections than the listen backlog holds.
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let pool = Pool::default();
        // Origins told apart by their keys; the sockets all go to one listener.
        let origins = MAX_IDLE / MAX_IDLE_PER_ORIGIN + 2;
        for origin in 0..origins {
            for _ in 0..MAX_IDLE_PER_ORIGIN {
                let key = Key {
                    tls: false,
                    host: format!("origin-{origin}.example"),
                    port: 80,
                };
                pool.put(key, conn(addr).await);
            }
        }
        assert_eq!(pool.idle(), MAX_IDLE);
        let last = Key {
            tls: false,
            host: format!("origin-{}.example", origins - 1),
            port: 80,
        };
        assert!(pool.take(&last).is_none(), "no room was left for it");
        held.abort();
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_in_its_time_with_no_request_after_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The server's side of each connection: how long until warden closed it.
        let closed = tokio::spawn(async move {
            let mut waits = Vec::new();
            for _ in 0..2 {
                let (socket, _) = listener.accept().await.unwrap();
                waits.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let mut socket = socket;
                    let mut byte = [0; 1];
                    while socket.read(&mut byte).await.unwrap_or(0) != 0 {}
                    started.elapsed()
                }));
            }
            let mut took = Vec::new();
            for wait in waits {
                took.push(wait.await.unwrap());
            }
            took
        });
        let pool = Pool::keeping_for(Duration::from_millis(200));
        let key = Key {
            tls: false,
            host: "127.0.0.1".into(),
            port: addr.port(),
        };
        pool.put(key.clone(), conn(addr).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        pool.put(key, conn(addr).await);
        let took = tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("both closed while nothing else used the pool")
            .unwrap();
        for took in took {
            assert!(took >= Duration::from_millis(100), "{took:?}");
            assert!(
                took < Duration::from_millis(200) + SWEEP_SLACK + Duration::from_secs(1),
                "{took:?}"
            );
        }
        assert_eq!(pool.idle(), 0);
        assert!(!pool.idle.lock().unwrap().sweeping, "the sweeper ended");
    }

    #[tokio::test]
    async fn an_idle_connection_past_its_time_is_closed_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::default();
        let key = Key {
            tls: false,
            host: "127.0.0.1".into(),
            port: addr.port(),
        };
        let start = Instant::now();
        pool.put_at(key.clone(), conn(addr).await, start);
        pool.put_at(key.clone(), conn(addr).await, start);
        let just_before = start + IDLE_TIMEOUT - Duration::from_millis(1);
        assert!(pool.take_at(&key, just_before).is_some(), "still fresh");
        assert!(
            pool.take_at(&key, start + IDLE_TIMEOUT).is_none(),
            "expired: closed, not handed out"
        );
        assert_eq!(pool.idle(), 0);

        // Returning a connection also sweeps the expired ones of every origin.
        let other = Key {
            host: "localhost".into(),
            ..key.clone()
        };
        pool.put_at(other.clone(), conn(addr).await, start);
        pool.put_at(key.clone(), conn(addr).await, start + IDLE_TIMEOUT);
        assert_eq!(
            pool.idle(),
            1,
            "the other origin's expired connection was swept"
        );
        assert!(pool.take_at(&other, start + IDLE_TIMEOUT).is_none());
        assert!(pool.take_at(&key, start + IDLE_TIMEOUT).is_some());
    }
}

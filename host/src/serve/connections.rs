//! The API's connections, bounded as its requests are. Anyone who can reach the port can open
//! a connection, and without bounds could keep it, its task and a file descriptor for as long
//! as they liked by sending nothing, a byte a minute, or never reading the answer; enough such
//! connections use up the process's descriptors, which the store and the plugins' HTTP need
//! too. (A body is read whole before its request counts against `max_in_flight`,
//! `bodies::body_first`: one on its way holds its connection, not a slot every user shares.)
//!
//! So at most `max_connections` are open at once (past that, new ones wait in the listen
//! backlog, served as others close), a request's head is at most [`MAX_HEAD_BYTES`], and a
//! client has `client_timeout_ms` to send a request's head (an idle kept-alive connection is
//! closed after as long), as long again for its body (`408` then, and the connection closed:
//! [`body_in_time`], a layer of the router), and as long for each write of an answer to make
//! progress. Each connection's socket buffers are kept small ([`SEND_BUFFER_BYTES`]); what
//! answers not yet read hold is bounded in [`super::answers`]. At start the process's
//! open-files limit is raised to its hard limit, since the usual soft one (1,024) is no more
//! than the default `max_connections`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::api::ApiError;
use super::metrics::Metrics;
use super::throttle::AddressKey;
use crate::Unpoisoned;

/// How many connections may be open, in all and from one address, and how long a client
/// may take.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Past this many open from one address, more from it are closed as they arrive: one
    /// client keeping connections open (each sending a request now and then, so none is
    /// idle) would otherwise hold every one, and everyone else, `/healthz` and `/metrics`
    /// included, would wait in the backlog.
    pub max_per_address: usize,
    /// Addresses not held to `max_per_address`: trusted proxies, whose connections are
    /// many clients'.
    pub unlimited: Vec<std::net::IpAddr>,
    pub client_timeout: Duration,
}

/// Connections open per client address: an IPv4 address, or an IPv6 address's /64, which
/// one client has whole (as every per-address limit counts them, `throttle::AddressKey`).
struct OpenPerAddress {
    counts: std::sync::Mutex<std::collections::HashMap<AddressKey, usize>>,
    max: usize,
}

/// One connection counted against its address until dropped.
struct AddressHeld {
    of: Arc<OpenPerAddress>,
    ip: AddressKey,
}

impl OpenPerAddress {
    /// Counts a connection from `ip`; `None` when it already has its most.
    fn open(self: &Arc<Self>, ip: AddressKey) -> Option<AddressHeld> {
        let mut counts = self.counts.lock().unpoisoned();
        let count = counts.entry(ip).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressHeld {
            of: self.clone(),
            ip,
        })
    }
}

impl Drop for AddressHeld {
    fn drop(&mut self) {
        let mut counts = self.of.counts.lock().unpoisoned();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Serves `router` on `listener` until `stop`, then lets open connections finish what they
/// were answering: for as long as the lifecycle's `work` (hooks in flight, each under its
/// deadline) takes, and `client_timeout` more for their answers to be read. A connection
/// still open then is closed: a client reading a large answer a little at a time, each write
/// making progress, would otherwise hold the stop for minutes (and a supervisor's stop
/// timeout would then kill warden mid-hook). What it was answering is done and stored.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    work: TaskTracker,
) {
    make_room_for(limits.max_connections);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(OpenPerAddress {
        counts: Default::default(),
        max: limits.max_per_address,
    });
    let connections = TaskTracker::new();
    let cut = CancellationToken::new();
    loop {
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = stop.cancelled() => break,
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, or a connection reset while queued: the listener
                    // itself is fine, and a busy loop would not help.
                    tracing::warn!(%error, "cannot accept a connection; trying again shortly");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // An IPv4 client reaching an IPv6 listener is still its IPv4 address; proxies are
        // named either way.
        let ip = addr.ip().to_canonical();
        let counted = if limits.unlimited.iter().any(|p| p.to_canonical() == ip) {
            None
        } else {
            match per_address.open(AddressKey::of(ip)) {
                Some(held) => Some(held),
                None => {
                    // Closed at once: the client learns, and its slot is free again.
                    tracing::debug!(%ip, "a connection over serve.max_connections_per_address closed");
                    drop(stream);
                    continue;
                }
            }
        };
        keep_buffers_small(&stream);
        let router = router.clone();
        let (stop, cut) = (stop.clone(), cut.clone());
        let open = metrics.open_connection();
        let client_timeout = limits.client_timeout;
        connections.spawn(async move {
            let _held = (permit, open, counted);
            serve_connection(stream, addr, router, client_timeout, stop, cut).await;
        });
    }
    // Closed before the drain: a client arriving now is refused at once (and a load
    // balancer tries another replica) rather than queued in a backlog nobody reads.
    drop(listener);
    connections.close();
    let drained = async {
        work.close();
        work.wait().await;
        tokio::time::sleep(limits.client_timeout).await;
    };
    tokio::select! {
        () = connections.wait() => return,
        () = drained => {}
    }
    cut.cancel();
    connections.wait().await;
}

/// The most of a request's head (its line and headers) a connection buffers: room for any
/// token and a browser's cookies. hyper's default, about 400 KiB, times `max_connections`
/// would let heads that never finish hold 400 MiB until their timeout.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// The socket buffers an accepted connection asks for (the kernel doubles each for its
/// bookkeeping). Left to itself, Linux grows a connection's send buffer up to `tcp_wmem`'s
/// largest, 4 MiB by default, and fills it from warden's answers however slowly the client
/// reads, and its receive buffer holds requests a client sent ahead (pipelined) and does not
/// let warden answer by reading nothing. With these, what the kernel holds for one
/// connection is at most about 200 KiB, so `max_connections` bounds it (a thousand: 200
/// MB); what warden itself holds of answers not yet read is bounded in
/// [`super::answers`]. 64 KiB in flight is about 0.6 MB/s to a client 100 ms away: a
/// listing page's megabyte in under two seconds, anything else in a round trip or two.
const SEND_BUFFER_BYTES: usize = 64 << 10;
const RECEIVE_BUFFER_BYTES: usize = 32 << 10;

fn keep_buffers_small(stream: &TcpStream) {
    use rustix::net::sockopt::{set_socket_recv_buffer_size, set_socket_send_buffer_size};
    if let Err(error) = set_socket_send_buffer_size(stream, SEND_BUFFER_BYTES)
        .and_then(|()| set_socket_recv_buffer_size(stream, RECEIVE_BUFFER_BYTES))
    {
        tracing::debug!(%error, "cannot set an accepted connection's socket buffers");
    }
}

/// Descriptors left for what is not a client's connection: the store, plugins' HTTP,
/// notifications, compiled plugins' files.
const DESCRIPTORS_KEPT: u64 = 256;

/// Raises this process's soft limit on open files to its hard one (the soft one is often
/// 1,024, no more than the default `max_connections`), and warns when `max_connections` would
/// still leave fewer than [`DESCRIPTORS_KEPT`] for the rest. Returns the limit now in force.
fn make_room_for(max_connections: usize) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current.unwrap_or(u64::MAX);
    // The kernel refuses more than its `nr_open` (a million by default), unlimited included.
    let hard = limit.maximum.unwrap_or(u64::MAX).min(1 << 20);
    if soft < hard {
        let raised = Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            soft = hard;
        }
    }
    if max_connections as u64 + DESCRIPTORS_KEPT > soft {
        tracing::warn!(
            max_connections,
            open_files_limit = soft,
            "serve.max_connections leaves fewer than {DESCRIPTORS_KEPT} of the open-files limit for the store, plugins' HTTP and notifications; lower it, or raise the limit (systemd: LimitNOFILE=)"
        );
    }
    soft
}

async fn serve_connection(
    stream: TcpStream,
    addr: SocketAddr,
    router: Router,
    timeout: Duration,
    stop: CancellationToken,
    cut: CancellationToken,
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        answer(router.clone(), request, addr)
    });
    let io = TokioIo::new(WriteStallLimit::new(stream, timeout));
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Also how long a kept-alive connection may wait for its next request.
        .header_read_timeout(timeout)
        // A longer head is answered 431; the buffer it is read into stays as small.
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                () = cut.cancelled() => {}
            }
        }
    }
}

/// Answers one request, telling the router the client's address (the console's sign-in
/// limit is per address).
async fn answer(
    router: Router,
    request: Request<Incoming>,
    addr: SocketAddr,
) -> Result<Response, std::convert::Infallible> {
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(addr));
    router
        .oneshot(Request::from_parts(parts, Body::new(body)))
        .await
}

/// Router layer: gives a request's body `timeout` to arrive whole; one that does not is
/// answered `408` whatever the handler made of a body that stopped short, and the connection
/// is closed. A layer, not part of the connection, so the response counter sees the `408`.
pub(super) async fn body_in_time(
    State(timeout): State<Duration>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let late = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(BodyInTime {
            body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            late: late.clone(),
        })
    });
    let response = next.run(request).await;
    if !late.load(Ordering::Relaxed) {
        return response;
    }
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request's body did not arrive within {} ms (serve.client_timeout_ms)",
            timeout.as_millis()
        ),
    )
    .into_response();
    // The rest of the body may still come; the connection cannot carry another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that ends in an error once its deadline passes, noting it in `late`.
struct BodyInTime {
    body: Body,
    deadline: Pin<Box<Sleep>>,
    late: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request's body did not arrive in time")]
struct BodyTooSlow;

impl hyper::body::Body for BodyInTime {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        ready!(self.deadline.as_mut().poll(cx));
        self.late.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection whose writes fail once one has made no progress for `limit`: a client that
/// stops reading its answer cannot hold the connection open.
struct WriteStallLimit<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteStallLimit<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// `progress` as it is, unless it is a wait that has lasted past the limit.
    fn bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        progress: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if progress.is_ready() {
            self.stalled = None;
            return progress;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing of the answer in time",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStallLimit<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStallLimit<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let progress = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.bounded(cx, progress)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let progress = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.bounded(cx, progress)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let progress = Pin::new(&mut self.inner).poll_flush(cx);
        self.bounded(cx, progress)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let progress = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.bounded(cx, progress)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_one() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let before = getrlimit(Resource::Nofile);
        let hard = before.maximum.unwrap_or(u64::MAX).min(1 << 20);
        // One below: low enough to need raising, not so low that a test beside this one
        // runs out.
        let lowered = Rlimit {
            current: Some(hard - 1),
            maximum: before.maximum,
        };
        setrlimit(Resource::Nofile, lowered).unwrap();
        assert_eq!(make_room_for(1), hard);
        assert_eq!(getrlimit(Resource::Nofile).current, Some(hard));
    }

    #[tokio::test]
    async fn an_accepted_connection_keeps_small_socket_buffers() {
        use rustix::net::sockopt::{socket_recv_buffer_size, socket_send_buffer_size};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        keep_buffers_small(&accepted);
        // Linux doubles what is asked for, and grows no buffer that was set.
        assert_eq!(
            socket_send_buffer_size(&accepted).unwrap(),
            2 * SEND_BUFFER_BYTES
        );
        assert_eq!(
            socket_recv_buffer_size(&accepted).unwrap(),
            2 * RECEIVE_BUFFER_BYTES
        );
        drop(client);
    }

    #[tokio::test]
    async fn a_write_the_peer_does_not_read_fails_after_the_limit_and_progress_resets_it() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut conn = WriteStallLimit::new(near, Duration::from_millis(200));
        // Fills the pipe: the next write waits for the peer to read.
        conn.write_all(&[0; 1024]).await.unwrap();
        let reader = tokio::spawn(async move {
            // Reads in time, once: the stalled write goes on and its clock starts again.
            tokio::time::sleep(Duration::from_millis(120)).await;
            let mut buf = [0; 1024];
            tokio::io::AsyncReadExt::read_exact(&mut far, &mut buf)
                .await
                .unwrap();
            far
        });
        let started = std::time::Instant::now();
        conn.write_all(&[1; 1024]).await.unwrap();
        let _far = reader.await.unwrap();
        let error = conn.write_all(&[2; 10]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "the read reset the clock: {waited:?}"
        );
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
}

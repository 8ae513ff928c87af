//! Waiting for a fast server's answer by polling the socket rather than sleeping.
//!
//! A request that waits in `epoll_wait` pays, when its answer comes, for the waiting
//! thread's CPU going idle and being woken again: on this project's machine (a two-vCPU
//! virtual machine) a loopback round trip to the VictorOps stand-in took 80 µs for a client
//! that sleeps and 35–40 µs for the same client polling `recv` (BENCHMARKS.md, "Polling for a
//! fast answer"). For a server on the same host or next to it, that wake-up is most of the
//! wait; for an API across the internet, milliseconds away, it is nothing.
//!
//! So a plugin's request polls for its answer, for at most `[http] spin_wait_us`, only where
//! that pays for the CPU it burns:
//!
//! - the connection's last answer began to arrive within [`SLEEP_SLACK`] times that limit of
//!   its request: an answer waited for asleep is late by the wake-up itself, 40–100 µs here,
//!   so one polled for in 35 µs takes 80–130 µs asleep. The first request on a connection
//!   never polls, and an API milliseconds away never qualifies;
//! - the connection is not backing off: a poll that reaches the limit without its answer
//!   makes the next 2 requests sleep, a second one in a row the next 4, and so on up to
//!   [`MAX_SKIPPED`]; a caught answer ends that. A server that answers just too late for the
//!   limit costs one wasted poll every few dozen requests, not one each;
//! - it is the only plugin request in flight in the process, and `warden serve` is answering
//!   at most one HTTP request (API, console, probe or scrape; [`serving`]): under load a
//!   polling thread takes CPU that other hooks and the API need, and the wake-up is then
//!   rarely paid anyway. Counting plugin requests alone was not enough: a served request
//!   spends most of its time outside its hook's HTTP exchange, so at 16 connections the
//!   exchanges were mostly alone in flight, many of their polls missed, and the server
//!   answered 10–13% fewer requests a second than sleeping (BENCHMARKS.md, "Polling while
//!   serving");
//! - the process may use two CPUs or more: on one, a server on the same host could not run
//!   while the request polls for its answer.
//!
//! A poll that reaches the limit goes back to sleeping as before; nothing else changes. The
//! hook's deadline and the flow's timeouts still bound the whole exchange, and the poll is
//! at most the limit (1 ms at most) of the hook's own wall time.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// `[http] spin_wait_us` when the config does not set it: above the 35–40 µs a loopback
/// answer takes when polled for, far below any remote API's.
pub const DEFAULT_SPIN_WAIT: Duration = Duration::from_micros(100);

/// The most `[http] spin_wait_us` may be: past it, a poll costs more CPU than a wake-up.
pub const MAX_SPIN_WAIT_US: u64 = 1000;

/// How much later than the limit a connection's last answer may have begun and its next
/// still be polled for (the module doc).
pub const SLEEP_SLACK: u32 = 4;

/// The most requests a connection sleeps through after polls that missed, before it tries
/// again.
pub const MAX_SKIPPED: u32 = 64;

/// The transport's polling for answers: its limit, and what its connections share.
#[derive(Debug)]
pub struct SpinWait {
    limit: Duration,
    in_flight: AtomicUsize,
    /// Requests being served: the process's ([`serving`]), or in tests a count of their own.
    serving: &'static AtomicUsize,
    caught: AtomicU64,
    missed: AtomicU64,
}

/// Requests the process is serving now, each counted by a [`Serving`] guard.
static PROCESS_SERVING: AtomicUsize = AtomicUsize::new(0);

/// Counts a request `warden serve` is answering until the guard is dropped: while more than
/// one is, no plugin request polls for its answer (the module doc).
pub fn serving() -> Serving {
    Serving::enter(&PROCESS_SERVING)
}

/// A request counted by [`serving`].
pub struct Serving(&'static AtomicUsize);

impl Serving {
    fn enter(count: &'static AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many polls for an answer caught it, and how many reached the limit first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct SpinCounts {
    pub caught: u64,
    pub missed: u64,
}

impl SpinCounts {
    /// The polls made since `before` was read.
    pub fn since(self, before: SpinCounts) -> SpinCounts {
        SpinCounts {
            caught: self.caught.saturating_sub(before.caught),
            missed: self.missed.saturating_sub(before.missed),
        }
    }
}

/// Every transport's counts since the process started: `/metrics` shows them, and a reload's
/// new transport does not start them again.
static PROCESS_CAUGHT: AtomicU64 = AtomicU64::new(0);
static PROCESS_MISSED: AtomicU64 = AtomicU64::new(0);

/// How many polls for an answer caught it, and how many missed, in this process.
pub fn process_counts() -> SpinCounts {
    SpinCounts {
        caught: PROCESS_CAUGHT.load(Ordering::Relaxed),
        missed: PROCESS_MISSED.load(Ordering::Relaxed),
    }
}

impl SpinWait {
    /// Polling for at most `limit`; never when it is zero.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            in_flight: AtomicUsize::new(0),
            serving: &PROCESS_SERVING,
            caught: AtomicU64::new(0),
            missed: AtomicU64::new(0),
        }
    }

    /// Like [`SpinWait::new`], but counting requests served in `serving` rather than the
    /// process's: tests that expect a poll are not stood down by other tests' servers.
    #[cfg(test)]
    pub(crate) fn apart(limit: Duration, serving: &'static AtomicUsize) -> Self {
        Self {
            serving,
            ..Self::new(limit)
        }
    }

    /// Counts an exchange in flight until the guard is dropped.
    pub fn exchange(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn counts(&self) -> SpinCounts {
        SpinCounts {
            caught: self.caught.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
        }
    }

    fn count(&self, caught: bool) {
        let (mine, process) = if caught {
            (&self.caught, &PROCESS_CAUGHT)
        } else {
            (&self.missed, &PROCESS_MISSED)
        };
        mine.fetch_add(1, Ordering::Relaxed);
        process.fetch_add(1, Ordering::Relaxed);
    }

    fn may_poll(&self, last_wait: Option<Duration>) -> bool {
        should_poll(
            self.limit,
            last_wait,
            Busy {
                exchanges: self.in_flight.load(Ordering::Relaxed),
                served: self.serving.load(Ordering::Relaxed),
            },
            several_cpus(),
        )
    }
}

/// An exchange counted in flight ([`SpinWait::exchange`]).
pub struct InFlight<'a>(&'a SpinWait);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What else the process is doing when an exchange asks to poll.
#[derive(Debug, Clone, Copy)]
struct Busy {
    /// Plugin requests in flight, the asking one among them.
    exchanges: usize,
    /// Requests being served, the one whose hook asks (if it is served) among them.
    served: usize,
}

/// The module doc's rule.
fn should_poll(
    limit: Duration,
    last_wait: Option<Duration>,
    busy: Busy,
    several_cpus: bool,
) -> bool {
    !limit.is_zero()
        && several_cpus
        && busy.exchanges <= 1
        && busy.served <= 1
        && last_wait.is_some_and(|w| w <= limit * SLEEP_SLACK)
}

/// A connection's back-off after polls that missed their answer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    /// Misses in a row.
    misses: u32,
    /// Requests still to sleep through before the next poll.
    skip: u32,
}

impl Backoff {
    /// Whether this request may poll; one call per request.
    fn take_turn(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    fn caught(&mut self) {
        *self = Self::default();
    }

    fn missed(&mut self) {
        self.misses = self.misses.saturating_add(1);
        self.skip = 1u32
            .checked_shl(self.misses)
            .unwrap_or(MAX_SKIPPED)
            .min(MAX_SKIPPED);
    }
}

pub(crate) fn several_cpus() -> bool {
    static SEVERAL: OnceLock<bool> = OnceLock::new();
    *SEVERAL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// A TCP connection that times its answers and polls for the fast ones.
///
/// The poll is made when the request has been flushed (hyper flushes once it has written a
/// request; it may not read again until it is woken), and only looks for the answer's first
/// byte without taking it: the read that takes it is hyper's, woken at once.
pub struct Tcp {
    stream: TcpStream,
    spin: Arc<SpinWait>,
    /// When the last bytes written were handed to the kernel, until the answer's first
    /// bytes arrive.
    sent: Option<Instant>,
    /// The `sent` the connection last polled for: one poll per request, however often it is
    /// flushed.
    polled_for: Option<Instant>,
    /// A poll saw the answer arrive: the next read asks the socket even if tokio has not yet
    /// heard it is readable.
    answer_seen: bool,
    /// How long the connection's last answer took to begin arriving.
    last_wait: Option<Duration>,
    backoff: Backoff,
}

impl Tcp {
    pub fn new(stream: TcpStream, spin: Arc<SpinWait>) -> Self {
        Self {
            stream,
            spin,
            sent: None,
            polled_for: None,
            answer_seen: false,
            last_wait: None,
            backoff: Backoff::default(),
        }
    }

    /// A write handed bytes to the kernel: the wait for an answer starts now.
    fn note_sent(&mut self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.sent = Some(Instant::now());
        }
    }

    fn arrived(&mut self) {
        self.answer_seen = false;
        if let Some(sent) = self.sent.take() {
            self.last_wait = Some(sent.elapsed());
        }
    }

    /// Polls until the answer's first byte (or the end of the stream) is there or `until`
    /// passes; whether it came.
    fn poll_for_answer(&self, until: Instant) -> bool {
        let fd = self.stream.as_raw_fd();
        let mut byte = 0u8;
        loop {
            // SAFETY: one byte into `byte`, left where it is (`MSG_PEEK`).
            let peeked = unsafe {
                libc::recv(
                    fd,
                    (&raw mut byte).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if peeked >= 0 {
                return true;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {}
                // An error is for the read to report.
                _ => return true,
            }
            if Instant::now() >= until {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Reads what the socket has without waiting; `None` if it has nothing after all.
    fn read_now(&self, buf: &mut ReadBuf<'_>) -> Option<io::Result<()>> {
        // SAFETY: `recv` writes at most `unfilled.len()` bytes into it, and only the ones it
        // reports are marked filled.
        let unfilled = unsafe { buf.unfilled_mut() };
        let read = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                unfilled.as_mut_ptr().cast(),
                unfilled.len(),
                libc::MSG_DONTWAIT,
            )
        };
        match usize::try_from(read) {
            Ok(read) => {
                // SAFETY: the kernel wrote these `read` bytes.
                unsafe { buf.assume_init(read) };
                buf.advance(read);
                Some(Ok(()))
            }
            Err(_) => {
                let error = io::Error::last_os_error();
                (error.kind() != io::ErrorKind::WouldBlock).then_some(Err(error))
            }
        }
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        // Registers the waker when tokio has not seen the socket readable; an answer then
        // read here only makes its later wake-up spurious.
        let mut polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if polled.is_pending()
            && this.answer_seen
            && buf.remaining() > 0
            && let Some(read) = this.read_now(buf)
        {
            polled = Poll::Ready(read);
        }
        if buf.filled().len() > before || matches!(polled, Poll::Ready(Err(_))) {
            this.arrived();
        }
        polled
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.note_sent(&written);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.note_sent(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        if let (Poll::Ready(Ok(())), Some(sent)) = (&flushed, this.sent)
            && this.polled_for != Some(sent)
            && !this.answer_seen
            && this.spin.may_poll(this.last_wait)
        {
            // Decided once per request, however often it is flushed.
            this.polled_for = Some(sent);
            if !this.backoff.take_turn() {
                return flushed;
            }
            if this.poll_for_answer(sent + this.spin.limit) {
                this.spin.count(true);
                this.backoff.caught();
                this.answer_seen = true;
                // hyper may not read again until woken.
                cx.waker().wake_by_ref();
            } else {
                this.spin.count(false);
                this.backoff.missed();
            }
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use url::Url;

    use super::*;
    use crate::capabilities::http::{HopRequest, NetworkTransport, Transport};

    const LIMIT: Duration = Duration::from_micros(100);

    const ALONE: Busy = Busy {
        exchanges: 1,
        served: 0,
    };

    #[test]
    fn only_a_connection_whose_last_answer_was_fast_polls_alone_on_several_cpus() {
        let fast = Some(Duration::from_micros(60));
        assert!(should_poll(LIMIT, fast, ALONE, true));
        // The request its hook serves is not other work.
        let served_alone = Busy { served: 1, ..ALONE };
        assert!(should_poll(LIMIT, fast, served_alone, true));
        // Asleep, a fast answer is late by the wake-up.
        assert!(should_poll(LIMIT, Some(LIMIT * SLEEP_SLACK), ALONE, true));
        // A new connection, a slow server, another plugin request in flight, another request
        // being served, one CPU, polling off.
        assert!(!should_poll(LIMIT, None, ALONE, true));
        let slow = Some(Duration::from_micros(401));
        assert!(!should_poll(LIMIT, slow, ALONE, true));
        let remote = Some(Duration::from_millis(40));
        assert!(!should_poll(LIMIT, remote, ALONE, true));
        let two_exchanges = Busy {
            exchanges: 2,
            ..ALONE
        };
        assert!(!should_poll(LIMIT, fast, two_exchanges, true));
        let two_served = Busy { served: 2, ..ALONE };
        assert!(!should_poll(LIMIT, fast, two_served, true));
        assert!(!should_poll(LIMIT, fast, ALONE, false));
        let zero = Duration::ZERO;
        assert!(!should_poll(zero, Some(zero), ALONE, true));
    }

    #[test]
    fn served_requests_are_counted_while_their_guard_lives() {
        let served: &'static AtomicUsize = Box::leak(Box::default());
        let spin = SpinWait::apart(LIMIT, served);
        let fast = Some(Duration::from_micros(1));
        let _exchange = spin.exchange();
        let first = Serving::enter(served);
        assert_eq!(spin.may_poll(fast), several_cpus(), "one request served");
        let second = Serving::enter(served);
        assert!(!spin.may_poll(fast), "two requests served");
        drop(second);
        assert_eq!(spin.may_poll(fast), several_cpus());
        drop(first);
        assert_eq!(served.load(Ordering::Relaxed), 0);
        // The process's own count is what `serving` guards and a transport reads.
        assert!(std::ptr::eq(SpinWait::new(LIMIT).serving, &PROCESS_SERVING));
    }

    #[test]
    fn each_miss_in_a_row_doubles_the_requests_that_sleep_until_a_catch() {
        let mut backoff = Backoff::default();
        let turns = |backoff: &mut Backoff, n: usize| -> Vec<bool> {
            (0..n).map(|_| backoff.take_turn()).collect()
        };
        assert_eq!(turns(&mut backoff, 2), [true, true], "no misses yet");
        backoff.missed();
        assert_eq!(turns(&mut backoff, 3), [false, false, true]);
        backoff.missed();
        assert_eq!(turns(&mut backoff, 5), [false, false, false, false, true]);
        for _ in 0..40 {
            backoff.missed();
        }
        let skipped = turns(&mut backoff, MAX_SKIPPED as usize + 1);
        assert_eq!(
            skipped.iter().filter(|t| !**t).count(),
            MAX_SKIPPED as usize
        );
        assert!(
            skipped[MAX_SKIPPED as usize],
            "tries again after at most MAX_SKIPPED"
        );
        backoff.missed();
        backoff.caught();
        assert_eq!(backoff, Backoff::default());
        assert!(backoff.take_turn());
    }

    #[test]
    fn exchanges_are_counted_in_flight_while_their_guard_lives() {
        let spin = SpinWait::apart(LIMIT, Box::leak(Box::default()));
        let fast = Some(Duration::from_micros(1));
        let first = spin.exchange();
        assert_eq!(spin.in_flight.load(Ordering::Relaxed), 1);
        let second = spin.exchange();
        assert!(!spin.may_poll(fast), "two in flight");
        drop(second);
        assert_eq!(spin.may_poll(fast), several_cpus());
        drop(first);
        assert_eq!(spin.in_flight.load(Ordering::Relaxed), 0);
    }

    /// A server on its own thread, so that a request polling on the test's thread never
    /// keeps it from answering: one connection, the `n`th request answered after `delays[n]`.
    fn server(delays: Vec<Duration>) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            for delay in delays {
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0];
                    if socket.read(&mut byte).unwrap() == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                head.clear();
                std::thread::sleep(delay);
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
            }
        });
        port
    }

    async fn get(transport: &NetworkTransport, port: u16) {
        let url = Url::parse(&format!("http://127.0.0.1:{port}/oncall")).unwrap();
        let answer = transport
            .send(HopRequest {
                method: &hyper::Method::GET,
                url: &url,
                headers: vec![],
                body: None,
                timeout: Duration::from_secs(10),
                within_hook_deadline: false,
                max_body: 1 << 10,
            })
            .await
            .unwrap();
        assert_eq!((answer.status, answer.body.as_slice()), (200, &b"ok"[..]));
    }

    fn counts(caught: u64, missed: u64) -> SpinCounts {
        SpinCounts { caught, missed }
    }

    #[test]
    fn counts_since_an_earlier_reading_are_the_polls_made_in_between() {
        assert_eq!(counts(7, 3).since(counts(2, 3)), counts(5, 0));
        // Counts read from another transport than the earlier one never go below zero.
        assert_eq!(counts(1, 0).since(counts(4, 2)), counts(0, 0));
    }

    #[tokio::test]
    async fn a_fast_answer_is_polled_for_and_a_miss_sleeps_through_the_next_two() {
        let now = Duration::ZERO;
        let port = server(vec![now, Duration::from_millis(300), now, now, now]);
        let transport = NetworkTransport::new()
            .unwrap()
            .polling_apart_for(Duration::from_millis(200));
        get(&transport, port).await;
        assert_eq!(transport.spin_counts(), counts(0, 0), "a new connection");
        if !several_cpus() {
            // One CPU: the rule never polls.
            get(&transport, port).await;
            return assert_eq!(transport.spin_counts(), counts(0, 0));
        }
        // The first answer was fast: the second is polled for, for 200 ms of its 300.
        get(&transport, port).await;
        assert_eq!(transport.spin_counts(), counts(0, 1));
        // That miss: the next two sleep, fast as they are; the one after is polled for.
        get(&transport, port).await;
        get(&transport, port).await;
        assert_eq!(transport.spin_counts(), counts(0, 1));
        let before = process_counts();
        get(&transport, port).await;
        assert_eq!(transport.spin_counts(), counts(1, 1));
        // Other tests poll too: the process's count grows by this one at least.
        assert!(process_counts().caught > before.caught);
    }

    #[tokio::test]
    async fn a_server_slower_than_the_slack_allows_is_never_polled_for() {
        let port = server(vec![Duration::from_millis(30); 3]);
        let transport = NetworkTransport::new()
            .unwrap()
            .polling_for(Duration::from_millis(1));
        for _ in 0..3 {
            get(&transport, port).await;
        }
        assert_eq!(transport.spin_counts(), counts(0, 0));
    }

    #[tokio::test]
    async fn a_zero_limit_never_polls() {
        let port = server(vec![Duration::ZERO; 3]);
        let transport = NetworkTransport::new().unwrap().polling_for(Duration::ZERO);
        for _ in 0..3 {
            get(&transport, port).await;
        }
        assert_eq!(transport.spin_counts(), counts(0, 0));
    }
}

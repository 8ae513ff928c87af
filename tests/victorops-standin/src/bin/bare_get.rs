//! `standin-bare-get --url URL --api-id ID --api-key KEY [--iterations N] [--poll] [--gap-us N]`
//!
//! The limit `scripts/bench` measures warden against: a bare Rust client's GET round trip to
//! the stand-in's on-call endpoint, the request warden's VictorOps plugin makes once per
//! decision with its roster cache off. One `reqwest` client on a single-threaded runtime, so
//! one kept-alive connection and no thread hops; no sandbox, no checks. Prints the latencies
//! as JSON, in the shape `warden bench` and `bench/seed_hook.py` print.
//!
//! `--poll`: the floor under that, a client that polls its socket for the answer instead of
//! sleeping until it is woken, as warden's transport does for a fast server
//! (`host/src/capabilities/http/spin.rs`): the request written by hand on a non-blocking
//! socket, the answer read until its `Content-Length` is in, nothing parsed beyond that.
//!
//! `--gap-us`: the CPU kept busy between requests, outside the timed part. On a virtual
//! machine how long the server's CPU has been idle changes what waking it costs the
//! client's `write` (BENCHMARKS.md, "Polling while serving, and the server's idle time"), so
//! a client with work between requests (warden's hook around its request, its next
//! instance) pays more per round trip than one without.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "standin-bare-get")]
struct Args {
    /// The stand-in's base URL, e.g. http://127.0.0.1:18090.
    #[arg(long)]
    url: String,
    #[arg(long)]
    api_id: String,
    #[arg(long)]
    api_key: String,
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Poll the socket for the answer (a raw HTTP/1.1 client) instead of reqwest's sleep.
    #[arg(long)]
    poll: bool,
    /// Keep the CPU busy this many microseconds between requests, as a client with work of
    /// its own between them does (warden's hook before and after its request, its next
    /// instance): how long the server sits idle changes how long it takes to wake.
    #[arg(long, default_value_t = 0)]
    gap_us: u64,
}

/// One kept-alive connection that polls for its answers.
struct PollingClient {
    socket: std::net::TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl PollingClient {
    fn connect(base: &str, args: &Args) -> anyhow::Result<Self> {
        let authority = base
            .strip_prefix("http://")
            .context("--poll takes an http:// URL")?;
        let socket = std::net::TcpStream::connect(authority)
            .with_context(|| format!("connecting to {authority}"))?;
        socket.set_nodelay(true)?;
        socket.set_nonblocking(true)?;
        let request = format!(
            "GET {} HTTP/1.1\r\nhost: {authority}\r\naccept: application/json\r\n\
             x-vo-api-id: {}\r\nx-vo-api-key: {}\r\n\r\n",
            victorops_standin::ONCALL_CURRENT_PATH,
            args.api_id,
            args.api_key
        );
        Ok(Self {
            socket,
            request: request.into_bytes(),
            buf: vec![0; 1 << 16],
        })
    }

    /// One round trip; the body's length.
    fn get(&mut self) -> anyhow::Result<usize> {
        use std::io::{ErrorKind, Read, Write};
        let mut written = 0;
        while written < self.request.len() {
            match self.socket.write(&self.request[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) => return Err(e.into()),
            }
        }
        let mut got = 0;
        loop {
            match self.socket.read(&mut self.buf[got..]) {
                Ok(0) => bail!("the stand-in closed the connection"),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::hint::spin_loop();
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            let answer = &self.buf[..got];
            let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&answer[..end]).context("the answer's head")?;
            if !head.starts_with("HTTP/1.1 2") {
                bail!(
                    "the stand-in answered {}",
                    head.lines().next().unwrap_or("")
                );
            }
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .context("the answer has no Content-Length")?;
            if got >= end + 4 + length {
                return Ok(length);
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let polling = std::cell::RefCell::new(if args.poll {
        Some(PollingClient::connect(
            args.url.trim_end_matches('/'),
            &args,
        )?)
    } else {
        None
    });
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("building the client")?;
    let url = format!(
        "{}{}",
        args.url.trim_end_matches('/'),
        victorops_standin::ONCALL_CURRENT_PATH
    );
    let get = || async {
        if let Some(polling) = polling.borrow_mut().as_mut() {
            return polling.get();
        }
        let response = client
            .get(&url)
            .header("Accept", "application/json")
            .header("X-VO-Api-Id", &args.api_id)
            .header("X-VO-Api-Key", &args.api_key)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.bytes().await.context("reading the body")?;
        if !status.is_success() {
            bail!("GET {url}: status {status}");
        }
        anyhow::Ok(body.len())
    };
    // The first call opens the connection every later one reuses.
    for _ in 0..args.iterations.clamp(1, 20) {
        get().await?;
    }
    let mut samples = Vec::with_capacity(args.iterations);
    let mut body_bytes = 0;
    let gap = Duration::from_micros(args.gap_us);
    for _ in 0..args.iterations {
        let busy = Instant::now();
        while busy.elapsed() < gap {
            std::hint::spin_loop();
        }
        let started = Instant::now();
        body_bytes = get().await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .map_or(0.0, micros)
    };
    let mean = samples.iter().map(|d| micros(*d)).sum::<f64>() / samples.len().max(1) as f64;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "iterations": samples.len(),
            "body_bytes": body_bytes,
            "p50_us": at(0.50),
            "p90_us": at(0.90),
            "p99_us": at(0.99),
            "max_us": samples.last().copied().map_or(0.0, micros),
            "mean_us": mean,
        }))?
    );
    Ok(())
}

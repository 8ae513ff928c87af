//! `standin-bare-get --url URL --api-id ID --api-key KEY [--iterations N]`
//!
//! The limit `scripts/bench` measures warden against: a bare Rust client's GET round trip to
//! the stand-in's on-call endpoint, the request warden's VictorOps plugin makes once per
//! decision with its roster cache off. One `reqwest` client on a single-threaded runtime, so
//! one kept-alive connection and no thread hops; no sandbox, no checks. Prints the latencies
//! as JSON, in the shape `warden bench` and `bench/seed_hook.py` print.

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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    for _ in 0..args.iterations {
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

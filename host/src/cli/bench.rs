//! `warden bench`: whole-path latency of one hook (event in, decision out, fresh instance).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::capabilities::http::spin::{self, SpinCounts};
use crate::{EventInput, HookName, Warden};

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub flow: String,
    pub hook: String,
    pub iterations: usize,
    pub concurrency: usize,
    pub failures: usize,
    /// Each failure's description, with how many times it happened.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub failed: std::collections::BTreeMap<String, usize>,
    /// The decisions seen, e.g. `{"approve": 1000}`.
    pub decisions: std::collections::BTreeMap<String, usize>,
    /// Events that found their instance already made (off the measured path).
    pub prepared_ahead: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub decisions_per_second: f64,
    /// The process's peak resident set (Linux `VmHWM`), when known. It counts a page of a
    /// copy-on-write memory image once per instance mapping it, shared or not.
    pub peak_rss_bytes: Option<u64>,
    /// With `sample_memory`: the peak of the process's proportional set size (`Pss` of
    /// `/proc/self/smaps_rollup`, read every 20 ms), where a page shared by the instances
    /// mapping one image counts once: the memory the run took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_pss_bytes: Option<u64>,
    /// The measured events' polls for a fast answer (`[http] spin_wait_us`): how many caught
    /// it, how many reached the limit and slept.
    pub answer_polls: SpinCounts,
}

/// Runs the hook `iterations` times, `concurrency` at a time, after a short warm-up.
pub async fn run(
    warden: Arc<Warden>,
    flow: &str,
    hook: HookName,
    event: &EventInput,
    iterations: usize,
    concurrency: usize,
    sample_memory: bool,
) -> Result<BenchReport, crate::RunError> {
    let concurrency = concurrency.max(1);
    let sampler = sample_memory.then(PssSampler::start);
    for _ in 0..iterations.min(20) {
        warden.run_hook(flow, hook, event).await?;
    }
    let polls_before = spin::process_counts();
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let share = iterations / concurrency + usize::from(worker < iterations % concurrency);
        let warden = warden.clone();
        let flow = flow.to_string();
        let event = event.clone();
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(share);
            for _ in 0..share {
                // Lets the runtime's other tasks run between events, as they do between
                // events that arrive over the network: the instance made ahead for the next
                // event, and the finished store freed. Their cost is in `decisions_per_second`.
                tokio::task::yield_now().await;
                let t = Instant::now();
                let report = warden.run_hook(&flow, hook, &event).await?;
                let elapsed = t.elapsed();
                samples.push((
                    elapsed,
                    report.prepared_ahead,
                    report
                        .outcome
                        .map(|d| d.kind())
                        .map_err(|failure| failure.kind.describe(&failure.hook)),
                ));
            }
            Ok::<_, crate::RunError>(samples)
        }));
    }
    let mut samples = Vec::with_capacity(iterations);
    for w in workers {
        samples.extend(w.await.expect("a bench worker panicked")?);
    }
    let wall = started.elapsed();
    let answer_polls = spin::process_counts().since(polls_before);
    let peak_pss_bytes = sampler.and_then(PssSampler::stop);
    let mut decisions = std::collections::BTreeMap::new();
    let mut failures = 0;
    let mut failed = std::collections::BTreeMap::new();
    let prepared_ahead = samples.iter().filter(|(_, ahead, _)| *ahead).count();
    for (_, _, outcome) in &samples {
        match outcome {
            Ok(kind) => *decisions.entry(kind.to_string()).or_insert(0) += 1,
            Err(why) => {
                failures += 1;
                let first = failed.entry(why.clone()).or_insert(0);
                *first += 1;
            }
        }
    }
    let mut latencies: Vec<Duration> = samples.iter().map(|(d, _, _)| *d).collect();
    latencies.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .map_or(0.0, micros)
    };
    let total: Duration = latencies.iter().sum();
    Ok(BenchReport {
        flow: flow.to_string(),
        hook: hook.to_string(),
        iterations: latencies.len(),
        concurrency,
        failures,
        failed,
        decisions,
        prepared_ahead,
        p50_us: at(0.50),
        p90_us: at(0.90),
        p99_us: at(0.99),
        max_us: latencies.last().copied().map_or(0.0, micros),
        mean_us: if latencies.is_empty() {
            0.0
        } else {
            micros(total) / latencies.len() as f64
        },
        decisions_per_second: latencies.len() as f64 / wall.as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
        peak_pss_bytes,
        answer_polls,
    })
}

/// Reads the process's proportional set size every 20 ms, keeping the peak.
struct PssSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<u64>>,
}

impl PssSampler {
    fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = None;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(pss_bytes());
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.max(pss_bytes())
        });
        Self { stop, thread }
    }

    fn stop(self) -> Option<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

fn pss_bytes() -> Option<u64> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

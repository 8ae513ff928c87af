//! The CPU time a piece of wasm work has used, summed over the polls of its future on
//! whichever threads ran them.
//!
//! What loading a plugin is limited by ([`LOAD_CALL_LIMIT`](super::LOAD_CALL_LIMIT)): a wall
//! clock would also count the time the load spent waiting for a CPU (a loaded machine, another
//! plugin compiling beside it, twenty Python flows instantiating at once on two cores) or for
//! its turn on a thread, and fail a plugin that did nothing wrong. The thread's own CPU clock
//! counts only what the work ran.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use super::sched::Work;

pub(crate) struct CpuMeter {
    limit: Duration,
    /// CPU time of the polls that have ended, in nanoseconds.
    used: AtomicU64,
    /// The polling thread's CPU clock when the current poll began; 0 between polls.
    poll_began: AtomicU64,
}

impl CpuMeter {
    pub(crate) fn new(limit: Duration) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
            poll_began: AtomicU64::new(0),
        })
    }

    /// `work`, counting its CPU time on this meter.
    pub(crate) fn meter<T: Send + 'static>(self: &Arc<Self>, work: Work<T>) -> Work<T> {
        Box::pin(Metered {
            work,
            meter: self.clone(),
        })
    }

    /// The CPU time used so far. Called during a poll (the epoch callback runs inside one),
    /// it must be on the polling thread, whose clock the current poll is counted on.
    pub(crate) fn used(&self) -> Duration {
        let mut used = self.used.load(Ordering::Acquire);
        let began = self.poll_began.load(Ordering::Acquire);
        if began != 0 {
            used += thread_cpu_nanos().saturating_sub(began);
        }
        Duration::from_nanos(used)
    }

    pub(crate) fn exhausted(&self) -> bool {
        self.used() >= self.limit
    }
}

struct Metered<T> {
    work: Work<T>,
    meter: Arc<CpuMeter>,
}

impl<T> Future for Metered<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let began = thread_cpu_nanos();
        self.meter.poll_began.store(began, Ordering::Release);
        let polled = self.work.as_mut().poll(cx);
        let ran = thread_cpu_nanos().saturating_sub(began);
        self.meter.poll_began.store(0, Ordering::Release);
        self.meter.used.fetch_add(ran, Ordering::AcqRel);
        polled
    }
}

/// This thread's CPU clock in nanoseconds, never 0 (0 marks "not in a poll").
fn thread_cpu_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; the clock id is a constant the platform
    // defines. On failure (never for this clock) `now` stays 0 and the meter counts nothing
    // for this poll.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn spin(for_: Duration) {
        let started = Instant::now();
        while started.elapsed() < for_ {
            std::hint::black_box(0u64);
        }
    }

    #[tokio::test]
    async fn waiting_is_not_counted_running_is() {
        let meter = CpuMeter::new(Duration::from_millis(100));
        let waits: Work<()> = Box::pin(async {
            tokio::time::sleep(Duration::from_millis(150)).await;
        });
        meter.meter(waits).await;
        assert!(
            meter.used() < Duration::from_millis(50),
            "150 ms asleep counted as {:?} of CPU",
            meter.used()
        );
        assert!(!meter.exhausted());

        // Wall time on a busy machine is at least the CPU time, so spinning 120 ms of wall
        // time may use less CPU: spin until the thread's clock says so.
        let spins: Work<()> = Box::pin(async {
            let began = thread_cpu_nanos();
            while thread_cpu_nanos() - began < 120_000_000 {
                spin(Duration::from_millis(1));
            }
        });
        meter.meter(spins).await;
        assert!(
            meter.used() >= Duration::from_millis(120),
            "{:?}",
            meter.used()
        );
        assert!(meter.exhausted());
    }

    #[tokio::test]
    async fn a_poll_in_progress_is_counted_on_its_thread() {
        let meter = CpuMeter::new(Duration::from_millis(30));
        let inner = meter.clone();
        let checks: Work<bool> = Box::pin(async move {
            let before = inner.exhausted();
            let began = thread_cpu_nanos();
            while thread_cpu_nanos() - began < 40_000_000 {
                spin(Duration::from_millis(1));
            }
            // What the epoch callback sees in the middle of a long run of wasm.
            !before && inner.exhausted()
        });
        assert!(meter.meter(checks).await);
    }
}

//! Where wasm runs, so that no plugin freezes the host.
//!
//! A hook starts on the task that called it ("inline"): a normal hook (microseconds to a few
//! milliseconds) costs nothing extra. Wasm checks the engine's epoch, which advances every
//! [`EPOCH_TICK`]; at each tick a running hook's store calls [`on_epoch`], which:
//!
//! - past the hook's deadline, interrupts it (`Trap::Interrupt`, reported as a deadline);
//! - inline, when the current run has held the caller's thread for less than
//!   [`INLINE_BUDGET`], lets it go on;
//! - inline, past that, moves the rest of the hook to the **wasm pool**, a multi-threaded
//!   runtime of its own: the caller's worker thread is back serving the API, `/healthz`,
//!   `/metrics` and other flows' hooks after one budget;
//! - on the pool, yields to the pool's other hooks and, when the hook has been running without
//!   a break, waits for a slice of its flow's share: at most [`Pool::share`] of one flow's
//!   hooks go on running per tick, so one flow takes at most about half the pool's threads
//!   however many of its hooks spin.
//!
//! A flow with hooks on the pool starts its next hooks there, so a flood of spinning requests
//! costs the caller's threads one budget per thread, not one per request. Hooks that wait on
//! host calls (HTTP) do not run while they wait and are never moved for it: a "run" is one
//! poll of the hook's future, measured from when the poll began.
//!
//! Why a pool of its own rather than only yielding on the caller's runtime (measured in
//! BENCHMARKS.md, "A spinning plugin and the rest of the host"): a tokio worker busy with
//! tasks that yield every tick looks at its network events only every 61 tasks, so spinners
//! that yield still delayed `/healthz` by hundreds of milliseconds; on threads of their own
//! they compete with the API only for CPU, which the OS shares at a far finer grain.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

/// How often the epoch advances: how often a running hook is looked at.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How long one run of a hook may hold the caller's thread before the hook moves to the pool.
pub(crate) const INLINE_BUDGET: Duration = EPOCH_TICK;

/// A run on the pool at least this long when a tick comes counts as using its flow's share;
/// shorter ones (a hook back from a host call) only yield.
const SHARE_AFTER: Duration = Duration::from_millis(1);

thread_local! {
    /// Set on the pool's threads.
    static ON_POOL: Cell<bool> = const { Cell::new(false) };
    /// When the hook being polled on this thread began its current run.
    static RUN_STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Set by [`on_epoch`] when the hook being polled inline should move to the pool.
    static MOVE_ASKED: Cell<bool> = const { Cell::new(false) };
}

/// The threads long wasm runs move to.
struct Pool {
    runtime: tokio::runtime::Runtime,
    /// Hooks of one flow that may go on running per tick.
    share: u32,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("warden-wasm")
            .on_thread_start(|| ON_POOL.set(true))
            .enable_all()
            .build()
            .expect("start the wasm pool's threads");
        Pool {
            runtime,
            share: (threads as u32 / 2).max(1),
        }
    })
}

/// One flow's use of the pool.
#[derive(Default)]
pub(crate) struct FlowShare {
    /// This flow's hooks on the pool now; while there are any, its new hooks start there.
    on_pool: AtomicUsize,
    /// Slices given out in the current tick.
    slices: Mutex<Slices>,
}

#[derive(Default)]
struct Slices {
    tick: u64,
    given: u32,
}

impl FlowShare {
    /// Waits until this flow may run one more hook for the rest of the current tick.
    async fn slice(&self) {
        loop {
            let now = Instant::now();
            let tick = tick_of(now);
            if self.take(tick, pool().share) {
                return;
            }
            tokio::time::sleep_until(start_of(tick + 1).into()).await;
        }
    }

    /// Takes one of `share` slices of `tick`, if one is left.
    fn take(&self, tick: u64, share: u32) -> bool {
        let mut slices = self.slices.lock().unwrap_or_else(|p| p.into_inner());
        if slices.tick != tick {
            *slices = Slices { tick, given: 0 };
        }
        if slices.given >= share {
            return false;
        }
        slices.given += 1;
        true
    }
}

/// Ticks for slices are counted from the first one asked for.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn tick_of(at: Instant) -> u64 {
    (at.saturating_duration_since(origin()).as_nanos() / EPOCH_TICK.as_nanos()) as u64
}

fn start_of(tick: u64) -> Instant {
    origin() + Duration::from_nanos(tick.saturating_mul(EPOCH_TICK.as_nanos() as u64))
}

/// What [`on_epoch`] needs of one store: its flow's share and its hook's deadline.
pub(crate) struct Schedule {
    share: Arc<FlowShare>,
    deadline: Instant,
}

impl Schedule {
    pub(crate) fn new(share: Arc<FlowShare>) -> Self {
        Self {
            share,
            deadline: Instant::now(),
        }
    }

    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }
}

/// The store's epoch callback: see the module's documentation.
pub(crate) fn on_epoch(schedule: &Schedule) -> wasmtime::Result<UpdateDeadline> {
    let now = Instant::now();
    if now >= schedule.deadline {
        return Ok(UpdateDeadline::Interrupt);
    }
    let running = RUN_STARTED.get().map_or(Duration::ZERO, |started| {
        now.saturating_duration_since(started)
    });
    if ON_POOL.get() {
        let share = (running >= SHARE_AFTER).then(|| schedule.share.clone());
        return Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                if let Some(share) = share {
                    share.slice().await;
                }
            }),
        ));
    }
    if running < INLINE_BUDGET {
        return Ok(UpdateDeadline::Continue(1));
    }
    MOVE_ASKED.set(true);
    Ok(UpdateDeadline::YieldCustom(1, Box::pin(YieldOnce(false))))
}

/// Pending once (waking at once), then ready: the point where a hook changes threads.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Notes on this thread when the current poll began, for [`on_epoch`]; restores the
/// previous value when dropped.
struct Run {
    outer: Option<Instant>,
}

impl Run {
    fn start() -> Self {
        MOVE_ASKED.set(false);
        Self {
            outer: RUN_STARTED.replace(Some(Instant::now())),
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        RUN_STARTED.set(self.outer);
    }
}

/// Runs `work` (a future that runs wasm in a store whose epoch callback is [`on_epoch`]) for
/// a hook of the flow whose share is `share`: inline until a run outlasts [`INLINE_BUDGET`],
/// then on the pool.
pub(crate) async fn run<F>(share: &Arc<FlowShare>, work: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut work = Box::pin(work);
    if share.on_pool.load(Ordering::Acquire) == 0 || ON_POOL.get() {
        let done = std::future::poll_fn(|cx| {
            let _run = Run::start();
            match work.as_mut().poll(cx) {
                Poll::Ready(out) => Poll::Ready(Some(out)),
                Poll::Pending if MOVE_ASKED.get() => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        if let Some(out) = done {
            return out;
        }
    }
    on_pool(share, work).await
}

/// Finishes `work` on the pool.
async fn on_pool<T: Send + 'static>(
    share: &Arc<FlowShare>,
    work: Pin<Box<dyn Future<Output = T> + Send>>,
) -> T {
    let counted = OnPool::enter(share);
    let task = pool().runtime.spawn(async move {
        let _counted = counted;
        Timed(work).await
    });
    // A caller that stops waiting (its own timeout, a dropped request) stops the hook too,
    // at its next tick.
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(out) => out,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("a hook on the wasm pool was cancelled while awaited: {e}"),
        },
    }
}

/// Polls a future on the pool, noting each run's start for [`on_epoch`].
struct Timed<T>(Pin<Box<dyn Future<Output = T> + Send>>);

impl<T> Future for Timed<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let _run = Run::start();
        self.0.as_mut().poll(cx)
    }
}

/// Counts a hook in its flow's [`FlowShare::on_pool`] while it lives.
struct OnPool(Arc<FlowShare>);

impl OnPool {
    fn enter(share: &Arc<FlowShare>) -> Self {
        share.on_pool.fetch_add(1, Ordering::AcqRel);
        Self(share.clone())
    }
}

impl Drop for OnPool {
    fn drop(&mut self) {
        self.0.on_pool.fetch_sub(1, Ordering::AcqRel);
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_gets_at_most_its_share_of_slices_per_tick() {
        let flow = FlowShare::default();
        assert!(flow.take(7, 2));
        assert!(flow.take(7, 2));
        assert!(
            !flow.take(7, 2),
            "a third slice in one tick with a share of 2"
        );
        assert!(flow.take(8, 2), "the next tick gives slices again");
        let other = FlowShare::default();
        assert!(other.take(8, 2), "shares are per flow");
    }
}

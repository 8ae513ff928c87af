//! Where wasm runs, so that no plugin freezes the host.
//!
//! A hook starts on the task that called it ("inline"): a normal hook (microseconds to a few
//! milliseconds) costs an allocation and a few atomic loads more than calling it directly.
//! Wasm checks the engine's epoch, which advances every [`EPOCH_TICK`]; at each tick a
//! running hook's store calls [`on_epoch`], which:
//!
//! - past the hook's deadline, interrupts it (`Trap::Interrupt`, reported as a deadline);
//! - inline, when the current run has seen fewer than [`INLINE_TICKS`] ticks pass, lets it go
//!   on;
//! - inline, past that, moves the rest of the hook to the **wasm pool**, a multi-threaded
//!   runtime of its own (one thread per core): the caller's worker thread is back serving the
//!   API, `/healthz`, `/metrics` and other flows' hooks within 20 ms;
//! - on the pool, yields to the pool's other hooks and, when the run began before this tick,
//!   waits for a slice of its flow's share: at most [`Pool::share`] (half the pool's threads)
//!   of one flow's hooks go on per tick, however many of them spin.
//!
//! A flow with hooks on the pool starts its next hooks there, so a flood of spinning requests
//! costs each of the caller's threads one budget, not one per request. A "run" is one poll of
//! the hook's future: a hook waiting on a host call (HTTP) is not running, so a slow reply
//! never moves a hook, and a run caught by a tick is a sample of CPU use, so the share counts
//! a flow's hooks in proportion to the CPU they take.
//!
//! Why a pool of its own rather than yielding on the caller's runtime: measured with
//! `scripts/bench-starve` (BENCHMARKS.md, "A spinning plugin and the rest of the host"), four
//! spinning hooks on two cores. Yielding with wasmtime's own `UpdateDeadline::Yield` (the task
//! wakes itself, so tokio runs it again at once) left `/healthz` at p50 412 ms; yielding
//! through tokio's `yield_now` at p50 20 ms, p99 40-60 ms, and both grow with the spinners (a
//! busy tokio worker looks at its network events only between tasks, 10 ms each here). On the
//! pool, `/healthz` stayed at p99 2-13 ms with 4 to 16 spinners: the API's threads compete
//! with the pool's only for CPU, which the OS shares at a far finer grain.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::Unpoisoned;
use crate::runtime::cpu_meter::CpuMeter;
use wasmtime::UpdateDeadline;

/// How often the epoch advances: how often a running hook is looked at.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Ticks one run of a hook may see pass on the caller's thread before the hook moves to the
/// pool: the run has then held the thread for between one and two ticks (10 to 20 ms).
const INLINE_TICKS: u64 = 2;

thread_local! {
    /// Set on the pool's threads.
    static ON_POOL: Cell<bool> = const { Cell::new(false) };
    /// The tick in which the hook being polled on this thread began its current run.
    static RUN_STARTED: Cell<Option<u64>> = const { Cell::new(None) };
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
            // A hook here may wait on HTTP between runs of its own; its reply must not wait for
            // dozens of other hooks' 10 ms runs (tokio's default, 61) before it is noticed.
            .event_interval(1)
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
pub(crate) struct FlowShare {
    /// Its engine's ticks, counted by the thread that advances the epoch: reading them costs
    /// an atomic load where a clock would cost tens of nanoseconds on every poll of every hook.
    ticks: Arc<AtomicU64>,
    /// This flow's hooks on the pool now; while there are any, its new hooks start there.
    on_pool: AtomicUsize,
    /// Slices given out in the current tick of the clock ([`EPOCH_TICK`] long; a waiting hook
    /// sleeps until the next).
    slices: Mutex<Slices>,
}

#[derive(Default)]
struct Slices {
    tick: u64,
    given: u32,
}

impl FlowShare {
    pub(crate) fn new(ticks: Arc<AtomicU64>) -> Self {
        Self {
            ticks,
            on_pool: AtomicUsize::new(0),
            slices: Mutex::default(),
        }
    }

    fn tick(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

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
        let mut slices = self.slices.lock().unpoisoned();
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
    /// None until the store is armed; wasm never runs before.
    deadline: Option<Instant>,
    /// A limit on the CPU time the work may use besides the deadline (loading a plugin).
    cpu: Option<Arc<CpuMeter>>,
}

impl Schedule {
    pub(crate) fn new(share: Arc<FlowShare>) -> Self {
        Self {
            share,
            deadline: None,
            cpu: None,
        }
    }

    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// Interrupts the work once `meter` says it has used its CPU time.
    pub(crate) fn set_cpu_limit(&mut self, meter: Arc<CpuMeter>) {
        self.cpu = Some(meter);
    }
}

/// The store's epoch callback: see the module's documentation.
pub(crate) fn on_epoch(schedule: &Schedule) -> wasmtime::Result<UpdateDeadline> {
    let now = Instant::now();
    if schedule.deadline.is_none_or(|deadline| now >= deadline)
        || schedule.cpu.as_ref().is_some_and(|meter| meter.exhausted())
    {
        return Ok(UpdateDeadline::Interrupt);
    }
    // Ticks seen pass since the current run began: with none, the hook only came back from a
    // host call (an HTTP reply, say) since the last tick.
    let running = RUN_STARTED
        .get()
        .map_or(0, |started| schedule.share.tick().saturating_sub(started));
    if ON_POOL.get() {
        let share = (running >= 1).then(|| schedule.share.clone());
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
    if running < INLINE_TICKS {
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

/// Notes on this thread the tick in which the current poll began, for [`on_epoch`]; restores
/// the previous value when dropped.
struct Run {
    outer: Option<u64>,
}

impl Run {
    fn start(share: &FlowShare) -> Self {
        MOVE_ASKED.set(false);
        Self {
            outer: RUN_STARTED.replace(Some(share.tick())),
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        RUN_STARTED.set(self.outer);
    }
}

/// Wasm work for [`run`]: boxed by the caller where it is made, so the future (a few KiB)
/// is not copied again on its way to the pool or inside every hook's own future.
pub(crate) type Work<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs `work` (a future that runs wasm in a store whose epoch callback is [`on_epoch`]) for
/// a hook of the flow whose share is `share`: inline until a run sees [`INLINE_TICKS`] ticks
/// pass, then on the pool. A hook of a flow with hooks on the pool starts there.
pub(crate) fn run<T: Send + 'static>(share: &Arc<FlowShare>, work: Work<T>) -> Scheduled<'_, T> {
    let stage = if share.on_pool.load(Ordering::Acquire) == 0 || ON_POOL.get() {
        Stage::Inline(work)
    } else {
        Stage::Pool(on_pool(share, work))
    };
    Scheduled { share, stage }
}

/// The future [`run`] returns.
pub(crate) struct Scheduled<'a, T> {
    share: &'a Arc<FlowShare>,
    stage: Stage<T>,
}

enum Stage<T> {
    Inline(Work<T>),
    Pool(OnPoolTask<T>),
    Done,
}

impl<T: Send + 'static> Future for Scheduled<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        if let Stage::Inline(work) = &mut this.stage {
            let _run = Run::start(this.share);
            match work.as_mut().poll(cx) {
                Poll::Ready(out) => {
                    this.stage = Stage::Done;
                    return Poll::Ready(out);
                }
                Poll::Pending if !MOVE_ASKED.get() => return Poll::Pending,
                Poll::Pending => {}
            }
            let Stage::Inline(work) = std::mem::replace(&mut this.stage, Stage::Done) else {
                unreachable!("the stage was inline just above");
            };
            this.stage = Stage::Pool(on_pool(this.share, work));
        }
        match &mut this.stage {
            Stage::Pool(task) => match Pin::new(&mut task.handle).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(joined) => {
                    this.stage = Stage::Done;
                    Poll::Ready(match joined {
                        Ok(out) => out,
                        Err(e) => match e.try_into_panic() {
                            Ok(panic) => std::panic::resume_unwind(panic),
                            Err(e) => {
                                panic!("a hook on the wasm pool was cancelled while awaited: {e}")
                            }
                        },
                    })
                }
            },
            _ => panic!("a hook's future was polled after it finished"),
        }
    }
}

/// A hook finishing on the pool. Dropped unfinished (the caller stopped waiting: its own
/// timeout, a dropped request), it stops the hook too, at the hook's next tick.
struct OnPoolTask<T> {
    handle: tokio::task::JoinHandle<T>,
}

impl<T> Drop for OnPoolTask<T> {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn on_pool<T: Send + 'static>(share: &Arc<FlowShare>, work: Work<T>) -> OnPoolTask<T> {
    let counted = OnPool::enter(share);
    let handle = pool().runtime.spawn(Timed {
        work,
        share: counted,
    });
    OnPoolTask { handle }
}

/// Polls a hook on the pool, noting each run's start for [`on_epoch`].
struct Timed<T> {
    work: Work<T>,
    share: OnPool,
}

impl<T> Future for Timed<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        let _run = Run::start(&this.share.0);
        this.work.as_mut().poll(cx)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_gets_at_most_its_share_of_slices_per_tick() {
        let flow = FlowShare::new(Arc::default());
        assert!(flow.take(7, 2));
        assert!(flow.take(7, 2));
        assert!(
            !flow.take(7, 2),
            "a third slice in one tick with a share of 2"
        );
        assert!(flow.take(8, 2), "the next tick gives slices again");
        let other = FlowShare::new(Arc::default());
        assert!(other.take(8, 2), "shares are per flow");
    }
}

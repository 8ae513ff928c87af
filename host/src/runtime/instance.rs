//! One event's store: every capability's per-instance state, the memory limiter, and the
//! flows' instances made ahead of their events and freed after them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{ComponentExportIndex, Instance, ResourceTable};
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::{budget, lift, sched};
use crate::Unpoisoned;
use crate::capabilities::cache::CacheInstance;
use crate::capabilities::http::HttpInstance;
use crate::capabilities::identities::IdentitiesInstance;
use crate::capabilities::integrations::IntegrationsInstance;
use crate::capabilities::log::{LogInstance, LogSource};
use crate::capabilities::secrets::SecretsInstance;
use crate::capabilities::{AppState, Capability, Outcome};
use crate::config::{Flow, Limits};
use crate::runtime::bindings::PluginPre;
use crate::runtime::budget::EventBudget;
use crate::runtime::exports::CheckedHook;
use crate::runtime::hooks::HookName;
use crate::runtime::hot_pages::{HotPages, MemoryRange};
use crate::runtime::plugin::{CacheOutcome, PluginFormat};
use crate::runtime::sched::{FlowShare, Schedule};
use crate::runtime::stdio::CapturedOutput;

/// Everything one instance may touch, each capability's state in its own field.
pub(crate) struct InstanceState {
    /// This instance's place in the pool, given back when the store is dropped.
    pub(crate) _slot: OwnedSemaphorePermit,
    /// Its deadline and its flow's share of the wasm pool, for the epoch callback.
    pub(crate) schedule: Schedule,
    pub(crate) table: ResourceTable,
    pub(crate) wasi: WasiCtx,
    pub(crate) memory: MemoryLimiter,
    pub(crate) log: LogInstance,
    pub(crate) secrets: SecretsInstance,
    pub(crate) integrations: IntegrationsInstance,
    pub(crate) identities: IdentitiesInstance,
    pub(crate) http: HttpInstance,
    pub(crate) cache: CacheInstance,
}

impl InstanceState {
    /// A hook begins on this instance: until now (loading, or made ready ahead of an event)
    /// its plugin could not act on the outside; from now on it may, under `lease` if its
    /// request is claimed.
    pub(crate) fn begin_hook(&mut self, lease: Option<crate::runtime::lease::Lease>) {
        self.http.begin_hook(lease.clone());
        self.identities.begin_hook(lease);
    }

    /// What the event left: the plugin's log lines, then its stdout and stderr, then what
    /// each capability recorded.
    pub(crate) fn finish(&mut self, stdout: &CapturedOutput, stderr: &CapturedOutput) -> Outcome {
        let mut outcome = self.log.finish();
        outcome.logs.extend(stdout.lines(LogSource::Stdout));
        outcome.logs.extend(stderr.lines(LogSource::Stderr));
        outcome.extend(self.integrations.finish());
        outcome.extend(self.secrets.finish());
        outcome.extend(self.identities.finish());
        outcome.extend(self.http.finish());
        outcome.extend(self.cache.finish());
        outcome
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The most random bytes one `wasi:random` call may ask for; a call asking more traps.
pub(crate) const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// The flow's `memory_mib`, for all of an instance's linear memories together: a component
/// may hold several core instances, each with memories of its own, and one limit per memory
/// would let it have that many times the flow's memory.
pub(crate) struct MemoryLimiter {
    pub(crate) max_bytes: usize,
    pub(crate) exceeded: bool,
    /// The largest size any of the instance's memories was allowed to grow to.
    pub(crate) grown_to: usize,
    /// What the instance's memories were allowed to grow to, together (wasmtime asks here for
    /// each memory's initial size too, from 0).
    pub(crate) total: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            exceeded: false,
            grown_to: 0,
            total: 0,
        }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = (self.total - current.min(self.total)).saturating_add(desired);
        if total > self.max_bytes {
            self.exceeded = true;
            return Ok(false);
        }
        // Past the memory's own maximum it will not grow, so it is not counted as grown.
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        self.total = total;
        self.grown_to = self.grown_to.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A flow ready to run: its plugin compiled and linked once.
pub(crate) struct LoadedFlow {
    pub(crate) flow: Arc<Flow>,
    /// Its hooks' use of the wasm pool (`sched`).
    pub(crate) share: Arc<FlowShare>,
    pub(crate) pre: PluginPre<InstanceState>,
    /// Each hook's export, found and type-checked once, at load (the generated bindings
    /// would check all twelve on every instantiation).
    pub(crate) hook_exports: BTreeMap<HookName, CheckedHook>,
    /// `implemented`, asked once at load.
    pub(crate) implemented_export: ComponentExportIndex,
    pub(crate) implemented: BTreeSet<HookName>,
    pub(crate) format: PluginFormat,
    pub(crate) cache: CacheOutcome,
    /// A fresh instance made before the event that will use it, so instantiating is off the
    /// request path. Each is used for one event only, like one made on demand.
    pub(crate) ready: Mutex<Option<Prepared>>,
    /// Stores whose event has been answered, for the background task to free: freeing a
    /// store (its pool slot reset, its WASI context and tables) is then off the request path.
    pub(crate) finished: Mutex<Vec<Store<InstanceState>>>,
    /// Set while a task is freeing `finished` stores or making the next `ready` instance.
    pub(crate) preparing: AtomicBool,
    /// For a plugin whose memory is mapped copy-on-write: the pages its hooks write, written
    /// ahead in the instances made ahead (`hot_pages`).
    pub(crate) hot_pages: Option<HotPages>,
}

impl LoadedFlow {
    pub(crate) fn take_ready(&self) -> Option<Prepared> {
        self.ready.lock().unpoisoned().take()
    }

    pub(crate) fn has_ready(&self) -> bool {
        self.ready.lock().unpoisoned().is_some()
    }

    pub(crate) fn take_finished(&self) -> Vec<Store<InstanceState>> {
        std::mem::take(&mut *self.finished.lock().unpoisoned())
    }

    pub(crate) fn has_finished(&self) -> bool {
        !self.finished.lock().unpoisoned().is_empty()
    }
}

/// A store with the plugin instantiated in it and nothing run yet.
pub(crate) struct Prepared {
    pub(crate) store: Store<InstanceState>,
    pub(crate) instance: Instance,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
    /// Where its memory is, for a flow with `hot_pages`.
    pub(crate) memory: Option<MemoryRange>,
}

/// What every event's store is made from; shared with the tasks preparing instances ahead.
pub(crate) struct StoreMaker {
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) prepared_slots: Arc<Semaphore>,
    /// What every event's capabilities share.
    pub(crate) app: AppState,
    /// Hooks running now, across flows: while others run, a finished store is freed at once.
    pub(crate) running: AtomicUsize,
}

/// Counts a hook in [`StoreMaker::running`] until dropped.
pub(crate) struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    pub(crate) fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }

    /// Whether any hook other than this one is running.
    pub(crate) fn others(&self) -> bool {
        self.0.load(Ordering::Acquire) > 1
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl StoreMaker {
    /// A free place in the pool, waiting for one until `deadline` at most.
    pub(crate) async fn slot(&self, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        let slots = self.slots.clone();
        tokio::time::timeout_at(deadline.into(), slots.acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// A store for one event of `flow`, disarmed: [`arm`] gives it its deadline.
    pub(crate) fn new_store(
        &self,
        loaded: &LoadedFlow,
        slot: OwnedSemaphorePermit,
    ) -> (Store<InstanceState>, CapturedOutput, CapturedOutput) {
        let (flow, share) = (&loaded.flow, &loaded.share);
        let limits: &Limits = &flow.limits;
        // Everything the instance keeps of the plugin's is charged here (see `budget`).
        let budget = EventBudget::new(limits.log_max_bytes);
        let stdout = CapturedOutput::new(budget.clone());
        let stderr = CapturedOutput::new(budget.clone());
        // Nothing is granted: no files, environment, arguments, sockets or name lookups.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // wasmtime-wasi makes the bytes asked for in the host first (64 MiB by default,
            // outside `memory_mib`); no toolchain asks for more than a few KiB at once.
            .max_random_size(MAX_RANDOM_BYTES)
            .build();
        // Each resource the plugin holds (a secret handle, a WASI stream) is host memory.
        let mut table = ResourceTable::new();
        table.set_max_capacity(budget::MAX_HANDLES);
        let state = InstanceState {
            _slot: slot,
            schedule: Schedule::new(share.clone()),
            table,
            wasi,
            memory: MemoryLimiter::new(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX)),
            log: Capability::instance(flow, &self.app, &budget),
            secrets: Capability::instance(flow, &self.app, &budget),
            integrations: Capability::instance(flow, &self.app, &budget),
            identities: Capability::instance(flow, &self.app, &budget),
            http: Capability::instance(flow, &self.app, &budget),
            cache: Capability::instance(flow, &self.app, &budget),
        };
        // The engine the flow's plugin was compiled for (see LARGE_PLUGIN_BYTES).
        let mut store = Store::new(loaded.pre.instance_pre().engine(), state);
        store.limiter(|s| &mut s.memory);
        store.set_max_component_handles(budget::MAX_HANDLES);
        store.epoch_deadline_callback(|store| sched::on_epoch(&store.data().schedule));
        (store, stdout, stderr)
    }

    /// Instantiates `loaded`'s plugin in a fresh store, ahead of the event that will use it.
    /// `None` when that fails: the event then instantiates on its own and reports why.
    pub(crate) async fn prepare(&self, loaded: &LoadedFlow) -> Option<Prepared> {
        let timeout = loaded.flow.limits.timeout;
        let slot = self.prepared_slots.clone().try_acquire_owned().ok()?;
        let (mut store, stdout, stderr) = self.new_store(loaded, slot);
        arm(&mut store, timeout, Instant::now());
        let pre = loaded.pre.instance_pre().clone();
        let implemented = loaded.hot_pages.as_ref().map(|_| loaded.implemented_export);
        // Instantiating runs the plugin's start functions: wasm like any other.
        let instantiate: sched::Work<_> = Box::pin(async move {
            let made = tokio::time::timeout(timeout, async {
                let instance: Instance = pre.instantiate_async(&mut store).await?;
                let memory = match implemented {
                    Some(export) => Some(memory_of(&instance, &mut store, &export).await?),
                    None => None,
                };
                wasmtime::Result::<(Instance, Option<MemoryRange>)>::Ok((instance, memory))
            })
            .await;
            (store, made)
        });
        let (store, made) = sched::run(&loaded.share, instantiate).await;
        let (instance, memory) = made.ok()?.ok()?;
        if let (Some(hot_pages), Some(memory)) = (&loaded.hot_pages, memory) {
            hot_pages.populate(memory);
        }
        Some(Prepared {
            store,
            instance,
            stdout,
            stderr,
            memory,
        })
    }
}

/// Where `instance`'s memory is: seen while lifting the answer of `implemented`, which is
/// asked for it. A plugin that fails to answer is not used (a trapped instance cannot be
/// entered again); its event makes an instance of its own.
async fn memory_of(
    instance: &Instance,
    store: &mut Store<InstanceState>,
    implemented: &ComponentExportIndex,
) -> wasmtime::Result<MemoryRange> {
    let implemented =
        instance.get_typed_func::<(), (lift::Implemented,)>(&mut *store, implemented)?;
    let (answer,) = implemented.call_async(&mut *store, ()).await?;
    Ok(answer.memory)
}

/// Gives `store` the deadline of a call starting at `started` and allowed `timeout`: the
/// time left for its HTTP requests, and the epoch callback's, which interrupts the plugin.
pub(crate) fn arm(store: &mut Store<InstanceState>, timeout: Duration, started: Instant) {
    let state = store.data_mut();
    state.http.set_deadline(started + timeout);
    state.schedule.set_deadline(started + timeout);
    // The callback looks at the hook every tick: to interrupt it at the deadline, and to
    // keep it from holding the caller's thread (`sched`).
    store.set_epoch_deadline(1);
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter;

    use super::MemoryLimiter;

    const MIB: usize = 1 << 20;

    #[test]
    fn memories_are_limited_together_and_a_refused_growth_is_not_counted() {
        let mut limiter = MemoryLimiter::new(16 * MIB);
        // Two memories made, then each grown: what counts is their sum.
        assert!(limiter.memory_growing(0, 6 * MIB, None).unwrap());
        assert!(limiter.memory_growing(0, 6 * MIB, None).unwrap());
        assert!(limiter.memory_growing(6 * MIB, 9 * MIB, None).unwrap());
        assert!(!limiter.exceeded);
        assert!(!limiter.memory_growing(6 * MIB, 8 * MIB, None).unwrap());
        assert!(limiter.exceeded);
        assert_eq!(limiter.total, 15 * MIB);
        // Growth past a memory's own maximum fails without using up the limit.
        let mut limiter = MemoryLimiter::new(16 * MIB);
        assert!(limiter.memory_growing(0, MIB, Some(2 * MIB)).unwrap());
        for _ in 0..10 {
            assert!(!limiter.memory_growing(MIB, 3 * MIB, Some(2 * MIB)).unwrap());
        }
        assert!(!limiter.exceeded);
        assert!(limiter.memory_growing(MIB, 2 * MIB, Some(2 * MIB)).unwrap());
        assert_eq!((limiter.total, limiter.grown_to), (2 * MIB, 2 * MIB));
    }
}

//! The sandbox: one compiled plugin per flow, a fresh store and instance for every event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, ComponentExportIndex, Instance, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::PluginPre;
use crate::budget::{self, EventBudget, MAX_MESSAGE_BYTES, MAX_REFUSAL_BYTES, MAX_URL_PART_BYTES};
use crate::cache::{CacheInstance, CacheState};
use crate::config::{Config, Flow, Limits};
use crate::event::{EventError, EventInput};
use crate::fault::{self, HostFault};
use crate::hooks::{Decision, HookName};
use crate::http::{HttpCall, HttpInstance, HttpState, HttpView, Transport};
use crate::identities::IdentitiesInstance;
use crate::integrations::{IntegrationsInstance, IntegrationsView};
use crate::log::{LogInstance, LogLine, LogSource};
use crate::plugin::{self, CacheOutcome, PluginCache, PluginFormat, root_message};
use crate::refusal::Refusal;
use crate::sched::{self, EPOCH_TICK, FlowShare, Schedule};
use crate::secret_store::SecretStore;
use crate::secrets::{SecretsInstance, SecretsView};
use crate::stdio::CapturedOutput;
use crate::store::{Store as IdentityStore, StoreError};
use crate::{cache, http, identities, integrations, log, secrets};

/// The longest the calls warden makes while loading a plugin (instantiating it and asking
/// which hooks it implements) may take, whatever the flow's `timeout_ms`: they do no work a
/// plugin needs time for, and a plugin that spins there must not hold up start-up or a reload
/// for minutes.
const LOAD_CALL_LIMIT: Duration = Duration::from_secs(2);

/// Everything one instance may touch, each capability's state in its own field.
struct InstanceState {
    /// This instance's place in the pool, given back when the store is dropped.
    _slot: OwnedSemaphorePermit,
    /// Its deadline and its flow's share of the wasm pool, for the epoch callback.
    schedule: Schedule,
    table: ResourceTable,
    wasi: WasiCtx,
    memory: MemoryLimiter,
    log: LogInstance,
    secrets: SecretsInstance,
    integrations: IntegrationsInstance,
    identities: IdentitiesInstance,
    http: HttpInstance,
    cache: CacheInstance,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct MemoryLimiter {
    max_bytes: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            return Ok(false);
        }
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

fn linker(engine: &Engine) -> wasmtime::Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    crate::bindings::warden::plugin::types::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
        &mut linker,
        |s: &mut InstanceState| s,
    )?;
    log::add_to_linker(&mut linker, |s| &mut s.log)?;
    secrets::add_to_linker(&mut linker, |s| SecretsView {
        instance: &mut s.secrets,
        table: &mut s.table,
    })?;
    integrations::add_to_linker(&mut linker, |s| IntegrationsView {
        instance: &mut s.integrations,
        table: &mut s.table,
    })?;
    identities::add_to_linker(&mut linker, |s| &mut s.identities)?;
    http::add_to_linker(&mut linker, |s| HttpView {
        instance: &mut s.http,
        table: &mut s.table,
    })?;
    cache::add_to_linker(&mut linker, |s| &mut s.cache)?;
    Ok(linker)
}

impl crate::bindings::warden::plugin::types::Host for InstanceState {}

/// A flow ready to run: its plugin compiled and linked once.
struct LoadedFlow {
    flow: Arc<Flow>,
    /// Its hooks' use of the wasm pool (`sched`).
    share: Arc<FlowShare>,
    pre: PluginPre<InstanceState>,
    /// Each hook's export, found once: an event looks up and type-checks only the hook it
    /// calls (the generated bindings would check all twelve on every instantiation).
    hook_exports: BTreeMap<HookName, ComponentExportIndex>,
    implemented: BTreeSet<HookName>,
    format: PluginFormat,
    cache: CacheOutcome,
    /// A fresh instance made before the event that will use it, so instantiating is off the
    /// request path. Each is used for one event only, like one made on demand.
    ready: Mutex<Option<Prepared>>,
    /// Stores whose event has been answered, for the background task to free: freeing a
    /// store (its pool slot reset, its WASI context and tables) is then off the request path.
    finished: Mutex<Vec<Store<InstanceState>>>,
    /// Set while a task is freeing `finished` stores or making the next `ready` instance.
    preparing: AtomicBool,
}

impl LoadedFlow {
    fn take_ready(&self) -> Option<Prepared> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn has_ready(&self) -> bool {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn take_finished(&self) -> Vec<Store<InstanceState>> {
        std::mem::take(&mut *self.finished.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn has_finished(&self) -> bool {
        !self
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// A store with the plugin instantiated in it and nothing run yet.
struct Prepared {
    store: Store<InstanceState>,
    instance: Instance,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
}

/// A problem loading one flow's plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub flow: String,
    pub plugin: PathBuf,
    pub message: String,
    /// Host when warden could not do its part (no instance slot, a compiler panic); plugin
    /// otherwise (not a plugin, the wrong contract, a trap or hang while loading).
    pub blame: Blame,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flow `{}`: plugin {}: {}",
            self.flow,
            self.plugin.display(),
            self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Plugins(Vec<LoadError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the engine: {0}")]
    Engine(String),
}

/// Who is to blame for a failed hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Blame {
    Plugin,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FailureKind {
    /// The hook ran past `limits.timeout_ms`.
    Deadline {
        timeout_ms: u128,
    },
    /// The plugin asked for more than `limits.memory_mib`.
    Memory {
        limit_mib: u64,
    },
    StackOverflow,
    /// The plugin trapped (a panic, `unreachable`, a bad memory access, ...).
    Trap {
        message: String,
    },
    /// The hook returned an error.
    PluginError {
        message: String,
    },
    /// The decision is not one this hook may make.
    InvalidDecision {
        decision: String,
    },
    /// The plugin broke the interface's contract in what it passed the host or returned: a
    /// resource handle it dropped or was never given, a string that is not UTF-8, a case that
    /// does not exist, a pointer outside its memory ([`crate::fault`]).
    Misuse {
        message: String,
    },
    /// Something on the host's side failed (marked [`crate::fault::HostFault`]).
    Host {
        message: String,
    },
    /// The flow's plugin did not load when warden started, so no hook of it can run.
    NotLoaded {
        message: String,
        blame: Blame,
    },
}

impl fmt::Display for Blame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Blame::Plugin => "plugin",
            Blame::Host => "host",
        })
    }
}

/// A hook that did not produce a usable decision. The request fails closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookFailure {
    pub flow: String,
    pub hook: String,
    #[serde(flatten)]
    pub kind: FailureKind,
}

impl HookFailure {
    pub fn blame(&self) -> Blame {
        match self.kind {
            FailureKind::Host { .. } => Blame::Host,
            FailureKind::NotLoaded { blame, .. } => blame,
            FailureKind::Deadline { .. }
            | FailureKind::Memory { .. }
            | FailureKind::StackOverflow
            | FailureKind::Trap { .. }
            | FailureKind::PluginError { .. }
            | FailureKind::InvalidDecision { .. }
            | FailureKind::Misuse { .. } => Blame::Plugin,
        }
    }
}

impl fmt::Display for HookFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flow `{}`, hook {}: {}",
            self.flow,
            self.hook,
            self.kind.describe(&self.hook)
        )
    }
}

impl FailureKind {
    /// What went wrong in `hook`, without naming the flow.
    fn describe(&self, hook: &str) -> String {
        match self {
            FailureKind::Deadline { timeout_ms } => format!(
                "deadline exceeded: the hook ran longer than limits.timeout_ms = {timeout_ms}"
            ),
            FailureKind::Memory { limit_mib } => format!(
                "memory limit exceeded: the plugin asked for more than limits.memory_mib = {limit_mib}"
            ),
            FailureKind::StackOverflow => "the plugin overflowed its stack".into(),
            FailureKind::Trap { message } => format!("the plugin trapped: {message}"),
            FailureKind::PluginError { message } => {
                format!("the plugin returned an error: {message}")
            }
            FailureKind::InvalidDecision { decision } => {
                format!("the plugin returned `{decision}`, which {hook} may not decide")
            }
            FailureKind::Host { message } => format!("host error: {message}"),
            FailureKind::NotLoaded { message, .. } => {
                format!("the flow's plugin did not load: {message}")
            }
            FailureKind::Misuse { message } => {
                format!("the plugin misused the interface: {message}")
            }
        }
    }
}

/// Everything one hook run produced, with secrets already redacted, within the event's
/// budget (see [`crate::budget`]).
#[derive(Debug, Clone)]
pub struct HookReport {
    pub flow: String,
    pub hook: HookName,
    /// False when nothing ran: the plugin does not implement the hook (the decision is
    /// `continue`), or no instance slot was free in time (a failure).
    pub ran: bool,
    pub outcome: Result<Decision, HookFailure>,
    pub logs: Vec<LogLine>,
    pub refusals: Vec<Refusal>,
    pub http_calls: Vec<HttpCall>,
    pub elapsed: Duration,
    /// True when the instance was made before the event arrived, off its path.
    pub prepared_ahead: bool,
}

impl HookReport {
    /// The decision to act on: a failure fails closed to `continue` (a human decides).
    pub fn decision(&self) -> Decision {
        self.outcome.clone().unwrap_or(Decision::Continue)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("unknown flow `{flow}` (flows: {known})")]
    UnknownFlow { flow: String, known: String },
    #[error(transparent)]
    Event(#[from] EventError),
}

/// What `warden check` prints for one flow.
#[derive(Debug, Clone, Serialize)]
pub struct FlowSummary {
    pub name: String,
    pub plugin: PathBuf,
    pub adapted_from_core_module: bool,
    /// How the plugin was loaded: `cached`, `compiled`, or why the cache was not used.
    pub compiled: String,
    pub hooks: Vec<String>,
    pub integrations: Vec<String>,
    pub secrets: Vec<String>,
    pub identity_services: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub reveal_secrets: bool,
    pub limits: LimitsSummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct LimitsSummary {
    pub memory_mib: u64,
    pub timeout_ms: u128,
}

/// Advances the engine's epoch so deadlines fire, and counts the ticks for `sched`; stops
/// with the `Warden`.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    ticks: Arc<AtomicU64>,
}

impl EpochTicker {
    fn start(engines: &[&Engine]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(AtomicU64::new(0));
        let weak: Vec<_> = engines.iter().map(|e| e.weak()).collect();
        let (flag, counted) = (stop.clone(), ticks.clone());
        std::thread::Builder::new()
            .name("warden-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    // Counted first: a callback this tick fires sees it.
                    counted.fetch_add(1, Ordering::Relaxed);
                    let mut alive = false;
                    for engine in weak.iter().filter_map(|w| w.upgrade()) {
                        engine.increment_epoch();
                        alive = true;
                    }
                    if !alive {
                        break;
                    }
                }
            })
            .expect("spawn the epoch thread");
        Self { stop, ticks }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An engine and the plugins compiled for it, shareable by several [`Warden`]s: the test
/// harness starts one `Warden` per case and compiles each plugin once.
#[derive(Clone)]
pub struct SharedEngine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    /// For plugins smaller than [`LARGE_PLUGIN_BYTES`]: memory initialised by copying.
    engine: Engine,
    linker: Linker<InstanceState>,
    /// For larger plugins (Python's interpreter): memory images mapped copy-on-write.
    large: Engine,
    large_linker: Linker<InstanceState>,
    /// Held while compiling, so concurrent starts compile a plugin once.
    compiled: tokio::sync::Mutex<HashMap<PathBuf, (Component, PluginFormat, CacheOutcome)>>,
    /// One permit per instance a hook may make: a hook waits for a free one (within its
    /// deadline) instead of failing when the pool is full.
    slots: Arc<Semaphore>,
    /// Permits for instances made ahead, apart from `slots`, so an idle flow's ready
    /// instance never keeps another flow's hook waiting.
    prepared_slots: Arc<Semaphore>,
    ticker: EpochTicker,
}

impl SharedEngine {
    pub fn new() -> Result<Self, StartError> {
        Self::with_max_instances(MAX_LIVE_INSTANCES)
    }

    /// The wasmtime engine plugins are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// An engine whose hooks make at most `max` instances at once (capped at the pool's
    /// [`MAX_LIVE_INSTANCES`]); further hooks wait for a free slot within their deadline.
    /// Instances made ahead have their own room, a sixteenth of `max`.
    pub fn with_max_instances(max: u32) -> Result<Self, StartError> {
        let max = max.min(MAX_LIVE_INSTANCES);
        let large = engine(true)?;
        let engine = engine(false)?;
        let large_linker = linker(&large).map_err(|e| StartError::Engine(root_message(&e)))?;
        let linker = linker(&engine).map_err(|e| StartError::Engine(root_message(&e)))?;
        Ok(Self {
            inner: Arc::new(EngineInner {
                ticker: EpochTicker::start(&[&engine, &large]),
                engine,
                linker,
                large,
                large_linker,
                compiled: Default::default(),
                slots: Arc::new(Semaphore::new(max as usize)),
                prepared_slots: Arc::new(Semaphore::new(prepared_room(max) as usize)),
            }),
        })
    }

    /// Each plugin compiled so far, and how it was obtained.
    pub async fn cache_outcomes(&self) -> Vec<(PathBuf, CacheOutcome)> {
        let compiled = self.inner.compiled.lock().await;
        compiled
            .iter()
            .map(|(path, (_, _, outcome))| (path.clone(), outcome.clone()))
            .collect()
    }

    async fn compile(
        &self,
        path: &PathBuf,
        cache: &Arc<PluginCache>,
    ) -> Result<(Component, PluginFormat, CacheOutcome), (String, Blame)> {
        let mut compiled = self.inner.compiled.lock().await;
        if let Some(c) = compiled.get(path) {
            return Ok(c.clone());
        }
        let large = std::fs::metadata(path).is_ok_and(|m| m.len() >= LARGE_PLUGIN_BYTES);
        let engine = if large {
            self.inner.large.clone()
        } else {
            self.inner.engine.clone()
        };
        let owned = path.clone();
        let cache = cache.clone();
        let c = tokio::task::spawn_blocking(move || cache.load_or_compile(&engine, &owned))
            .await
            .map_err(|e| (format!("compilation panicked: {e}"), Blame::Host))?
            .map_err(|message| (message, Blame::Plugin))?;
        compiled.insert(path.clone(), c.clone());
        Ok(c)
    }
}

/// How to start a [`Warden`] other than with the defaults.
#[derive(Default)]
pub struct StartOptions {
    /// Reuse compiled plugins; a new engine when `None`.
    pub engine: Option<SharedEngine>,
    /// Where plugins' HTTP requests go; the network when `None`.
    pub transport: Option<Arc<dyn Transport>>,
}

/// The plugin host: a validated config with every flow's plugin compiled.
pub struct Warden {
    shared: SharedEngine,
    config: Arc<Config>,
    flows: BTreeMap<String, Arc<LoadedFlow>>,
    /// Flows whose plugin did not load (only with [`Warden::start_with_failed_flows`]).
    failed: BTreeMap<String, LoadError>,
    plugin_cache: Arc<PluginCache>,
    stores: Arc<StoreMaker>,
}

/// What every event's store is made from; shared with the tasks preparing instances ahead.
struct StoreMaker {
    slots: Arc<Semaphore>,
    prepared_slots: Arc<Semaphore>,
    identities: Arc<IdentityStore>,
    http: HttpState,
    cache: Arc<CacheState>,
    /// Current secret values; also what to redact.
    secrets: Arc<SecretStore>,
    /// Hooks running now, across flows: while others run, a finished store is freed at once.
    running: AtomicUsize,
}

/// Counts a hook in [`StoreMaker::running`] until dropped.
struct Running<'a>(&'a AtomicUsize);

impl<'a> Running<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }

    /// Whether any hook other than this one is running.
    fn others(&self) -> bool {
        self.0.load(Ordering::Acquire) > 1
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Instances hooks may run at once across all flows.
pub const MAX_LIVE_INSTANCES: u32 = 1000;

/// Room for instances made ahead (and not yet taken by an event) beside `max` run by hooks:
/// a sixteenth, so an engine bounded to a few instances makes none ahead.
fn prepared_room(max: u32) -> u32 {
    max / 16
}

/// Plugin files from this size up are compiled for the engine that maps memory images
/// copy-on-write. Measured (BENCHMARKS.md, "Python plugins"): copying a Python plugin's
/// ~14 MiB initial heap into every instance made a Python instance 4× slower than mapping
/// it, while mapping made instances of a small Rust plugin 3× slower than copying its few
/// pages (an madvise and a page fault per page touched on every reset). Rust plugins are
/// 0.2–3.4 MB, Python ones about 20 MB.
pub const LARGE_PLUGIN_BYTES: u64 = 8 << 20;

/// Core instances the pool budgets per component instance: a Python component instantiates
/// 14 core modules (the interpreter, its libraries, the WASI shims), a Rust one 3.
pub const CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// An engine whose instances come from a pool, so a fresh instance per event costs
/// microseconds; `copy_on_write` for large plugins ([`LARGE_PLUGIN_BYTES`]). Slots are sized
/// for the largest `memory_mib` a config may set (the address space is only reserved); each
/// flow's own limit is enforced by its store's limiter.
fn engine(copy_on_write: bool) -> Result<Engine, StartError> {
    let largest_memory: u64 = crate::config::MAX_MEMORY_MIB << 20;
    // The pooling allocator reserves (virtual) room for both kinds up front.
    let n = MAX_LIVE_INSTANCES + prepared_room(MAX_LIVE_INSTANCES);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        // A wasm32-wasip2 component holds a few core instances (the plugin, the WASI adapter,
        // shims; Python's many libraries), each with at most a couple of memories and tables.
        .total_core_instances(n * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(n * 2)
        .total_tables(n * 4)
        .total_stacks(n)
        .max_memory_size(usize::try_from(largest_memory).unwrap_or(usize::MAX))
        // Resetting a slot with memset instead of madvise keeps the pages a plugin touches on
        // every event (its stack, its heap's start) resident: no page faults, no TLB shootdowns.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        // Measured (BENCHMARKS.md): for small plugins, copying data segments into a slot
        // kept resident beats copy-on-write images, whose reset is an madvise and a TLB
        // shootdown per event; for Python's interpreter heap, mapping the image wins.
        .memory_init_cow(copy_on_write)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm).map_err(|e| StartError::Engine(root_message(&e)))
}

impl StoreMaker {
    /// A free place in the pool, waiting for one until `deadline` at most.
    async fn slot(&self, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        let slots = self.slots.clone();
        tokio::time::timeout_at(deadline.into(), slots.acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// A store for one event of `flow`, disarmed: [`arm`] gives it its deadline.
    fn new_store(
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
            .build();
        // Each resource the plugin holds (a secret handle, a WASI stream) is host memory.
        let mut table = ResourceTable::new();
        table.set_max_capacity(budget::MAX_HANDLES);
        let state = InstanceState {
            _slot: slot,
            schedule: Schedule::new(share.clone()),
            table,
            wasi,
            memory: MemoryLimiter {
                max_bytes: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
                exceeded: false,
            },
            log: LogInstance::new(budget.clone()),
            secrets: SecretsInstance::new(flow.clone(), self.secrets.clone(), budget.clone()),
            integrations: IntegrationsInstance::new(flow.clone(), budget.clone()),
            identities: IdentitiesInstance::new(
                flow.clone(),
                self.identities.clone(),
                budget.clone(),
            ),
            http: self.http.instance(flow.clone(), budget),
            cache: self.cache.instance(&flow.name),
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
    async fn prepare(&self, loaded: &LoadedFlow) -> Option<Prepared> {
        let timeout = loaded.flow.limits.timeout;
        let slot = self.prepared_slots.clone().try_acquire_owned().ok()?;
        let (mut store, stdout, stderr) = self.new_store(loaded, slot);
        arm(&mut store, timeout, Instant::now());
        let pre = loaded.pre.instance_pre().clone();
        // Instantiating runs the plugin's start functions: wasm like any other.
        let instantiate: sched::Work<_> = Box::pin(async move {
            let made = tokio::time::timeout(timeout, pre.instantiate_async(&mut store)).await;
            (store, made)
        });
        let (store, made) = sched::run(&loaded.share, instantiate).await;
        let instance = made.ok()?.ok()?;
        Some(Prepared {
            store,
            instance,
            stdout,
            stderr,
        })
    }
}

/// Gives `store` the deadline of a call starting at `started` and allowed `timeout`: the
/// time left for its HTTP requests, and the epoch callback's, which interrupts the plugin.
fn arm(store: &mut Store<InstanceState>, timeout: Duration, started: Instant) {
    let state = store.data_mut();
    state.http.set_deadline(started + timeout);
    state.schedule.set_deadline(started + timeout);
    // The callback looks at the hook every tick: to interrupt it at the deadline, and to
    // keep it from holding the caller's thread (`sched`).
    store.set_epoch_deadline(1);
}

impl Warden {
    /// Compiles every flow's plugin and opens the identity store; every plugin problem is
    /// reported, not just the first.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let store = Arc::new(IdentityStore::open(&config.store_path)?);
        Self::start_with_store(config, store).await
    }

    pub async fn start_with_store(
        config: Config,
        store: Arc<IdentityStore>,
    ) -> Result<Self, StartError> {
        let secrets = Arc::new(SecretStore::new(&config));
        Self::start_with(config, store, secrets, StartOptions::default()).await
    }

    /// Starts with secret values from `secrets` (built for `config`), and `options`.
    pub async fn start_with(
        config: Config,
        store: Arc<IdentityStore>,
        secrets: Arc<SecretStore>,
        options: StartOptions,
    ) -> Result<Self, StartError> {
        let warden = Self::start_with_failed_flows(config, store, secrets, options).await?;
        if warden.failed.is_empty() {
            Ok(warden)
        } else {
            Err(StartError::Plugins(warden.failed.into_values().collect()))
        }
    }

    /// Like [`start_with`](Self::start_with), but a flow whose plugin fails to load does not
    /// stop the others: it is listed by [`load_failures`](Self::load_failures), and each of
    /// its hooks fails closed naming why. What `warden serve` starts with.
    pub async fn start_with_failed_flows(
        config: Config,
        store: Arc<IdentityStore>,
        secrets: Arc<SecretStore>,
        options: StartOptions,
    ) -> Result<Self, StartError> {
        let shared = match options.engine {
            Some(shared) => shared,
            None => SharedEngine::new()?,
        };
        let http = match options.transport {
            Some(transport) => HttpState::with_transport(transport, secrets.clone()),
            None => {
                HttpState::new(secrets.clone()).map_err(|e| StartError::Engine(e.to_string()))?
            }
        };
        let config = Arc::new(config);
        let mut warden = Self {
            plugin_cache: Arc::new(match &config.cache_dir {
                Some(dir) => PluginCache::new(dir.clone()),
                None => PluginCache::without_folder(
                    "no cache folder: set [cache] dir, or XDG_CACHE_HOME or HOME",
                ),
            }),
            stores: Arc::new(StoreMaker {
                slots: shared.inner.slots.clone(),
                prepared_slots: shared.inner.prepared_slots.clone(),
                identities: store,
                http,
                cache: Arc::default(),
                secrets,
                running: AtomicUsize::new(0),
            }),
            shared,
            config: config.clone(),
            flows: BTreeMap::new(),
            failed: BTreeMap::new(),
        };
        // All at once, so a plugin that is slow to load delays start-up by its own load only.
        let loads = config.flows.values().map(|flow| warden.load_flow(flow));
        let loaded = futures_util::future::join_all(loads).await;
        for (flow, result) in config.flows.values().zip(loaded) {
            match result {
                Ok(loaded) => {
                    warden.flows.insert(flow.name.clone(), Arc::new(loaded));
                }
                Err((message, blame)) => {
                    let error = LoadError {
                        flow: flow.name.clone(),
                        plugin: flow.plugin.clone(),
                        message: warden.stores.secrets.redactor().redact(&message),
                        blame,
                    };
                    warden.failed.insert(flow.name.clone(), error);
                }
            }
        }
        Ok(warden)
    }

    /// Flows whose plugin did not load, each with why.
    pub fn load_failures(&self) -> impl Iterator<Item = &LoadError> {
        self.failed.values()
    }

    async fn load_flow(&self, flow: &Arc<Flow>) -> Result<LoadedFlow, (String, Blame)> {
        let (component, format, cache) = self
            .shared
            .compile(&flow.plugin, &self.plugin_cache)
            .await?;
        let inner = &self.shared.inner;
        let linker = if Engine::same(component.engine(), &inner.large) {
            &inner.large_linker
        } else {
            &inner.linker
        };
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            let message = format!(
                "cannot be linked: {} (a plugin may import only WASI 0.2 and {}@{})",
                root_message(&e),
                plugin::WIT_PACKAGE,
                plugin::WIT_VERSION
            );
            (message, Blame::Plugin)
        })?;
        let pre = PluginPre::new(pre).map_err(|e| {
            let message = format!("cannot be linked: {}", root_message(&e));
            (message, Blame::Plugin)
        })?;
        let hook_exports = hook_exports(&pre).map_err(|message| (message, Blame::Plugin))?;
        let mut loaded = LoadedFlow {
            flow: flow.clone(),
            share: Arc::new(FlowShare::new(self.shared.inner.ticker.ticks.clone())),
            pre,
            hook_exports,
            implemented: BTreeSet::new(),
            format,
            cache,
            ready: Mutex::new(None),
            finished: Mutex::new(Vec::new()),
            preparing: AtomicBool::new(false),
        };
        loaded.implemented = self.implemented_hooks(&loaded).await?;
        Ok(loaded)
    }

    /// Asks the plugin once, at load, which hooks it implements, within
    /// [`LOAD_CALL_LIMIT`] at most.
    async fn implemented_hooks(
        &self,
        loaded: &LoadedFlow,
    ) -> Result<BTreeSet<HookName>, (String, Blame)> {
        let limits = &loaded.flow.limits;
        let limit = limits.timeout.min(LOAD_CALL_LIMIT);
        let within = format!(
            "within {} ms (limits.timeout_ms, capped at {} ms while loading)",
            limit.as_millis(),
            LOAD_CALL_LIMIT.as_millis()
        );
        let started = Instant::now();
        let Some(slot) = self.stores.slot(started + limit).await else {
            let message = format!("no instance slot became free {within}");
            return Err((message, Blame::Host));
        };
        let (mut store, _, stderr) = self.stores.new_store(loaded, slot);
        arm(&mut store, limit, started);
        let pre = loaded.pre.clone();
        let ask: sched::Work<_> = Box::pin(async move {
            let answer = tokio::time::timeout(limit, async {
                let plugin = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(fault::at_instantiation)?;
                plugin
                    .warden_plugin_hooks()
                    .call_implemented(&mut store)
                    .await
            })
            .await;
            (store, answer)
        });
        let (store, answer) = sched::run(&loaded.share, ask).await;
        let asked = "when asked which hooks it implements";
        match answer {
            Ok(Ok(hooks)) => Ok(hooks.into_iter().map(HookName::from_wit).collect()),
            Err(_) => Err((
                format!("did not say which hooks it implements {within}"),
                Blame::Plugin,
            )),
            Ok(Err(e)) => Err(
                match fault::classify(&e, store.data().memory.exceeded, limits, &stderr) {
                    FailureKind::Deadline { .. } => (
                        format!("did not say which hooks it implements {within}"),
                        Blame::Plugin,
                    ),
                    FailureKind::Host { message } => (
                        format!("failed {asked}: host error: {message}"),
                        Blame::Host,
                    ),
                    kind => (
                        format!("failed {asked}: {}", kind.describe("implemented")),
                        Blame::Plugin,
                    ),
                },
            ),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn identity_store(&self) -> &Arc<IdentityStore> {
        &self.stores.identities
    }

    pub fn secret_store(&self) -> &Arc<SecretStore> {
        &self.stores.secrets
    }

    /// The hooks `flow`'s plugin implements.
    pub fn implemented(&self, flow: &str) -> Option<&BTreeSet<HookName>> {
        self.flows.get(flow).map(|f| &f.implemented)
    }

    pub fn summaries(&self) -> Vec<FlowSummary> {
        self.flows
            .values()
            .map(|loaded| {
                let flow = &loaded.flow;
                let grants = &flow.grants;
                FlowSummary {
                    name: flow.name.clone(),
                    plugin: flow.plugin.clone(),
                    adapted_from_core_module: loaded.format == PluginFormat::CoreModule,
                    compiled: loaded.cache.to_string(),
                    hooks: loaded.implemented.iter().map(|h| h.to_string()).collect(),
                    integrations: grants
                        .environment
                        .integrations
                        .iter()
                        .map(|(alias, i)| {
                            if *alias == i.name {
                                alias.clone()
                            } else {
                                format!("{alias} = {}", i.name)
                            }
                        })
                        .collect(),
                    secrets: grants.secrets.keys().cloned().collect(),
                    identity_services: grants
                        .services
                        .iter()
                        .map(|(s, id)| format!("{s}:{id}"))
                        .collect(),
                    allowed_hosts: grants.hosts.rules().iter().map(|r| r.to_string()).collect(),
                    reveal_secrets: grants.reveal_secrets,
                    limits: LimitsSummary {
                        memory_mib: flow.limits.memory_bytes >> 20,
                        timeout_ms: flow.limits.timeout.as_millis(),
                    },
                }
            })
            .collect()
    }

    /// Runs one hook of `flow` for `event` in a fresh instance.
    pub async fn run_hook(
        &self,
        flow: &str,
        hook: HookName,
        event: &EventInput,
    ) -> Result<HookReport, RunError> {
        let Some(loaded) = self.flows.get(flow) else {
            return self.run_unloaded(flow, hook, event);
        };
        let wit_event = event.to_wit(&loaded.flow, hook)?;
        let started = Instant::now();
        if !loaded.implemented.contains(&hook) {
            return Ok(HookReport {
                flow: flow.to_string(),
                hook,
                ran: false,
                outcome: Ok(Decision::Continue),
                logs: Vec::new(),
                refusals: Vec::new(),
                http_calls: Vec::new(),
                elapsed: started.elapsed(),
                prepared_ahead: false,
            });
        }
        let limits = &loaded.flow.limits;
        let failure = |kind| HookFailure {
            flow: flow.to_string(),
            hook: hook.to_string(),
            kind,
        };
        let ready = loaded.take_ready();
        let prepared_ahead = ready.is_some();
        let (mut store, ready_instance, stdout, stderr) = match ready {
            Some(ready) => (
                ready.store,
                Some(ready.instance),
                ready.stdout,
                ready.stderr,
            ),
            None => {
                let Some(slot) = self.stores.slot(started + limits.timeout).await else {
                    return Ok(HookReport {
                        flow: flow.to_string(),
                        hook,
                        ran: false,
                        outcome: Err(failure(FailureKind::Host {
                            message: format!(
                                "every instance slot stayed busy for limits.timeout_ms ({} ms)",
                                limits.timeout.as_millis()
                            ),
                        })),
                        logs: Vec::new(),
                        refusals: Vec::new(),
                        http_calls: Vec::new(),
                        elapsed: started.elapsed(),
                        prepared_ahead,
                    });
                };
                let (store, stdout, stderr) = self.stores.new_store(loaded, slot);
                (store, None, stdout, stderr)
            }
        };
        arm(&mut store, limits.timeout, started);
        let running = Running::start(&self.stores.running);
        self.prepare_next(loaded);
        let timeout = limits.timeout;
        let export = loaded.hook_exports[&hook];
        // Made here only when no instance was made ahead (rare): cloning it costs atomics.
        let instance = match ready_instance {
            Some(instance) => Ok(instance),
            None => Err(loaded.pre.instance_pre().clone()),
        };
        // Owns the store while it runs, so `sched` can finish it on the wasm pool.
        let call: sched::Work<_> = Box::pin(async move {
            let result = tokio::time::timeout(timeout, async {
                let instance = match instance {
                    Ok(instance) => instance,
                    Err(pre) => pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(fault::at_instantiation)?,
                };
                call_hook(instance, &mut store, &export, &wit_event).await
            })
            .await;
            (store, result)
        });
        let (mut store, result) = sched::run(&loaded.share, call).await;
        let outcome = match result {
            Err(_elapsed) => Err(failure(FailureKind::Deadline {
                timeout_ms: limits.timeout.as_millis(),
            })),
            Ok(Err(error)) => Err(failure(fault::classify(
                &error,
                store.data().memory.exceeded,
                limits,
                &stderr,
            ))),
            Ok(Ok(Err(message))) => Err(failure(FailureKind::PluginError {
                message: budget::cut(&message, MAX_MESSAGE_BYTES).into_owned(),
            })),
            Ok(Ok(Ok(decision))) => {
                let decision = Decision::from_wit(decision);
                if decision.allowed_for(hook) {
                    Ok(decision)
                } else {
                    Err(failure(FailureKind::InvalidDecision {
                        decision: decision.kind().to_string(),
                    }))
                }
            }
        };
        let state = store.data_mut();
        let mut logs = state.log.finish();
        logs.extend(stdout.lines(LogSource::Stdout));
        logs.extend(stderr.lines(LogSource::Stderr));
        if state.http.calls_dropped > 0 {
            logs.push(LogLine {
                level: crate::log::LogLevel::Warn,
                source: LogSource::Host,
                message: format!(
                    "{} more HTTP call(s) not recorded: at most {} are kept per event, within {} KiB",
                    state.http.calls_dropped,
                    http::MAX_RECORDED_CALLS,
                    budget::CALL_BYTES >> 10
                ),
            });
        }
        let mut refusals = state.integrations.refusals.finish();
        refusals.extend(state.secrets.refusals.finish());
        refusals.extend(state.identities.refusals.finish());
        refusals.extend(state.http.refusals.finish());
        let http_calls = std::mem::take(&mut state.http.calls);
        // Freeing a store later saves the answer that time only when the host is otherwise
        // idle; under load it is work like any other, so it is done at once.
        if running.others() {
            drop(store);
        } else {
            self.free_later(loaded, store);
        }
        drop(running);
        Ok(self.redacted(HookReport {
            flow: flow.to_string(),
            hook,
            ran: true,
            outcome,
            logs,
            refusals,
            http_calls,
            elapsed: started.elapsed(),
            prepared_ahead,
        }))
    }

    /// The report of a hook of `flow` when its plugin did not load: a failure, nothing run.
    fn run_unloaded(
        &self,
        flow: &str,
        hook: HookName,
        event: &EventInput,
    ) -> Result<HookReport, RunError> {
        let (Some(failed), Some(config)) = (self.failed.get(flow), self.config.flow(flow)) else {
            return Err(RunError::UnknownFlow {
                flow: flow.to_string(),
                known: self
                    .config
                    .flows
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        // The same checks as a loaded flow's, so a bad event is refused the same way.
        event.to_wit(config, hook)?;
        Ok(HookReport {
            flow: flow.to_string(),
            hook,
            ran: false,
            outcome: Err(HookFailure {
                flow: flow.to_string(),
                hook: hook.to_string(),
                kind: FailureKind::NotLoaded {
                    message: failed.message.clone(),
                    blame: failed.blame,
                },
            }),
            logs: Vec::new(),
            refusals: Vec::new(),
            http_calls: Vec::new(),
            elapsed: Duration::ZERO,
            prepared_ahead: false,
        })
    }

    /// Starts making `loaded`'s next instance in the background, unless one is being made
    /// or there is no async runtime to make it on.
    fn prepare_next(&self, loaded: &Arc<LoadedFlow>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if loaded.preparing.swap(true, Ordering::AcqRel) {
            return;
        }
        let stores = self.stores.clone();
        let loaded = loaded.clone();
        runtime.spawn(async move {
            loop {
                drop(loaded.take_finished());
                if !loaded.has_ready()
                    && let Some(prepared) = stores.prepare(&loaded).await
                {
                    *loaded.ready.lock().unwrap_or_else(|p| p.into_inner()) = Some(prepared);
                }
                loaded.preparing.store(false, Ordering::Release);
                // A store finished after the drain above, whose event saw this task still
                // running and so left it here: free it now rather than at the next event.
                if !loaded.has_finished() || loaded.preparing.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
        });
    }

    /// Hands a finished event's store to the background task to free after the answer.
    /// Without an async runtime it is freed here.
    fn free_later(&self, loaded: &Arc<LoadedFlow>, store: Store<InstanceState>) {
        if tokio::runtime::Handle::try_current().is_err() {
            return drop(store);
        }
        loaded
            .finished
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(store);
        self.prepare_next(loaded);
    }

    fn redacted(&self, mut report: HookReport) -> HookReport {
        // Built now, so it knows values fetched during this very hook.
        let r = &self.stores.secrets.redactor();
        // Everything here was cut to its bound when kept (see `budget`): a value's start left
        // at a cut is redacted too, and text `[REDACTED]` made longer is cut back.
        let message = |text: String| r.redact_within(&text, MAX_MESSAGE_BYTES);
        report.outcome = match report.outcome {
            Ok(d) => Ok(d.map_text(message)),
            Err(mut f) => {
                f.kind = match f.kind {
                    FailureKind::Trap { message: m } => FailureKind::Trap {
                        message: message(m),
                    },
                    FailureKind::PluginError { message: m } => FailureKind::PluginError {
                        message: message(m),
                    },
                    FailureKind::Misuse { message: m } => FailureKind::Misuse {
                        message: message(m),
                    },
                    FailureKind::Host { message: m } => FailureKind::Host {
                        message: message(m),
                    },
                    other => other,
                };
                Err(f)
            }
        };
        for line in &mut report.logs {
            line.message = r.redact_cut(&line.message);
        }
        // A plugin can put a value it was shown into a host name, a secret id or an alias;
        // refusals and calls quote those back.
        for refusal in &mut report.refusals {
            refusal.detail = r.redact_within(&refusal.detail, MAX_REFUSAL_BYTES);
        }
        for call in &mut report.http_calls {
            call.origin = r.redact_within(&call.origin, MAX_URL_PART_BYTES);
            call.path = r.redact_within(&call.path, MAX_URL_PART_BYTES);
        }
        report
    }
}

async fn call_hook(
    instance: Instance,
    store: &mut Store<InstanceState>,
    export: &ComponentExportIndex,
    event: &crate::bindings::Event,
) -> wasmtime::Result<Result<crate::bindings::Decision, String>> {
    type Hook<'a> = (&'a crate::bindings::Event,);
    type Answer = (Result<crate::bindings::Decision, String>,);
    // The export's type was checked when the plugin was loaded: not finding it is the host's.
    let hook = instance
        .get_typed_func::<Hook<'_>, Answer>(&mut *store, export)
        .map_err(|e| e.context(HostFault("cannot find the hook's export".into())))?;
    let (answer,) = hook.call_async(&mut *store, (event,)).await?;
    Ok(answer)
}

/// Where each hook is among the plugin's exports (all present: `PluginPre::new` checked).
fn hook_exports(
    pre: &PluginPre<InstanceState>,
) -> Result<BTreeMap<HookName, ComponentExportIndex>, String> {
    let component = pre.instance_pre().component();
    let interface = format!("{}/hooks@{}", plugin::WIT_PACKAGE, plugin::WIT_VERSION);
    let hooks = component
        .get_export_index(None, &interface)
        .ok_or_else(|| format!("does not export {interface}"))?;
    HookName::ALL
        .into_iter()
        .map(|hook| {
            let name = hook.as_str().replace('_', "-");
            component
                .get_export_index(Some(&hooks), &name)
                .map(|export| (hook, export))
                .ok_or_else(|| format!("does not export {interface}#{name}"))
        })
        .collect()
}

//! The one wasmtime engine: its instance pool, the epoch ticker that drives deadlines and
//! `sched`, the linker with every capability, and the plugins compiled for it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::instance::InstanceState;
use super::report::{Blame, StartError};
use crate::capabilities::cache::CacheInstance;
use crate::capabilities::http::HttpInstance;
use crate::capabilities::identities::IdentitiesInstance;
use crate::capabilities::integrations::IntegrationsInstance;
use crate::capabilities::link;
use crate::capabilities::log::LogInstance;
use crate::capabilities::secrets::SecretsInstance;
use crate::runtime::plugin::{CacheOutcome, PluginCache, PluginFormat, root_message};
use crate::runtime::sched::EPOCH_TICK;

/// Instances hooks may run at once across all flows.
pub const MAX_LIVE_INSTANCES: u32 = 1000;

/// Room for instances made ahead (and not yet taken by an event) beside `max` run by hooks:
/// a sixteenth, so an engine bounded to a few instances makes none ahead.
pub(crate) fn prepared_room(max: u32) -> u32 {
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
pub(crate) fn engine(copy_on_write: bool) -> Result<Engine, StartError> {
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

pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<InstanceState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    crate::runtime::bindings::warden::plugin::types::add_to_linker::<
        _,
        wasmtime::component::HasSelf<_>,
    >(&mut linker, |s: &mut InstanceState| s)?;
    link::<LogInstance>(&mut linker)?;
    link::<SecretsInstance>(&mut linker)?;
    link::<IntegrationsInstance>(&mut linker)?;
    link::<IdentitiesInstance>(&mut linker)?;
    link::<HttpInstance>(&mut linker)?;
    link::<CacheInstance>(&mut linker)?;
    Ok(linker)
}

impl crate::runtime::bindings::warden::plugin::types::Host for InstanceState {}

/// Advances the engine's epoch so deadlines fire, and counts the ticks for `sched`; stops
/// with the `Warden`.
pub(crate) struct EpochTicker {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) ticks: Arc<AtomicU64>,
}

impl EpochTicker {
    pub(crate) fn start(engines: &[&Engine]) -> Self {
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
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    /// For plugins smaller than [`LARGE_PLUGIN_BYTES`]: memory initialised by copying.
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<InstanceState>,
    /// For larger plugins (Python's interpreter): memory images mapped copy-on-write.
    pub(crate) large: Engine,
    pub(crate) large_linker: Linker<InstanceState>,
    /// Held while compiling, so concurrent starts compile a plugin once.
    pub(crate) compiled:
        tokio::sync::Mutex<HashMap<PathBuf, (Component, PluginFormat, CacheOutcome)>>,
    /// One permit per instance a hook may make: a hook waits for a free one (within its
    /// deadline) instead of failing when the pool is full.
    pub(crate) slots: Arc<Semaphore>,
    /// Permits for instances made ahead, apart from `slots`, so an idle flow's ready
    /// instance never keeps another flow's hook waiting.
    pub(crate) prepared_slots: Arc<Semaphore>,
    pub(crate) ticker: EpochTicker,
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

    pub(crate) async fn compile(
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

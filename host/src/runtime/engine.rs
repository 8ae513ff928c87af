//! The wasmtime engines, one per kind of plugin (memory initialised by copying, or mapped
//! copy-on-write), each made when the first plugin of its kind is compiled: its instance pool,
//! the linker with every capability, and the plugins compiled for it; and the epoch ticker
//! that drives deadlines and `sched`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::instance::InstanceState;
use super::report::{Blame, StartError};
use crate::Unpoisoned;
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

/// Whether the plugin at `path` is compiled for the engine that maps memory images.
fn is_large(path: &std::path::Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() >= LARGE_PLUGIN_BYTES)
}

/// Core instances the pool budgets per component instance: a Python component instantiates
/// 14 core modules (the interpreter, its libraries, the WASI shims), a Rust one 3.
pub const CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// Linear memories and tables the pool budgets per component instance: Rust and Python
/// plugins define one memory and two tables.
pub const MEMORIES_PER_COMPONENT: u32 = 2;
pub const TABLES_PER_COMPONENT: u32 = 4;

/// An engine whose instances come from a pool, so a fresh instance per event costs
/// microseconds; `copy_on_write` for large plugins ([`LARGE_PLUGIN_BYTES`]). Slots are sized
/// for the largest `memory_mib` a config may set (the address space is only reserved); each
/// flow's own limit is enforced by its store's limiter.
pub(crate) fn engine(copy_on_write: bool) -> Result<Engine, String> {
    let largest_memory: u64 = crate::config::MAX_MEMORY_MIB << 20;
    // The pooling allocator reserves (virtual) room for both kinds up front.
    let n = MAX_LIVE_INSTANCES + prepared_room(MAX_LIVE_INSTANCES);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(n * MEMORIES_PER_COMPONENT)
        .total_tables(n * TABLES_PER_COMPONENT)
        .total_stacks(n)
        // Per component no more than its share of those totals, so one flow's plugin (with
        // many nested modules, memories or tables) cannot take other flows' instances; a
        // plugin over a cap is refused when it loads, naming it.
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(usize::try_from(largest_memory).unwrap_or(usize::MAX))
        // Resetting a slot with memset instead of madvise keeps the pages a plugin touches on
        // every event (its stack, its heap's start) resident: no page faults, no TLB shootdowns.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut wasm = compiler_config(copy_on_write);
    wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm).map_err(|e| root_message(&e))
}

/// What code compiled for an engine depends on, shared by [`engine`] and
/// [`compiling_engine`] so that what one compiles the other loads.
fn compiler_config(copy_on_write: bool) -> wasmtime::Config {
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        // Measured (BENCHMARKS.md): for small plugins, copying data segments into a slot
        // kept resident beats copy-on-write images, whose reset is an madvise and a TLB
        // shootdown per event; for Python's interpreter heap, mapping the image wins.
        .memory_init_cow(copy_on_write);
    wasm
}

/// An engine that only compiles, for the child process a plugin is compiled in
/// (`plugin::isolated`): what it makes loads into [`engine`]`(copy_on_write)`, and it
/// reserves no pool, so the child's address space can be bounded.
pub(crate) fn compiling_engine(copy_on_write: bool) -> Result<Engine, String> {
    Engine::new(&compiler_config(copy_on_write)).map_err(|e| root_message(&e))
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
    /// Ticks the engines of `kinds` made so far; ends when `kinds` is dropped or stopped.
    fn start(kinds: std::sync::Weak<EngineKinds>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(AtomicU64::new(0));
        let (flag, counted) = (stop.clone(), ticks.clone());
        std::thread::Builder::new()
            .name("warden-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    // Counted first: a callback this tick fires sees it.
                    counted.fetch_add(1, Ordering::Relaxed);
                    let Some(kinds) = kinds.upgrade() else {
                        break;
                    };
                    for kind in [&kinds.copying, &kinds.mapping] {
                        if let Some(Ok(kind)) = kind.get() {
                            kind.engine.increment_epoch();
                        }
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
    pub(crate) kinds: Arc<EngineKinds>,
    /// Each plugin file's compile, shared by the loads that ask for it at once (a start's
    /// flows load together, and several may use one file); a failed compile is tried again
    /// by the next load. One per file, so a plugin slow to compile holds up only the flows
    /// that use it.
    pub(crate) compiled: std::sync::Mutex<HashMap<PathBuf, Arc<Compiled>>>,
    /// One permit per instance a hook may make: a hook waits for a free one (within its
    /// deadline) instead of failing when the pool is full.
    pub(crate) slots: Arc<Semaphore>,
    /// Permits for instances made ahead, apart from `slots`, so an idle flow's ready
    /// instance never keeps another flow's hook waiting.
    pub(crate) prepared_slots: Arc<Semaphore>,
    pub(crate) ticker: EpochTicker,
}

type Compiled = tokio::sync::OnceCell<(Component, PluginFormat, CacheOutcome)>;

/// One kind of engine and the linker made for it.
pub(crate) struct EngineKind {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<InstanceState>,
}

/// The two kinds of engine, each made when the first plugin of its kind is compiled: an
/// engine's pool costs milliseconds to reserve and to give back (a thousand stacks, each
/// with a guard page), which a start whose plugins are all of one kind need not pay for the
/// other (BENCHMARKS.md, "The cached start").
pub(crate) struct EngineKinds {
    /// For plugins smaller than [`LARGE_PLUGIN_BYTES`]: memory initialised by copying.
    copying: OnceLock<Result<EngineKind, String>>,
    /// For larger plugins (Python's interpreter): memory images mapped copy-on-write.
    mapping: OnceLock<Result<EngineKind, String>>,
}

impl EngineKinds {
    /// The engine for plugins of this size class, made now if it is the first of its kind.
    pub(crate) fn get(&self, copy_on_write: bool) -> Result<&EngineKind, StartError> {
        let cell = if copy_on_write {
            &self.mapping
        } else {
            &self.copying
        };
        cell.get_or_init(|| {
            let engine = engine(copy_on_write)?;
            let linker = linker(&engine).map_err(|e| root_message(&e))?;
            Ok(EngineKind { engine, linker })
        })
        .as_ref()
        .map_err(|message| StartError::Engine(message.clone()))
    }

    /// Whether `engine` is the one that maps memory images (`Some(true)`) or the one that
    /// copies them (`Some(false)`); `None` for an engine not made here.
    pub(crate) fn mapped(&self, engine: &Engine) -> Option<bool> {
        let made = |cell: &OnceLock<Result<EngineKind, String>>| {
            cell.get()
                .is_some_and(|kind| kind.as_ref().is_ok_and(|k| Engine::same(&k.engine, engine)))
        };
        if made(&self.mapping) {
            Some(true)
        } else if made(&self.copying) {
            Some(false)
        } else {
            None
        }
    }
}

impl SharedEngine {
    pub fn new() -> Result<Self, StartError> {
        Self::with_max_instances(MAX_LIVE_INSTANCES)
    }

    /// A new engine that starts making, on threads of their own, the kinds `config`'s
    /// plugins will be compiled for: a start opens its store meanwhile.
    pub fn for_config(config: &crate::config::Config) -> Result<Self, StartError> {
        let shared = Self::new()?;
        let needed: std::collections::BTreeSet<bool> = config
            .flows
            .values()
            .map(|flow| is_large(&flow.plugin))
            .collect();
        for large in needed {
            let kinds = shared.inner.kinds.clone();
            // Made on first use if the thread cannot start; a failure is reported there.
            let _ = std::thread::Builder::new()
                .name("warden-engine".into())
                .spawn(move || drop(kinds.get(large)));
        }
        Ok(shared)
    }

    /// The wasmtime engine plugins smaller than [`LARGE_PLUGIN_BYTES`] are compiled for.
    pub fn engine(&self) -> Result<&Engine, StartError> {
        Ok(&self.inner.kinds.get(false)?.engine)
    }

    /// An engine whose hooks make at most `max` instances at once (capped at the pool's
    /// [`MAX_LIVE_INSTANCES`]); further hooks wait for a free slot within their deadline.
    /// Instances made ahead have their own room, a sixteenth of `max`.
    pub fn with_max_instances(max: u32) -> Result<Self, StartError> {
        let max = max.min(MAX_LIVE_INSTANCES);
        let kinds = Arc::new(EngineKinds {
            copying: OnceLock::new(),
            mapping: OnceLock::new(),
        });
        Ok(Self {
            inner: Arc::new(EngineInner {
                ticker: EpochTicker::start(Arc::downgrade(&kinds)),
                kinds,
                compiled: Default::default(),
                slots: Arc::new(Semaphore::new(max as usize)),
                prepared_slots: Arc::new(Semaphore::new(prepared_room(max) as usize)),
            }),
        })
    }

    /// Each plugin compiled so far, and how it was obtained.
    pub async fn cache_outcomes(&self) -> Vec<(PathBuf, CacheOutcome)> {
        self.inner
            .compiled
            .lock()
            .unpoisoned()
            .iter()
            .filter_map(|(path, cell)| Some((path.clone(), cell.get()?.2.clone())))
            .collect()
    }

    pub(crate) async fn compile(
        &self,
        path: &std::path::Path,
        cache: &Arc<PluginCache>,
    ) -> Result<(Component, PluginFormat, CacheOutcome), (String, Blame)> {
        let cell = self
            .inner
            .compiled
            .lock()
            .unpoisoned()
            .entry(path.to_path_buf())
            .or_default()
            .clone();
        let compiled = cell
            .get_or_try_init(|| async {
                let large = is_large(path);
                let kinds = self.inner.kinds.clone();
                let owned = path.to_path_buf();
                let cache = cache.clone();
                tokio::task::spawn_blocking(move || {
                    let engine = &kinds
                        .get(large)
                        .map_err(|e| (e.to_string(), Blame::Host))?
                        .engine;
                    cache
                        .load_or_compile(engine, large, &owned)
                        .map_err(|e| (e.message, e.blame))
                })
                .await
                .map_err(|e| (format!("compilation panicked: {e}"), Blame::Host))?
            })
            .await?;
        Ok(compiled.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_is_made_once_when_first_asked_for_and_the_other_kind_not_at_all() {
        let shared = SharedEngine::with_max_instances(4).unwrap();
        let kinds = &shared.inner.kinds;
        assert!(kinds.copying.get().is_none() && kinds.mapping.get().is_none());

        let copying = kinds.get(false).unwrap().engine.clone();
        assert!(Engine::same(&copying, &kinds.get(false).unwrap().engine));
        assert!(
            kinds.mapping.get().is_none(),
            "made without being asked for"
        );
        assert_eq!(kinds.mapped(&copying), Some(false));

        let mapping = kinds.get(true).unwrap().engine.clone();
        assert!(!Engine::same(&copying, &mapping));
        assert_eq!(kinds.mapped(&mapping), Some(true));
        assert_eq!(kinds.mapped(&Engine::default()), None);
    }

    #[test]
    fn what_the_compiling_engine_makes_loads_into_the_pooled_engine_of_its_kind() {
        // The empty component: its header alone.
        let component = b"\0asm\x0d\0\x01\0";
        for copy_on_write in [false, true] {
            let artifact = compiling_engine(copy_on_write)
                .unwrap()
                .precompile_component(component)
                .unwrap();
            let pooled = engine(copy_on_write).unwrap();
            // SAFETY: compiled just above by wasmtime.
            unsafe { Component::deserialize(&pooled, &artifact) }.unwrap();
            let other = engine(!copy_on_write).unwrap();
            // SAFETY: as above; wasmtime refuses it, which is the point.
            let refused = unsafe { Component::deserialize(&other, &artifact) };
            assert!(refused.is_err(), "loaded into the other kind of engine");
        }
    }
}

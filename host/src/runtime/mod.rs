//! The sandbox: one compiled plugin per flow, a fresh store and instance for every event.

pub(crate) mod bindings;
pub mod budget;
pub(crate) mod child;
pub(crate) mod cpu_meter;
pub(crate) mod engine;
pub mod event;
pub(crate) mod exports;
pub mod fault;
pub mod hooks;
pub mod hot_pages;
pub(crate) mod instance;
pub mod lease;
pub mod lift;
pub mod plugin;
pub mod report;
pub(crate) mod sched;
pub(crate) mod stdio;

pub use engine::{
    CORE_INSTANCES_PER_COMPONENT, LARGE_PLUGIN_BYTES, MAX_LIVE_INSTANCES, MEMORIES_PER_COMPONENT,
    SharedEngine,
};
pub use report::{
    Blame, FailureKind, FlowSummary, HookFailure, HookReport, LimitsSummary, LoadError, RunError,
    StartError,
};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exports::{CheckedHook, call_hook, hook_exports, hooks_export};
use hot_pages::HotPages;

use wasmtime::Store;
use wasmtime::component::ComponentExportIndex;

use crate::Unpoisoned;
use crate::capabilities::http::{HttpState, Transport};
use crate::capabilities::{AppState, Outcome};
use crate::config::{Config, Flow};
use crate::runtime::bindings::PluginPre;
use crate::runtime::cpu_meter::CpuMeter;
use crate::runtime::event::EventInput;
use crate::runtime::fault::HostFault;
use crate::runtime::hooks::{Decision, HookName};
use crate::runtime::plugin::{PluginCache, PluginFormat, root_message};
use crate::runtime::sched::FlowShare;
use crate::secrets::SecretStore;
/// Users' identities, in whichever store the config names (`store::backend`).
type IdentityStore = dyn crate::store::backend::Backend;
use instance::*;

/// The most CPU time the calls warden makes while loading a plugin (instantiating it and
/// asking which hooks it implements) may use, whatever the flow's `timeout_ms`: they do no
/// work a plugin needs time for, and a plugin that spins there must not hold up start-up or a
/// reload for minutes. CPU time, not wall time ([`cpu_meter`]): flows load at once, beside
/// other plugins' compiles, and a load that waited for a CPU on a busy machine did nothing
/// wrong. Also the longest a host call (HTTP) made while loading may take.
pub(crate) const LOAD_CALL_LIMIT: Duration = Duration::from_secs(2);

/// The longest a plugin's load calls may take in all, waiting for an instance slot or a CPU
/// included: what bounds a load on a machine too busy to give it [`LOAD_CALL_LIMIT`].
pub(crate) const LOAD_WAIT_LIMIT: Duration = Duration::from_secs(30);

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

impl Warden {
    /// Compiles every flow's plugin and opens the store; every plugin problem is
    /// reported, not just the first.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let engine = SharedEngine::for_config(&config)?;
        let store = crate::store::backend::open(&config).await?;
        let secrets = Arc::new(SecretStore::new(&config.secrets));
        let options = StartOptions {
            engine: Some(engine),
            ..StartOptions::default()
        };
        Self::start_with(config, store, secrets, options).await
    }

    pub async fn start_with_store(
        config: Config,
        store: Arc<IdentityStore>,
    ) -> Result<Self, StartError> {
        let secrets = Arc::new(SecretStore::new(&config.secrets));
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
            None => HttpState::new(&config.http, secrets.clone())
                .map_err(|e| StartError::Engine(e.to_string()))?,
        };
        let config = Arc::new(config);
        let mut warden = Self {
            plugin_cache: Arc::new(
                match &config.cache_dir {
                    Some(dir) => PluginCache::new(dir.clone()),
                    None => PluginCache::without_folder(
                        "no cache folder: set [cache] dir, or XDG_CACHE_HOME or HOME",
                    ),
                }
                .compiling_within(config.compile.clone()),
            ),
            stores: Arc::new(StoreMaker {
                slots: shared.inner.slots.clone(),
                prepared_slots: shared.inner.prepared_slots.clone(),
                app: AppState {
                    identities: store,
                    http,
                    cache: Arc::default(),
                    secrets,
                },
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
                    // It may quote what the plugin printed before it failed (a panic's text,
                    // cut to a bound): a value's start left at the cut is redacted too, and
                    // control characters are escaped, since `warden check`, `hook` and
                    // `test` print it on a line of their own.
                    let message = warden.stores.app.secrets.redactor().redact_cut(&message);
                    let error = LoadError {
                        flow: flow.name.clone(),
                        plugin: flow.plugin.clone(),
                        message: crate::cli::escape::escape_control(&message).into_owned(),
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
        let kinds = &self.shared.inner.kinds;
        let copy_on_write = match kinds.mapped(component.engine()) {
            Some(copy_on_write) => copy_on_write,
            None => {
                return Err((
                    "compiled for an engine warden did not make".into(),
                    Blame::Host,
                ));
            }
        };
        let linker = &kinds
            .get(copy_on_write)
            .map_err(|e| (e.to_string(), Blame::Host))?
            .linker;
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
        let unchecked_hooks = hook_exports(&pre).map_err(|message| (message, Blame::Plugin))?;
        let implemented_export =
            hooks_export(&pre, "implemented").map_err(|message| (message, Blame::Plugin))?;
        let mut loaded = LoadedFlow {
            flow: flow.clone(),
            share: Arc::new(FlowShare::new(self.shared.inner.ticker.ticks.clone())),
            pre,
            hook_exports: BTreeMap::new(),
            implemented_export,
            implemented: BTreeSet::new(),
            format,
            cache,
            ready: Mutex::new(None),
            finished: Mutex::new(Vec::new()),
            preparing: AtomicBool::new(false),
            hot_pages: copy_on_write.then(|| {
                HotPages::new(usize::try_from(flow.limits.memory_bytes).unwrap_or(usize::MAX))
            }),
        };
        (loaded.implemented, loaded.hook_exports) =
            self.implemented_hooks(&loaded, unchecked_hooks).await?;
        Ok(loaded)
    }

    /// Asks the plugin once, at load, which hooks it implements, within [`LOAD_CALL_LIMIT`]
    /// of CPU time at most and [`LOAD_WAIT_LIMIT`] in all; and checks the type of each hook's
    /// export on that instance.
    async fn implemented_hooks(
        &self,
        loaded: &LoadedFlow,
        hooks: BTreeMap<HookName, ComponentExportIndex>,
    ) -> Result<(BTreeSet<HookName>, BTreeMap<HookName, CheckedHook>), (String, Blame)> {
        let limits = &loaded.flow.limits;
        let limit = limits.timeout.min(LOAD_CALL_LIMIT);
        let within = format!(
            "within {} ms of CPU time (limits.timeout_ms, capped at {} ms while loading) and {} s in all",
            limit.as_millis(),
            LOAD_CALL_LIMIT.as_millis(),
            LOAD_WAIT_LIMIT.as_secs()
        );
        let started = Instant::now();
        let Some(slot) = self.stores.slot(started + LOAD_WAIT_LIMIT).await else {
            let message = format!(
                "no instance slot became free within {} s",
                LOAD_WAIT_LIMIT.as_secs()
            );
            return Err((message, Blame::Host));
        };
        let (mut store, _, stderr) = self.stores.new_store(loaded, slot);
        // HTTP requests get `limit` of wall time, as in a hook; the plugin gets `limit` of
        // CPU time, and the epoch callback's wall deadline only bounds the waiting.
        arm(&mut store, limit, started);
        let meter = CpuMeter::new(limit);
        let schedule = &mut store.data_mut().schedule;
        schedule.set_deadline(started + LOAD_WAIT_LIMIT);
        schedule.set_cpu_limit(meter.clone());
        let pre = loaded.pre.instance_pre().clone();
        let export = loaded.implemented_export;
        let ask: sched::Work<_> = meter.meter(Box::pin(async move {
            let answer = tokio::time::timeout_at((started + LOAD_WAIT_LIMIT).into(), async {
                let instance = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(fault::at_instantiation)?;
                // Lifted in place: a list of any length costs the host a set of twelve.
                let implemented = instance
                    .get_typed_func::<(), (lift::Implemented,)>(&mut store, &export)
                    .map_err(|e| e.context(HostFault("cannot find `implemented`".into())))?;
                let (implemented,) = implemented.call_async(&mut store, ()).await?;
                // `PluginPre::new` checked the exports against the generated bindings; this
                // checks them against the types events are called with, which are the host's.
                let checked = hooks
                    .into_iter()
                    .map(|(hook, export)| {
                        let checked = CheckedHook::check(&instance, &mut store, export);
                        let context = || HostFault(format!("hook {hook} cannot be called"));
                        Ok((hook, checked.map_err(|e| e.context(context()))?))
                    })
                    .collect::<wasmtime::Result<BTreeMap<_, _>>>()?;
                wasmtime::Result::Ok((implemented, checked))
            })
            .await;
            (store, answer)
        }));
        let (store, answer) = sched::run(&loaded.share, ask).await;
        let asked = "when asked which hooks it implements";
        match answer {
            Ok(Ok((implemented, checked))) => Ok((implemented.hooks, checked)),
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
        &self.stores.app.identities
    }

    pub fn secret_store(&self) -> &Arc<SecretStore> {
        &self.stores.app.secrets
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
        self.run_hook_leased(flow, hook, event, None).await
    }

    /// [`Warden::run_hook`] for a request claimed under `lease`: once it has ended, the
    /// hook's HTTP requests and identities stored are refused ([`lease`]).
    pub async fn run_hook_leased(
        &self,
        flow: &str,
        hook: HookName,
        event: &EventInput,
        lease: Option<&lease::Lease>,
    ) -> Result<HookReport, RunError> {
        let Some(loaded) = self.flows.get(flow) else {
            return self.run_unloaded(flow, hook, event);
        };
        let wit_event = event.to_wit(&loaded.flow, hook)?;
        let started = Instant::now();
        if !loaded.implemented.contains(&hook) {
            return Ok(HookReport::not_run(flow, hook, Ok(Decision::Continue)));
        }
        let limits = &loaded.flow.limits;
        let failure = |kind| HookFailure {
            flow: flow.to_string(),
            hook: hook.to_string(),
            kind,
        };
        let ready = loaded.take_ready();
        let prepared_ahead = ready.is_some();
        let (mut store, ready_instance, stdout, stderr, memory) = match ready {
            Some(ready) => (
                ready.store,
                Some(ready.instance),
                ready.stdout,
                ready.stderr,
                ready.memory,
            ),
            None => {
                let Some(slot) = self.stores.slot(started + limits.timeout).await else {
                    let busy = FailureKind::Host {
                        message: format!(
                            "every instance slot stayed busy for limits.timeout_ms ({} ms)",
                            limits.timeout.as_millis()
                        ),
                    };
                    let report = HookReport::not_run(flow, hook, Err(failure(busy)));
                    return Ok(HookReport {
                        elapsed: started.elapsed(),
                        ..report
                    });
                };
                let (store, stdout, stderr) = self.stores.new_store(loaded, slot);
                (store, None, stdout, stderr, None)
            }
        };
        arm(&mut store, limits.timeout, started);
        store.data_mut().begin_hook(lease.cloned());
        let running = Running::start(&self.stores.running);
        let timeout = limits.timeout;
        let export = loaded.hook_exports[&hook];
        // Made here only when no instance was made ahead (rare): cloning it costs atomics.
        let instance = match ready_instance {
            Some(instance) => Ok(instance),
            None => Err(loaded.pre.instance_pre().clone()),
        };
        // Owns the store while it runs, so `sched` can finish it on the wasm pool.
        // The deadline counts from the hook's start, its wait for a slot included: a host
        // call that does not know the deadline (a secret AWS is slow to give) must not run
        // the whole timeout again after the wait.
        let deadline = tokio::time::Instant::from_std(started + timeout);
        let call: sched::Work<_> = Box::pin(async move {
            let result = tokio::time::timeout_at(deadline, async {
                let instance = match instance {
                    Ok(instance) => instance,
                    Err(pre) => pre
                        .instantiate_async(&mut store)
                        .await
                        .map_err(fault::at_instantiation)?,
                };
                call_hook(instance, &mut store, export, &wit_event).await
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
                message: lift::message(&message),
            })),
            Ok(Ok(Ok(answer))) => {
                let decision = answer.into_decision();
                if decision.allowed_for(hook) {
                    Ok(decision)
                } else {
                    Err(failure(FailureKind::InvalidDecision {
                        decision: decision.kind().to_string(),
                    }))
                }
            }
        };
        if let (Some(hot_pages), Some(memory)) = (&loaded.hot_pages, memory)
            && hot_pages.learning()
        {
            hot_pages.learn(memory, store.data().memory.grown_to);
        }
        let Outcome {
            logs,
            refusals,
            http_calls,
            host_fault,
        } = store.data_mut().finish(&stdout, &stderr);
        // A plugin failing after a capability failed on the host's side (the WIT tells it
        // so: `store`, `unavailable`) passed the host's failure on: the host's to answer for.
        let outcome = match (outcome, host_fault) {
            (Err(mut failure), Some(fault))
                if matches!(
                    failure.kind,
                    FailureKind::PluginError { .. } | FailureKind::Trap { .. }
                ) =>
            {
                failure.kind = FailureKind::Host {
                    message: format!(
                        "{fault}; the plugin then failed: {}",
                        failure.kind.describe(hook.as_str())
                    ),
                };
                Err(failure)
            }
            (outcome, _) => outcome,
        };
        // Freeing a store later saves the answer that time only when the host is otherwise
        // idle; under load it is work like any other, so it is done at once. The next
        // instance is made after the call, not during it: made while the hook waited for a
        // reply, on the thread that would take the reply, it held the reply up (a Python
        // seed hook 7.9 ms against 3.0 ms, the Rust VictorOps hook 236 against 177-212 µs;
        // BENCHMARKS.md).
        if running.others() {
            drop(store);
            self.prepare_next(loaded);
        } else {
            self.free_later(loaded, store);
        }
        drop(running);
        let redactor = self.stores.app.secrets.redactor();
        Ok(HookReport {
            flow: flow.to_string(),
            hook,
            ran: true,
            outcome,
            logs,
            refusals,
            http_calls,
            elapsed: started.elapsed(),
            prepared_ahead,
        }
        .redacted(&redactor))
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
        let not_loaded = FailureKind::NotLoaded {
            message: failed.message.clone(),
            blame: failed.blame,
        };
        let failure = HookFailure {
            flow: flow.to_string(),
            hook: hook.to_string(),
            kind: not_loaded,
        };
        Ok(HookReport::not_run(flow, hook, Err(failure)))
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
                    *loaded.ready.lock().unpoisoned() = Some(prepared);
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
    /// Without an async runtime it is freed here, and so it is while the task makes an
    /// instance ahead: that may take as long as the plugin makes it (a large plugin is asked
    /// `implemented` then), and stores left to it meanwhile would hold their pool slots,
    /// which every flow shares, and their memory until it ends.
    fn free_later(&self, loaded: &Arc<LoadedFlow>, store: Store<InstanceState>) {
        if tokio::runtime::Handle::try_current().is_err()
            || loaded.preparing.load(Ordering::Acquire)
        {
            return drop(store);
        }
        loaded.finished.lock().unpoisoned().push(store);
        self.prepare_next(loaded);
    }
}

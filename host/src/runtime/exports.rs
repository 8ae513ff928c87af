//! A plugin's hook exports: found by name and type-checked once, when its flow loads, so
//! that an event's call neither looks its hook up nor walks its types again.

use std::collections::BTreeMap;

use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, Instance};

use crate::runtime::bindings::PluginPre;
use crate::runtime::fault::HostFault;
use crate::runtime::hooks::HookName;
use crate::runtime::instance::InstanceState;
use crate::runtime::{lift, plugin};

/// What a hook export takes and gives: the event, and its answer lifted as [`lift::Answer`] (a
/// reason or an error of any length is copied only as far as the report keeps it).
type HookParams<'a> = (&'a crate::runtime::bindings::Event,);
type HookResults = (Result<lift::Answer, lift::Message>,);

/// A hook's export whose type was checked once, at load, on an instance of the plugin. Every
/// instance of a component has its types, so an event's call skips wasmtime's check, a walk
/// over the event's and the answer's record types that cost about a microsecond per event
/// (BENCHMARKS.md, "A fresh machine, what the targets then mean").
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckedHook(ComponentExportIndex);

impl CheckedHook {
    pub(crate) fn check(
        instance: &Instance,
        store: &mut Store<InstanceState>,
        export: ComponentExportIndex,
    ) -> wasmtime::Result<Self> {
        instance.get_typed_func::<HookParams<'_>, HookResults>(&mut *store, &export)?;
        Ok(Self(export))
    }
}

/// Calls the hook at `export`.
pub(crate) async fn call_hook(
    instance: Instance,
    store: &mut Store<InstanceState>,
    export: CheckedHook,
    event: &crate::runtime::bindings::Event,
) -> wasmtime::Result<Result<lift::Answer, lift::Message>> {
    // The export was found and checked at load: not finding it is the host's fault.
    let func = instance
        .get_func(&mut *store, export.0)
        .ok_or_else(|| HostFault::error("cannot find the hook's export"))?;
    // SAFETY: `CheckedHook::check` type-checked this export against these types on an
    // instance of the same component. A component's types are its instances' except for
    // resources, which are made per instance, and a hook's event and answer hold none.
    let hook = unsafe {
        wasmtime::component::TypedFunc::<HookParams<'_>, HookResults>::new_unchecked(func)
    };
    let (answer,) = hook.call_async(&mut *store, (event,)).await?;
    Ok(answer)
}

/// Where each hook is among the plugin's exports (all present: `PluginPre::new` checked).
/// Where `name` is among the functions of the plugin's `hooks` export.
pub(crate) fn hooks_export(
    pre: &PluginPre<InstanceState>,
    name: &str,
) -> Result<ComponentExportIndex, String> {
    let component = pre.instance_pre().component();
    let interface = format!("{}/hooks@{}", plugin::WIT_PACKAGE, plugin::WIT_VERSION);
    let hooks = component
        .get_export_index(None, &interface)
        .ok_or_else(|| format!("does not export {interface}"))?;
    component
        .get_export_index(Some(&hooks), name)
        .ok_or_else(|| format!("does not export {interface}#{name}"))
}

pub(crate) fn hook_exports(
    pre: &PluginPre<InstanceState>,
) -> Result<BTreeMap<HookName, ComponentExportIndex>, String> {
    HookName::ALL
        .into_iter()
        .map(|hook| Ok((hook, hooks_export(pre, &hook.as_str().replace('_', "-"))?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::Config;
    use crate::runtime::Warden;
    use crate::runtime::instance::arm;

    /// A `Warden` with one flow, `trivial`, running the trivial plugin.
    async fn trivial_warden(dir: &std::path::Path) -> Warden {
        let plugin = warden_tests::artifacts::TRIVIAL;
        let text = format!(
            "[store]\npath = \"warden.db\"\n[cache]\ndir = \"cache\"\n[environments.e]\n[flows.trivial]\nenvironment = \"e\"\nplugin = \"{plugin}\"\n"
        );
        let config = Config::parse(&text, &dir.join("warden.toml"), &|_| None).unwrap();
        Warden::start(config).await.unwrap()
    }

    #[tokio::test]
    async fn hook_exports_are_checked_once_against_the_types_events_are_called_with() {
        let dir = tempfile::tempdir().unwrap();
        let warden = trivial_warden(dir.path()).await;
        let loaded = &warden.flows["trivial"];
        assert_eq!(loaded.hook_exports.len(), HookName::ALL.len());
        let started = Instant::now();
        let slot = warden.stores.slot(started + Duration::from_secs(5)).await;
        let (mut store, _, _) = warden.stores.new_store(loaded, slot.unwrap());
        arm(&mut store, Duration::from_secs(5), started);
        let pre = loaded.pre.instance_pre();
        let instance = pre.instantiate_async(&mut store).await.unwrap();
        let on_request = loaded.hook_exports[&HookName::OnRequest].0;
        assert!(CheckedHook::check(&instance, &mut store, on_request).is_ok());
        // `implemented` takes no event: the check that lets events skip wasmtime's refuses it.
        let wrong = CheckedHook::check(&instance, &mut store, loaded.implemented_export);
        assert!(wrong.is_err());
    }
}

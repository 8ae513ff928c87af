//! `warden:plugin/integrations`: the flow environment's integrations, by alias.

use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::{LinkerInstance, ResourceTable, WasmStr};

use super::{AppState, Capability, Outcome};
use crate::capabilities::refusal::{Refusal, RefusalKind, Refusals};
use crate::capabilities::secrets;
use crate::config::Flow;
use crate::runtime::bindings::warden::plugin::integrations::Integration;
use crate::runtime::budget::{EventBudget, MAX_NAME_BYTES};
use crate::runtime::instance::InstanceState;
use crate::runtime::lift::Passed;

pub struct IntegrationsInstance {
    flow: Arc<Flow>,
    refusals: Refusals,
}

impl IntegrationsInstance {
    pub fn new(flow: Arc<Flow>, budget: EventBudget) -> Self {
        Self {
            flow,
            refusals: Refusals::new(budget),
        }
    }

    /// How much of an alias the plugin asks for is copied: enough to match the longest
    /// alias and to quote it in a refusal. A longer one matches nothing.
    fn alias_bytes(&self) -> usize {
        let aliases = self.flow.grants.environment.integrations.keys();
        aliases
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(MAX_NAME_BYTES)
    }

    /// The integration under `alias`, its secrets as handles in `table`; `None`, with a
    /// refusal recorded, when the environment has none under that alias.
    pub fn get(
        &mut self,
        table: &mut ResourceTable,
        alias: &Passed,
    ) -> wasmtime::Result<Option<Integration>> {
        let environment = &self.flow.grants.environment;
        let found = alias.whole().and_then(|a| environment.integrations.get(a));
        let Some(integration) = found else {
            let detail = format!(
                "environment `{}` has no integration under alias `{}`",
                environment.name,
                alias.quote()
            );
            self.refusals.push(Refusal {
                kind: RefusalKind::Integration,
                detail,
            });
            return Ok(None);
        };
        let secrets = integration
            .secrets
            .iter()
            .map(|s| secrets::grant_handle(table, s.clone()))
            .collect::<wasmtime::Result<_>>()?;
        Ok(Some(Integration {
            name: integration.name.clone(),
            type_: integration.kind.clone(),
            external_id: integration.external_id.clone(),
            settings: integration
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            secrets,
        }))
    }

    pub fn aliases(&self) -> Vec<String> {
        self.flow
            .grants
            .environment
            .integrations
            .keys()
            .cloned()
            .collect()
    }
}

impl Capability for IntegrationsInstance {
    const INTERFACE: &'static str = "integrations";

    fn instance(flow: &Arc<Flow>, _: &AppState, budget: &EventBudget) -> Self {
        Self::new(flow.clone(), budget.clone())
    }

    fn link(functions: &mut LinkerInstance<'_, InstanceState>) -> wasmtime::Result<()> {
        functions.func_wrap(
            "get",
            |mut store: StoreContextMut<'_, InstanceState>, (alias,): (WasmStr,)| {
                let keep = store.data().integrations.alias_bytes();
                let alias = Passed::read(&store, &alias, keep)?;
                let state = store.data_mut();
                Ok((state.integrations.get(&mut state.table, &alias)?,))
            },
        )?;
        functions.func_wrap(
            "aliases",
            |store: StoreContextMut<'_, InstanceState>, (): ()| {
                Ok((store.data().integrations.aliases(),))
            },
        )
    }

    fn finish(&mut self) -> Outcome {
        Outcome {
            refusals: self.refusals.finish(),
            ..Outcome::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::secrets::SecretHandle;
    use crate::capabilities::testing::Event;

    #[test]
    fn an_alias_of_the_environment_gives_its_integration_and_secret_handles() {
        let mut event = Event::new("");
        let mut integrations: IntegrationsInstance = event.instance();
        let found = integrations
            .get(&mut event.table, &"victorops".into())
            .unwrap()
            .expect("victorops is in the environment");
        assert_eq!(found.name, "victorops");
        assert_eq!(found.type_, "custom");
        assert_eq!(found.external_id, "vo-ext");
        assert_eq!(
            found.settings,
            [(
                "api_url".to_string(),
                "https://api.victorops.test".to_string()
            )]
        );
        assert_eq!(found.secrets.len(), 1);
        let handle: &SecretHandle = event.table.get(&found.secrets[0]).unwrap();
        assert_eq!(handle.secret().id, "vo_key");
        assert_eq!(integrations.aliases(), ["victorops"]);
        assert!(integrations.finish().refusals.is_empty());
    }

    #[test]
    fn an_integration_outside_the_environment_is_refused_and_recorded() {
        let mut event = Event::new("");
        let mut integrations: IntegrationsInstance = event.instance();
        for alias in ["pager", "nothing"] {
            let found = integrations.get(&mut event.table, &alias.into()).unwrap();
            assert!(found.is_none(), "{alias}");
        }
        assert!(event.table.is_empty(), "no handle for a refused alias");
        let refusals = integrations.finish().refusals;
        assert_eq!(refusals.len(), 2);
        assert!(refusals.iter().all(|r| r.kind == RefusalKind::Integration));
        assert_eq!(
            refusals[0].detail,
            "environment `main` has no integration under alias `pager`"
        );
    }

    #[test]
    fn a_huge_alias_is_quoted_cut_with_what_was_dropped() {
        let event = Event::new("");
        let mut integrations: IntegrationsInstance = event.instance();
        let mut table = ResourceTable::new();
        let huge = "a".repeat(1 << 20);
        let asked = Passed::new(&huge, integrations.alias_bytes());
        assert!(integrations.get(&mut table, &asked).unwrap().is_none());
        let refusals = integrations.finish().refusals;
        let detail = &refusals[0].detail;
        assert!(
            detail.contains(crate::runtime::budget::quote(&huge).as_ref()),
            "{detail}"
        );
        let (_, dropped) = crate::runtime::budget::split_marker(detail.trim_end_matches('`'))
            .expect("a cut marker");
        assert!(dropped > (1 << 20) - MAX_NAME_BYTES, "{dropped}");
    }
}

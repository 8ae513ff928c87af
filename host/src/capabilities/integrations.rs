//! `warden:plugin/integrations`: the flow environment's integrations, by alias.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};

use crate::capabilities::refusal::{Refusal, RefusalKind, Refusals};
use crate::capabilities::secrets;
use crate::config::Flow;
use crate::runtime::bindings::warden::plugin::integrations::{self as wit, Integration};
use crate::runtime::budget::{EventBudget, quote};

pub struct IntegrationsInstance {
    flow: Arc<Flow>,
    pub refusals: Refusals,
}

impl IntegrationsInstance {
    pub fn new(flow: Arc<Flow>, budget: EventBudget) -> Self {
        Self {
            flow,
            refusals: Refusals::new(budget),
        }
    }
}

pub struct IntegrationsView<'a> {
    pub instance: &'a mut IntegrationsInstance,
    pub table: &'a mut ResourceTable,
}

impl wit::Host for IntegrationsView<'_> {
    fn get(&mut self, alias: String) -> wasmtime::Result<Option<Integration>> {
        let environment = &self.instance.flow.grants.environment;
        let Some(integration) = environment.integrations.get(&alias) else {
            let detail = format!(
                "environment `{}` has no integration under alias `{}`",
                environment.name,
                quote(&alias)
            );
            self.instance.refusals.push(Refusal {
                kind: RefusalKind::Integration,
                detail,
            });
            return Ok(None);
        };
        let secrets = integration
            .secrets
            .iter()
            .map(|s| secrets::grant_handle(self.table, s.clone()))
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

    fn aliases(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .instance
            .flow
            .grants
            .environment
            .integrations
            .keys()
            .cloned()
            .collect())
    }
}

struct Integrations;

impl HasData for Integrations {
    type Data<'a> = IntegrationsView<'a>;
}

pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> IntegrationsView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Integrations>(linker, get)
}

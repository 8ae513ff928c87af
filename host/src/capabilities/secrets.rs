//! `warden:plugin/secrets`: handles to the secrets of the flow environment's integrations.
//!
//! A handle names its secret so that `http` can fill in a sealed header; whether the plugin
//! may read the value itself is this module's decision alone. Values come from the app-wide
//! [`SecretStore`], which re-reads rotating secrets.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::capabilities::refusal::{Refusal, RefusalKind, Refusals};
use crate::config::Flow;
use crate::runtime::bindings::warden::plugin::secrets::{self as wit, SecretError};
use crate::runtime::budget::{EventBudget, quote};
use crate::secrets::Secret;
use crate::secrets::SecretStore;

/// The guest's `secret` resource.
#[derive(Debug)]
pub struct SecretHandle {
    secret: Arc<Secret>,
}

impl SecretHandle {
    /// The secret behind a sealed header; its value is never handed to the guest.
    pub(crate) fn secret(&self) -> &Arc<Secret> {
        &self.secret
    }
}

/// Gives the guest a handle to `secret`, which the caller has already checked is granted.
pub(crate) fn grant_handle(
    table: &mut ResourceTable,
    secret: Arc<Secret>,
) -> wasmtime::Result<Resource<SecretHandle>> {
    table.push(SecretHandle { secret }).map_err(|e| {
        wasmtime::Error::msg(format!(
            "the plugin holds {} resources, the most an instance may ({e})",
            crate::runtime::budget::MAX_HANDLES
        ))
    })
}

pub struct SecretsInstance {
    flow: Arc<Flow>,
    values: Arc<SecretStore>,
    pub refusals: Refusals,
}

impl SecretsInstance {
    pub fn new(flow: Arc<Flow>, values: Arc<SecretStore>, budget: EventBudget) -> Self {
        Self {
            flow,
            values,
            refusals: Refusals::new(budget),
        }
    }
}

pub struct SecretsView<'a> {
    pub instance: &'a mut SecretsInstance,
    pub table: &'a mut ResourceTable,
}

impl SecretsView<'_> {
    fn refuse(&mut self, kind: RefusalKind, detail: String) -> SecretError {
        self.instance.refusals.push(Refusal {
            kind,
            detail: detail.clone(),
        });
        match kind {
            RefusalKind::SealedOnly => SecretError::SealedOnly(detail),
            _ => SecretError::NotGranted(detail),
        }
    }
}

impl wit::Host for SecretsView<'_> {
    fn open(
        &mut self,
        id: String,
    ) -> wasmtime::Result<Result<Resource<SecretHandle>, SecretError>> {
        match self.instance.flow.grants.secrets.get(&id) {
            Some(secret) => Ok(Ok(grant_handle(self.table, secret.clone())?)),
            // The same answer for "exists elsewhere" and "does not exist": guessing ids
            // must teach the plugin nothing.
            None => {
                let detail = format!(
                    "secret `{}` is not attached to any integration of environment `{}`",
                    quote(&id),
                    self.instance.flow.grants.environment.name
                );
                Ok(Err(self.refuse(RefusalKind::Secret, detail)))
            }
        }
    }
}

impl wit::HostSecret for SecretsView<'_> {
    fn id(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&handle)?.secret.id.clone())
    }

    fn path(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&handle)?.secret.path.clone())
    }

    async fn retrieve_value(
        &mut self,
        handle: Resource<SecretHandle>,
    ) -> wasmtime::Result<Result<String, SecretError>> {
        let secret = self.table.get(&handle)?.secret.clone();
        if !self.instance.flow.grants.reveal_secrets {
            let detail = format!(
                "flow `{}` sets reveal_secrets = false: secret `{}` can only be sent sealed",
                self.instance.flow.name, secret.id
            );
            return Ok(Err(self.refuse(RefusalKind::SealedOnly, detail)));
        }
        match self.instance.values.current(&secret).await {
            Ok(value) => Ok(Ok(value.expose().to_string())),
            Err(unavailable) => Ok(Err(SecretError::Unavailable(format!(
                "host error: {unavailable}"
            )))),
        }
    }

    fn drop(&mut self, handle: Resource<SecretHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

struct Secrets;

impl HasData for Secrets {
    type Data<'a> = SecretsView<'a>;
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> SecretsView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Secrets>(linker, get)
}

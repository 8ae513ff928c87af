//! `warden:plugin/secrets`: handles to the secrets of the flow environment's integrations.
//!
//! A handle carries its value so that `http` can fill in a sealed header; whether the plugin
//! may read the value itself is this module's decision alone.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::bindings::warden::plugin::secrets::{self as wit, SecretError};
use crate::config::{Flow, Secret, SecretValue};
use crate::refusal::{Refusal, RefusalKind};

/// The guest's `secret` resource.
#[derive(Debug)]
pub struct SecretHandle {
    secret: Arc<Secret>,
}

impl SecretHandle {
    /// The value for a sealed header; never handed to the guest.
    pub(crate) fn sealed_value(&self) -> &SecretValue {
        &self.secret.value
    }

    /// The secret's id, shown wherever a sealed value would be.
    pub(crate) fn sealed_id(&self) -> &str {
        &self.secret.id
    }
}

/// Gives the guest a handle to `secret`, which the caller has already checked is granted.
pub(crate) fn grant_handle(
    table: &mut ResourceTable,
    secret: Arc<Secret>,
) -> wasmtime::Result<Resource<SecretHandle>> {
    Ok(table.push(SecretHandle { secret })?)
}

pub struct SecretsInstance {
    flow: Arc<Flow>,
    pub refusals: Vec<Refusal>,
}

impl SecretsInstance {
    pub fn new(flow: Arc<Flow>) -> Self {
        Self {
            flow,
            refusals: Vec::new(),
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
                    "secret `{id}` is not attached to any integration of environment `{}`",
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

    fn retrieve_value(
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
        Ok(Ok(secret.value.expose().to_string()))
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

pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> SecretsView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Secrets>(linker, get)
}

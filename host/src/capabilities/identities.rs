//! `warden:plugin/identities`: users' identities, for the services the environment holds.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::capabilities::refusal::{Refusal, RefusalKind, Refusals};
use crate::config::Flow;
use crate::runtime::bindings::warden::plugin::identities::{self as wit, IdentityError};
use crate::runtime::bindings::warden::plugin::types::Identity;
use crate::runtime::budget::{EventBudget, quote};
use crate::store::{Store, StoredIdentity};

/// Writes one event may make; a plugin cannot flood the store.
pub const MAX_PERSISTS_PER_EVENT: usize = 16;
const MAX_FIELD_LEN: usize = 320;

pub struct IdentitiesInstance {
    flow: Arc<Flow>,
    store: Arc<Store>,
    persisted: usize,
    pub refusals: Refusals,
}

impl IdentitiesInstance {
    pub fn new(flow: Arc<Flow>, store: Arc<Store>, budget: EventBudget) -> Self {
        Self {
            flow,
            store,
            persisted: 0,
            refusals: Refusals::new(budget),
        }
    }

    fn check_granted(&mut self, service: &str, service_id: &str) -> Result<(), IdentityError> {
        let grants = &self.flow.grants;
        // Compared in place: the names are the plugin's, of any length.
        if grants
            .services
            .iter()
            .any(|(s, id)| s == service && id == service_id)
        {
            return Ok(());
        }
        let detail = format!(
            "environment `{}` holds no `{}` integration with external_id `{}`",
            grants.environment.name,
            quote(service),
            quote(service_id)
        );
        self.refusals.push(Refusal {
            kind: RefusalKind::Identity,
            detail: detail.clone(),
        });
        Err(IdentityError::NotGranted(detail))
    }
}

fn check_fields(fields: &[(&str, &str)]) -> Result<(), IdentityError> {
    for (name, value) in fields {
        if value.trim().is_empty() {
            return Err(IdentityError::Invalid(format!("{name} is empty")));
        }
        if value.len() > MAX_FIELD_LEN {
            return Err(IdentityError::Invalid(format!(
                "{name} is longer than {MAX_FIELD_LEN} bytes"
            )));
        }
    }
    Ok(())
}

fn to_wit(stored: StoredIdentity) -> Identity {
    Identity {
        service: stored.service,
        service_id: stored.service_id,
        user_id: stored.user_id,
    }
}

impl wit::Host for IdentitiesInstance {
    fn lookup(
        &mut self,
        email: String,
        service: String,
        service_id: String,
    ) -> wasmtime::Result<Result<Option<Identity>, IdentityError>> {
        if let Err(e) = self.check_granted(&service, &service_id) {
            return Ok(Err(e));
        }
        // Plugins persist emails of at most this; a longer one the store would only copy
        // again, to find nothing.
        if email.len() > MAX_FIELD_LEN {
            return Ok(Err(IdentityError::Invalid(format!(
                "email is longer than {MAX_FIELD_LEN} bytes"
            ))));
        }
        Ok(self
            .store
            .lookup_identity(&email, &service, &service_id)
            .map(|found| found.map(to_wit))
            .map_err(|e| IdentityError::Store(e.to_string())))
    }

    fn persist(
        &mut self,
        email: String,
        service: String,
        service_id: String,
        user_id: String,
    ) -> wasmtime::Result<Result<Identity, IdentityError>> {
        if let Err(e) = self.check_granted(&service, &service_id) {
            return Ok(Err(e));
        }
        if let Err(e) = check_fields(&[("email", &email), ("user-id", &user_id)]) {
            return Ok(Err(e));
        }
        if !email.contains('@') {
            return Ok(Err(IdentityError::Invalid(format!(
                "`{email}` is not an email address"
            ))));
        }
        if self.persisted >= MAX_PERSISTS_PER_EVENT {
            return Ok(Err(IdentityError::Invalid(format!(
                "at most {MAX_PERSISTS_PER_EVENT} identities may be persisted per event"
            ))));
        }
        self.persisted += 1;
        Ok(self
            .store
            .persist_identity(&email, &service, &service_id, &user_id)
            .map(to_wit)
            .map_err(|e| IdentityError::Store(e.to_string())))
    }
}

struct Identities;

impl HasData for Identities {
    type Data<'a> = &'a mut IdentitiesInstance;
}

pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut IdentitiesInstance,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Identities>(linker, get)
}

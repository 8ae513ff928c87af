//! `warden:plugin/identities`: users' identities, for the services the environment holds.

use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::{LinkerInstance, WasmStr};

use super::{AppState, Capability, HostFaults, Outcome};
use crate::capabilities::refusal::{Refusal, RefusalKind, Refusals};
use crate::config::Flow;
use crate::runtime::bindings::warden::plugin::identities::IdentityError;
use crate::runtime::bindings::warden::plugin::types::Identity;
use crate::runtime::budget::{EventBudget, MAX_NAME_BYTES};
use crate::runtime::instance::InstanceState;
use crate::runtime::lease::{Acting, Lease};
use crate::runtime::lift::Passed;
use crate::store::StoredIdentity;
use crate::store::backend::Backend;

/// Writes one event may make; a plugin cannot flood the store.
pub const MAX_PERSISTS_PER_EVENT: usize = 16;
const MAX_FIELD_LEN: usize = 320;

pub struct IdentitiesInstance {
    flow: Arc<Flow>,
    store: Arc<dyn Backend>,
    persisted: usize,
    refusals: Refusals,
    /// Nothing is stored while the plugin loads, nor once its request's claim has ended.
    acting: Acting,
    host_faults: HostFaults,
}

impl IdentitiesInstance {
    pub fn new(flow: Arc<Flow>, store: Arc<dyn Backend>, budget: EventBudget) -> Self {
        Self {
            flow,
            store,
            persisted: 0,
            refusals: Refusals::new(budget),
            acting: Acting::Loading,
            host_faults: HostFaults::default(),
        }
    }

    /// `error` of the store, recorded as the host's, as the plugin is told it.
    fn store_failed(&mut self, error: crate::store::StoreError) -> IdentityError {
        let error = error.to_string();
        self.host_faults
            .record(format!("identities: the store failed: {error}"));
        IdentityError::Store(error)
    }

    /// A hook begins: identities may be stored, until `lease` (if any) has ended.
    pub fn begin_hook(&mut self, lease: Option<Lease>) {
        self.acting = Acting::Hook(lease);
    }

    /// How much of a service or service id the plugin passes is copied: enough to match
    /// the longest granted one and to quote it in a refusal. A longer one matches nothing.
    fn name_bytes(&self) -> usize {
        let names = self.flow.grants.services.iter();
        let longest = names.map(|(s, id)| s.len().max(id.len())).max();
        longest.unwrap_or(0).max(MAX_NAME_BYTES)
    }

    fn check_granted(
        &mut self,
        service: &Passed,
        service_id: &Passed,
    ) -> Result<(), IdentityError> {
        let grants = &self.flow.grants;
        if let (Some(service), Some(service_id)) = (service.whole(), service_id.whole())
            && grants
                .services
                .iter()
                .any(|(s, id)| s == service && id == service_id)
        {
            return Ok(());
        }
        let detail = format!(
            "environment `{}` holds no `{}` integration with external_id `{}`",
            grants.environment.name,
            service.quote(),
            service_id.quote()
        );
        self.refusals.push(Refusal {
            kind: RefusalKind::Identity,
            detail: detail.clone(),
        });
        Err(IdentityError::NotGranted(detail))
    }

    /// The identity of `email` in `service`/`service_id`, if one is stored.
    pub async fn lookup(
        &mut self,
        email: &Passed,
        service: &Passed,
        service_id: &Passed,
    ) -> Result<Option<Identity>, IdentityError> {
        self.check_granted(service, service_id)?;
        // Plugins persist emails of at most this; a longer one the store would only copy
        // again, to find nothing.
        let Some(email) = email.whole().filter(|e| e.len() <= MAX_FIELD_LEN) else {
            return Err(IdentityError::Invalid(format!(
                "email is longer than {MAX_FIELD_LEN} bytes"
            )));
        };
        // None is stored with a NUL (and PostgreSQL's text cannot be asked about one).
        if email.contains('\0') {
            return Ok(None);
        }
        let (service, service_id) = (service.kept(), service_id.kept());
        match self.store.lookup_identity(email, service, service_id).await {
            Ok(found) => Ok(found.map(to_wit)),
            Err(e) => Err(self.store_failed(e)),
        }
    }

    /// Creates or updates the user's identity in `service`/`service_id`.
    pub async fn persist(
        &mut self,
        email: &Passed,
        service: &Passed,
        service_id: &Passed,
        user_id: &Passed,
    ) -> Result<Identity, IdentityError> {
        self.check_granted(service, service_id)?;
        let (email, user_id) = (
            checked_field("email", email)?,
            checked_field("user-id", user_id)?,
        );
        // As `warden users` takes them: a user it could not name it could not delete.
        if !crate::store::is_email_address(email) {
            return Err(IdentityError::Invalid(format!(
                "`{}` is not an email address (`local@domain`, with no spaces or control characters)",
                email.escape_debug()
            )));
        }
        if let Some((kind, detail)) = self.acting.refusal("stored") {
            self.refusals.push(Refusal {
                kind,
                detail: detail.clone(),
            });
            return Err(IdentityError::NotGranted(detail));
        }
        if self.persisted >= MAX_PERSISTS_PER_EVENT {
            return Err(IdentityError::Invalid(format!(
                "at most {MAX_PERSISTS_PER_EVENT} identities may be persisted per event"
            )));
        }
        self.persisted += 1;
        match self
            .store
            .persist_identity(email, service.kept(), service_id.kept(), user_id)
            .await
        {
            Ok(stored) => Ok(to_wit(stored)),
            Err(e) => Err(self.store_failed(e)),
        }
    }
}

/// `value` if it is neither blank nor longer than [`MAX_FIELD_LEN`], and holds no NUL (which
/// PostgreSQL's text cannot: the same identity must be storable in either store).
fn checked_field<'a>(name: &str, value: &'a Passed) -> Result<&'a str, IdentityError> {
    if value.is_blank() {
        return Err(IdentityError::Invalid(format!("{name} is empty")));
    }
    match value.whole() {
        Some(text) if text.contains('\0') => Err(IdentityError::Invalid(format!(
            "{name} holds a NUL character"
        ))),
        Some(text) if text.len() <= MAX_FIELD_LEN => Ok(text),
        _ => Err(IdentityError::Invalid(format!(
            "{name} is longer than {MAX_FIELD_LEN} bytes"
        ))),
    }
}

fn to_wit(stored: StoredIdentity) -> Identity {
    Identity {
        service: stored.service,
        service_id: stored.service_id,
        user_id: stored.user_id,
    }
}

/// A field the plugin passes (an email, a user id): copied only as far as it can be valid.
const FIELD_BYTES: usize = MAX_FIELD_LEN + 1;

impl Capability for IdentitiesInstance {
    const INTERFACE: &'static str = "identities";

    fn instance(flow: &Arc<Flow>, app: &AppState, budget: &EventBudget) -> Self {
        Self::new(flow.clone(), app.identities.clone(), budget.clone())
    }

    fn link(functions: &mut LinkerInstance<'_, InstanceState>) -> wasmtime::Result<()> {
        // Async: a PostgreSQL store answers over the network.
        functions.func_wrap_async(
            "lookup",
            |mut store: StoreContextMut<'_, InstanceState>,
             (email, service, service_id): (WasmStr, WasmStr, WasmStr)| {
                Box::new(async move {
                    let names = store.data().identities.name_bytes();
                    let email = Passed::read(&store, &email, FIELD_BYTES)?;
                    let service = Passed::read(&store, &service, names)?;
                    let service_id = Passed::read(&store, &service_id, names)?;
                    let identities = &mut store.data_mut().identities;
                    Ok((identities.lookup(&email, &service, &service_id).await,))
                })
            },
        )?;
        functions.func_wrap_async(
            "persist",
            |mut store: StoreContextMut<'_, InstanceState>,
             (email, service, service_id, user_id): (WasmStr, WasmStr, WasmStr, WasmStr)| {
                Box::new(async move {
                    let names = store.data().identities.name_bytes();
                    let email = Passed::read(&store, &email, FIELD_BYTES)?;
                    let service = Passed::read(&store, &service, names)?;
                    let service_id = Passed::read(&store, &service_id, names)?;
                    let user_id = Passed::read(&store, &user_id, FIELD_BYTES)?;
                    let identities = &mut store.data_mut().identities;
                    Ok((
                        identities
                            .persist(&email, &service, &service_id, &user_id)
                            .await,
                    ))
                })
            },
        )
    }

    fn finish(&mut self) -> Outcome {
        self.host_faults.finish(Outcome {
            refusals: self.refusals.finish(),
            ..Outcome::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::testing::Event;

    fn identities() -> (Event, IdentitiesInstance) {
        let event = Event::new("");
        let mut identities: IdentitiesInstance = event.instance();
        identities.begin_hook(None);
        (event, identities)
    }

    #[tokio::test]
    async fn a_granted_service_persists_and_finds_identities() {
        let (_event, mut ids) = identities();
        let (email, service, id) = (&"a@example.com".into(), &"custom".into(), &"vo-ext".into());
        assert!(matches!(ids.lookup(email, service, id).await, Ok(None)));
        let stored = ids
            .persist(email, service, id, &"jdoe".into())
            .await
            .unwrap();
        assert_eq!(stored.user_id, "jdoe");
        let found = ids
            .lookup(email, service, id)
            .await
            .unwrap()
            .expect("persisted");
        assert_eq!(
            (found.service, found.service_id, found.user_id),
            ("custom".into(), "vo-ext".into(), "jdoe".into())
        );
        assert!(ids.finish().refusals.is_empty());
    }

    #[tokio::test]
    async fn a_service_outside_the_environment_is_refused_and_recorded() {
        let (_event, mut ids) = identities();
        let email = &"a@example.com".into();
        let Err(IdentityError::NotGranted(detail)) = ids
            .lookup(email, &"custom".into(), &"pager-ext".into())
            .await
        else {
            panic!("pager-ext is not in the environment");
        };
        assert_eq!(
            detail,
            "environment `main` holds no `custom` integration with external_id `pager-ext`"
        );
        assert!(matches!(
            ids.persist(email, &"other".into(), &"vo-ext".into(), &"u".into())
                .await,
            Err(IdentityError::NotGranted(_))
        ));
        let refusals = ids.finish().refusals;
        assert_eq!(refusals.len(), 2);
        assert!(refusals.iter().all(|r| r.kind == RefusalKind::Identity));
        assert_eq!(refusals[0].detail, detail);
    }

    #[tokio::test]
    async fn fields_are_checked_without_copying_more_than_can_be_valid() {
        let (_event, mut ids) = identities();
        let (service, id) = (&"custom".into(), &"vo-ext".into());
        let long = format!("{}@example.com", "a".repeat(1 << 20));
        let email = Passed::new(&long, FIELD_BYTES);
        assert!(email.kept().len() <= FIELD_BYTES);
        let invalid = |result: Result<_, IdentityError>| match result {
            Err(IdentityError::Invalid(message)) => message,
            other => panic!("{:?}", other.map(|_: Identity| ())),
        };
        assert_eq!(
            invalid(ids.lookup(&email, service, id).await.map(|_| Identity {
                service: String::new(),
                service_id: String::new(),
                user_id: String::new(),
            })),
            "email is longer than 320 bytes"
        );
        let ok_email = &"a@example.com".into();
        let blank = Passed::new(&" ".repeat(300), FIELD_BYTES);
        assert_eq!(
            invalid(ids.persist(ok_email, service, id, &blank).await),
            "user-id is empty"
        );
        // Longer than a field may be: refused for that, its spaces not scanned.
        let long_blank = Passed::new(&" ".repeat(1000), FIELD_BYTES);
        assert_eq!(
            invalid(ids.persist(ok_email, service, id, &long_blank).await),
            "user-id is longer than 320 bytes"
        );
        // Only emails `warden users` can name, to delete or import them again.
        for email in [
            "no-at-sign",
            "a b@example.com",
            "@",
            "x@",
            "bob@example.com\t",
            "\u{1b}@x",
        ] {
            let refused = invalid(ids.persist(&email.into(), service, id, &"u".into()).await);
            assert!(
                refused.starts_with(&format!(
                    "`{}` is not an email address",
                    email.escape_debug()
                )),
                "{refused}"
            );
        }
        // What PostgreSQL's text cannot hold is refused on either store, and found nowhere.
        assert_eq!(
            invalid(ids.persist(ok_email, service, id, &"u\0v".into()).await),
            "user-id holds a NUL character"
        );
        assert!(
            ids.lookup(&"a\0@example.com".into(), service, id)
                .await
                .unwrap()
                .is_none()
        );
        // Invalid fields are no refusals: the flow grants the service.
        assert!(ids.finish().refusals.is_empty());
    }

    #[tokio::test]
    async fn an_event_persists_at_most_its_share() {
        let (_event, mut ids) = identities();
        let (service, id) = (&"custom".into(), &"vo-ext".into());
        for i in 0..MAX_PERSISTS_PER_EVENT {
            let email = format!("u{i}@example.com");
            ids.persist(&email.as_str().into(), service, id, &"u".into())
                .await
                .unwrap();
        }
        let Err(IdentityError::Invalid(message)) = ids
            .persist(&"late@example.com".into(), service, id, &"u".into())
            .await
        else {
            panic!("one persist too many");
        };
        assert!(message.starts_with("at most 16 identities"), "{message}");
    }
}

//! `warden:plugin/secrets`: handles to the secrets of the flow environment's integrations.
//!
//! A handle names its secret so that `http` can fill in a sealed header; whether the plugin
//! may read the value itself is this module's decision alone. Values come from the app-wide
//! [`SecretStore`], which re-reads rotating secrets.

use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::{LinkerInstance, Resource, ResourceTable, ResourceType, WasmStr};

use super::{AppState, Capability, HostFaults, Outcome};
use crate::capabilities::refusal::{Refusal, RefusalKind, Refusals};
use crate::config::Flow;
use crate::runtime::bindings::warden::plugin::secrets::SecretError;
use crate::runtime::budget::{EventBudget, MAX_NAME_BYTES};
use crate::runtime::instance::InstanceState;
use crate::runtime::lift::Passed;
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
    refusals: Refusals,
    host_faults: HostFaults,
}

impl SecretsInstance {
    pub fn new(flow: Arc<Flow>, values: Arc<SecretStore>, budget: EventBudget) -> Self {
        Self {
            flow,
            values,
            refusals: Refusals::new(budget),
            host_faults: HostFaults::default(),
        }
    }

    /// How much of an id the plugin asks for is copied: enough to match the longest granted
    /// id and to quote it in a refusal. A longer one matches nothing.
    fn id_bytes(&self) -> usize {
        let longest = self.flow.grants.secrets.keys().map(String::len).max();
        longest.unwrap_or(0).max(MAX_NAME_BYTES)
    }

    fn refuse(&mut self, kind: RefusalKind, detail: String) -> SecretError {
        self.refusals.push(Refusal {
            kind,
            detail: detail.clone(),
        });
        match kind {
            RefusalKind::SealedOnly => SecretError::SealedOnly(detail),
            _ => SecretError::NotGranted(detail),
        }
    }

    /// A handle to secret `id`, if the flow's environment holds it.
    pub fn open(
        &mut self,
        table: &mut ResourceTable,
        id: &Passed,
    ) -> wasmtime::Result<Result<Resource<SecretHandle>, SecretError>> {
        let granted = id.whole().and_then(|id| self.flow.grants.secrets.get(id));
        match granted {
            Some(secret) => Ok(Ok(grant_handle(table, secret.clone())?)),
            // The same answer for "exists elsewhere" and "does not exist": guessing ids
            // must teach the plugin nothing.
            None => {
                let detail = format!(
                    "secret `{}` is not attached to any integration of environment `{}`",
                    id.quote(),
                    self.flow.grants.environment.name
                );
                Ok(Err(self.refuse(RefusalKind::Secret, detail)))
            }
        }
    }

    /// The value of `secret` (behind one of the plugin's handles), if the flow may read it.
    pub async fn retrieve_value(&mut self, secret: &Secret) -> Result<String, SecretError> {
        if !self.flow.grants.reveal_secrets {
            let detail = format!(
                "flow `{}` sets reveal_secrets = false: secret `{}` can only be sent sealed",
                self.flow.name, secret.id
            );
            return Err(self.refuse(RefusalKind::SealedOnly, detail));
        }
        match self.values.current(secret).await {
            Ok(value) => Ok(value.expose().to_string()),
            Err(unavailable) => {
                self.host_faults.record(format!("secrets: {unavailable}"));
                Err(SecretError::Unavailable(format!(
                    "host error: {unavailable}"
                )))
            }
        }
    }
}

type Handle = (Resource<SecretHandle>,);

impl Capability for SecretsInstance {
    const INTERFACE: &'static str = "secrets";

    fn instance(flow: &Arc<Flow>, app: &AppState, budget: &EventBudget) -> Self {
        Self::new(flow.clone(), app.secrets.clone(), budget.clone())
    }

    fn link(functions: &mut LinkerInstance<'_, InstanceState>) -> wasmtime::Result<()> {
        functions.resource(
            "secret",
            ResourceType::host::<SecretHandle>(),
            |mut store, rep| {
                store
                    .data_mut()
                    .table
                    .delete(Resource::<SecretHandle>::new_own(rep))?;
                Ok(())
            },
        )?;
        functions.func_wrap(
            "open",
            |mut store: StoreContextMut<'_, InstanceState>, (id,): (WasmStr,)| {
                let id = Passed::read(&store, &id, store.data().secrets.id_bytes())?;
                let state = store.data_mut();
                Ok((state.secrets.open(&mut state.table, &id)?,))
            },
        )?;
        functions.func_wrap(
            "[method]secret.id",
            |store: StoreContextMut<'_, InstanceState>, (handle,): Handle| {
                Ok((store.data().table.get(&handle)?.secret.id.clone(),))
            },
        )?;
        functions.func_wrap(
            "[method]secret.path",
            |store: StoreContextMut<'_, InstanceState>, (handle,): Handle| {
                Ok((store.data().table.get(&handle)?.secret.path.clone(),))
            },
        )?;
        // An AWS secret may have to be fetched again.
        functions.func_wrap_async(
            "[method]secret.retrieve-value",
            |mut store: StoreContextMut<'_, InstanceState>, (handle,): Handle| {
                Box::new(async move {
                    let state = store.data_mut();
                    let secret = state.table.get(&handle)?.secret.clone();
                    Ok((state.secrets.retrieve_value(&secret).await,))
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
    use crate::capabilities::refusal::MAX_REFUSALS_PER_EVENT;
    use crate::capabilities::testing::Event;

    fn refusals(secrets: &mut SecretsInstance) -> Vec<Refusal> {
        secrets.finish().refusals
    }

    #[tokio::test]
    async fn a_granted_secret_opens_and_reveals_its_value() {
        let mut event = Event::new("");
        let mut secrets: SecretsInstance = event.instance();
        let handle = secrets
            .open(&mut event.table, &"vo_key".into())
            .unwrap()
            .unwrap();
        let secret = event.table.get(&handle).unwrap().secret().clone();
        assert_eq!(secret.id, "vo_key");
        let value = secrets.retrieve_value(&secret).await;
        assert!(
            matches!(&value, Ok(v) if v == "vo-secret-value"),
            "{value:?}"
        );
        assert!(refusals(&mut secrets).is_empty());
    }

    #[test]
    fn a_secret_of_another_environment_is_refused_like_one_that_does_not_exist() {
        let mut event = Event::new("");
        let mut secrets: SecretsInstance = event.instance();
        let mut answers = Vec::new();
        for id in ["pager_key", "no_such_key"] {
            match secrets.open(&mut event.table, &id.into()).unwrap() {
                Err(SecretError::NotGranted(detail)) => answers.push(detail),
                other => panic!("{id}: {other:?}"),
            }
        }
        assert_eq!(
            answers[0],
            "secret `pager_key` is not attached to any integration of environment `main`"
        );
        assert_eq!(answers[1].replace("no_such_key", "pager_key"), answers[0]);
        let kept = refusals(&mut secrets);
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|r| r.kind == RefusalKind::Secret));
        assert_eq!(kept[0].detail, answers[0]);
        assert!(event.table.is_empty(), "no handle for a refused id");
    }

    #[test]
    fn a_huge_id_is_copied_only_as_far_as_a_refusal_quotes_it() {
        let mut event = Event::new("");
        let mut secrets: SecretsInstance = event.instance();
        let huge = "s".repeat(4 << 20);
        let asked = Passed::new(&huge, secrets.id_bytes());
        assert!(asked.kept().len() <= MAX_NAME_BYTES);
        let Err(SecretError::NotGranted(detail)) = secrets.open(&mut event.table, &asked).unwrap()
        else {
            panic!("a huge id must be refused");
        };
        let quoted = crate::runtime::budget::quote(&huge);
        assert!(detail.contains(quoted.as_ref()), "{detail}");
        assert!(detail.len() < 400, "{detail}");
    }

    #[tokio::test]
    async fn reveal_secrets_false_refuses_the_value_as_sealed_only() {
        let mut event = Event::new("reveal_secrets = false");
        let mut secrets: SecretsInstance = event.instance();
        let handle = secrets
            .open(&mut event.table, &"vo_key".into())
            .unwrap()
            .unwrap();
        let secret = event.table.get(&handle).unwrap().secret().clone();
        let Err(SecretError::SealedOnly(detail)) = secrets.retrieve_value(&secret).await else {
            panic!("the value must not be revealed");
        };
        assert_eq!(
            detail,
            "flow `f` sets reveal_secrets = false: secret `vo_key` can only be sent sealed"
        );
        let kept = refusals(&mut secrets);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].kind, RefusalKind::SealedOnly);
    }

    #[test]
    fn refusals_past_the_cap_are_counted_in_one_more() {
        let mut event = Event::new("");
        let mut secrets: SecretsInstance = event.instance();
        for i in 0..MAX_REFUSALS_PER_EVENT + 3 {
            let id = format!("missing_{i}");
            assert!(
                secrets
                    .open(&mut event.table, &id.as_str().into())
                    .unwrap()
                    .is_err()
            );
        }
        let kept = refusals(&mut secrets);
        assert_eq!(kept.len(), MAX_REFUSALS_PER_EVENT + 1);
        assert!(
            kept.last()
                .unwrap()
                .detail
                .starts_with("3 more refusal(s) not recorded"),
            "{kept:?}"
        );
        assert!(refusals(&mut secrets).is_empty(), "finish leaves nothing");
    }
}

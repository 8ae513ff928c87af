//! `[store]`: which store, and for PostgreSQL how to reach it. Read by [`super::Config`] and
//! by [`super::Outline`] (`warden users`), which must connect the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::StoreUrl;
use super::raw::{RawSecret, RawStore};
use super::validate::{Validator, declared};
use crate::secrets::Secret;

impl Validator<'_> {
    /// `[store] url` with its password secret, checked; both `url` and `path` set is an
    /// error (which store is meant?). `secrets` are the resolved `[secrets]` (`raw` the
    /// declared ones: a declared secret that did not resolve has its own error already).
    pub(super) fn store_url(
        &mut self,
        store: &RawStore,
        raw: &BTreeMap<String, RawSecret>,
        secrets: &BTreeMap<String, Arc<Secret>>,
    ) -> Option<StoreUrl> {
        let password = store.password_secret.as_deref();
        let Some(text) = store.url.as_deref() else {
            if password.is_some() {
                self.error(
                    &["store", "password_secret"],
                    "is the password of a PostgreSQL store; set `url` too (SQLite has none)",
                );
            }
            return None;
        };
        if store.path.is_some() {
            self.error(
                &["store", "url"],
                "`url` (PostgreSQL) and `path` (SQLite) are both set; keep one",
            );
            return None;
        }
        let url = StoreUrl::parse_in(text, &self.base)
            .map_err(|e| self.error(&["store", "url"], e))
            .ok();
        let secret = match password {
            None => None,
            Some(id) => match secrets.get(id) {
                Some(secret) => Some(secret.clone()),
                None if raw.contains_key(id) => return None,
                None => {
                    self.error(
                        &["store", "password_secret"],
                        format!(
                            "names secret `{id}`, which is not declared under [secrets]{}",
                            declared(raw.keys())
                        ),
                    );
                    return None;
                }
            },
        };
        Some(match secret {
            Some(secret) => url?.with_password_secret(secret),
            None => url?,
        })
    }

    /// Only the secret `[store] password_secret` names, for a command that connects to the
    /// store but needs no other secret (`warden users`).
    pub(super) fn store_secret(
        &mut self,
        store: &RawStore,
        raw: &BTreeMap<String, RawSecret>,
    ) -> BTreeMap<String, Arc<Secret>> {
        let named = store
            .password_secret
            .as_deref()
            .and_then(|id| raw.get_key_value(id));
        match named {
            Some((id, secret)) => self.secrets(&BTreeMap::from([(id.clone(), secret.clone())])),
            None => BTreeMap::new(),
        }
    }
}

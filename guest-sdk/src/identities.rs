//! Users' accounts in other services, stored by the host between events.
//!
//! Look one up with [`User::identity`](crate::User::identity); store one with
//! [`persist_user_identity`].

use crate::bindings::warden::plugin::identities as wit;
use crate::{Identity, Result};

/// Create or update the identity of the user `email` in `service` / `service_id`
/// (for a custom integration: `"custom"` and the integration's `external_id`).
/// At most 16 per event, with `email` and `user_id` up to 320 bytes; past that the host
/// answers with an `invalid` error.
pub fn persist_user_identity(
    email: &str,
    service: &str,
    service_id: &str,
    user_id: &str,
) -> Result<Identity> {
    Ok(wit::persist(email, service, service_id, user_id)?)
}

/// The identity of the user `email` in `service` / `service_id`, if one is stored.
pub fn lookup(email: &str, service: &str, service_id: &str) -> Result<Option<Identity>> {
    Ok(wit::lookup(email, service, service_id)?)
}

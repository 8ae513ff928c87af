//! Write warden plugins in Rust: access-request hooks that run in warden's
//! WebAssembly sandbox.
//!
//! A plugin is a type with an `impl Plugin` block marked [`#[warden_sdk::plugin]`](plugin).
//! Each hook receives the [`Event`] and returns a [`Decision`]; the hooks you leave
//! out are never called. A hook that returns `Err` (or panics) *fails closed*: the
//! request goes to a human.
//!
//! The SDK mirrors Sym's Python SDK closely. Here is the VictorOps on-call check from
//! Sym's "custom integrations" guide, condensed:
//!
//! ```no_run
//! use serde::Deserialize;
//! use warden_sdk::prelude::*;
//!
//! struct OnCall;
//!
//! #[warden_sdk::plugin]
//! impl Plugin for OnCall {
//!     /// If the requester is on call, auto-approve their request.
//!     fn on_request(event: &Event) -> Result<Decision> {
//!         if is_requester_on_call(event)? {
//!             let original_reason = event.text("reason").unwrap_or_default();
//!             return Ok(Decision::approve(format!(
//!                 "Auto-approved On-call engineer: {original_reason}"
//!             )));
//!         }
//!         Ok(Decision::Continue)
//!     }
//! }
//!
//! #[derive(Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! struct OnCallNow { teams_on_call: Vec<Team> }
//! // The live API writes `oncallNow` and `onCalluser`; its spec, `onCallNow`, `onCallUser`.
//! #[derive(Deserialize)]
//! struct Team {
//!     #[serde(rename = "oncallNow", alias = "onCallNow")]
//!     oncall_now: Vec<Shift>,
//! }
//! #[derive(Deserialize)]
//! struct Shift { users: Vec<ShiftUser> }
//! #[derive(Deserialize)]
//! struct ShiftUser {
//!     #[serde(rename = "onCalluser", alias = "onCallUser")]
//!     on_call_user: Username,
//! }
//! #[derive(Deserialize)]
//! struct Username { username: String }
//!
//! fn is_requester_on_call(event: &Event) -> Result<bool> {
//!     // event.flow.environment.integrations["victorops"]
//!     let integration = integration("victorops")?;
//!     let Some(username) = get_custom_user(&event.requester, &integration)? else {
//!         return Ok(false);
//!     };
//!     let body: OnCallNow = victorops_get(&integration, "v1/oncall/current", &[])?;
//!     Ok(body.teams_on_call.iter().any(|team| {
//!         team.oncall_now.iter().any(|shift| {
//!             shift.users.iter().any(|user| user.on_call_user.username == username)
//!         })
//!     }))
//! }
//!
//! fn victorops_get<T: serde::de::DeserializeOwned>(
//!     integration: &Integration,
//!     api_path: &str,
//!     params: &[(&str, &str)],
//! ) -> Result<T> {
//!     let mut request = http::get(format!("https://api.victorops.com/api-public/{api_path}"));
//!     for (key, value) in params {
//!         request = request.query(*key, *value);
//!     }
//!     let response = request
//!         .header("Accept", "application/json")
//!         // We used the API ID as our custom integration's external ID.
//!         .header("X-VO-Api-Id", &integration.external_id)
//!         // Sent sealed: the host fills in the key, the plugin never sees it.
//!         .header_secret("X-VO-Api-Key", integration.secret(0)?)
//!         .send()?;
//!     if !response.ok() {
//!         let body: serde_json::Value = response.json().unwrap_or_default();
//!         let message = body["message"].as_str().unwrap_or("");
//!         bail!("API failed with message: {message}");
//!     }
//!     response.json()
//! }
//!
//! /// The requester's VictorOps username: the stored identity, or looked up and saved.
//! fn get_custom_user(user: &User, integration: &Integration) -> Result<Option<String>> {
//!     if let Some(identity) = user.identity("custom", &integration.external_id)? {
//!         return Ok(Some(identity.user_id));
//!     }
//!     #[derive(Deserialize)]
//!     struct Users { users: Vec<VictorOpsUser> }
//!     #[derive(Deserialize)]
//!     struct VictorOpsUser { username: String, email: String }
//!     // Use the VictorOps API to find a matching user. VictorOps does not decode an `@`
//!     // sent as `%40` (what `.query` sends): the email goes in as it is (plugins/victorops
//!     // encodes the other characters a query needs encoded).
//!     let path = format!("v2/user?email={}", user.email);
//!     let users: Users = victorops_get(integration, &path, &[])?;
//!     let Some(found) = users
//!         .users
//!         .into_iter()
//!         .find(|u| u.email.eq_ignore_ascii_case(&user.email))
//!     else {
//!         return Ok(None);
//!     };
//!     info!("mapping {} to VictorOps user {}", user.email, found.username);
//!     persist_user_identity(&user.email, "custom", &integration.external_id, &found.username)?;
//!     Ok(Some(found.username))
//! }
//! # fn main() {}
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2` (a component; `wasm32-wasip1` core
//! modules work too):
//!
//! ```text
//! cargo build --release --target wasm32-wasip2
//! ```
//!
//! On other targets the crate compiles (so `cargo test` and `cargo check` work), but
//! every call into the host panics.

#![warn(missing_docs)]

// Lets `warden_sdk::...` paths (the macros' and the bindings') work inside this crate.
extern crate self as warden_sdk;

/// The raw bindings generated from warden's WIT. Prefer the SDK's wrappers.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "warden_sdk::bindings",
        additional_type_attributes: {
            "warden:plugin/types@0.1.0/user": [#[derive(PartialEq, Eq)]],
            "warden:plugin/types@0.1.0/identity": [#[derive(PartialEq, Eq)]],
            "warden:plugin/types@0.1.0/field-value": [#[derive(PartialEq, Eq)]],
            "warden:plugin/types@0.1.0/field": [#[derive(PartialEq, Eq)]],
            "warden:plugin/types@0.1.0/flow": [#[derive(PartialEq, Eq)]],
            "warden:plugin/types@0.1.0/event": [#[derive(PartialEq, Eq)]],
            "warden:plugin/types@0.1.0/decision": [#[derive(PartialEq, Eq)]],
            "warden:plugin/http@0.1.0/response": [#[derive(PartialEq, Eq)]],
            "warden:plugin/http@0.1.0/http-error": [#[derive(PartialEq, Eq)]],
            "warden:plugin/secrets@0.1.0/secret-error": [#[derive(PartialEq, Eq)]],
            "warden:plugin/identities@0.1.0/identity-error": [#[derive(PartialEq, Eq)]],
        },
    });
}

#[cfg(feature = "event-arena")]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
// the allocator only on wasm32; tested anywhere
mod arena;
pub mod cache;
mod error;
pub mod http;
pub mod identities;
pub mod integrations;
pub mod log;
mod types;

pub use error::{Error, ErrorKind, Result};
pub use identities::persist_user_identity;
pub use integrations::{integration, open_secret};

pub use bindings::warden::plugin::identities::IdentityError;
pub use bindings::warden::plugin::integrations::Integration;
pub use bindings::warden::plugin::secrets::{Secret, SecretError};
pub use bindings::warden::plugin::types::{
    Decision, Event, Field, FieldValue, Flow, Hook, Identity, Step, User,
};

/// Turns `impl Plugin for MyPlugin { ... }` into the plugin's exports.
///
/// The hooks the block defines are the ones the host calls (`implemented()`); a
/// function that is not one of the twelve hooks is a compile error. Put it on exactly
/// one impl block per plugin crate.
pub use warden_sdk_macros::plugin;

/// A warden plugin: implement the hooks you need, mark the impl block with
/// [`#[warden_sdk::plugin]`](plugin).
///
/// The functions take no `self`: every event runs in a fresh instance, so keep state
/// in the [`cache`] if it must outlive one event.
///
/// `on_<step>` runs before the step's default behaviour and may replace it, e.g. an
/// `on_request` returning [`Decision::approve`] skips the human approval. `after_<step>`
/// runs after it. [`Decision::Continue`] keeps the default path. An `Err` fails closed.
///
/// Only the twelve hooks may appear in the block; anything else is a compile error:
///
/// ```compile_fail
/// use warden_sdk::prelude::*;
///
/// struct Typo;
///
/// #[warden_sdk::plugin]
/// impl Plugin for Typo {
///     fn on_requst(event: &Event) -> Result<Decision> { // `on_requst` is not a warden hook
///         Ok(Decision::Continue)
///     }
/// }
/// # fn main() {}
/// ```
pub trait Plugin {
    /// Before the request form is shown.
    fn on_prompt(event: &Event) -> Result<Decision> {
        let _ = event;
        Ok(Decision::Continue)
    }
    /// Before a request goes to approvers.
    fn on_request(event: &Event) -> Result<Decision> {
        let _ = event;
        Ok(Decision::Continue)
    }
    /// Before an approval takes effect.
    fn on_approve(event: &Event) -> Result<Decision> {
        let _ = event;
        Ok(Decision::Continue)
    }
    /// Before a denial takes effect.
    fn on_deny(event: &Event) -> Result<Decision> {
        let _ = event;
        Ok(Decision::Continue)
    }
    /// Before access is granted.
    fn on_escalate(event: &Event) -> Result<Decision> {
        let _ = event;
        Ok(Decision::Continue)
    }
    /// Before access is revoked.
    fn on_deescalate(event: &Event) -> Result<Decision> {
        let _ = event;
        Ok(Decision::Continue)
    }
    /// After the request form was shown.
    fn after_prompt(event: &Event) -> Result<Decision> {
        let _ = event;
        Ok(Decision::Continue)
    }
    /// After a request went to approvers.
    fn after_request(event: &Event) -> Result<Decision> {
        let _ = event;
        Ok(Decision::Continue)
    }
    /// After an approval took effect.
    fn after_approve(event: &Event) -> Result<Decision> {
        let _ = event;
        Ok(Decision::Continue)
    }
    /// After a denial took effect.
    fn after_deny(event: &Event) -> Result<Decision> {
        let _ = event;
        Ok(Decision::Continue)
    }
    /// After access was granted.
    fn after_escalate(event: &Event) -> Result<Decision> {
        let _ = event;
        Ok(Decision::Continue)
    }
    /// After access was revoked.
    fn after_deescalate(event: &Event) -> Result<Decision> {
        let _ = event;
        Ok(Decision::Continue)
    }
}

/// The common imports: `use warden_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::http::{self, Method, Response};
    pub use crate::{
        Decision, Error, Event, FieldValue, Identity, Integration, Plugin, Result, Secret, User,
        cache, integration, open_secret, persist_user_identity,
    };
    pub use crate::{bail, debug, error, info, trace, warn};
}

/// Used by the code `#[warden_sdk::plugin]` generates; not a stable API.
#[doc(hidden)]
pub mod __private {
    use crate::{Decision, Event, Result};

    pub use crate::bindings::exports::warden::plugin::hooks::Guest;

    /// Mentioned by the generated code so the plugin type counts as used on targets
    /// where nothing is exported.
    pub const fn plugin_type<T: Guest>() {}

    /// Runs one hook on the event the host passed in.
    pub fn run(
        hook: fn(&Event) -> Result<Decision>,
        event: Event,
    ) -> ::core::result::Result<Decision, String> {
        let outcome = hook(&event).map_err(|error| error.to_string());
        // Rust holds a last line without a newline until the program exits, and a plugin
        // never exits: without this the host would never see it.
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        outcome
    }
}

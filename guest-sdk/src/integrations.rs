//! The flow environment's integrations and their secrets.
//!
//! Python's `event.flow.environment.integrations["victorops"]` is
//! [`integration("victorops")?`](integration); its
//! `integration.settings["secrets"][0].retrieve_value()` is
//! `integration.secret(0)?.retrieve_value()?` (or send the secret sealed with
//! [`RequestBuilder::header_secret`](crate::http::RequestBuilder::header_secret) and
//! never see it).

use crate::bindings::warden::plugin::{integrations as wit, secrets};
use crate::{Error, Integration, Result, Secret};

/// The integration the flow's environment holds under `alias`.
///
/// Fails with ``no integration `alias` in this flow's environment`` when there is none.
pub fn integration(alias: &str) -> Result<Integration> {
    get(alias).ok_or_else(|| {
        Error::msg(format!(
            "no integration `{alias}` in this flow's environment"
        ))
    })
}

/// The integration under `alias`, or `None`.
pub fn get(alias: &str) -> Option<Integration> {
    wit::get(alias)
}

/// The aliases of every integration in the flow's environment.
pub fn aliases() -> Vec<String> {
    wit::aliases()
}

/// A secret by id; only secrets attached to one of the environment's integrations
/// can be opened.
pub fn open_secret(id: &str) -> Result<Secret> {
    Ok(secrets::open(id)?)
}

impl Integration {
    /// The setting `key` (a `settings` entry of the integration).
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The integration's `index`th secret (in `secret_ids` order).
    pub fn secret(&self, index: usize) -> Result<&Secret> {
        self.secrets.get(index).ok_or_else(|| {
            Error::msg(format!(
                "integration `{}` has {} secret(s), no secret #{index}",
                self.name,
                self.secrets.len()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_missing_secrets() {
        let integration = Integration {
            name: "main-victorops-integration".into(),
            type_: "custom".into(),
            external_id: "aaabbcccddee".into(),
            settings: vec![("region".into(), "eu".into())],
            secrets: vec![],
        };
        assert_eq!(integration.setting("region"), Some("eu"));
        assert_eq!(integration.setting("nope"), None);
        assert_eq!(
            integration.secret(0).unwrap_err().to_string(),
            "integration `main-victorops-integration` has 0 secret(s), no secret #0"
        );
    }
}

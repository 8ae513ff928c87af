//! The part of a config that managing users needs: where the store is and which identity
//! services the integrations declare. Of the secrets only the store's password
//! (`[store] password_secret`) is resolved, and plugins are not looked at, so an operator can
//! manage users on a machine that holds neither.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::locate::SourceMap;
use super::validate::Validator;
use super::{ConfigError, ConfigErrors};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outline {
    pub source: PathBuf,
    pub store_path: PathBuf,
    /// `[store] url`: PostgreSQL instead of the SQLite file at `store_path`.
    pub store_url: Option<super::StoreUrl>,
    /// `(service type, external id)` → the integrations declaring it.
    pub services: BTreeMap<(String, String), Vec<String>>,
}

impl Outline {
    pub fn load(path: &Path) -> Result<Outline, ConfigErrors> {
        let error = |location, key: &str, message: String| ConfigError {
            file: path.to_path_buf(),
            location,
            key: key.to_string(),
            message,
        };
        let text = super::read_bounded_text(path, super::MAX_CONFIG_BYTES).map_err(|e| {
            ConfigErrors(vec![error(
                None,
                "",
                format!("cannot read the config file: {e}"),
            )])
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        // The store's password secret is resolved (the store is connected to); no other is.
        let mut validator = Validator {
            file: path.to_path_buf(),
            base: base.clone(),
            map: SourceMap::new(&text),
            errors: Vec::new(),
            env: &|name| std::env::var(name).ok(),
            aws: &crate::secrets::fetch_blocking,
        };
        // Unknown keys are errors here too: a misspelt `[store] path` or `url` would
        // otherwise send an operator's users to another store.
        let Some(raw) = validator.read_raw(&text) else {
            return Err(ConfigErrors(validator.errors));
        };
        let mut services: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for (name, integration) in &raw.integrations {
            for (key, value) in [
                ("type", &integration.kind),
                ("external_id", &integration.external_id),
            ] {
                if value.trim().is_empty() {
                    validator.error(&["integrations", name.as_str(), key], "must not be empty");
                }
            }
            services
                .entry((integration.kind.clone(), integration.external_id.clone()))
                .or_default()
                .push(name.clone());
        }
        let secrets = validator.store_secret(&raw.store, &raw.secrets);
        let store_url = validator.store_url(&raw.store, &raw.secrets, &secrets);
        let errors = validator.errors;
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Outline {
            source: path.to_path_buf(),
            store_path: base.join(raw.store.path.as_deref().unwrap_or("warden.db")),
            store_url,
            services,
        })
    }

    pub fn declares(&self, service: &str, service_id: &str) -> bool {
        self.services
            .contains_key(&(service.to_string(), service_id.to_string()))
    }
}

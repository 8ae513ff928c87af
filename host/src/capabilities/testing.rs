//! A flow for the capabilities' in-process tests, from a small config read by the config's
//! own parser: what the probe plugin reaches through wasm, called here directly.

use std::sync::Arc;

use wasmtime::component::ResourceTable;

use super::http::HttpState;
use super::{AppState, Capability};
use crate::config::{Config, Flow};
use crate::runtime::budget::EventBudget;
use crate::secrets::SecretStore;

/// Environment `main` holds integration `victorops` (type `custom`, external id `vo-ext`,
/// secret `vo_key`); integration `pager` (secret `pager_key`) exists but is not in it. Flow
/// `f` runs in `main` with the extra keys `flow` gives it.
fn text(flow: &str) -> String {
    format!(
        r#"
[store]
path = "warden.db"

[secrets.vo_key]
source = "file"
path = "vo.key"

[secrets.pager_key]
source = "file"
path = "pager.key"

[integrations.victorops]
type = "custom"
external_id = "vo-ext"
secrets = ["vo_key"]
settings = {{ api_url = "https://api.victorops.test" }}

[integrations.pager]
type = "custom"
external_id = "pager-ext"
secrets = ["pager_key"]

[environments.main]
integrations = {{ victorops = "victorops" }}

[flows.f]
environment = "main"
plugin = "plugin.wasm"
{flow}
"#
    )
}

/// One event's worth of a capability's surroundings.
pub(crate) struct Event {
    _dir: tempfile::TempDir,
    pub(crate) flow: Arc<Flow>,
    pub(crate) app: AppState,
    pub(crate) budget: EventBudget,
    pub(crate) table: ResourceTable,
}

impl Event {
    /// Flow `f` with `flow`'s extra keys, and an in-memory identity store.
    pub(crate) fn new(flow: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("plugin.wasm", "\0asm");
        write("vo.key", "vo-secret-value");
        write("pager.key", "pager-secret-value");
        let path = dir.path().join("warden.toml");
        let config = Config::parse(&text(flow), &path, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let secrets = Arc::new(SecretStore::new(&config.secrets));
        let app = AppState {
            identities: Arc::new(crate::store::Store::open_in_memory().unwrap()),
            http: HttpState::with_transport(Arc::new(NoNetwork), secrets.clone()),
            cache: Arc::default(),
            secrets,
        };
        Self {
            flow: config.flow("f").unwrap().clone(),
            _dir: dir,
            app,
            budget: EventBudget::new(64 << 10),
            table: ResourceTable::new(),
        }
    }

    /// Capability `C`'s state for this event.
    pub(crate) fn instance<C: Capability>(&self) -> C {
        C::instance(&self.flow, &self.app, &self.budget)
    }
}

/// A transport for tests that send nothing.
struct NoNetwork;

#[async_trait::async_trait]
impl super::http::Transport for NoNetwork {
    async fn send(
        &self,
        _: super::http::HopRequest<'_>,
    ) -> Result<super::http::HopResponse, super::http::TransportError> {
        Err(super::http::TransportError::Connect(
            "no network in tests".into(),
        ))
    }
}

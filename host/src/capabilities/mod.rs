//! What a plugin can reach: one module per imported WIT interface of `warden:plugin`.
//!
//! Each is one [`Capability`]: per-event state built the same way for every capability
//! ([`Capability::instance`]), the interface's functions linked by hand
//! ([`Capability::link`], through [`link`]), and everything the event leaves behind handed
//! back through [`Capability::finish`]. A capability's functions touch its own state and the
//! instance's resource table, nothing of another capability's.
//!
//! The functions are written by hand, not generated, because they never take a `String` or
//! a list from the plugin: they read what it passes in place and copy only what the event's
//! budgets keep (see [`crate::runtime::lift`]). The generated bindings still give the WIT's
//! records, variants and enums.
//!
//! A plugin asking for more than its flow grants gets a [`refusal::Refusal`], recorded in the
//! hook's report.

pub mod cache;
pub mod http;
pub mod identities;
pub mod integrations;
pub mod log;
pub mod refusal;
pub mod secrets;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use wasmtime::component::{Linker, LinkerInstance};

use crate::config::Flow;
use crate::runtime::budget::EventBudget;
use crate::runtime::instance::InstanceState;
use crate::runtime::plugin::{WIT_PACKAGE, WIT_VERSION};
use crate::secrets::SecretStore;
/// Users' identities, in whichever store the config names (`store::backend`).
type IdentityStore = dyn crate::store::backend::Backend;
use http::HttpCall;
use log::LogLine;
use refusal::Refusal;

/// What every event's capabilities share across events and flows.
#[derive(Clone)]
pub struct AppState {
    pub identities: Arc<IdentityStore>,
    pub http: http::HttpState,
    pub cache: Arc<cache::CacheState>,
    /// Current secret values; also what to redact.
    pub secrets: Arc<SecretStore>,
}

/// What a capability leaves of one event, for the hook's report.
#[derive(Debug, Default)]
pub struct Outcome {
    pub logs: Vec<LogLine>,
    pub refusals: Vec<Refusal>,
    pub http_calls: Vec<HttpCall>,
    /// Calls that failed on the host's side (the store down, AWS not answering), the first
    /// of them: a hook that then fails is the host's to answer for, not the plugin's.
    pub host_fault: Option<String>,
}

impl Outcome {
    /// Everything `other` holds, after what this holds.
    pub fn extend(&mut self, other: Outcome) {
        self.logs.extend(other.logs);
        self.refusals.extend(other.refusals);
        self.http_calls.extend(other.http_calls);
        if self.host_fault.is_none() {
            self.host_fault = other.host_fault;
        }
    }
}

/// A capability's calls that failed on the host's side in one event: the first kept, for
/// the hook's blame, and a line in its log (the host's, warn) for each of the first few.
#[derive(Debug, Default)]
pub(crate) struct HostFaults {
    first: Option<String>,
    logs: Vec<LogLine>,
}

/// Host faults a capability logs per event at most: a plugin retrying in a loop against a
/// store that is down would otherwise fill its log with them.
const MAX_HOST_FAULTS_LOGGED: usize = 4;

impl HostFaults {
    pub(crate) fn record(&mut self, what: String) {
        if self.logs.len() < MAX_HOST_FAULTS_LOGGED {
            self.logs.push(LogLine {
                level: log::LogLevel::Warn,
                source: log::LogSource::Host,
                message: format!("{what} (a host problem, not the plugin's)"),
                cut: false,
            });
        }
        self.first.get_or_insert(what);
    }

    /// What the event's report takes of them, left empty.
    pub(crate) fn finish(&mut self, mut outcome: Outcome) -> Outcome {
        outcome.logs.append(&mut self.logs);
        outcome.host_fault = self.first.take();
        outcome
    }
}

/// One imported WIT interface's per-event state.
pub(crate) trait Capability: Sized {
    /// The interface's name in the `warden:plugin` package (`log`, `http`, ...).
    const INTERFACE: &'static str;

    /// The state for one event of `flow`, charging what it keeps to `budget`.
    fn instance(flow: &Arc<Flow>, app: &AppState, budget: &EventBudget) -> Self;

    /// Defines the interface's functions in `functions`, the linker's instance for it.
    fn link(functions: &mut LinkerInstance<'_, InstanceState>) -> wasmtime::Result<()>;

    /// What the event left (lines, refusals, calls, counts of what was dropped); nothing is
    /// left behind.
    fn finish(&mut self) -> Outcome;
}

/// Links `C`'s functions under its interface's versioned name.
pub(crate) fn link<C: Capability>(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    let name = format!("{WIT_PACKAGE}/{}@{WIT_VERSION}", C::INTERFACE);
    C::link(&mut linker.instance(&name)?)
}

//! warden: a sandboxed WebAssembly plugin host for access-request workflows.
//!
//! Operators declare secrets, integrations, environments and flows in a TOML file
//! ([`config::Config`]); each flow runs a plugin (a `wasm32-wasip2` component written with
//! `warden-sdk`) whose hooks decide access requests. [`Warden`] compiles the plugins once and
//! runs every event in a fresh, sandboxed instance that reaches only what its flow grants.
//!
//! Each imported WIT interface has its own module in [`capabilities`], all of one shape
//! (`capabilities::Capability`): per-event state, hand-linked functions that read what the
//! plugin passes in its memory ([`runtime::lift`]), and one `finish` that hands back what the
//! event left.

pub mod capabilities;
pub mod cli;
pub mod config;
pub mod harness;
pub mod runtime;
pub mod secrets;
pub mod serve;
pub mod store;

pub use config::Config;
pub use runtime::event::EventInput;
pub use runtime::hooks::{Decision, HookName};
pub use runtime::{
    Blame, CORE_INSTANCES_PER_COMPONENT, FailureKind, FlowSummary, HookFailure, HookReport,
    LARGE_PLUGIN_BYTES, LoadError, MEMORIES_PER_COMPONENT, RunError, SharedEngine, StartError,
    StartOptions, Warden,
};

/// A lock taken whether or not a thread panicked while holding it. Everything warden keeps
/// behind a lock is whole between statements (no invariant spans a panic point), so a panic
/// on one request must not make every later request that needs the lock panic too.
pub(crate) trait Unpoisoned<G> {
    fn unpoisoned(self) -> G;
}

impl<G> Unpoisoned<G> for std::sync::LockResult<G> {
    fn unpoisoned(self) -> G {
        self.unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

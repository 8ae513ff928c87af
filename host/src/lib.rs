//! warden: a sandboxed WebAssembly plugin host for access-request workflows.
//!
//! Operators declare secrets, integrations, environments and flows in a TOML file
//! ([`config::Config`]); each flow runs a plugin (a `wasm32-wasip2` component written with
//! `warden-sdk`) whose hooks decide access requests. [`Warden`] compiles the plugins once and
//! runs every event in a fresh, sandboxed instance that reaches only what its flow grants.
//!
//! Each imported WIT interface has its own module of the same shape: per-instance state,
//! the generated `Host` trait implemented on it, and an `add_to_linker` that projects the
//! store onto that state alone.

pub mod bench;
mod bindings;
pub mod budget;
pub mod build;
pub mod cache;
pub mod config;
pub mod escape;
pub mod event;
pub mod fault;
pub mod harness;
pub mod hooks;
pub mod http;
pub mod identities;
pub mod integrations;
pub mod log;
pub mod plugin;
pub mod redact;
pub mod refusal;
mod runtime;
pub mod scaffold;
mod sched;
pub mod secret_store;
pub mod secrets;
pub mod serve;
mod stdio;
pub mod store;
pub mod users;

pub use config::Config;
pub use event::EventInput;
pub use hooks::{Decision, HookName};
pub use runtime::{
    Blame, CORE_INSTANCES_PER_COMPONENT, FailureKind, FlowSummary, HookFailure, HookReport,
    LARGE_PLUGIN_BYTES, LoadError, RunError, SharedEngine, StartError, StartOptions, Warden,
};

//! What a plugin can reach: one module per imported WIT interface of `warden:plugin`.
//!
//! Each has the same shape: per-instance state built for one event of one flow, the
//! generated `Host` trait implemented on it, and an `add_to_linker` that projects the
//! store onto that state alone, so no capability sees another's. A plugin asking for more
//! than its flow grants gets a [`refusal::Refusal`], recorded in the hook's report.

pub mod cache;
pub mod http;
pub mod identities;
pub mod integrations;
pub mod log;
pub mod refusal;
pub mod secrets;

//! A stand-in for the VictorOps (Splunk On-Call) public API, served on
//! 127.0.0.1 for end-to-end tests and demos.
//!
//! It speaks the vendor's wire format for the three calls an on-call check
//! needs, with the `X-VO-Api-Id` / `X-VO-Api-Key` headers:
//!
//! * `GET /api-public/v1/oncall/current`: who is on call, per team and
//!   escalation policy ([`Casing`] picks `oncallNow`/`onCalluser`, as the
//!   live API answers, or the spec's `onCallNow`/`onCallUser`);
//! * `GET /api-public/v2/user[?email=...]`: users, optionally those with an email;
//! * `GET /api-public/v1/team`: teams.
//!
//! Tests can change the roster, the casing, inject failures, add latency and
//! rate limit while it runs, and read back every request it received.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use victorops_standin::{ErrorStyle, Roster, StandIn, StandInConfig};
//! let standin = StandIn::start(StandInConfig::new("id", "key", Roster::sample())).await?;
//! standin.fail_next("/api-public/v1/oncall", 503, ErrorStyle::Html, 1);
//! // ... point the client at standin.url() ...
//! assert_eq!(standin.count("/api-public/v1/oncall/current"), 1);
//! standin.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod controls;
mod query;
mod roster;
mod routes;
mod server;

pub use config::{Casing, ErrorStyle, StandInConfig};
pub use controls::{Controls, RecordedRequest};
pub use roster::{Policy, Roster, Team, User};
pub use server::{BlockingStandIn, StandIn};

/// Path of the on-call call.
pub const ONCALL_CURRENT_PATH: &str = "/api-public/v1/oncall/current";
/// Path of the v2 user list (and lookup by `?email=`).
pub const USERS_V2_PATH: &str = "/api-public/v2/user";
/// Path of the team list.
pub const TEAMS_PATH: &str = "/api-public/v1/team";

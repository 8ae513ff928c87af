//! A plugin for warden's tests that misbehaves while warden loads it. `implemented`, the
//! export warden calls once at load (the SDK's macro always writes a well-behaved one, so
//! this plugin implements the hooks interface by hand), picks what to do from the aliases of
//! its flow's environment, the only grant a plugin can read before any event:
//!
//! - `spin-in-implemented`: spins forever;
//! - `busy-NNNms-in-implemented`: spins until NNN ms have passed on the monotonic clock (wall
//!   time: how much CPU time that is depends on what else runs on its CPU), then implements
//!   `on_request` as below;
//! - `trap-in-implemented`: panics (a trap);
//! - `leak-N-in-implemented`: prints a line saying `panicked` that holds a terminal escape, a
//!   carriage return and, after N filler bytes, its integration's first secret's value over
//!   and over (past the bound a failure's message is cut to), then traps;
//! - `act-in-implemented`: sends a GET to its `url` setting and stores an identity for
//!   `loader@example.com` in its service, then implements `on_request` as below (the host
//!   should have refused both);
//! - none of these: implements `on_request`, which approves with the reason `loaded`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use warden_sdk::__private::Guest;
use warden_sdk::{Decision, Event, Hook};

struct BadLoad;

type Answer = Result<Decision, String>;

fn not_implemented() -> Answer {
    Err("bad-load implements only on_request".into())
}

impl Guest for BadLoad {
    fn implemented() -> Vec<Hook> {
        let aliases = warden_sdk::integrations::aliases();
        if aliases.iter().any(|a| a == "spin-in-implemented") {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        let busy_ms = aliases.iter().find_map(|a| {
            a.strip_prefix("busy-")?
                .strip_suffix("ms-in-implemented")?
                .parse::<u64>()
                .ok()
        });
        if let Some(ms) = busy_ms {
            let until = Instant::now() + Duration::from_millis(ms);
            let mut n = 0u64;
            while Instant::now() < until {
                for _ in 0..100_000 {
                    n = black_box(n.wrapping_add(1));
                }
            }
        }
        for alias in &aliases {
            let Some(filler) = alias
                .strip_prefix("leak-")
                .and_then(|a| a.strip_suffix("-in-implemented"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let value = match warden_sdk::integrations::integration(alias) {
                Ok(integration) => match integration.secret(0) {
                    Ok(secret) => secret
                        .retrieve_value()
                        .unwrap_or_else(|e| format!("no value: {e:?}")),
                    Err(e) => format!("no secret: {e}"),
                },
                Err(e) => format!("no integration: {e}"),
            };
            eprintln!(
                "panicked \x1b[2J\x1b[31mFORGED\rERROR host: all good\x1b[0m {}{}",
                "f".repeat(filler),
                value.repeat(1 + 8192 / value.len().max(1))
            );
            // Not `panic!`: its own "panicked" line would come last and be the one quoted.
            std::process::abort();
        }
        if let Some(act) = warden_sdk::integrations::get("act-in-implemented") {
            if let Some(url) = act.setting("url") {
                let _ = warden_sdk::http::get(url).send();
            }
            let _ = warden_sdk::identities::persist_user_identity(
                "loader@example.com",
                &act.type_,
                &act.external_id,
                "from-implemented",
            );
        }
        if aliases.iter().any(|a| a == "trap-in-implemented") {
            panic!("bad-load traps in implemented on purpose");
        }
        vec![Hook::OnRequest]
    }

    fn on_request(_event: Event) -> Answer {
        Ok(Decision::Approve(Some("loaded".into())))
    }

    fn on_prompt(_event: Event) -> Answer {
        not_implemented()
    }
    fn on_approve(_event: Event) -> Answer {
        not_implemented()
    }
    fn on_deny(_event: Event) -> Answer {
        not_implemented()
    }
    fn on_escalate(_event: Event) -> Answer {
        not_implemented()
    }
    fn on_deescalate(_event: Event) -> Answer {
        not_implemented()
    }
    fn after_prompt(_event: Event) -> Answer {
        not_implemented()
    }
    fn after_request(_event: Event) -> Answer {
        not_implemented()
    }
    fn after_approve(_event: Event) -> Answer {
        not_implemented()
    }
    fn after_deny(_event: Event) -> Answer {
        not_implemented()
    }
    fn after_escalate(_event: Event) -> Answer {
        not_implemented()
    }
    fn after_deescalate(_event: Event) -> Answer {
        not_implemented()
    }
}

// Marks the type used on targets without the exports.
const _: () = warden_sdk::__private::plugin_type::<BadLoad>();

#[cfg(target_arch = "wasm32")]
warden_sdk::bindings::export!(BadLoad with_types_in warden_sdk::bindings);

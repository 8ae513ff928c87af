//! Who is to blame for an error wasmtime reports while a hook runs, and the message it keeps.
//!
//! Blame follows a mark, never the text of a message. The host marks its own failures with
//! [`HostFault`] where they happen: running a hook when the host cannot make the plugin's
//! instance or find its export, and any capability call that has to stop because of the host
//! (it returns [`HostFault::error`]; today's capabilities need none: they answer the plugin
//! with a typed error instead, such as `unavailable` or `store`). Everything else wasmtime
//! reports is about what the plugin did, so it is the plugin's: a trap; a resource handle it
//! dropped or was never given (`unknown handle index`, or a `ResourceTableError` from a
//! capability's table); a string that is not UTF-8, a case past an enum's or variant's last,
//! a pointer outside its memory, too much data, in what it passes the host or returns (the
//! canonical ABI's lifting and lowering).

use wasmtime::{Trap, WasmBacktrace};

use crate::capabilities::log::LogSource;
use crate::config::Limits;
use crate::runtime::FailureKind;
use crate::runtime::plugin::root_message;
use crate::runtime::stdio::CapturedOutput;

/// A failure on the host's side: blamed on the host, whatever else the error holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostFault(pub String);

impl HostFault {
    /// The fault as the error a capability returns to wasmtime.
    pub fn error(message: impl Into<String>) -> wasmtime::Error {
        wasmtime::Error::new(Self(message.into()))
    }
}

/// Whether the host marked `error` as its own.
pub fn is_host_fault(error: &wasmtime::Error) -> bool {
    // `downcast_ref` finds the mark as any context of the error; the chain, as the source of
    // some other error type.
    error.downcast_ref::<HostFault>().is_some() || error.chain().any(|e| e.is::<HostFault>())
}

/// An error making a plugin's instance. The plugin's own code runs then too (its start
/// function): a trap, or an error that passed through its frames (wasmtime attaches their
/// backtrace), is the plugin's; anything else (the instance pool exhausted, memory the host
/// could not map) is the host's.
pub(crate) fn at_instantiation(error: wasmtime::Error) -> wasmtime::Error {
    if error.downcast_ref::<Trap>().is_some() || error.downcast_ref::<WasmBacktrace>().is_some() {
        error
    } else {
        error.context(HostFault("cannot make an instance of the plugin".into()))
    }
}

/// What a hook's wasmtime error means. `memory_exceeded` is the store's limiter having
/// refused a growth: the plugin's allocation failing is then the cause, whatever trap
/// followed. A Rust plugin's panic message is taken from its `stderr`.
pub(crate) fn classify(
    error: &wasmtime::Error,
    memory_exceeded: bool,
    limits: &Limits,
    stderr: &CapturedOutput,
) -> FailureKind {
    if memory_exceeded {
        return FailureKind::Memory {
            limit_mib: limits.memory_bytes >> 20,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FailureKind::Deadline {
            timeout_ms: limits.timeout.as_millis(),
        },
        Some(Trap::StackOverflow) => FailureKind::StackOverflow,
        Some(trap) => {
            // A Rust panic prints its message to stderr before trapping.
            let panic = stderr
                .lines(LogSource::Stderr)
                .into_iter()
                .rev()
                .find(|l| l.message.contains("panicked"))
                .map(|l| format!(" ({})", l.message))
                .unwrap_or_default();
            // Rust keeps its stack in linear memory: running off it is not a wasm stack
            // overflow but an access below address 0.
            let hint = match trap {
                Trap::MemoryOutOfBounds if panic.is_empty() => {
                    " (often a stack overflow: a Rust plugin's stack is in its linear memory)"
                }
                _ => "",
            };
            FailureKind::Trap {
                message: cut_message(&format!("{trap}{hint}{panic}")),
            }
        }
        None if is_host_fault(error) => FailureKind::Host {
            message: cut_message(&root_message(error)),
        },
        None => FailureKind::Misuse {
            message: cut_message(&root_message(error)),
        },
    }
}

/// A failure's message as kept: its causes may quote what the plugin passed, of any length.
fn cut_message(text: &str) -> String {
    let cut = crate::runtime::budget::cut(text, crate::runtime::budget::MAX_MESSAGE_BYTES);
    crate::runtime::lift::without_nul(cut.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::budget::EventBudget;

    fn limits() -> Limits {
        crate::config::Limits::default()
    }

    fn kind(error: &wasmtime::Error) -> FailureKind {
        classify(
            error,
            false,
            &limits(),
            &CapturedOutput::new(EventBudget::new(0)),
        )
    }

    #[test]
    fn a_host_fault_is_the_hosts_under_any_context() {
        let bare = HostFault::error("the identity store is gone");
        assert_eq!(
            kind(&bare),
            FailureKind::Host {
                message: "the identity store is gone".into()
            }
        );
        let wrapped = HostFault::error("disk full").context("while persisting");
        assert_eq!(
            kind(&wrapped),
            FailureKind::Host {
                message: "while persisting: disk full".into()
            }
        );
        let as_context =
            wasmtime::Error::msg("pool exhausted").context(HostFault("no slot".into()));
        assert!(matches!(kind(&as_context), FailureKind::Host { .. }));
    }

    #[test]
    fn errors_about_the_plugins_values_are_its_misuse_with_their_cause() {
        let table = wasmtime::component::ResourceTable::new();
        let forged = wasmtime::component::Resource::<u32>::new_own(7);
        let table_error = wasmtime::Error::new(table.get(&forged).unwrap_err());
        assert!(
            matches!(kind(&table_error), FailureKind::Misuse { message } if message == "resource not present"),
            "{:?}",
            kind(&table_error)
        );
        let lift = wasmtime::Error::msg("invalid utf-8 sequence of 1 bytes from index 2")
            .context("while lifting");
        assert_eq!(
            kind(&lift),
            FailureKind::Misuse {
                message: "while lifting: invalid utf-8 sequence of 1 bytes from index 2".into()
            }
        );
    }

    #[test]
    fn at_instantiation_only_what_ran_no_plugin_code_is_the_hosts() {
        let trap = at_instantiation(wasmtime::Error::new(Trap::UnreachableCodeReached));
        assert!(matches!(kind(&trap), FailureKind::Trap { .. }));
        // An error that passed through the plugin's frames (its start function calling the
        // host) carries their backtrace.
        let store = wasmtime::Store::<()>::default();
        let in_start = wasmtime::Error::msg("invalid utf-8 sequence of 1 bytes from index 0")
            .context(WasmBacktrace::force_capture(&store));
        assert_eq!(
            kind(&at_instantiation(in_start)),
            FailureKind::Misuse {
                message: "invalid utf-8 sequence of 1 bytes from index 0".into()
            }
        );
        let pool = at_instantiation(wasmtime::Error::msg("maximum concurrent limit reached"));
        assert_eq!(
            kind(&pool),
            FailureKind::Host {
                message: "cannot make an instance of the plugin: maximum concurrent limit reached"
                    .into()
            }
        );
    }

    #[test]
    fn the_limiter_having_refused_memory_names_the_limit() {
        let trap = wasmtime::Error::new(Trap::UnreachableCodeReached);
        let limits = limits();
        assert_eq!(
            classify(
                &trap,
                true,
                &limits,
                &CapturedOutput::new(EventBudget::new(0))
            ),
            FailureKind::Memory {
                limit_mib: limits.memory_bytes >> 20
            }
        );
    }
}

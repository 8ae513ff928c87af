//! `warden:plugin/log`: plugin log lines, kept per event within the flow's byte budget
//! (`log_max_bytes`, shared with stdout and stderr; see [`crate::runtime::budget`]).

use std::sync::Arc;

use serde::Serialize;
use wasmtime::StoreContextMut;
use wasmtime::component::{LinkerInstance, WasmStr};

use super::{AppState, Capability, Outcome};
use crate::config::Flow;
use crate::runtime::bindings::warden::plugin::log::Level;
use crate::runtime::budget::EventBudget;
use crate::runtime::instance::InstanceState;
use crate::runtime::lift;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl From<Level> for LogLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => Self::Trace,
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
            Level::Error => Self::Error,
        }
    }
}

/// Where a line came from: the log interface, the guest's stdio, or the host itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    Plugin,
    Stdout,
    Stderr,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub source: LogSource,
    pub message: String,
    /// Whether the host cut this line short (captured output past `log_max_bytes`): where,
    /// the start of a secret value left there is redacted too. Only the host's own cuts count:
    /// a plugin may write text that looks like a cut marker, as often as its budget allows.
    #[serde(skip)]
    pub cut: bool,
}

/// Per-instance state: the lines written so far and what did not fit.
#[derive(Debug)]
pub struct LogInstance {
    lines: Vec<LogLine>,
    budget: EventBudget,
    dropped: usize,
    dropped_bytes: usize,
}

impl LogInstance {
    pub fn new(budget: EventBudget) -> Self {
        Self {
            lines: Vec::new(),
            budget,
            dropped: 0,
            dropped_bytes: 0,
        }
    }

    /// Charges a line of `len` bytes to the event's budget: whether to keep it. One that
    /// does not fit is counted as dropped.
    pub fn admit(&mut self, len: usize) -> bool {
        if self.budget.log_line(len) {
            return true;
        }
        self.dropped += 1;
        self.dropped_bytes = self.dropped_bytes.saturating_add(len);
        false
    }

    /// Keeps a line [`admit`](Self::admit) let in.
    pub fn keep(&mut self, level: Level, message: String) {
        self.lines.push(LogLine {
            level: level.into(),
            source: LogSource::Plugin,
            message,
            cut: false,
        });
    }

    /// A line the plugin wrote, kept if it fits.
    pub fn write(&mut self, level: Level, message: &str) {
        if self.admit(message.len()) {
            self.keep(level, message.to_string());
        }
    }
}

impl Capability for LogInstance {
    const INTERFACE: &'static str = "log";

    fn instance(_: &Arc<Flow>, _: &AppState, budget: &EventBudget) -> Self {
        Self::new(budget.clone())
    }

    fn link(functions: &mut LinkerInstance<'_, InstanceState>) -> wasmtime::Result<()> {
        functions.func_wrap(
            "write",
            |mut store: StoreContextMut<'_, InstanceState>, (level, message): (Level, WasmStr)| {
                // Measured in place: a line the budget drops is never copied.
                let len = lift::len(&store, &message)?;
                if store.data_mut().log.admit(len) {
                    let text = message.to_str(&store)?.into_owned();
                    store.data_mut().log.keep(level, text);
                }
                Ok(())
            },
        )
    }

    /// The lines, with a closing line counting those dropped over the budget.
    fn finish(&mut self) -> Outcome {
        let mut lines = std::mem::take(&mut self.lines);
        if self.dropped > 0 {
            lines.push(LogLine {
                level: LogLevel::Warn,
                source: LogSource::Host,
                message: format!(
                    "{} plugin log line(s) dropped ({} bytes): over the flow's log_max_bytes",
                    self.dropped, self.dropped_bytes
                ),
                cut: false,
            });
            self.dropped = 0;
            self.dropped_bytes = 0;
        }
        Outcome {
            logs: lines,
            ..Outcome::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_the_budget_are_dropped_and_counted() {
        use crate::runtime::budget::LINE_OVERHEAD;
        let mut log = LogInstance::new(EventBudget::new(2 * LINE_OVERHEAD + 10));
        log.write(Level::Info, "12345");
        log.write(Level::Warn, "67890");
        log.write(Level::Error, "x");
        log.write(Level::Error, "y");
        let lines = log.finish().logs;
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].level, LogLevel::Warn);
        assert_eq!(lines[2].source, LogSource::Host);
        assert!(
            lines[2]
                .message
                .starts_with("2 plugin log line(s) dropped (2 bytes)"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_line_too_long_leaves_room_for_shorter_ones_after_it() {
        let budget = EventBudget::new(1024);
        let mut log = LogInstance::new(budget.clone());
        log.write(Level::Info, &"x".repeat(4 << 20));
        log.write(Level::Error, "panicked at the end");
        let lines = log.finish().logs;
        assert_eq!(lines[0].message, "panicked at the end");
        assert!(
            lines[1]
                .message
                .starts_with("1 plugin log line(s) dropped (4194304 bytes)"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_million_empty_lines_keep_a_bounded_number_of_lines() {
        let budget = EventBudget::new(64 << 10);
        let mut log = LogInstance::new(budget.clone());
        for _ in 0..1_000_000 {
            log.write(Level::Info, "");
        }
        let lines = log.finish().logs;
        assert_eq!(
            lines.len(),
            (64 << 10) / crate::runtime::budget::LINE_OVERHEAD + 1
        );
        assert!(
            lines
                .last()
                .unwrap()
                .message
                .starts_with("998976 plugin log line(s) dropped"),
            "{:?}",
            lines.last()
        );
        assert!(budget.kept() <= 64 << 10);
    }
}

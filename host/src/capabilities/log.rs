//! `warden:plugin/log`: plugin log lines, kept per event within the flow's byte budget
//! (`log_max_bytes`, shared with stdout and stderr; see [`crate::runtime::budget`]).

use serde::Serialize;
use wasmtime::component::{HasData, Linker};

use crate::runtime::bindings::warden::plugin::log::{self as wit, Level};
use crate::runtime::budget::EventBudget;

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

    /// The lines, with a closing line counting those dropped over the budget; none are left.
    pub fn finish(&mut self) -> Vec<LogLine> {
        let mut lines = std::mem::take(&mut self.lines);
        if self.dropped > 0 {
            lines.push(LogLine {
                level: LogLevel::Warn,
                source: LogSource::Host,
                message: format!(
                    "{} plugin log line(s) dropped ({} bytes): over the flow's log_max_bytes",
                    self.dropped, self.dropped_bytes
                ),
            });
            self.dropped = 0;
            self.dropped_bytes = 0;
        }
        lines
    }
}

impl wit::Host for LogInstance {
    fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.budget.log_line(message.len()) {
            self.dropped += 1;
            self.dropped_bytes = self.dropped_bytes.saturating_add(message.len());
            return Ok(());
        }
        self.lines.push(LogLine {
            level: level.into(),
            source: LogSource::Plugin,
            message,
        });
        Ok(())
    }
}

struct Log;

impl HasData for Log {
    type Data<'a> = &'a mut LogInstance;
}

pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut LogInstance,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Log>(linker, get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wit::Host as _;

    #[test]
    fn lines_over_the_budget_are_dropped_and_counted() {
        use crate::runtime::budget::LINE_OVERHEAD;
        let mut log = LogInstance::new(EventBudget::new(2 * LINE_OVERHEAD + 10));
        log.write(Level::Info, "12345".into()).unwrap();
        log.write(Level::Warn, "67890".into()).unwrap();
        log.write(Level::Error, "x".into()).unwrap();
        log.write(Level::Error, "y".into()).unwrap();
        let lines = log.finish();
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
        log.write(Level::Info, "x".repeat(4 << 20)).unwrap();
        log.write(Level::Error, "panicked at the end".into())
            .unwrap();
        let lines = log.finish();
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
            log.write(Level::Info, String::new()).unwrap();
        }
        let lines = log.finish();
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

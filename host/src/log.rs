//! `warden:plugin/log`: plugin log lines, kept per event within the flow's byte budget.

use serde::Serialize;
use wasmtime::component::{HasData, Linker};

use crate::bindings::warden::plugin::log::{self as wit, Level};

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
    budget: usize,
    dropped: usize,
}

impl LogInstance {
    pub fn new(budget: usize) -> Self {
        Self {
            lines: Vec::new(),
            budget,
            dropped: 0,
        }
    }

    /// The lines, with a closing line counting those dropped over the budget.
    pub fn finish(mut self) -> Vec<LogLine> {
        if self.dropped > 0 {
            self.lines.push(LogLine {
                level: LogLevel::Warn,
                source: LogSource::Host,
                message: format!(
                    "{} plugin log line(s) dropped: over the flow's log_max_bytes",
                    self.dropped
                ),
            });
        }
        self.lines
    }
}

impl wit::Host for LogInstance {
    fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if message.len() > self.budget {
            self.dropped += 1;
            self.budget = 0;
            return Ok(());
        }
        self.budget -= message.len();
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
        let mut log = LogInstance::new(10);
        log.write(Level::Info, "12345".into()).unwrap();
        log.write(Level::Warn, "67890".into()).unwrap();
        log.write(Level::Error, "x".into()).unwrap();
        log.write(Level::Error, "y".into()).unwrap();
        let lines = log.finish();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].level, LogLevel::Warn);
        assert_eq!(lines[2].source, LogSource::Host);
        assert!(lines[2].message.starts_with("2 plugin log line(s) dropped"));
    }
}

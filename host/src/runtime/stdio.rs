//! The guest's stdout and stderr: captured per event, charged to the event's log budget
//! (each line its bytes plus [`crate::runtime::budget::LINE_OVERHEAD`]), and turned into log lines.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::Unpoisoned;
use crate::capabilities::log::{LogLevel, LogLine, LogSource};
use crate::runtime::budget::EventBudget;

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
}

/// A bounded in-memory pipe: what does not fit is counted, never an error for the guest.
#[derive(Debug, Clone)]
pub struct CapturedOutput {
    budget: EventBudget,
    inner: Arc<Mutex<Captured>>,
}

impl CapturedOutput {
    pub fn new(budget: EventBudget) -> Self {
        Self {
            budget,
            inner: Arc::default(),
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unpoisoned();
        let kept = self.budget.log_bytes(bytes);
        inner.bytes.extend_from_slice(&bytes[..kept]);
        inner.dropped = inner.dropped.saturating_add(bytes.len() - kept);
    }

    /// One log line per line written, and one counting the bytes dropped. What is kept is
    /// at most what was charged: a byte that is not UTF-8 shows as U+FFFD, three bytes, so
    /// the text is cut back to the bytes charged, and the line cut there (as the last is when
    /// bytes were dropped) is marked so.
    pub fn lines(&self, source: LogSource) -> Vec<LogLine> {
        let inner = self.inner.lock().unpoisoned();
        let level = match source {
            LogSource::Stderr => LogLevel::Warn,
            _ => LogLevel::Info,
        };
        let text = String::from_utf8_lossy(&inner.bytes);
        let mut room = inner.bytes.len();
        let mut dropped = inner.dropped;
        let mut lines = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if room == 0 {
                dropped = dropped.saturating_add(line.len());
                continue;
            }
            let kept = &line[..line.floor_char_boundary(room)];
            room -= kept.len();
            dropped = dropped.saturating_add(line.len() - kept.len());
            lines.push(LogLine {
                level,
                source,
                message: kept.to_string(),
                cut: kept.len() < line.len(),
            });
        }
        if inner.dropped > 0
            && let Some(last) = lines.last_mut()
        {
            last.cut = true;
        }
        if dropped > 0 {
            lines.push(LogLine {
                level: LogLevel::Warn,
                source: LogSource::Host,
                message: format!(
                    "{} byte(s) of plugin {} dropped: over the flow's log_max_bytes",
                    dropped,
                    if source == LogSource::Stderr {
                        "stderr"
                    } else {
                        "stdout"
                    }
                ),
                cut: false,
            });
        }
        lines
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_over_capacity_is_dropped_and_counted() {
        use crate::runtime::budget::LINE_OVERHEAD;
        let out = CapturedOutput::new(EventBudget::new(LINE_OVERHEAD + 8));
        out.append(b"hello\nworld\n");
        let lines = out.lines(LogSource::Stdout);
        assert_eq!(lines[0].message, "hello");
        assert_eq!(lines[1].message, "wo");
        assert!(!lines[0].cut && lines[1].cut, "{lines:?}");
        assert!(
            lines[2]
                .message
                .starts_with("4 byte(s) of plugin stdout dropped"),
            "{lines:?}"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_keep_no_more_than_they_were_charged() {
        // Each 0xFF shows as U+FFFD, three bytes: 900 charged kept 2,700 before.
        let out = CapturedOutput::new(EventBudget::new(1024));
        out.append(&[0xFF; 900]);
        let lines = out.lines(LogSource::Stdout);
        let kept: usize = lines
            .iter()
            .filter(|l| l.source == LogSource::Stdout)
            .map(|l| l.message.len())
            .sum();
        assert!(kept <= 900, "{kept}");
        assert!(lines[0].cut, "the line cut back is marked cut");
        assert!(
            lines[1]
                .message
                .starts_with("1800 byte(s) of plugin stdout dropped"),
            "{lines:?}"
        );
        // Text that is UTF-8 is kept whole, uncut.
        let out = CapturedOutput::new(EventBudget::new(1024));
        out.append("café\n".as_bytes());
        let lines = out.lines(LogSource::Stdout);
        assert_eq!((lines[0].message.as_str(), lines[0].cut), ("café", false));
        assert_eq!(lines.len(), 1);
    }

    #[test]
    fn newlines_are_charged_so_a_flood_of_short_lines_stays_small() {
        let budget = EventBudget::new(64 << 10);
        let out = CapturedOutput::new(budget.clone());
        let err = CapturedOutput::new(budget.clone());
        for _ in 0..100_000 {
            out.append(b"a\n");
            err.append(b"\n");
        }
        let lines = out.lines(LogSource::Stdout);
        // Stdout and stderr share the account: each line cost its bytes and the overhead.
        assert!(
            lines.len() < (64 << 10) / crate::runtime::budget::LINE_OVERHEAD,
            "{}",
            lines.len()
        );
        assert!(budget.kept() <= 64 << 10);
        assert!(
            lines
                .last()
                .unwrap()
                .message
                .contains("of plugin stdout dropped"),
            "{:?}",
            lines.last()
        );
    }
}

//! What a hook run hands back: its decision or why it failed, who is to blame, and what the
//! plugin logged, was refused and called; and what loading a flow reports.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::capabilities::http::HttpCall;
use crate::capabilities::log::LogLine;
use crate::capabilities::refusal::Refusal;
use crate::cli::escape::escape_control;
use crate::runtime::budget::{MAX_MESSAGE_BYTES, MAX_REFUSAL_BYTES, MAX_URL_PART_BYTES};
use crate::runtime::event::EventError;
use crate::runtime::hooks::{Decision, HookName};
use crate::secrets::redact::Redactor;
use crate::store::StoreError;

/// A problem loading one flow's plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub flow: String,
    pub plugin: PathBuf,
    pub message: String,
    /// Host when warden could not do its part (no instance slot, a compiler panic); plugin
    /// otherwise (not a plugin, the wrong contract, a trap or hang while loading).
    pub blame: Blame,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The path is the config's, the message may quote the plugin: neither starts a
        // line of its own (a reload's refusal is one log entry) nor writes to a terminal.
        write!(
            f,
            "flow `{}`: plugin {}: {}",
            escape_control(&self.flow),
            escape_control(&self.plugin.display().to_string()),
            escape_control(&self.message)
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Plugins(Vec<LoadError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the engine: {0}")]
    Engine(String),
}

/// Who is to blame for a failed hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Blame {
    Plugin,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FailureKind {
    /// The hook ran past `limits.timeout_ms`.
    Deadline {
        timeout_ms: u128,
    },
    /// The plugin asked for more than `limits.memory_mib`.
    Memory {
        limit_mib: u64,
    },
    StackOverflow,
    /// The plugin trapped (a panic, `unreachable`, a bad memory access, ...).
    Trap {
        message: String,
    },
    /// The hook returned an error.
    PluginError {
        message: String,
    },
    /// The decision is not one this hook may make.
    InvalidDecision {
        decision: String,
    },
    /// The plugin broke the interface's contract in what it passed the host or returned: a
    /// resource handle it dropped or was never given, a string that is not UTF-8, a case that
    /// does not exist, a pointer outside its memory ([`crate::runtime::fault`]).
    Misuse {
        message: String,
    },
    /// Something on the host's side failed (marked [`crate::runtime::fault::HostFault`]).
    Host {
        message: String,
    },
    /// The flow's plugin did not load when warden started, so no hook of it can run.
    NotLoaded {
        message: String,
        blame: Blame,
    },
}

impl fmt::Display for Blame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Blame::Plugin => "plugin",
            Blame::Host => "host",
        })
    }
}

/// A hook that did not produce a usable decision. The request fails closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookFailure {
    pub flow: String,
    pub hook: String,
    #[serde(flatten)]
    pub kind: FailureKind,
}

impl HookFailure {
    pub fn blame(&self) -> Blame {
        match self.kind {
            FailureKind::Host { .. } => Blame::Host,
            FailureKind::NotLoaded { blame, .. } => blame,
            FailureKind::Deadline { .. }
            | FailureKind::Memory { .. }
            | FailureKind::StackOverflow
            | FailureKind::Trap { .. }
            | FailureKind::PluginError { .. }
            | FailureKind::InvalidDecision { .. }
            | FailureKind::Misuse { .. } => Blame::Plugin,
        }
    }
}

impl fmt::Display for HookFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flow `{}`, hook {}: {}",
            self.flow,
            self.hook,
            self.kind.describe(&self.hook)
        )
    }
}

impl FailureKind {
    /// What went wrong in `hook`, without naming the flow.
    pub(crate) fn describe(&self, hook: &str) -> String {
        match self {
            FailureKind::Deadline { timeout_ms } => format!(
                "deadline exceeded: the hook ran longer than limits.timeout_ms = {timeout_ms}"
            ),
            FailureKind::Memory { limit_mib } => format!(
                "memory limit exceeded: the plugin asked for more than limits.memory_mib = {limit_mib}"
            ),
            FailureKind::StackOverflow => "the plugin overflowed its stack".into(),
            FailureKind::Trap { message } => format!("the plugin trapped: {message}"),
            FailureKind::PluginError { message } => {
                format!("the plugin returned an error: {message}")
            }
            FailureKind::InvalidDecision { decision } => {
                format!("the plugin returned `{decision}`, which {hook} may not decide")
            }
            FailureKind::Host { message } => format!("host error: {message}"),
            FailureKind::NotLoaded { message, .. } => {
                format!("the flow's plugin did not load: {message}")
            }
            FailureKind::Misuse { message } => {
                format!("the plugin misused the interface: {message}")
            }
        }
    }
}

/// Everything one hook run produced, with secrets already redacted, within the event's
/// budget (see [`crate::runtime::budget`]).
#[derive(Debug, Clone)]
pub struct HookReport {
    pub flow: String,
    pub hook: HookName,
    /// False when nothing ran: the plugin does not implement the hook (the decision is
    /// `continue`), or no instance slot was free in time (a failure).
    pub ran: bool,
    pub outcome: Result<Decision, HookFailure>,
    pub logs: Vec<LogLine>,
    pub refusals: Vec<Refusal>,
    pub http_calls: Vec<HttpCall>,
    pub elapsed: Duration,
    /// True when the instance was made before the event arrived, off its path.
    pub prepared_ahead: bool,
}

impl HookReport {
    /// The report of a hook that did not run: nothing logged, refused or called.
    pub(crate) fn not_run(
        flow: &str,
        hook: HookName,
        outcome: Result<Decision, HookFailure>,
    ) -> Self {
        Self {
            flow: flow.to_string(),
            hook,
            ran: false,
            outcome,
            logs: Vec::new(),
            refusals: Vec::new(),
            http_calls: Vec::new(),
            elapsed: Duration::ZERO,
            prepared_ahead: false,
        }
    }

    /// The decision to act on: a failure fails closed to `continue` (a human decides).
    pub fn decision(&self) -> Decision {
        self.outcome.clone().unwrap_or(Decision::Continue)
    }

    /// The report with every secret value `r` knows replaced, each text kept within its
    /// bound. The redactor is built after the hook ran, so it knows values fetched during it.
    pub(crate) fn redacted(self, r: &Redactor) -> Self {
        let mut report = self;
        // Everything here was cut to its bound when kept (see `budget`): a value's start left
        // at a cut is redacted too, and text `[REDACTED]` made longer is cut back.
        let message = |text: String| r.redact_within(&text, MAX_MESSAGE_BYTES);
        report.outcome = match report.outcome {
            Ok(d) => Ok(d.map_text(message)),
            Err(mut f) => {
                f.kind = match f.kind {
                    FailureKind::Trap { message: m } => FailureKind::Trap {
                        message: message(m),
                    },
                    FailureKind::PluginError { message: m } => FailureKind::PluginError {
                        message: message(m),
                    },
                    FailureKind::Misuse { message: m } => FailureKind::Misuse {
                        message: message(m),
                    },
                    FailureKind::Host { message: m } => FailureKind::Host {
                        message: message(m),
                    },
                    other => other,
                };
                Err(f)
            }
        };
        // Only where the host cut a line does the start of a value left there count: a plugin
        // can fill its log budget with text that looks like cut markers, and a look at each
        // for every secret's start would cost the host far more than the hook did.
        for line in &mut report.logs {
            line.message = if line.cut {
                r.redact_cut_at_end(&line.message)
            } else {
                r.redact(&line.message)
            };
        }
        // A plugin can put a value it was shown into a host name, a secret id or an alias;
        // refusals and calls quote those back.
        for refusal in &mut report.refusals {
            refusal.detail = r.redact_within(&refusal.detail, MAX_REFUSAL_BYTES);
        }
        for call in &mut report.http_calls {
            call.origin = r.redact_within(&call.origin, MAX_URL_PART_BYTES);
            call.path = r.redact_within(&call.path, MAX_URL_PART_BYTES);
        }
        report
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("unknown flow `{flow}` (flows: {known})")]
    UnknownFlow { flow: String, known: String },
    #[error(transparent)]
    Event(#[from] EventError),
}

/// What `warden check` prints for one flow.
#[derive(Debug, Clone, Serialize)]
pub struct FlowSummary {
    pub name: String,
    pub plugin: PathBuf,
    pub adapted_from_core_module: bool,
    /// How the plugin was loaded: `cached`, `compiled`, or why the cache was not used.
    pub compiled: String,
    pub hooks: Vec<String>,
    pub integrations: Vec<String>,
    pub secrets: Vec<String>,
    pub identity_services: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub reveal_secrets: bool,
    pub limits: LimitsSummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct LimitsSummary {
    pub memory_mib: u64,
    pub timeout_ms: u128,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::log::{LogLevel, LogSource};
    use crate::secrets::SecretValue;

    #[test]
    fn only_lines_the_host_cut_have_a_values_start_dropped_at_their_end() {
        let line = |message: &str, cut| LogLine {
            level: LogLevel::Info,
            source: LogSource::Stdout,
            message: message.to_string(),
            cut,
        };
        let mut report = HookReport::not_run("f", HookName::OnRequest, Ok(Decision::Continue));
        report.logs = vec![
            // Written by the plugin, markers and all: only whole values are redacted.
            line("s3cr3t...(0 more bytes) s3cr3t-VALUE", false),
            line("ends s3cr3t", false),
            // Cut by the host eight bytes into the value.
            line("ends s3cr3t-V", true),
        ];
        let r = Redactor::new(vec![SecretValue::new("s3cr3t-VALUE")]);
        let logs: Vec<String> = report
            .redacted(&r)
            .logs
            .into_iter()
            .map(|l| l.message)
            .collect();
        assert_eq!(
            logs,
            [
                "s3cr3t...(0 more bytes) [REDACTED]",
                "ends s3cr3t",
                // As much as the value's longest start could take (11 bytes) is dropped.
                "en"
            ]
        );
    }
}

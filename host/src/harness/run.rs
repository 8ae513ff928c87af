//! Running one case in the real sandbox and checking what it did against its expectations.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::load::{Case, level_name};
use super::mock::MockTransport;
use super::spec::IdentitySpec;
use crate::capabilities::log::{LogLine, LogSource};
use crate::cli::escape::escape_control;
use crate::config::Config;
use crate::runtime::hooks::Decision;
use crate::runtime::{HookReport, SharedEngine, StartOptions, Warden};
use crate::secrets::SecretValue;
use crate::store::Store;

/// The flow and environment every case's config declares.
const FLOW: &str = "test";
const ENVIRONMENT: &str = "test";

/// How one case went.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: PathBuf,
    pub name: String,
    /// Each way the run differed from the case's expectations; empty when it passed.
    pub failures: Vec<String>,
    /// The run's log lines (secrets redacted), shown with failures.
    pub logs: Vec<String>,
    pub elapsed: Duration,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    fn failed(case: &Case, started: Instant, failure: String) -> Self {
        Self {
            file: case.file.clone(),
            name: case.name.clone(),
            failures: vec![failure],
            logs: Vec::new(),
            elapsed: started.elapsed(),
        }
    }
}

/// The operator config a case stands for: its secrets (as environment variables the
/// harness supplies), integrations, one environment and one flow, validated by the real
/// parser.
pub fn case_config(case: &Case) -> (String, BTreeMap<String, String>) {
    use toml::{Table, Value};
    let mut root = Table::new();
    let mut env = BTreeMap::new();
    let mut secrets = Table::new();
    for (index, (id, value)) in case.secrets.iter().enumerate() {
        let name = format!("WARDEN_TEST_SECRET_{index}");
        env.insert(name.clone(), value.clone());
        let mut secret = Table::new();
        secret.insert("source".into(), "env".into());
        secret.insert("name".into(), name.into());
        secrets.insert(id.clone(), secret.into());
    }
    let mut integrations = Table::new();
    let mut aliases = Table::new();
    for (name, spec) in &case.integrations {
        let mut integration = Table::new();
        integration.insert("type".into(), spec.kind.clone().into());
        integration.insert("external_id".into(), spec.external_id.clone().into());
        integration.insert(
            "secrets".into(),
            Value::Array(spec.secrets.iter().map(|s| s.clone().into()).collect()),
        );
        integration.insert("settings".into(), spec.settings.clone().into());
        integrations.insert(name.clone(), integration.into());
        aliases.insert(
            spec.alias.clone().unwrap_or_else(|| name.clone()),
            name.clone().into(),
        );
    }
    let mut environment = Table::new();
    environment.insert("integrations".into(), aliases.into());
    let mut environments = Table::new();
    environments.insert(ENVIRONMENT.into(), environment.into());

    let mut flow = Table::new();
    flow.insert("environment".into(), ENVIRONMENT.into());
    flow.insert("plugin".into(), case.plugin.display().to_string().into());
    let vars: Table = case.flow.vars.clone().into_iter().collect();
    flow.insert("vars".into(), vars.into());
    let hosts = case.flow.allowed_hosts.clone().unwrap_or_default();
    flow.insert(
        "allowed_hosts".into(),
        Value::Array(hosts.into_iter().map(Value::from).collect()),
    );
    if let Some(reveal) = case.flow.reveal_secrets {
        flow.insert("reveal_secrets".into(), reveal.into());
    }
    if let Some(limits) = &case.flow.limits {
        flow.insert("limits".into(), limits.clone().into());
    }
    let mut flows = Table::new();
    flows.insert(flow_name(case).into(), flow.into());

    // No `[cache]`: compiled plugins go to the author's own cache folder, never beside
    // their test files nor to a folder other users can reach (such as the temp folder).
    root.insert("secrets".into(), secrets.into());
    root.insert("integrations".into(), integrations.into());
    root.insert("environments".into(), environments.into());
    root.insert("flows".into(), flows.into());
    (
        toml::to_string(&root).expect("a TOML table serializes"),
        env,
    )
}

fn flow_name(case: &Case) -> &str {
    case.flow.name.as_deref().unwrap_or(FLOW)
}

/// Runs `case` in a fresh `Warden` (sharing `engine`'s compiled plugins) with an in-memory
/// identity store and the case's mocks as the only HTTP transport.
pub async fn run_case(case: &Case, engine: &SharedEngine) -> CaseResult {
    let started = Instant::now();
    let (text, env) = case_config(case);
    let config = match Config::parse(&text, &case.file, &|name| env.get(name).cloned()) {
        Ok(config) => config,
        Err(errors) => {
            // Each error quotes the test file's keys and values: escaped, each stays a line.
            let mut message = String::from("the case's flow is invalid:");
            for e in errors.0 {
                let why = escape_control(&e.message);
                let _ = match e.key.as_str() {
                    "" => write!(message, "\n  {why}"),
                    key => write!(message, "\n  {}: {why}", escape_control(key)),
                };
            }
            return CaseResult::failed(case, started, message);
        }
    };
    let store = match Store::open_in_memory() {
        Ok(store) => Arc::new(store),
        Err(e) => return CaseResult::failed(case, started, format!("host error: {e}")),
    };
    for i in &case.identities {
        if let Err(e) = store.persist_identity(&i.email, &i.service, &i.service_id, &i.user_id) {
            return CaseResult::failed(case, started, format!("host error: {e}"));
        }
    }
    let secrets = case
        .secrets
        .iter()
        .map(|(id, value)| (id.clone(), SecretValue::new(value.as_str())))
        .collect();
    let transport = Arc::new(MockTransport::new(case.mocks.clone(), secrets));
    let options = StartOptions {
        engine: Some(engine.clone()),
        transport: Some(transport.clone()),
    };
    let secret_store = Arc::new(crate::secrets::SecretStore::new(&config.secrets));
    let warden = match Warden::start_with(config, store.clone(), secret_store, options).await {
        Ok(w) => w,
        Err(e) => {
            let error = escape_control(&e.to_string()).into_owned();
            return CaseResult::failed(case, started, format!("cannot start: {error}"));
        }
    };
    // The fields as `warden serve` hands them on: `duration` as its seconds; a value it
    // would refuse, refused.
    let event = match crate::serve::event_as_served(warden.config(), flow_name(case), &case.event) {
        Ok(event) => event,
        Err(e) => {
            let error = escape_control(&e).into_owned();
            return CaseResult::failed(
                case,
                started,
                format!("the event's fields, as warden serve refuses them: {error}"),
            );
        }
    };
    let report = match warden.run_hook(flow_name(case), case.hook, &event).await {
        Ok(report) => report,
        // It may quote the test file's event (its name, a field's) as written.
        Err(e) => {
            let error = escape_control(&e.to_string()).into_owned();
            return CaseResult::failed(case, started, error);
        }
    };
    let stored = store.all_identities().map(|all| {
        all.into_iter()
            .map(|i| IdentitySpec {
                email: i.email,
                service: i.service,
                service_id: i.service_id,
                user_id: i.user_id,
            })
            .collect::<Vec<_>>()
    });
    let mut failures = Vec::new();
    check_outcome(case, &report, &mut failures);
    match stored {
        Ok(stored) => check_identities(case, &stored, &mut failures),
        Err(e) => failures.push(format!("host error reading identities: {e}")),
    }
    check_logs(case, &report.logs, &mut failures);
    check_http(case, &transport, &mut failures);
    check_refusals(case, &report, &mut failures);
    CaseResult {
        file: case.file.clone(),
        name: case.name.clone(),
        failures,
        logs: report.logs.iter().map(show_log).collect(),
        elapsed: started.elapsed(),
    }
}

pub fn show_log(line: &LogLine) -> String {
    let source = match line.source {
        LogSource::Plugin => "plugin",
        LogSource::Stdout => "plugin stdout",
        LogSource::Stderr => "plugin stderr",
        LogSource::Host => "warden",
    };
    format!(
        "{:5} {source}: {}",
        level_name(line.level).to_uppercase(),
        escape_control(&line.message)
    )
}

fn reason_of(decision: &Decision) -> Option<&str> {
    match decision {
        Decision::Continue => None,
        Decision::Approve { reason } | Decision::Deny { reason } => reason.as_deref(),
        Decision::Ignore { message } => message.as_deref(),
    }
}

fn show_decision(decision: &Decision) -> String {
    match reason_of(decision) {
        Some(reason) => format!("{} `{}`", decision.kind(), escape_control(reason)),
        None => decision.kind().to_string(),
    }
}

fn check_outcome(case: &Case, report: &HookReport, failures: &mut Vec<String>) {
    let expect = &case.expect;
    let not_run = if report.ran {
        String::new()
    } else {
        format!(" (the plugin does not implement {})", case.hook)
    };
    // What the plugin chose (its reason, its error) is escaped: it cannot add lines to the
    // report.
    let shown_reason = |reason: Option<&str>| {
        reason.map_or("no reason".into(), |r| format!("`{}`", escape_control(r)))
    };
    match (&expect.decision, &report.outcome) {
        (Some(kind), Err(failure)) => failures.push(format!(
            "decision:\n  - expected {kind}\n  + the hook failed: {}",
            escape_control(&failure.to_string())
        )),
        (None, Ok(decision)) => failures.push(format!(
            "failure:\n  - expected the hook to fail with `{}`\n  + it decided {}{not_run}",
            escape_control(expect.failure.as_deref().unwrap_or_default()),
            show_decision(decision)
        )),
        (None, Err(failure)) => {
            let wanted = expect.failure.as_deref().unwrap_or_default();
            let failure = failure.to_string();
            if !failure.contains(wanted) {
                failures.push(format!(
                    "failure:\n  - expected a failure containing `{}`\n  + {}",
                    escape_control(wanted),
                    escape_control(&failure)
                ));
            }
        }
        (Some(kind), Ok(decision)) => {
            if decision.kind() != kind {
                failures.push(format!(
                    "decision:\n  - expected {kind}\n  + got {}{not_run}",
                    show_decision(decision)
                ));
                return;
            }
            let reason = reason_of(decision);
            if let Some(wanted) = &expect.reason
                && reason != Some(wanted.as_str())
            {
                failures.push(format!(
                    "reason:\n  - expected `{}`\n  + got {}",
                    escape_control(wanted),
                    shown_reason(reason)
                ));
            }
            if let Some(pattern) = &expect.reason_matches
                && !reason.is_some_and(|r| pattern.is_match(r))
            {
                failures.push(format!(
                    "reason:\n  - expected to match /{}/\n  + got {}",
                    escape_control(pattern.as_str()),
                    shown_reason(reason)
                ));
            }
        }
    }
}

/// An identity on one line: the plugin may have stored any text.
fn show_identity(i: &IdentitySpec) -> String {
    escape_control(&format!(
        "{} {}/{} = {}",
        i.email, i.service, i.service_id, i.user_id
    ))
    .into_owned()
}

fn check_identities(case: &Case, stored: &[IdentitySpec], failures: &mut Vec<String>) {
    let Some(expected) = &case.expect.identities else {
        return;
    };
    let key = |i: &IdentitySpec| {
        (
            i.email.to_lowercase(),
            i.service.clone(),
            i.service_id.clone(),
            i.user_id.clone(),
        )
    };
    let mut want: Vec<&IdentitySpec> = expected.iter().collect();
    let mut have: Vec<&IdentitySpec> = stored.iter().collect();
    want.sort_by_key(|i| key(i));
    have.sort_by_key(|i| key(i));
    if want.iter().map(|i| key(i)).eq(have.iter().map(|i| key(i))) {
        return;
    }
    let mut message = String::from("identities stored after the run:");
    for line in diff_lines(
        &want.iter().map(|i| show_identity(i)).collect::<Vec<_>>(),
        &have.iter().map(|i| show_identity(i)).collect::<Vec<_>>(),
        |a, b| a.to_lowercase() == b.to_lowercase(),
    ) {
        let _ = write!(message, "\n  {line}");
    }
    if want.is_empty() && have.is_empty() {
        message.push_str("\n  (none)");
    }
    failures.push(message);
}

fn check_logs(case: &Case, logs: &[LogLine], failures: &mut Vec<String>) {
    let mut next = 0;
    for wanted in &case.expect.logs {
        let found = logs[next..].iter().position(|line| {
            wanted.level.is_none_or(|l| l == line.level)
                && wanted
                    .contains
                    .as_deref()
                    .is_none_or(|t| line.message.contains(t))
                && wanted
                    .matches
                    .as_ref()
                    .is_none_or(|re| re.is_match(&line.message))
        });
        match found {
            Some(offset) => next += offset + 1,
            None => {
                let mut message = format!("log:\n  - expected a line {}", wanted.describe());
                if next > 0 {
                    message.push_str(" after the lines matched before it");
                }
                if logs.is_empty() {
                    message.push_str("\n  + the plugin logged nothing");
                } else {
                    for line in logs {
                        let _ = write!(message, "\n  + {}", show_log(line));
                    }
                }
                failures.push(message);
                return;
            }
        }
    }
}

/// Unmatched requests shown one by one; the rest are counted.
const MAX_UNMATCHED_SHOWN: usize = 8;

fn check_http(case: &Case, transport: &MockTransport, failures: &mut Vec<String>) {
    let requests = transport.requests();
    for request in requests
        .iter()
        .filter(|r| r.matched.is_none())
        .take(MAX_UNMATCHED_SHOWN)
    {
        let mut message = String::from("a request matched no mock:\n");
        message.push_str(&request.render("  "));
        match &request.closest {
            Some((index, diffs)) => {
                let _ = write!(
                    message,
                    "  closest mock: #{} `{}`",
                    index + 1,
                    transport.mocks()[*index].label()
                );
                for diff in diffs {
                    let _ = write!(message, "\n    {diff}");
                }
            }
            None => message.push_str("  (the case has no mocks)"),
        }
        failures.push(message);
    }
    let unmatched = requests.iter().filter(|r| r.matched.is_none()).count();
    if unmatched > MAX_UNMATCHED_SHOWN {
        failures.push(format!(
            "{} more request(s) matched no mock (the first {MAX_UNMATCHED_SHOWN} are shown)",
            unmatched - MAX_UNMATCHED_SHOWN
        ));
    }
    let dropped = transport.requests_dropped();
    if dropped > 0 {
        failures.push(format!(
            "{dropped} more request(s) made, not recorded: at most {} are kept per case",
            super::mock::MAX_RECORDED_REQUESTS
        ));
    }
    for (index, (mock, calls)) in transport.mocks().iter().zip(transport.calls()).enumerate() {
        if let Some(times) = mock.times
            && calls != times
        {
            failures.push(format!(
                "mock #{} `{}`:\n  - expected {times} call(s)\n  + got {calls}",
                index + 1,
                mock.label()
            ));
        }
    }
    if let Some(expected) = &case.expect.http_calls {
        let actual: Vec<String> = requests.iter().map(|r| r.line()).collect();
        if *expected != actual {
            let mut message = String::from("HTTP calls (- expected, + made):");
            for line in diff_lines(expected, &actual, |a, b| a == b) {
                let _ = write!(message, "\n  {line}");
            }
            if expected.is_empty() && actual.is_empty() {
                message.push_str("\n  (none)");
            }
            failures.push(message);
        }
    }
}

fn check_refusals(case: &Case, report: &HookReport, failures: &mut Vec<String>) {
    // A refusal quotes the names the plugin asked for.
    let shown: Vec<String> = report
        .refusals
        .iter()
        .map(|r| escape_control(&r.to_string()).into_owned())
        .collect();
    let mut left: Vec<String> = report.refusals.iter().map(|r| r.to_string()).collect();
    for wanted in &case.expect.refusals {
        match left.iter().position(|r| r.contains(wanted.as_str())) {
            Some(i) => {
                left.remove(i);
            }
            None => failures.push(format!(
                "refusals:\n  - expected a refusal containing `{}`\n  + {}",
                escape_control(wanted),
                if shown.is_empty() {
                    "there was none".to_string()
                } else {
                    shown.join("\n  + ")
                }
            )),
        }
    }
    for refusal in left {
        failures.push(format!(
            "unexpected refusal (list it under expect.refusals if it is meant):\n  + {}",
            escape_control(&refusal)
        ));
    }
}

/// Cells (expected × actual lines) past which two lists are not diffed line by line: a test
/// file may expect, and store before its run, tens of thousands of identities, and the table
/// a diff fills would take gigabytes.
const MAX_DIFF_CELLS: usize = 1 << 20;
/// Lines of a diff shown; the rest are counted.
const MAX_DIFF_LINES: usize = 200;
/// Lines of each list shown when they are too long to diff.
const UNDIFFED_LINES: usize = 20;

/// A line diff of two short lists: common lines with two spaces, `-` only expected, `+`
/// only actual; at most [`MAX_DIFF_LINES`] of it. Lists too long to diff are counted, and
/// the first lines of each shown.
fn diff_lines(
    expected: &[String],
    actual: &[String],
    same: impl Fn(&str, &str) -> bool,
) -> Vec<String> {
    let (n, m) = (expected.len(), actual.len());
    if n.saturating_mul(m) > MAX_DIFF_CELLS {
        let mut out = vec![format!(
            "(expected {n} lines, got {m}: too many to compare line by line; the first of each)"
        )];
        out.extend(
            expected
                .iter()
                .take(UNDIFFED_LINES)
                .map(|line| format!("- {}", escape_control(line))),
        );
        out.extend(
            actual
                .iter()
                .take(UNDIFFED_LINES)
                .map(|line| format!("+ {}", escape_control(line))),
        );
        return out;
    }
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if same(&expected[i], &actual[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if out.len() == MAX_DIFF_LINES {
            out.push(format!(
                "... and the rest of {n} expected and {m} got lines"
            ));
            break;
        }
        if i < n && j < m && same(&expected[i], &actual[j]) {
            out.push(format!("  {}", escape_control(&actual[j])));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+ {}", escape_control(&actual[j])));
            j += 1;
        } else {
            out.push(format!("- {}", escape_control(&expected[i])));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lines_marks_missing_and_extra_lines() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let out = diff_lines(&s(&["a", "b", "c"]), &s(&["a", "c", "d"]), |a, b| a == b);
        assert_eq!(out, ["  a", "- b", "  c", "+ d"]);
    }

    #[test]
    fn lists_too_long_to_diff_are_counted_and_a_diff_is_cut_short() {
        let lines =
            |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>();
        // 40,000 × 40,000 lines would fill a table of 1.6e9 cells.
        let out = diff_lines(&lines("a", 40_000), &lines("b", 40_000), |a, b| a == b);
        assert_eq!(out.len(), 1 + 2 * UNDIFFED_LINES);
        assert_eq!(
            out[0],
            "(expected 40000 lines, got 40000: too many to compare line by line; the first of each)"
        );
        assert_eq!((out[1].as_str(), out[21].as_str()), ("- a0", "+ b0"));
        // Short enough to diff, too long to show whole.
        let out = diff_lines(&lines("a", 1000), &lines("b", 1000), |a, b| a == b);
        assert_eq!(out.len(), MAX_DIFF_LINES + 1);
        assert_eq!(
            out[MAX_DIFF_LINES],
            "... and the rest of 1000 expected and 1000 got lines"
        );
    }
}

//! Counters and a latency histogram, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::runtime::HookReport;
use crate::store::Store;

use crate::store::requests::State;

/// The `host` label of HTTP calls refused, or whose URL matched no `allowed_hosts` entry.
pub const NOT_ALLOWED: &str = "(not allowed)";

/// Upper bounds of the hook latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    /// (flow, hook, outcome)
    hook_calls: BTreeMap<(String, String, String), u64>,
    /// (flow, hook)
    hook_latency: BTreeMap<(String, String), Histogram>,
    /// (flow, hook, kind)
    hook_failures: BTreeMap<(String, String, String), u64>,
    /// (flow, host, status)
    http_egress: BTreeMap<(String, String, String), u64>,
    /// (flow, kind)
    grant_refusals: BTreeMap<(String, String), u64>,
    /// status
    api_responses: BTreeMap<u16, u64>,
    /// result
    reloads: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// The outcome label of a hook run: its decision, `failed`, or `skipped` when the plugin
/// does not implement the hook.
pub fn outcome_label(report: &HookReport) -> &'static str {
    match &report.outcome {
        Err(_) => "failed",
        _ if !report.ran => "skipped",
        Ok(decision) => decision.kind(),
    }
}

impl Metrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn observe_hook(&self, report: &HookReport) {
        let flow = report.flow.clone();
        let hook = report.hook.to_string();
        let mut inner = self.inner();
        *inner
            .hook_calls
            .entry((flow.clone(), hook.clone(), outcome_label(report).into()))
            .or_default() += 1;
        // Counted whether or not anything ran: a hook that found no free instance, or whose
        // plugin did not load, failed all the same.
        if let Err(failure) = &report.outcome {
            let kind = serde_json::to_value(&failure.kind)
                .ok()
                .and_then(|v| v["kind"].as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            *inner
                .hook_failures
                .entry((flow.clone(), hook.clone(), kind))
                .or_default() += 1;
        }
        if !report.ran {
            return;
        }
        let seconds = report.elapsed.as_secs_f64();
        let histogram = inner
            .hook_latency
            .entry((flow.clone(), hook.clone()))
            .or_default();
        histogram.count += 1;
        histogram.sum += seconds;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                histogram.buckets[i] += 1;
            }
        }
        for call in &report.http_calls {
            // The operator's allowed_hosts entry, never the host the plugin asked for (a
            // `*.` entry would let it mint a series per subdomain); refused and unmatched
            // calls share one label. The status is a server's, from 100 to 999, or one of
            // the http-error kinds.
            let host = match &call.rule {
                Some(rule) if call.outcome != "denied" => rule.clone(),
                _ => NOT_ALLOWED.to_string(),
            };
            *inner
                .http_egress
                .entry((flow.clone(), host, call.outcome.clone()))
                .or_default() += 1;
        }
        for refusal in &report.refusals {
            *inner
                .grant_refusals
                .entry((flow.clone(), refusal.kind.as_str().into()))
                .or_default() += 1;
        }
    }

    /// A hook that could not even be started (its flow is gone after a reload, say).
    pub fn observe_unrunnable(&self, flow: &str, hook: &str) {
        let mut inner = self.inner();
        *inner
            .hook_calls
            .entry((flow.into(), hook.into(), "failed".into()))
            .or_default() += 1;
        *inner
            .hook_failures
            .entry((flow.into(), hook.into(), "host".into()))
            .or_default() += 1;
    }

    pub fn observe_response(&self, status: u16) {
        *self.inner().api_responses.entry(status).or_default() += 1;
    }

    pub fn observe_reload(&self, ok: bool) {
        *self
            .inner()
            .reloads
            .entry(if ok { "ok" } else { "refused" })
            .or_default() += 1;
    }

    pub fn render(
        &self,
        requests_by_state: &[(State, u64)],
        api_in_flight: usize,
        store: &Store,
    ) -> String {
        let (store_writes, store_commits) = store.write_counts();
        let inner = self.inner();
        let mut out = String::new();

        let body = inner
            .hook_calls
            .iter()
            .map(|((flow, hook, outcome), n)| {
                format!(
                    "warden_hook_calls_total{{flow=\"{}\",hook=\"{}\",outcome=\"{}\"}} {n}",
                    esc(flow),
                    esc(hook),
                    esc(outcome)
                )
            })
            .collect();
        section(
            &mut out,
            "warden_hook_calls_total",
            "counter",
            "Hook calls by flow, hook and outcome (a decision, failed, or skipped when not implemented).",
            body,
        );

        let mut body = Vec::new();
        for ((flow, hook), h) in &inner.hook_latency {
            let labels = format!("flow=\"{}\",hook=\"{}\"", esc(flow), esc(hook));
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                body.push(format!(
                    "warden_hook_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    h.buckets[i]
                ));
            }
            body.push(format!(
                "warden_hook_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            ));
            body.push(format!(
                "warden_hook_duration_seconds_sum{{{labels}}} {}",
                h.sum
            ));
            body.push(format!(
                "warden_hook_duration_seconds_count{{{labels}}} {}",
                h.count
            ));
        }
        section(
            &mut out,
            "warden_hook_duration_seconds",
            "histogram",
            "Wall-clock time of hooks that ran, host calls included.",
            body,
        );

        let body = inner
            .hook_failures
            .iter()
            .map(|((flow, hook, kind), n)| {
                format!(
                    "warden_hook_failures_total{{flow=\"{}\",hook=\"{}\",kind=\"{}\"}} {n}",
                    esc(flow),
                    esc(hook),
                    esc(kind)
                )
            })
            .collect();
        section(
            &mut out,
            "warden_hook_failures_total",
            "counter",
            "Hooks that failed (and failed closed) by kind.",
            body,
        );

        let body = inner
            .http_egress
            .iter()
            .map(|((flow, host, status), n)| {
                format!(
                    "warden_http_egress_total{{flow=\"{}\",host=\"{}\",status=\"{}\"}} {n}",
                    esc(flow),
                    esc(host),
                    esc(status)
                )
            })
            .collect();
        section(
            &mut out,
            "warden_http_egress_total",
            "counter",
            "HTTP requests plugins made, by the allowed_hosts entry their URL matched and final status or error.",
            body,
        );

        let body = inner
            .grant_refusals
            .iter()
            .map(|((flow, kind), n)| {
                format!(
                    "warden_grant_refusals_total{{flow=\"{}\",kind=\"{}\"}} {n}",
                    esc(flow),
                    esc(kind)
                )
            })
            .collect();
        section(
            &mut out,
            "warden_grant_refusals_total",
            "counter",
            "Things plugins asked for that their flow does not grant.",
            body,
        );

        let body = requests_by_state
            .iter()
            .map(|(state, n)| format!("warden_requests{{state=\"{state}\"}} {n}"))
            .collect();
        section(
            &mut out,
            "warden_requests",
            "gauge",
            "Stored access requests by state.",
            body,
        );

        section(
            &mut out,
            "warden_api_in_flight",
            "gauge",
            "API requests being answered now (bounded by serve.max_in_flight).",
            vec![format!("warden_api_in_flight {api_in_flight}")],
        );

        section(
            &mut out,
            "warden_store_writes_total",
            "counter",
            "Writes to the store (each request step is one).",
            vec![format!("warden_store_writes_total {store_writes}")],
        );
        section(
            &mut out,
            "warden_store_commits_total",
            "counter",
            "Store transactions committed or tried; writes waiting together share one.",
            vec![format!("warden_store_commits_total {store_commits}")],
        );
        section(
            &mut out,
            "warden_identity_lookups_from_memory_total",
            "counter",
            "Identity lookups answered from memory: the store had not changed since they were read.",
            vec![format!(
                "warden_identity_lookups_from_memory_total {}",
                store.identity_lookups_from_memory()
            )],
        );

        let body = inner
            .api_responses
            .iter()
            .map(|(status, n)| format!("warden_api_responses_total{{status=\"{status}\"}} {n}"))
            .collect();
        section(
            &mut out,
            "warden_api_responses_total",
            "counter",
            "API responses by status.",
            body,
        );

        let body = inner
            .reloads
            .iter()
            .map(|(result, n)| format!("warden_reloads_total{{result=\"{result}\"}} {n}"))
            .collect();
        section(
            &mut out,
            "warden_reloads_total",
            "counter",
            "Config reloads, applied or refused.",
            body,
        );
        out
    }
}

fn section(out: &mut String, name: &str, kind: &str, help: &str, body: Vec<String>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for line in body {
        out.push_str(&line);
        out.push('\n');
    }
}

/// Escapes a label value for the Prometheus text format.
fn esc(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HookName;
    use crate::capabilities::http::HttpCall;

    #[test]
    fn only_allowed_origins_become_labels() {
        let call = |origin: &str, outcome: &str, allowed: bool| HttpCall {
            method: "GET".into(),
            origin: origin.into(),
            path: "/".into(),
            rule: allowed.then(|| origin.to_string()),
            outcome: outcome.into(),
        };
        let report = HookReport {
            flow: "f".into(),
            hook: HookName::OnRequest,
            ran: true,
            outcome: Ok(crate::Decision::Continue),
            logs: Vec::new(),
            refusals: Vec::new(),
            http_calls: vec![
                call("https://api.example.com", "200", true),
                // Timed out before the allowlist was checked, or not http at all.
                call("http://made-up-1.example", "timeout", false),
                call("null", "invalid", false),
                call("http://made-up-2.example", "denied", false),
            ],
            elapsed: std::time::Duration::ZERO,
            prepared_ahead: false,
        };
        let metrics = Metrics::default();
        metrics.observe_hook(&report);
        let hosts: Vec<String> = metrics
            .inner()
            .http_egress
            .keys()
            .map(|(_, host, _)| host.clone())
            .collect();
        assert_eq!(
            hosts,
            [
                "(not allowed)",
                "(not allowed)",
                "(not allowed)",
                "https://api.example.com"
            ]
        );
    }
}

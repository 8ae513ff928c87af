//! `/metrics`: counters and a hook latency histogram kept with the Prometheus project's own
//! client (`prometheus-client`), rendered in the OpenMetrics text format.
//!
//! Each metric is a family of atomic series keyed by a typed label set, so the hook path
//! bumps a counter without a lock shared by every metric. Label values come only from the
//! config and warden's own fixed names (flow names, `allowed_hosts` entries as written, hook
//! names, outcomes, failure and refusal kinds, statuses), never from what a plugin or a client
//! sends, so neither can mint series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::runtime::HookReport;
use crate::runtime::hooks::HookName;
use crate::store::backend::StoreCounts;
use crate::store::requests::State;
use crate::{FailureKind, HookFailure};

/// The `host` label of HTTP calls refused, or whose URL matched no `allowed_hosts` entry.
pub const NOT_ALLOWED: &str = "(not allowed)";

/// What `/metrics` answers in.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the hook latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    flow: String,
    hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookCallLabels {
    flow: String,
    hook: &'static str,
    /// A decision, `failed`, or `skipped` ([`outcome_label`]).
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookFailureLabels {
    flow: String,
    hook: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EgressLabels {
    flow: String,
    /// The `allowed_hosts` entry the URL matched, or [`NOT_ALLOWED`].
    host: String,
    /// A server's status (100 to 999) or an http-error kind.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    flow: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    channel: String,
    /// `delivered`, `retried` or `failed` (given up).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The metrics warden counts as it goes; those read from elsewhere at scrape time (requests
/// by state, the API's requests in flight, the store's counts) are passed to [`Metrics::render`].
pub struct Metrics {
    /// Holds a handle to each family below, in the order they are rendered.
    registry: Registry,
    hook_calls: Family<HookCallLabels, Counter>,
    hook_latency: Family<HookLabels, Histogram, fn() -> Histogram>,
    hook_failures: Family<HookFailureLabels, Counter>,
    http_egress: Family<EgressLabels, Counter>,
    grant_refusals: Family<RefusalLabels, Counter>,
    api_responses: Family<StatusLabels, Counter>,
    api_connections: Gauge,
    unknown_tokens: Counter,
    refusals_not_audited: Counter,
    reloads: Family<ReloadLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let hook_calls = Family::default();
        let hook_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let hook_failures = Family::default();
        let http_egress = Family::default();
        let grant_refusals = Family::default();
        let api_responses = Family::default();
        let api_connections = Gauge::default();
        let unknown_tokens = Counter::default();
        let refusals_not_audited = Counter::default();
        let reloads = Family::default();
        let deliveries = Family::default();
        let mut registry = Registry::default();
        // Counters are registered without `_total`, and help texts without a closing full
        // stop: the encoder adds both.
        registry.register(
            "warden_hook_calls",
            "Hook calls by flow, hook and outcome (a decision, failed, or skipped when not implemented)",
            hook_calls.clone(),
        );
        registry.register(
            "warden_hook_duration_seconds",
            "Wall-clock time of hooks that ran, host calls included",
            hook_latency.clone(),
        );
        registry.register(
            "warden_hook_failures",
            "Hooks that failed (and failed closed) by kind",
            hook_failures.clone(),
        );
        registry.register(
            "warden_http_egress",
            "HTTP requests plugins made, by the allowed_hosts entry their URL matched and final status or error",
            http_egress.clone(),
        );
        registry.register(
            "warden_grant_refusals",
            "Things plugins asked for that their flow does not grant",
            grant_refusals.clone(),
        );
        registry.register(
            "warden_api_responses",
            "API responses by status",
            api_responses.clone(),
        );
        registry.register(
            "warden_api_connections",
            "Connections to the API open now (bounded by serve.max_connections)",
            api_connections.clone(),
        );
        registry.register(
            "warden_api_unknown_tokens",
            "API requests refused for a bearer token no one holds (console sign-ins not counted)",
            unknown_tokens.clone(),
        );
        registry.register(
            "warden_api_refusals_not_audited",
            "Refused decisions past a caller's audited ones for the minute: counted here, not in the audit log",
            refusals_not_audited.clone(),
        );
        registry.register(
            "warden_reloads",
            "Config reloads, applied or refused",
            reloads.clone(),
        );
        registry.register(
            "warden_notification_deliveries",
            "Notification delivery attempts by channel and result (delivered, retried, or failed: given up)",
            deliveries.clone(),
        );
        Self {
            registry,
            hook_calls,
            hook_latency,
            hook_failures,
            http_egress,
            grant_refusals,
            api_responses,
            api_connections,
            unknown_tokens,
            refusals_not_audited,
            reloads,
            deliveries,
        }
    }
}

/// One open API connection in `warden_api_connections`, until dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
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

/// The `kind` label of a failure: its kind's name as reports spell it.
fn failure_kind(failure: &HookFailure) -> &'static str {
    match failure.kind {
        FailureKind::Deadline { .. } => "deadline",
        FailureKind::Memory { .. } => "memory",
        FailureKind::StackOverflow => "stack-overflow",
        FailureKind::Trap { .. } => "trap",
        FailureKind::PluginError { .. } => "plugin-error",
        FailureKind::InvalidDecision { .. } => "invalid-decision",
        FailureKind::Misuse { .. } => "misuse",
        FailureKind::Host { .. } => "host",
        FailureKind::NotLoaded { .. } => "not-loaded",
    }
}

impl Metrics {
    pub fn observe_hook(&self, report: &HookReport) {
        let flow = &report.flow;
        let hook = report.hook.as_str();
        self.hook_calls
            .get_or_create(&HookCallLabels {
                flow: flow.clone(),
                hook,
                outcome: outcome_label(report),
            })
            .inc();
        // Counted whether or not anything ran: a hook that found no free instance, or whose
        // plugin did not load, failed all the same.
        if let Err(failure) = &report.outcome {
            self.hook_failures
                .get_or_create(&HookFailureLabels {
                    flow: flow.clone(),
                    hook,
                    kind: failure_kind(failure),
                })
                .inc();
        }
        if !report.ran {
            return;
        }
        self.hook_latency
            .get_or_create(&HookLabels {
                flow: flow.clone(),
                hook,
            })
            .observe(report.elapsed.as_secs_f64());
        for call in &report.http_calls {
            // The operator's allowed_hosts entry, never the host the plugin asked for (a
            // `*.` entry would let it mint a series per subdomain); refused and unmatched
            // calls share one label. The status is a server's, from 100 to 999, or one of
            // the http-error kinds.
            let host = match &call.rule {
                Some(rule) if call.outcome != "denied" => rule.clone(),
                _ => NOT_ALLOWED.to_string(),
            };
            self.http_egress
                .get_or_create(&EgressLabels {
                    flow: flow.clone(),
                    host,
                    status: call.outcome.clone(),
                })
                .inc();
        }
        for refusal in &report.refusals {
            self.grant_refusals
                .get_or_create(&RefusalLabels {
                    flow: flow.clone(),
                    kind: refusal.kind.as_str(),
                })
                .inc();
        }
    }

    /// A hook that could not even be started (its flow is gone after a reload, say).
    pub fn observe_unrunnable(&self, flow: &str, hook: HookName) {
        let hook = hook.as_str();
        self.hook_calls
            .get_or_create(&HookCallLabels {
                flow: flow.to_string(),
                hook,
                outcome: "failed",
            })
            .inc();
        self.hook_failures
            .get_or_create(&HookFailureLabels {
                flow: flow.to_string(),
                hook,
                kind: "host",
            })
            .inc();
    }

    pub fn observe_response(&self, status: u16) {
        self.api_responses
            .get_or_create(&StatusLabels { status })
            .inc();
    }

    /// Counts one API request whose bearer token no one holds.
    pub fn observe_token_failure(&self) {
        self.unknown_tokens.inc();
    }

    /// Counts one refused decision left out of the audit log; the count so far.
    pub fn refusal_not_audited(&self) -> u64 {
        self.refusals_not_audited.inc() + 1
    }

    /// Counts a connection to the API as open until the guard is dropped.
    pub fn open_connection(&self) -> OpenConnection {
        self.api_connections.inc();
        OpenConnection(self.api_connections.clone())
    }

    pub fn observe_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "refused" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// One attempt to deliver a notification to `channel` (a name from the config).
    pub fn observe_delivery(&self, channel: &str, result: &'static str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                channel: channel.to_string(),
                result,
            })
            .inc();
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]), with those read at
    /// scrape time: requests by state, the API's requests in flight, the store's counts.
    pub fn render(
        &self,
        requests_by_state: &[(State, u64)],
        api_in_flight: usize,
        store: StoreCounts,
        outbox_depth: &[(String, u64)],
    ) -> String {
        let (store_writes, store_commits) = (store.writes, store.commits);
        let mut now = Registry::default();
        let requests = Family::<StateLabels, Gauge>::default();
        for (state, n) in requests_by_state {
            requests
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        now.register(
            "warden_requests",
            "Stored access requests by state",
            requests,
        );
        now.register(
            "warden_api_in_flight",
            "API requests being answered now (bounded by serve.max_in_flight)",
            ConstGauge::new(i64::try_from(api_in_flight).unwrap_or(i64::MAX)),
        );
        now.register(
            "warden_store_writes",
            "Writes to the store (each request step is one)",
            ConstCounter::new(store_writes),
        );
        now.register(
            "warden_store_commits",
            "Store transactions committed or tried; writes waiting together share one",
            ConstCounter::new(store_commits),
        );
        now.register(
            "warden_identity_lookups_from_memory",
            "Identity lookups answered from memory: the store had not changed since they were read",
            ConstCounter::new(store.identity_lookups_from_memory),
        );
        let outbox = Family::<ChannelLabels, Gauge>::default();
        // Channels come from the config the rows were routed by; a failed read shows none.
        for (channel, n) in outbox_depth {
            outbox
                .get_or_create(&ChannelLabels {
                    channel: channel.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        let polls = crate::capabilities::http::spin::process_counts();
        let answer_polls = Family::<PollLabels, Counter>::default();
        for (result, n) in [("caught", polls.caught), ("missed", polls.missed)] {
            answer_polls.get_or_create(&PollLabels { result }).inc_by(n);
        }
        now.register(
            "warden_http_answer_polls",
            "Plugin requests that polled for a fast server's answer (http.spin_wait_us), by whether it came in time",
            answer_polls,
        );
        now.register(
            "warden_outbox_depth",
            "Notifications waiting to be delivered, by channel",
            outbox,
        );
        let mut out = String::new();
        // Writing to a String cannot fail, and every label value is encodable.
        encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &now))
            .and_then(|()| encode_eof(&mut out))
            .expect("metrics encode into a String");
        out
    }
}

#[cfg(test)]
mod tests;

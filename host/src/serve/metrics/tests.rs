use super::*;
use crate::capabilities::http::HttpCall;
use crate::{Blame, Decision};

fn report(outcome: Result<Decision, HookFailure>, http_calls: Vec<HttpCall>) -> HookReport {
    HookReport {
        flow: "f".into(),
        hook: HookName::OnRequest,
        ran: true,
        outcome,
        logs: Vec::new(),
        refusals: Vec::new(),
        http_calls,
        elapsed: std::time::Duration::from_millis(3),
        prepared_ahead: false,
    }
}

fn render(metrics: &Metrics) -> String {
    metrics.render(&[], 0, StoreCounts::default(), &[])
}

/// The sample lines of `family`, sorted (a family keeps its series in no set order).
fn samples(text: &str, family: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(family) && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn only_allowed_origins_become_labels() {
    let call = |origin: &str, outcome: &str, allowed: bool| HttpCall {
        method: "GET".into(),
        origin: origin.into(),
        path: "/".into(),
        rule: allowed.then(|| origin.to_string()),
        outcome: outcome.into(),
    };
    let metrics = Metrics::default();
    metrics.observe_hook(&report(
        Ok(Decision::Continue),
        vec![
            call("https://api.example.com", "200", true),
            // Timed out before the allowlist was checked, or not http at all.
            call("http://made-up-1.example", "timeout", false),
            call("null", "invalid", false),
            call("http://made-up-2.example", "denied", false),
        ],
    ));
    assert_eq!(
        samples(&render(&metrics), "warden_http_egress_total{"),
        [
            r#"warden_http_egress_total{flow="f",host="(not allowed)",status="denied"} 1"#,
            r#"warden_http_egress_total{flow="f",host="(not allowed)",status="invalid"} 1"#,
            r#"warden_http_egress_total{flow="f",host="(not allowed)",status="timeout"} 1"#,
            r#"warden_http_egress_total{flow="f",host="https://api.example.com",status="200"} 1"#,
        ]
    );
}

#[test]
fn failure_kind_labels_are_the_kinds_reports_name() {
    let kinds = [
        FailureKind::Deadline { timeout_ms: 1 },
        FailureKind::Memory { limit_mib: 1 },
        FailureKind::StackOverflow,
        FailureKind::Trap {
            message: "m".into(),
        },
        FailureKind::PluginError {
            message: "m".into(),
        },
        FailureKind::InvalidDecision {
            decision: "d".into(),
        },
        FailureKind::Misuse {
            message: "m".into(),
        },
        FailureKind::Host {
            message: "m".into(),
        },
        FailureKind::NotLoaded {
            message: "m".into(),
            blame: Blame::Plugin,
        },
    ];
    for kind in kinds {
        let failure = HookFailure {
            flow: "f".into(),
            hook: "on_request".into(),
            kind,
        };
        let reported = serde_json::to_value(&failure.kind).unwrap();
        assert_eq!(failure_kind(&failure), reported["kind"], "{reported}");
    }
}

#[test]
fn every_metric_is_rendered_in_openmetrics_under_its_documented_name() {
    let metrics = Metrics::default();
    let failed = HookFailure {
        flow: "f".into(),
        hook: "on_request".into(),
        kind: FailureKind::StackOverflow,
    };
    let mut refused = report(
        Ok(Decision::Continue),
        vec![HttpCall {
            method: "GET".into(),
            origin: "https://api.example.com".into(),
            path: "/".into(),
            rule: Some("https://api.example.com".into()),
            outcome: "200".into(),
        }],
    );
    refused
        .refusals
        .push(crate::capabilities::refusal::Refusal {
            kind: crate::capabilities::refusal::RefusalKind::Secret,
            detail: "not granted".into(),
        });
    metrics.observe_hook(&refused);
    metrics.observe_hook(&report(Err(failed), Vec::new()));
    metrics.observe_unrunnable("gone", HookName::AfterApprove);
    metrics.observe_response(201);
    metrics.observe_response(201);
    metrics.observe_reload(false);
    let text = metrics.render(
        &[(State::Pending, 3), (State::Denied, 0)],
        2,
        StoreCounts::default(),
        &[("ops".to_string(), 4)],
    );

    for (family, kind) in [
        ("warden_hook_calls", "counter"),
        ("warden_hook_duration_seconds", "histogram"),
        ("warden_hook_failures", "counter"),
        ("warden_http_egress", "counter"),
        ("warden_grant_refusals", "counter"),
        ("warden_requests", "gauge"),
        ("warden_api_in_flight", "gauge"),
        ("warden_api_responses", "counter"),
        ("warden_api_connections", "gauge"),
        ("warden_reloads", "counter"),
        ("warden_store_writes", "counter"),
        ("warden_store_commits", "counter"),
        ("warden_identity_lookups_from_memory", "counter"),
        ("warden_http_answer_polls", "counter"),
    ] {
        assert!(
            text.contains(&format!("\n# TYPE {family} {kind}\n")),
            "{family}: {text}"
        );
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("\n# HELP warden_requests Stored access requests by state.\n"),
        "{text}"
    );
    for sample in [
        r#"warden_hook_calls_total{flow="f",hook="on_request",outcome="continue"} 1"#,
        r#"warden_hook_calls_total{flow="f",hook="on_request",outcome="failed"} 1"#,
        r#"warden_hook_calls_total{flow="gone",hook="after_approve",outcome="failed"} 1"#,
        r#"warden_hook_failures_total{flow="f",hook="on_request",kind="stack-overflow"} 1"#,
        r#"warden_hook_failures_total{flow="gone",hook="after_approve",kind="host"} 1"#,
        r#"warden_hook_duration_seconds_bucket{le="0.005",flow="f",hook="on_request"} 2"#,
        r#"warden_hook_duration_seconds_count{flow="f",hook="on_request"} 2"#,
        r#"warden_http_egress_total{flow="f",host="https://api.example.com",status="200"} 1"#,
        r#"warden_grant_refusals_total{flow="f",kind="secret"} 1"#,
        r#"warden_requests{state="pending"} 3"#,
        r#"warden_requests{state="denied"} 0"#,
        "warden_api_in_flight 2",
        r#"warden_api_responses_total{status="201"} 2"#,
        r#"warden_reloads_total{result="refused"} 1"#,
        "warden_store_writes_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == sample),
            "no `{sample}` in:\n{text}"
        );
    }
}

#[test]
fn answer_polls_are_the_processs_counts_at_scrape_time() {
    let before = crate::capabilities::http::spin::process_counts();
    let text = render(&Metrics::default());
    let shown = |result: &str| -> u64 {
        let prefix = format!("warden_http_answer_polls_total{{result=\"{result}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&prefix));
        let line = line.unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
        line[prefix.len()..].parse().unwrap()
    };
    // Tests beside this one may poll meanwhile: the counts only grow.
    assert!(shown("caught") >= before.caught);
    assert!(shown("missed") >= before.missed);
    let after = crate::capabilities::http::spin::process_counts();
    assert!(shown("caught") <= after.caught && shown("missed") <= after.missed);
}

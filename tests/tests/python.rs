//! Python plugins end to end: the seed's VictorOps hook ported to Python
//! (`plugins/victorops-python`) and a probe of the Python SDK (`tests/python-plugins/probe`),
//! built with `scripts/build-python-plugin` (componentize-py) and run by the real host
//! against the VictorOps stand-in. Also the build's own errors.

#[path = "python/setup.rs"]
mod setup;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use warden::capabilities::log::{LogLevel, LogSource};
use warden::capabilities::refusal::RefusalKind;
use warden::harness::RunOptions;
use warden::{Decision, FailureKind, HookName, HookReport};
use warden_tests::python;
use warden_tests::victorops_standin::{ErrorStyle, ONCALL_CURRENT_PATH, TEAMS_PATH, USERS_V2_PATH};

use setup::*;

// --- the seed's port -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_approves_an_engineer_on_call_with_its_reason_sending_the_key_sealed() {
    if !python::componentize_py_or_skip(
        "the_seed_approves_an_engineer_on_call_with_its_reason_sending_the_key_sealed",
    ) {
        return;
    }
    let s = seed(API_KEY).await;
    let report = s.request("alice@example.com").await;
    assert_eq!(approved(&report), REASON);
    assert_eq!(
        s.calls(),
        [
            (
                USERS_V2_PATH.into(),
                Some("email=alice@example.com".into()),
                Some(200)
            ),
            (ONCALL_CURRENT_PATH.into(), None, Some(200)),
        ]
    );
    // The flow does not reveal secrets, and the stand-in got the key: the host filled it
    // in. Had the plugin tried to read it, the host would have refused (and said so here).
    for request in s.standin.requests() {
        assert_eq!(request.header("accept"), Some("application/json"));
        assert_eq!(request.header("x-vo-api-id"), Some(API_ID));
        assert_eq!(request.header("x-vo-api-key"), Some(API_KEY));
    }
    assert!(report.refusals.is_empty(), "{:?}", report.refusals);
    assert_eq!(
        s.identity("alice@example.com").await.as_deref(),
        Some("alice")
    );
    // The only hook the port defines is the only one it reports.
    assert_eq!(
        s.warden.implemented(FLOW),
        Some(&BTreeSet::from([HookName::OnRequest]))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn warden_test_runs_the_ports_test_file() {
    if !python::componentize_py_or_skip("warden_test_runs_the_ports_test_file") {
        return;
    }
    let plugin = plugin("plugins/victorops-python").await;
    let file = python::repo_root().join("plugins/victorops-python/tests/victorops.toml");
    let summary = warden::harness::run(&RunOptions::new([file]).plugin(plugin)).await;
    summary.assert_passed();
    assert_eq!(summary.results.len(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_sends_engineers_off_call_and_unknown_users_to_a_human() {
    if !python::componentize_py_or_skip(
        "the_seed_sends_engineers_off_call_and_unknown_users_to_a_human",
    ) {
        return;
    }
    let s = seed(API_KEY).await;
    let report = s.request("bob@example.com").await;
    assert_eq!(report.outcome, Ok(Decision::Continue), "{:#?}", report.logs);
    assert_eq!(s.identity("bob@example.com").await.as_deref(), Some("bob"));

    s.standin.clear_requests();
    let report = s.request("zed@example.com").await;
    assert_eq!(report.outcome, Ok(Decision::Continue), "{:#?}", report.logs);
    // No VictorOps user: the roster is never asked for, nothing is stored.
    assert_eq!(
        s.calls(),
        [(
            USERS_V2_PATH.into(),
            Some("email=zed@example.com".into()),
            Some(200)
        )]
    );
    assert_eq!(s.identity("zed@example.com").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_persists_the_identity_once_and_reuses_it() {
    if !python::componentize_py_or_skip("the_seed_persists_the_identity_once_and_reuses_it") {
        return;
    }
    let s = seed(API_KEY).await;
    assert_eq!(approved(&s.request("alice@example.com").await), REASON);
    assert_eq!(approved(&s.request("alice@example.com").await), REASON);
    assert_eq!(
        s.standin.count(USERS_V2_PATH),
        1,
        "one user lookup for two requests"
    );
    assert_eq!(s.standin.count(ONCALL_CURRENT_PATH), 2);

    // An identity stored beforehand (mapped by hand) is used as it is: carol is mapped to
    // alice, who is on call.
    s.persist("carol@example.com", "alice").await;
    assert_eq!(approved(&s.request("carol@example.com").await), REASON);
    assert_eq!(s.standin.count(USERS_V2_PATH), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_victorops_error_fails_closed_with_the_python_error_and_nothing_secret() {
    if !python::componentize_py_or_skip(
        "a_victorops_error_fails_closed_with_the_python_error_and_nothing_secret",
    ) {
        return;
    }
    let s = seed(API_KEY).await;
    s.persist("alice@example.com", "alice").await;
    s.standin
        .fail_next(ONCALL_CURRENT_PATH, 500, ErrorStyle::JsonMessage, 1);
    let report = s.request("alice@example.com").await;
    let message = plugin_error(&report);
    assert!(
        message.starts_with(
            "hook `on_request` raised RuntimeError: API failed with message: Injected failure\n"
        ),
        "{message}"
    );
    // The traceback names the author's file and shows the line that raised.
    assert_contains(message, "File \"plugin.py\", line ");
    assert_contains(
        message,
        "raise RuntimeError(f\"API failed with message: {message}\")",
    );

    // An error page that is not JSON: the seed's fix names the status.
    s.standin
        .fail_next(ONCALL_CURRENT_PATH, 503, ErrorStyle::Html, 1);
    let report = s.request("alice@example.com").await;
    assert_contains(
        plugin_error(&report),
        "RuntimeError: API failed with message: 503 Service Unavailable",
    );

    // And it recovers.
    assert_eq!(approved(&s.request("alice@example.com").await), REASON);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_fails_closed_without_the_key_in_the_error() {
    if !python::componentize_py_or_skip("a_wrong_key_fails_closed_without_the_key_in_the_error") {
        return;
    }
    let wrong = "not-the-key-4e1d";
    let s = seed(wrong).await;
    let report = s.request("alice@example.com").await;
    let message = plugin_error(&report);
    assert_contains(
        message,
        "RuntimeError: API failed with message: Invalid API credentials",
    );
    assert_eq!(s.standin.requests()[0].header("x-vo-api-key"), Some(wrong));
    assert!(!format!("{report:?}").contains(wrong), "{report:#?}");
}

// --- the SDK, through the probe ---------------------------------------------------------

/// Each use of a secret's value the probe knows, and what it approves with when the flow
/// reveals secrets (the length of what it built, never the value).
const USES: &[(&str, &str)] = &[
    ("format", "format: 29"),
    ("concatenate", "concatenate: 29"),
    ("percent", "percent: 29"),
    ("slice", "slice: 4"),
    ("compare", "compare: False"),
    ("str", "str: 22"),
    ("encode", "encode: 22"),
    ("len", "len: 22"),
    ("strip", "strip: 22"),
];

fn sealed_only_refusals(report: &HookReport) -> usize {
    report
        .refusals
        .iter()
        .filter(|r| r.kind == RefusalKind::SealedOnly)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_used_as_text_needs_a_flow_that_reveals_it() {
    if !python::componentize_py_or_skip("a_secret_used_as_text_needs_a_flow_that_reveals_it") {
        return;
    }
    let mut probes: Vec<String> = USES.iter().map(|(u, _)| format!("use:{u}")).collect();
    probes.push("sealed".into());
    probes.push("header-text".into());
    let refs: Vec<&str> = probes.iter().map(String::as_str).collect();
    let s = probe(&refs).await;

    // As a whole header value: sent sealed in both flows, nothing refused.
    for flow in ["s-sealed", "r-sealed"] {
        let report = s.run(flow, "alice@example.com").await;
        assert_eq!(approved(&report), "status 200", "{flow}");
        assert!(report.refusals.is_empty(), "{flow}: {:?}", report.refusals);
    }
    assert_eq!(s.standin.count(TEAMS_PATH), 2);
    for request in s.standin.requests() {
        assert_eq!(request.header("x-vo-api-key"), Some(API_KEY));
    }

    for (use_, revealed) in USES {
        let report = s.run(&format!("s-use-{use_}"), "alice@example.com").await;
        let message = plugin_error(&report);
        assert!(
            message.starts_with("hook `on_request` raised SecretNotRevealed: cannot "),
            "{use_}: {message}"
        );
        assert_contains(
            message,
            &format!(
                "flow `s-use-{use_}` sets reveal_secrets = false: secret `vo_key` can only be sent sealed"
            ),
        );
        assert_eq!(
            sealed_only_refusals(&report),
            1,
            "{use_}: {:?}",
            report.refusals
        );

        let report = s.run(&format!("r-use-{use_}"), "alice@example.com").await;
        assert_eq!(approved(&report), *revealed, "{use_}");
        assert!(report.refusals.is_empty(), "{use_}: {:?}", report.refusals);
    }

    // The value as text in a header: refused when sealed, sent when revealed.
    let report = s.run("s-header-text", "alice@example.com").await;
    assert_contains(
        plugin_error(&report),
        "SecretNotRevealed: cannot convert it to text",
    );
    let report = s.run("r-header-text", "alice@example.com").await;
    assert_eq!(approved(&report), "status 200");
    assert_eq!(s.standin.count(TEAMS_PATH), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copy_of_a_secrets_placeholder_is_refused_before_anything_is_sent() {
    if !python::componentize_py_or_skip(
        "a_copy_of_a_secrets_placeholder_is_refused_before_anything_is_sent",
    ) {
        return;
    }
    let s = probe(&["joined"]).await;
    for flow in ["s-joined", "r-joined"] {
        let report = s.run(flow, "alice@example.com").await;
        let message = plugin_error(&report);
        assert!(
            message.starts_with(
                "hook `on_request` raised SecretError: header `X-VO-Api-Key` holds a copy of secret `vo_key`'s placeholder, not its value"
            ),
            "{flow}: {message}"
        );
        assert!(report.refusals.is_empty(), "{flow}: {:?}", report.refusals);
    }
    assert!(s.standin.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn python_failures_fail_closed_naming_the_hook_and_the_python_cause() {
    if !python::componentize_py_or_skip(
        "python_failures_fail_closed_naming_the_hook_and_the_python_cause",
    ) {
        return;
    }
    let s = probe(&[
        "raise",
        "not-a-decision",
        "missing-integration",
        "unprintable",
    ])
    .await;
    let report = s.run("s-raise", "alice@example.com").await;
    let message = plugin_error(&report);
    assert!(
        message.starts_with("hook `on_request` raised ValueError: boom from the probe\n"),
        "{message}"
    );
    assert_contains(message, "Traceback (most recent call last):");
    assert_contains(message, "File \"plugin.py\", line ");
    assert_contains(message, "raise ValueError(\"boom from the probe\")");
    assert!(
        message.ends_with("ValueError: boom from the probe"),
        "{message}"
    );

    let report = s.run("s-not-a-decision", "alice@example.com").await;
    assert_eq!(
        plugin_error(&report),
        "hook `on_request` returned int 42, not a decision: return ApprovalTemplate.approve(...), .deny(...), .ignore(...), or None to continue"
    );

    // An exception whose own text fails to be made: still the exception and its traceback.
    let report = s.run("s-unprintable", "alice@example.com").await;
    let message = plugin_error(&report);
    assert!(
        message.starts_with("hook `on_request` raised Unprintable: <exception str() failed>\n"),
        "{message}"
    );
    assert_contains(message, "raise Unprintable()");

    let report = s.run("s-missing-integration", "alice@example.com").await;
    assert!(
        plugin_error(&report).starts_with(
            "hook `on_request` raised IntegrationNotFound: no integration `pagerduty` in this flow's environment (it has: `victorops`)\n"
        ),
        "{:?}",
        report.outcome
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_hook_that_loops_allocates_or_recurses_without_end_fails_closed() {
    if !python::componentize_py_or_skip(
        "a_python_hook_that_loops_allocates_or_recurses_without_end_fails_closed",
    ) {
        return;
    }
    let s = probe_with(&["loop"], "limits = { timeout_ms = 1500 }").await;
    let report = s.run("s-loop", "alice@example.com").await;
    assert_eq!(report.decision(), Decision::Continue);
    assert_eq!(
        report.outcome.as_ref().map_err(|f| &f.kind),
        Err(&FailureKind::Deadline { timeout_ms: 1500 })
    );

    // A deadline far off: unwinding a thousand Python frames and formatting their
    // traceback takes ~0.2 s in a release build, seconds in a debug one on a busy machine.
    let s = probe_with(
        &["allocate", "recurse"],
        "limits = { timeout_ms = 30000, memory_mib = 96 }",
    )
    .await;
    let report = s.run("s-allocate", "alice@example.com").await;
    assert_eq!(report.decision(), Decision::Continue);
    match &report.outcome {
        // CPython turns a refused memory.grow into MemoryError, which fails the hook...
        Err(failure) if matches!(&failure.kind, FailureKind::PluginError { message } if message.starts_with("hook `on_request` raised MemoryError")) =>
            {}
        // ... unless the refusal hits the interpreter where it cannot raise.
        Err(failure) if matches!(failure.kind, FailureKind::Memory { limit_mib: 96 }) => {}
        other => panic!("expected a memory failure, got {other:?}"),
    }

    let report = s.run("s-recurse", "alice@example.com").await;
    assert!(
        plugin_error(&report).starts_with(
            "hook `on_request` raised RecursionError: maximum recursion depth exceeded"
        ),
        "{:?}",
        report.outcome
    );

    // And the plugin still serves.
    let report = s.run("r-recurse", "alice@example.com").await;
    assert_contains(plugin_error(&report), "RecursionError");
}

/// A Python flow's instances made ahead have the pages its first events wrote written ahead
/// (runtime/hot_pages.rs): with them, as without, every event starts from the image.
#[tokio::test(flavor = "multi_thread")]
async fn every_python_event_starts_fresh_with_its_pages_written_ahead() {
    if !python::componentize_py_or_skip(
        "every_python_event_starts_fresh_with_its_pages_written_ahead",
    ) {
        return;
    }
    let s = probe(&["counter"]).await;
    let mut prepared_ahead = 0;
    for _ in 0..12 {
        let report = s.run("s-counter", "alice@example.com").await;
        assert_eq!(approved(&report), "1", "state leaked between events");
        prepared_ahead += usize::from(report.prepared_ahead);
        // Time for the next instance to be made (and its pages written) ahead.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        prepared_ahead >= 6,
        "only {prepared_ahead} of 12 events found an instance made ahead"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn print_warden_log_and_logging_reach_the_log() {
    if !python::componentize_py_or_skip("print_warden_log_and_logging_reach_the_log") {
        return;
    }
    let s = probe(&["logs"]).await;
    let report = s.run("s-logs", "alice@example.com").await;
    assert_eq!(report.outcome, Ok(Decision::Continue));
    let lines: Vec<(LogSource, LogLevel, &str)> = report
        .logs
        .iter()
        .map(|l| (l.source, l.level, l.message.as_str()))
        .collect();
    for wanted in [
        (LogSource::Stdout, LogLevel::Info, "printed to stdout"),
        (
            LogSource::Plugin,
            LogLevel::Warn,
            "warned through warden.log: alice@example.com",
        ),
        (LogSource::Plugin, LogLevel::Error, "logged through logging"),
    ] {
        assert!(lines.contains(&wanted), "{wanted:?} not in {lines:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_identities_and_standard_library_read_as_in_sym() {
    if !python::componentize_py_or_skip("the_event_identities_and_standard_library_read_as_in_sym")
    {
        return;
    }
    let s = probe(&["event", "identity", "imports", "random"]).await;
    let report = s.run("s-event", "alice@example.com").await;
    let summary: Value = serde_json::from_str(approved(&report)).unwrap();
    assert_eq!(
        summary,
        json!({
            "aliases": ["victorops"],
            "fields": {"reason": "fix prod"},
            "flow": "s-event",
            "integration": ["victorops", "custom", API_ID],
            "requester": "alice@example.com",
            "secrets": ["vo_key"],
            "settings": ["api_url"],
            "step": "request",
            "timestamp_year": summary["timestamp_year"],
            "user": ["alice@example.com", summary["user"][1]],
            "vars": {"probe": "event"},
        })
    );
    assert!(summary["timestamp_year"].as_i64().unwrap() >= 2025);

    s.persist("alice@example.com", "alice").await;
    let report = s.run("s-identity", "alice@example.com").await;
    assert_eq!(
        approved(&report),
        format!(
            "Identity(service='custom', service_id='{API_ID}', user_id='alice') -> probe-user -> probe-user"
        )
    );
    assert_eq!(
        s.identity("alice@example.com").await.as_deref(),
        Some("probe-user")
    );

    // Modules of the curated standard library, imported inside the hook, at run time.
    let report = s.run("s-imports", "alice@example.com").await;
    assert_eq!(approved(&report), "[['a', 'b']] b60090e3 eA== 4");

    // The interpreter's state comes from a snapshot taken at build time, `random`'s too;
    // each event must still draw anew (componentize-py reseeds it when an instance starts).
    let first = approved(&s.run("s-random", "alice@example.com").await).to_string();
    let second = approved(&s.run("s-random", "alice@example.com").await).to_string();
    assert_ne!(first, second);
}

// --- building ---------------------------------------------------------------------------

#[test]
fn a_misspelled_hook_is_a_build_error_naming_the_file_and_line() {
    if !python::componentize_py_or_skip(
        "a_misspelled_hook_is_a_build_error_naming_the_file_and_line",
    ) {
        return;
    }
    let (stderr, dir) = failed_build(
        "from warden import hook\n\n\n@hook\ndef on_requst(event):\n    return None\n",
    );
    assert_contains(
        &stderr,
        &format!("File \"{}/plugin.py\", line 4, in <module>", dir.display()),
    );
    assert_contains(
        &stderr,
        "plugin.py:4: `on_requst` is not a warden hook (did you mean `on_request`?)",
    );
}

#[test]
fn an_import_of_what_this_machine_has_but_the_plugin_does_not_is_a_build_error() {
    if !python::componentize_py_or_skip(
        "an_import_of_what_this_machine_has_but_the_plugin_does_not_is_a_build_error",
    ) {
        return;
    }
    // pip is installed beside the Python that runs componentize-py, but is no part of a
    // plugin: the build only sees the SDK, the plugin's folder and the standard library.
    let (stderr, dir) = failed_build("import pip\nfrom warden import hook\n");
    assert_contains(
        &stderr,
        &format!("File \"{}/plugin.py\", line 1, in <module>", dir.display()),
    );
    assert_contains(&stderr, "ModuleNotFoundError: No module named 'pip'");
}

/// The pool budgets core instances per component instance: a Python component (the
/// interpreter, its libraries, the WASI shims: 14 core modules) must fit, or fewer Python
/// hooks than the pool's instances could be in flight at once.
#[test]
fn the_pool_budgets_a_python_components_core_instances() {
    if !python::componentize_py_or_skip("the_pool_budgets_a_python_components_core_instances") {
        return;
    }
    let wasm = std::fs::read(python::plugin("plugins/victorops-python")).unwrap();
    let mut instantiations = 0;
    for payload in wasmparser::Parser::new(0).parse_all(&wasm) {
        if let wasmparser::Payload::InstanceSection(section) = payload.unwrap() {
            for instance in section {
                if matches!(instance.unwrap(), wasmparser::Instance::Instantiate { .. }) {
                    instantiations += 1;
                }
            }
        }
    }
    assert!(
        instantiations >= 10,
        "{instantiations}: not a Python component?"
    );
    assert!(
        instantiations <= warden::CORE_INSTANCES_PER_COMPONENT,
        "a Python component makes {instantiations} core instances; the pool budgets {} per component",
        warden::CORE_INSTANCES_PER_COMPONENT
    );
}

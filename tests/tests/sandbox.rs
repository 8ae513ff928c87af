//! The sandbox end to end: the probe plugin in the real host, each grant and limit. The
//! HTTP grant's tests are in sandbox/http.rs.

#[path = "sandbox/http.rs"]
mod http;
#[path = "sandbox/setup.rs"]
mod setup;

use std::time::{Duration, Instant};

use warden::capabilities::log::LogSource;
use warden::capabilities::refusal::RefusalKind;
use warden::{
    Config, Decision, EventInput, FailureKind, HookName, SharedEngine, StartError, Warden,
};
use warden_tests::web::TestServer;
use warden_tests::{Scratch, artifacts, other_wit_version, toml_path};

use setup::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_environments_integration_is_visible_with_its_settings() {
    let (report, _s) = probe("integration:victorops", "").await;
    assert_eq!(
        approved(&report),
        "victorops custom vo-ext secrets=1 settings=api_url=http://127.0.0.1:1"
    );
    assert!(report.refusals.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_integration_of_another_environment_is_refused() {
    let (report, _s) = probe("integration:billing", "").await;
    assert_eq!(denied(&report), "none");
    assert_eq!(refusal_kinds(&report), [RefusalKind::Integration]);
    let (report, _s) = probe("aliases", "").await;
    assert_eq!(approved(&report), "victorops");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_outside_the_environment_cannot_be_opened_or_guessed() {
    let (granted, _s) = probe("secret-open:vo_key", "").await;
    assert_eq!(approved(&granted), "opened vo_key at vo.key");

    let (foreign, _s) = probe("secret-open:billing_key", "").await;
    let (guessed, _s) = probe("secret-open:no_such_secret", "").await;
    assert!(
        denied(&foreign).contains(
            "secret `billing_key` is not attached to any integration of environment `main`"
        )
    );
    // Existing and made-up ids are refused alike, so guessing teaches nothing.
    assert_eq!(
        denied(&foreign).replace("billing_key", "ID"),
        denied(&guessed).replace("no_such_secret", "ID")
    );
    assert_eq!(refusal_kinds(&guessed), [RefusalKind::Secret]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revealed_secret_never_leaves_the_host_in_a_decision_or_log() {
    // The plugin approves with the raw value as its reason; the host redacts it.
    let (report, _s) = probe("secret-reveal:victorops", "").await;
    assert_eq!(approved(&report), "[REDACTED]");

    let (report, _s) = probe("log-secret:victorops", "").await;
    assert_eq!(report.outcome, Ok(Decision::Continue));
    let logs: Vec<&str> = report.logs.iter().map(|l| l.message.as_str()).collect();
    assert!(logs.contains(&"the key is [REDACTED]"), "{logs:?}");
    assert_eq!(
        logs.iter().filter(|l| l.contains("[REDACTED]")).count(),
        2,
        "log and stderr: {logs:?}"
    );
    assert!(!format!("{report:?}").contains(VO_SECRET));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_only_flow_refuses_retrieve_value_but_still_sends_sealed_headers() {
    let server = TestServer::start().await;
    let extra = format!(
        "reveal_secrets = false\nallowed_hosts = [{:?}]",
        server.origin()
    );
    let (report, _s) = probe("secret-reveal:victorops", &extra).await;
    assert!(
        denied(&report).contains("reveal_secrets = false"),
        "{report:?}"
    );
    assert_eq!(refusal_kinds(&report), [RefusalKind::SealedOnly]);

    let action = format!("http-sealed:victorops {}/echo", server.origin());
    let (report, _s) = probe(&action, &extra).await;
    let reason = approved(&report);
    // The server got the real key (it echoes it back), but the plugin only sees it redacted,
    // in the body and in the response headers alike.
    assert!(reason.starts_with("status=200"), "{reason}");
    assert!(reason.contains(r#""x-api-key":"[REDACTED]""#), "{reason}");
    assert!(reason.contains("x-echoed-key=[REDACTED]"), "{reason}");
    assert!(reason.contains(r#""x-api-id":"vo-ext""#), "{reason}");
    assert!(!reason.contains(VO_SECRET));
}

#[tokio::test(flavor = "multi_thread")]
async fn identities_are_granted_only_for_the_environments_services() {
    let scratch = Scratch::new();
    let flow = |action: &str| format!("vars = {{ action = {action:?} }}");
    let persist = warden(
        &scratch,
        artifacts::PROBE,
        &flow("persist:custom vo-ext alice-vo"),
    )
    .await;
    let report = persist
        .run_hook("probe", HookName::OnRequest, &event())
        .await
        .unwrap();
    assert_eq!(approved(&report), "persisted alice-vo");
    drop(persist);

    let lookup = warden(&scratch, artifacts::PROBE, &flow("lookup:custom vo-ext")).await;
    let report = lookup
        .run_hook("probe", HookName::OnRequest, &event())
        .await
        .unwrap();
    assert_eq!(
        approved(&report),
        "alice-vo",
        "persisted identities survive a restart"
    );
    drop(lookup);

    let foreign = warden(
        &scratch,
        artifacts::PROBE,
        &flow("persist:custom bill-ext mallory"),
    )
    .await;
    let report = foreign
        .run_hook("probe", HookName::OnRequest, &event())
        .await
        .unwrap();
    assert!(
        denied(&report).contains("holds no `custom` integration with external_id `bill-ext`"),
        "{report:?}"
    );
    assert_eq!(refusal_kinds(&report), [RefusalKind::Identity]);
    let stored = foreign
        .identity_store()
        .identities_of("alice@example.com")
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "nothing written for the foreign service");
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_beyond_the_free_instance_slots_wait_for_one_within_their_deadline() {
    let server = TestServer::start().await;
    // Two hosts sharing an engine with one instance slot: `slow` holds it for 1.5 s, `quick`
    // gives up after 0.3 s.
    let engine = SharedEngine::with_max_instances(1).unwrap();
    let (slow_scratch, quick_scratch) = (Scratch::new(), Scratch::new());
    let flow = |ms: u64, timeout_ms: u64| {
        format!(
            "vars = {{ action = \"http:GET {origin}/slow?ms={ms}\" }}\nallowed_hosts = [{origin:?}]\nlimits = {{ timeout_ms = {timeout_ms} }}",
            origin = server.origin()
        )
    };
    let slow = probe_on_engine(&slow_scratch, &engine, &flow(1500, 5000)).await;
    let quick = probe_on_engine(&quick_scratch, &engine, &flow(100, 300)).await;
    let event = event();

    // One slot: a second hook waits for the first instead of failing.
    let run = || quick.run_hook("probe", HookName::OnRequest, &event);
    let (a, b) = tokio::join!(run(), run());
    for report in [a.unwrap(), b.unwrap()] {
        assert!(approved(&report).starts_with("status=200"), "{report:?}");
    }

    // While `slow` holds the slot past `quick`'s deadline, `quick` fails closed naming why.
    let holder = slow.run_hook("probe", HookName::OnRequest, &event);
    let waiter = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        quick.run_hook("probe", HookName::OnRequest, &event).await
    };
    let (held, waited) = tokio::join!(holder, waiter);
    assert!(approved(&held.unwrap()).starts_with("status=200"));
    let waited = waited.unwrap();
    let failure = waited.outcome.as_ref().expect_err("no slot was free");
    assert!(
        failure
            .to_string()
            .contains("every instance slot stayed busy")
            && failure.to_string().contains("flow `probe`"),
        "{failure}"
    );
    assert!(!waited.ran);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_freed_after_its_answer_gives_its_slot_to_the_next_event() {
    let server = TestServer::start().await;
    // One instance slot and no room for instances made ahead: each event needs the slot the
    // previous event's store held. That store is freed in the background after the answer,
    // so an event waits for it rather than finding the pool full until its deadline.
    let engine = SharedEngine::with_max_instances(1).unwrap();
    let scratch = Scratch::new();
    let flow = format!(
        "vars = {{ action = \"http:GET {origin}/slow?ms=1\" }}\nallowed_hosts = [{origin:?}]\nlimits = {{ timeout_ms = 2000 }}",
        origin = server.origin()
    );
    let warden = probe_on_engine(&scratch, &engine, &flow).await;
    let event = event();
    for _ in 0..5 {
        let report = warden
            .run_hook("probe", HookName::OnRequest, &event)
            .await
            .unwrap();
        assert!(report.ran, "{report:?}");
        assert!(approved(&report).starts_with("status=200"), "{report:?}");
        assert!(report.elapsed < Duration::from_millis(1000), "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_loop_is_stopped_at_the_deadline_and_the_next_event_runs() {
    let scratch = Scratch::new();
    let warden = warden(
        &scratch,
        artifacts::PROBE,
        "vars = { action = \"loop\" }\nlimits = { timeout_ms = 300 }",
    )
    .await;
    let started = Instant::now();
    let report = warden
        .run_hook("probe", HookName::OnRequest, &event())
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(failure(&report), FailureKind::Deadline { timeout_ms: 300 });
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let message = report.outcome.as_ref().unwrap_err().to_string();
    assert_eq!(
        message,
        "flow `probe`, hook on_request: deadline exceeded: the hook ran longer than limits.timeout_ms = 300"
    );
    assert_eq!(report.decision(), Decision::Continue, "fails closed");

    // The engine is healthy: a hook the plugin does not loop in still runs.
    let escalate = warden
        .run_hook("probe", HookName::AfterRequest, &event())
        .await
        .unwrap();
    assert!(matches!(failure(&escalate), FailureKind::Deadline { .. }));
    let unimplemented = warden
        .run_hook("probe", HookName::OnApprove, &event())
        .await
        .unwrap();
    assert_eq!(unimplemented.outcome, Ok(Decision::Continue));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_is_stopped_at_the_limit() {
    let (report, _s) = probe("memory-bomb", "limits = { memory_mib = 16 }").await;
    assert_eq!(failure(&report), FailureKind::Memory { limit_mib: 16 });
    let message = report.outcome.as_ref().unwrap_err().to_string();
    assert!(
        message.contains("flow `probe`, hook on_request: memory limit exceeded"),
        "{message}"
    );
    assert!(message.contains("limits.memory_mib = 16"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stack_overflow_panic_and_plugin_errors_fail_closed() {
    // Rust's stack on wasm lives in linear memory: running off it is a bad memory access,
    // unless wasmtime's own stack limit trips first.
    let (report, _s) = probe("stack-overflow", "").await;
    assert!(
        matches!(
            failure(&report),
            FailureKind::StackOverflow | FailureKind::Trap { .. }
        ),
        "{report:?}"
    );

    let (report, _s) = probe("panic", "").await;
    let FailureKind::Trap { message } = failure(&report) else {
        panic!("{report:?}")
    };
    assert!(message.contains("probe panicked"), "{message}");
    assert_eq!(report.decision(), Decision::Continue);

    let (report, _s) = probe("error", "").await;
    assert_eq!(
        failure(&report),
        FailureKind::PluginError {
            message: "probe failed on purpose".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decision_the_hook_may_not_make_is_refused() {
    let scratch = Scratch::new();
    let warden = warden(&scratch, artifacts::PROBE, "").await;
    let report = warden
        .run_hook("probe", HookName::OnEscalate, &event())
        .await
        .unwrap();
    assert_eq!(
        failure(&report),
        FailureKind::InvalidDecision {
            decision: "deny".into()
        }
    );
    assert_eq!(report.decision(), Decision::Continue);
}

#[tokio::test(flavor = "multi_thread")]
async fn hooks_the_plugin_does_not_implement_are_never_called() {
    let scratch = Scratch::new();
    let warden = warden(&scratch, artifacts::PROBE, "vars = { action = \"panic\" }").await;
    let implemented: Vec<HookName> = warden
        .implemented("probe")
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_eq!(
        implemented,
        [
            HookName::OnRequest,
            HookName::OnEscalate,
            HookName::AfterRequest
        ]
    );
    let report = warden
        .run_hook("probe", HookName::OnApprove, &event())
        .await
        .unwrap();
    assert!(!report.ran);
    assert_eq!(report.outcome, Ok(Decision::Continue));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_last_stdout_line_without_a_newline_reaches_the_logs() {
    let (report, _s) = probe("stdout:5", "").await;
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.source == LogSource::Stdout && l.message == "xxxxx"),
        "{:?}",
        report.logs
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stdout_and_logs_are_bounded() {
    let (report, _s) = probe("stdout:5000", "limits = { log_max_bytes = 1024 }").await;
    let last = report.logs.last().unwrap();
    assert!(
        last.message
            .starts_with("3976 byte(s) of plugin stdout dropped"),
        "{last:?}"
    );

    let (report, _s) = probe("log-flood:10000", "limits = { log_max_bytes = 1024 }").await;
    assert!(report.logs.len() < 200, "{}", report.logs.len());
    assert!(
        report
            .logs
            .last()
            .unwrap()
            .message
            .contains("plugin log line(s) dropped")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_keeps_values_across_events_of_one_flow() {
    let scratch = Scratch::new();
    let text = config_text(
        &scratch,
        artifacts::PROBE,
        "vars = { action = \"cache-set:k v1 60\" }",
    ) + &format!(
        "\n[flows.reader]\nenvironment = \"main\"\nplugin = {}\nvars = {{ action = \"cache-get:k\" }}\n",
        toml_path(artifacts::PROBE)
    );
    let config = Config::load(&scratch.config(&text)).unwrap();
    let warden = Warden::start(config).await.unwrap();
    let set = warden
        .run_hook("probe", HookName::OnRequest, &event())
        .await
        .unwrap();
    assert_eq!(approved(&set), "set");
    let other_flow = warden
        .run_hook("reader", HookName::OnRequest, &event())
        .await
        .unwrap();
    assert_eq!(approved(&other_flow), "miss", "caches never cross flows");
}

#[tokio::test(flavor = "multi_thread")]
async fn long_reasons_are_bounded() {
    let (report, _s) = probe("big-reason:100000", "").await;
    assert!(approved(&report).len() <= warden::runtime::hooks::MAX_REASON_BYTES);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasip1_core_module_is_adapted_and_runs() {
    let scratch = Scratch::new();
    let text = config_text(
        &scratch,
        artifacts::ALLOWLIST_WASIP1,
        "vars = { auto_approve = \"Alice@example.com, bob@example.com\" }",
    );
    let warden = Warden::start(Config::load(&scratch.config(&text)).unwrap())
        .await
        .unwrap();
    assert!(warden.summaries()[0].adapted_from_core_module);
    let report = warden
        .run_hook("probe", HookName::OnRequest, &event())
        .await
        .unwrap();
    assert_eq!(
        approved(&report),
        "Auto-approved: alice@example.com is on the allowlist"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_allowlist_example_built_as_a_component_decides() {
    let scratch = Scratch::new();
    let text = config_text(
        &scratch,
        artifacts::ALLOWLIST,
        "vars = { auto_approve = \"carol@example.com\", require_reason = true }",
    );
    let warden = Warden::start(Config::load(&scratch.config(&text)).unwrap())
        .await
        .unwrap();
    assert!(!warden.summaries()[0].adapted_from_core_module);
    let report = warden
        .run_hook("probe", HookName::OnRequest, &event())
        .await
        .unwrap();
    assert_eq!(report.outcome, Ok(Decision::Continue));
    let no_reason =
        EventInput::from_json(r#"{"user":{"email":"dave@example.com"},"fields":{"reason":"  "}}"#)
            .unwrap();
    let report = warden
        .run_hook("probe", HookName::OnRequest, &no_reason)
        .await
        .unwrap();
    assert_eq!(denied(&report), "A reason is required");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_that_are_not_warden_plugins_are_refused_with_a_reason() {
    let scratch = Scratch::new();
    let probe_bytes = std::fs::read(artifacts::PROBE).unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "random.wasm",
            b"this is not wasm at all".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "truncated.wasm",
            probe_bytes[..probe_bytes.len() / 2].to_vec(),
            "not a valid component",
        ),
        // An empty core module: valid wasm, but no warden plugin inside.
        (
            "empty-core.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            "does not export `warden:plugin/hooks@0.1.0`",
        ),
        (
            "other-version.wasm",
            other_wit_version(&probe_bytes),
            "built against warden:plugin@0.2.0",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = scratch.write(name, bytes);
        let text = config_text(&scratch, path.to_str().unwrap(), "");
        let config = Config::load(&scratch.config(&text)).unwrap();
        let Err(StartError::Plugins(errors)) = Warden::start(config).await else {
            panic!("{name} should be refused");
        };
        assert_eq!(errors.len(), 1);
        let message = errors[0].to_string();
        assert!(message.starts_with("flow `probe`: plugin "), "{message}");
        assert!(message.contains(expected), "{name}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_gets_a_fresh_instance() {
    let scratch = Scratch::new();
    let warden = warden(
        &scratch,
        artifacts::PROBE,
        "vars = { action = \"counter\" }",
    )
    .await;
    let mut prepared_ahead = 0;
    for _ in 0..20 {
        let report = warden
            .run_hook("probe", HookName::OnRequest, &event())
            .await
            .unwrap();
        assert_eq!(approved(&report), "1", "state leaked between events");
        prepared_ahead += usize::from(report.prepared_ahead);
        // Time for the next instance to be made ahead, which must be just as fresh.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        prepared_ahead >= 10,
        "only {prepared_ahead} of 20 events found an instance made ahead"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wasi_grants_no_files_environment_arguments_sockets_or_name_lookups() {
    let server = TestServer::start().await;
    // Even a host the flow may reach over `http` is out of reach of raw sockets.
    let extra = format!("allowed_hosts = [{:?}]", server.origin());
    let action = format!("wasi:127.0.0.1:{}", server.port());
    let (report, _s) = probe(&action, &extra).await;
    let reason = approved(&report);
    assert!(reason.starts_with("env=0 args=0 fs=refused"), "{reason}");
    assert!(reason.contains("tcp=refused"), "{reason}");
    assert!(reason.contains("dns=refused"), "{reason}");
    assert_eq!(server.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_plugins_are_cached_and_a_corrupt_entry_is_rebuilt() {
    let scratch = Scratch::new();
    let text = config_text(
        &scratch,
        artifacts::PROBE,
        "vars = { action = \"approve:ok\" }",
    );
    // A folder of this test's own: the default, the user's cache folder, is shared.
    let path = scratch.config(&format!("{text}\n[cache]\ndir = \"warden-cache\"\n"));
    let start = || async { Warden::start(Config::load(&path).unwrap()).await.unwrap() };

    let first = start().await;
    assert_eq!(first.summaries()[0].compiled, "compiled (now cached)");
    drop(first);
    let second = start().await;
    assert_eq!(
        second.summaries()[0].compiled,
        "loaded from the plugin cache"
    );
    let report = second
        .run_hook("probe", HookName::OnRequest, &event())
        .await
        .unwrap();
    assert_eq!(approved(&report), "ok");
    drop(second);

    let cache_dir = scratch.path().join("warden-cache");
    let artifact = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a cached artifact");
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artifact, bytes).unwrap();

    let third = start().await;
    assert_eq!(
        third.summaries()[0].compiled,
        "compiled again: cache entry does not match its checksum"
    );
    let report = third
        .run_hook("probe", HookName::OnRequest, &event())
        .await
        .unwrap();
    assert_eq!(approved(&report), "ok");
}

//! The VictorOps plugin end to end: the real plugin in the real host, against the
//! VictorOps stand-in on loopback.

#[path = "victorops/setup.rs"]
mod setup;

use std::time::Duration;

use warden::capabilities::log::LogLevel;
use warden::{Config, Decision, EventInput, FailureKind, HookName, Warden};
use warden_tests::victorops_standin::{
    Casing, ErrorStyle, ONCALL_CURRENT_PATH, Roster, StandIn, StandInConfig, USERS_V2_PATH,
};
use warden_tests::{Scratch, artifacts, toml_path};

use setup::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_engineer_on_call_is_approved_with_the_reason() {
    let s = setup().await;
    let report = s.request("alice@example.com").await;
    assert_eq!(approved(&report), REASON);
    assert!(
        logs(&report, LogLevel::Info).contains(&"VictorOps user alice is on call: approving"),
        "{:#?}",
        report.logs
    );
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
    for request in s.standin.requests() {
        assert_eq!(request.method, "GET");
        assert_eq!(request.header("accept"), Some("application/json"));
        assert_eq!(request.header("x-vo-api-id"), Some(API_ID));
        assert_eq!(request.header("x-vo-api-key"), Some(API_KEY));
    }
    assert_eq!(
        s.identity("alice@example.com").await.as_deref(),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engineer_off_call_goes_to_a_human() {
    let s = setup().await;
    let report = s.request("bob@example.com").await;
    assert_human_decides(&report);
    assert!(
        logs(&report, LogLevel::Info)
            .contains(&"VictorOps user bob is not on call: a human decides")
    );
    assert_eq!(s.standin.count(ONCALL_CURRENT_PATH), 1);
    assert_eq!(s.identity("bob@example.com").await.as_deref(), Some("bob"));

    // Taken off call, alice goes to a human too (the cache is off in this flow).
    s.standin.edit_roster(|r| {
        r.clear_on_call();
    });
    assert_human_decides(&s.request("alice@example.com").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_email_goes_to_a_human_without_asking_who_is_on_call() {
    let s = setup().await;
    let report = s.request("zed@example.com").await;
    assert_human_decides(&report);
    assert!(
        logs(&report, LogLevel::Info)
            .contains(&"zed@example.com has no VictorOps user: a human decides")
    );
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
async fn an_email_in_another_case_is_found() {
    let s = setup().await;
    s.standin.set_strict_email_encoding(true);
    let report = s.request("Alice@EXAMPLE.com").await;
    assert_eq!(approved(&report), REASON);
    let lookup = &s.standin.requests()[0];
    assert_eq!(lookup.query.as_deref(), Some("email=Alice@EXAMPLE.com"));
    assert_eq!(
        s.identity("alice@example.com").await.as_deref(),
        Some("alice")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_identity_is_used_without_a_lookup() {
    let s = setup().await;
    // Mapped by hand (in another case) to dave, who is on call for `data`.
    s.persist("carol@example.com", "DAVE").await;
    let report = s.request("carol@example.com").await;
    assert_eq!(approved(&report), REASON);
    assert_eq!(s.standin.count(USERS_V2_PATH), 0);
    assert_eq!(s.standin.count(ONCALL_CURRENT_PATH), 1);
    assert_eq!(
        s.identity("carol@example.com").await.as_deref(),
        Some("DAVE"),
        "left as it was"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_request_persists_the_identity_and_the_second_needs_no_lookup() {
    let s = setup().await;
    assert_eq!(s.identity("alice@example.com").await, None);
    assert_eq!(approved(&s.request("alice@example.com").await), REASON);
    assert_eq!(
        s.identity("alice@example.com").await.as_deref(),
        Some("alice")
    );
    let report = s.request("alice@example.com").await;
    assert_eq!(approved(&report), REASON);
    assert!(
        !report
            .logs
            .iter()
            .any(|l| l.message.starts_with("mapping "))
    );
    assert_eq!(s.standin.count(USERS_V2_PATH), 1);
    assert_eq!(s.standin.count(ONCALL_CURRENT_PATH), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn both_casings_of_the_on_call_answer_are_read() {
    let s = setup().await;
    for casing in [Casing::Spec, Casing::Working] {
        s.standin.set_casing(casing);
        assert_eq!(
            approved(&s.request("alice@example.com").await),
            REASON,
            "{casing}"
        );
        assert_eq!(
            approved(&s.request("dave@example.com").await),
            REASON,
            "{casing}"
        );
        assert_human_decides(&s.request("bob@example.com").await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_api_failure_goes_to_a_human_with_a_warning_naming_the_call_and_status() {
    let s = setup().await;
    // alice's identity is stored, so her requests only ask who is on call.
    s.persist("alice@example.com", "alice").await;
    let html_503 = "<html> <head><title>503 Service Unavailable</title></head> <body> \
                    <center><h1>503 Service Unavailable</h1></center> <hr><center>nginx</center> \
                    </body> </html>";
    let cases: Vec<(&str, u16, ErrorStyle, &str, String)> = vec![
        (
            "alice",
            401,
            ErrorStyle::JsonMessage,
            ONCALL,
            "401: Injected failure".into(),
        ),
        (
            "alice",
            404,
            ErrorStyle::JsonError,
            ONCALL,
            "404: Injected failure".into(),
        ),
        (
            "alice",
            429,
            ErrorStyle::JsonMessage,
            ONCALL,
            "429: Injected failure".into(),
        ),
        (
            "alice",
            500,
            ErrorStyle::JsonMessage,
            ONCALL,
            "500: Injected failure".into(),
        ),
        (
            "alice",
            503,
            ErrorStyle::Html,
            ONCALL,
            format!("503: {html_503}"),
        ),
        (
            "alice",
            502,
            ErrorStyle::Empty,
            ONCALL,
            "502: (empty body)".into(),
        ),
        (
            "bob",
            500,
            ErrorStyle::JsonError,
            USER_LOOKUP,
            "500: Injected failure".into(),
        ),
        (
            "bob",
            503,
            ErrorStyle::Empty,
            USER_LOOKUP,
            "503: (empty body)".into(),
        ),
    ];
    for (who, status, style, call, message) in cases {
        s.standin.clear_requests();
        let path = if call == ONCALL {
            ONCALL_CURRENT_PATH
        } else {
            USERS_V2_PATH
        };
        s.standin.fail_next(path, status, style, 1);
        let report = s.request(&format!("{who}@example.com")).await;
        assert_warned(&report, &format!("{call} answered {message}"));
        let last = s.standin.requests().pop().unwrap();
        assert_eq!((last.path.as_str(), last.status), (path, Some(status)));
    }
    assert_eq!(
        s.identity("bob@example.com").await,
        None,
        "no lookup succeeded"
    );

    // A 200 whose body is not the JSON expected: HTML from a proxy, or nothing.
    for (style, detail) in [
        (ErrorStyle::Html, "expected value"),
        (ErrorStyle::Empty, "EOF"),
    ] {
        s.standin.fail_next(ONCALL_CURRENT_PATH, 200, style, 1);
        let report = s.request("alice@example.com").await;
        assert_warned(
            &report,
            &format!("{ONCALL} answered 200 with unexpected JSON: json: "),
        );
        assert!(
            logs(&report, LogLevel::Warn)[0].contains(detail),
            "{:#?}",
            report.logs
        );
    }

    // The stand-in's own answer once its rate limit is reached.
    s.standin.rate_limit_after(Some(0));
    let report = s.request("alice@example.com").await;
    assert_warned(
        &report,
        &format!("{ONCALL} answered 403: API rate limit exceeded"),
    );

    // And it recovers.
    s.standin.rate_limit_after(None);
    assert_eq!(approved(&s.request("alice@example.com").await), REASON);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_goes_to_a_human_with_a_warning() {
    let s = Flow {
        key: "not-the-key",
        ..Flow::default()
    }
    .start()
    .await;
    let report = s.request("alice@example.com").await;
    assert_warned(
        &report,
        &format!("{USER_LOOKUP} answered 403: Invalid API credentials"),
    );
    let requests = s.standin.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("x-vo-api-key"), Some("not-the-key"));
    assert_eq!(requests[0].status, Some(403));

    // The operator rotates the key on VictorOps' side: the old one is refused the same way.
    s.persist("alice@example.com", "alice").await;
    s.standin.set_credentials(API_ID, "rotated");
    let report = s.request("alice@example.com").await;
    assert_warned(
        &report,
        &format!("{ONCALL} answered 403: Invalid API credentials"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_api_times_out_per_request_and_goes_to_a_human() {
    let s = Flow {
        extra: "limits = { http_timeout_ms = 300 }",
        ..Flow::default()
    }
    .start()
    .await;
    s.standin.set_latency(Duration::from_secs(3));
    let report = s.request("alice@example.com").await;
    assert_warned(&report, &format!("{USER_LOOKUP} failed: timeout: "));
    assert!(
        report.elapsed < Duration::from_millis(1500),
        "{:?}",
        report.elapsed
    );
    assert_eq!(s.identity("alice@example.com").await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_api_fails_closed_within_the_hooks_deadline() {
    let s = Flow {
        extra: "limits = { timeout_ms = 800 }",
        ..Flow::default()
    }
    .start()
    .await;
    s.persist("alice@example.com", "alice").await;
    s.standin.set_latency(Duration::from_secs(3));
    let report = s.request("alice@example.com").await;
    // The HTTP call and the hook share one deadline; whichever notices first, no approval.
    match &report.outcome {
        Ok(Decision::Continue) => {
            assert_warned(&report, &format!("{ONCALL} failed: timeout: "));
        }
        Err(failure) => {
            assert_eq!(failure.kind, FailureKind::Deadline { timeout_ms: 800 });
        }
        other => panic!("expected no approval, got {other:?}"),
    }
    assert_eq!(report.decision(), Decision::Continue);
    assert!(
        report.elapsed < Duration::from_millis(1500),
        "{:?}",
        report.elapsed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_teams_the_flow_names_count() {
    let s = Flow {
        vars: r#"oncall_cache_seconds = 0, victorops_teams = "data""#,
        ..Flow::default()
    }
    .start()
    .await;
    assert_human_decides(&s.request("alice@example.com").await);
    assert_eq!(approved(&s.request("dave@example.com").await), REASON);

    let s = Flow {
        vars: r#"oncall_cache_seconds = 0, victorops_teams = "Platform, data""#,
        ..Flow::default()
    }
    .start()
    .await;
    assert_eq!(approved(&s.request("alice@example.com").await), REASON);
    assert_eq!(approved(&s.request("dave@example.com").await), REASON);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_escalation_policies_the_flow_names_count() {
    let mut roster = Roster::sample();
    roster.on_call("platform", "platform-secondary", "carol");
    let s = Flow {
        vars: r#"oncall_cache_seconds = 0, victorops_policies = "platform-primary""#,
        roster: roster.clone(),
        ..Flow::default()
    }
    .start()
    .await;
    assert_eq!(approved(&s.request("alice@example.com").await), REASON);
    assert_human_decides(&s.request("carol@example.com").await);
    assert_human_decides(&s.request("dave@example.com").await);

    // Teams and policies together: on call for a named policy of a named team.
    let s = Flow {
        vars: r#"oncall_cache_seconds = 0, victorops_teams = "platform", victorops_policies = "platform-secondary, data-primary""#,
        roster,
        ..Flow::default()
    }
    .start()
    .await;
    assert_eq!(approved(&s.request("carol@example.com").await), REASON);
    assert_human_decides(&s.request("alice@example.com").await);
    assert_human_decides(&s.request("dave@example.com").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_cache_on_a_hundred_decisions_cost_one_roster_call() {
    // No `oncall_cache_seconds`: the default, 30 s.
    let s = Flow {
        vars: "",
        ..Flow::default()
    }
    .start()
    .await;
    for _ in 0..100 {
        assert_eq!(approved(&s.request("alice@example.com").await), REASON);
    }
    assert_human_decides(&s.request("bob@example.com").await);
    assert_eq!(s.standin.count(ONCALL_CURRENT_PATH), 1);
    assert_eq!(s.standin.count(USERS_V2_PATH), 2, "alice once, bob once");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_cache_off_every_decision_fetches_the_roster() {
    let s = setup().await;
    for _ in 0..100 {
        assert_eq!(approved(&s.request("alice@example.com").await), REASON);
    }
    assert_eq!(s.standin.count(ONCALL_CURRENT_PATH), 100);
    assert_eq!(s.standin.count(USERS_V2_PATH), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cached_roster_expires_after_its_ttl() {
    let s = Flow {
        vars: "oncall_cache_seconds = 1",
        ..Flow::default()
    }
    .start()
    .await;
    s.persist("alice@example.com", "alice").await;
    assert_eq!(approved(&s.request("alice@example.com").await), REASON);
    s.standin.edit_roster(|r| {
        r.clear_on_call();
    });
    // Within the TTL the cached roster still counts; after it, the new one does.
    assert_eq!(approved(&s.request("alice@example.com").await), REASON);
    assert_eq!(s.standin.count(ONCALL_CURRENT_PATH), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_human_decides(&s.request("alice@example.com").await);
    assert_eq!(s.standin.count(ONCALL_CURRENT_PATH), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_roster_call_is_not_cached() {
    let s = Flow {
        vars: "oncall_cache_seconds = 60",
        ..Flow::default()
    }
    .start()
    .await;
    s.persist("alice@example.com", "alice").await;
    s.standin
        .fail_next(ONCALL_CURRENT_PATH, 503, ErrorStyle::Empty, 1);
    assert_warned(
        &s.request("alice@example.com").await,
        &format!("{ONCALL} answered 503"),
    );
    assert_eq!(approved(&s.request("alice@example.com").await), REASON);
    assert_eq!(approved(&s.request("alice@example.com").await), REASON);
    assert_eq!(s.standin.count(ONCALL_CURRENT_PATH), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_is_sealed_and_the_at_sign_arrives_unencoded() {
    let mut roster = Roster::sample();
    roster
        .add_user("erin", "erin+oncall@example.com", "Erin", "Evans")
        .on_call("platform", "platform-primary", "erin");
    let s = Flow {
        roster,
        // A trailing slash in api_url is tolerated.
        api_url_suffix: "/",
        ..Flow::default()
    }
    .start()
    .await;
    // The vendor's user lookup finds nobody when the `@` arrives as `%40`.
    s.standin.set_strict_email_encoding(true);
    let report = s.request("erin+oncall@example.com").await;
    assert_eq!(approved(&report), REASON);
    let requests = s.standin.requests();
    assert_eq!(requests[0].path, USERS_V2_PATH);
    assert_eq!(
        requests[0].query.as_deref(),
        Some("email=erin%2Boncall@example.com")
    );
    assert_eq!(
        requests[0].query_param("email").as_deref(),
        Some("erin+oncall@example.com")
    );
    assert_eq!(requests[1].path, ONCALL_CURRENT_PATH);
    for request in &requests {
        assert_eq!(request.header("x-vo-api-key"), Some(API_KEY));
    }
    // The plugin never held the key: nothing it logged or returned holds it, not even
    // redacted (the host would have replaced it with [REDACTED]), and the flow does not
    // reveal secrets at all.
    assert!(!report.logs.is_empty());
    for line in &report.logs {
        assert!(!line.message.contains(API_KEY), "{line:?}");
        assert!(!line.message.contains("[REDACTED]"), "{line:?}");
    }
    assert!(report.refusals.is_empty(), "{:?}", report.refusals);
    assert!(!format!("{report:?}").contains(API_KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reason_field_and_integration_alias_come_from_the_flow() {
    let standin = StandIn::start(StandInConfig::new(API_ID, API_KEY, Roster::sample()))
        .await
        .unwrap();
    let scratch = Scratch::new();
    scratch.write("vo.key", API_KEY);
    let url = standin.url();
    let text = format!(
        r#"
[secrets.vo_key]
source = "file"
path = "vo.key"

[integrations.splunk-oncall]
type = "custom"
external_id = "{API_ID}"
secrets = ["vo_key"]
settings = {{ api_url = "{url}" }}

[environments.main]
integrations = {{ pager = "splunk-oncall" }}

[flows.{FLOW}]
environment = "main"
plugin = {plugin}
allowed_hosts = ["{url}"]
vars = {{ victorops_integration = "pager", reason_field = "justification" }}
"#,
        plugin = toml_path(artifacts::VICTOROPS),
    );
    let path = scratch.config(&text);
    let warden = Warden::start(Config::load(&path).unwrap()).await.unwrap();
    let event = EventInput::from_json(
        r#"{"user":{"email":"dave@example.com"},"fields":{"reason":"ignored","justification":"db failover"}}"#,
    )
    .unwrap();
    let report = warden
        .run_hook(FLOW, HookName::OnRequest, &event)
        .await
        .unwrap();
    assert_eq!(
        approved(&report),
        "Auto-approved On-call engineer: db failover"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misconfigured_flow_fails_closed_as_a_hook_error() {
    let s = Flow {
        vars: r#"victorops_integration = "pagerduty""#,
        ..Flow::default()
    }
    .start()
    .await;
    let report = s.request("alice@example.com").await;
    let Err(failure) = &report.outcome else {
        panic!("expected a failure, got {:?}", report.outcome)
    };
    assert_eq!(
        failure.kind,
        FailureKind::PluginError {
            message: "no integration `pagerduty` in this flow's environment".into()
        }
    );
    assert_eq!(report.decision(), Decision::Continue);
    assert!(s.standin.requests().is_empty());

    let s = Flow {
        vars: r#"oncall_cache_seconds = "soon""#,
        ..Flow::default()
    }
    .start()
    .await;
    let report = s.request("alice@example.com").await;
    assert!(
        matches!(&report.outcome, Err(f) if f.to_string().contains("`oncall_cache_seconds` must be a whole number")),
        "{:?}",
        report.outcome
    );
    assert_eq!(report.decision(), Decision::Continue);
}

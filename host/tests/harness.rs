//! The test harness (`warden::harness`): the shipped suites pass, and every kind of
//! mismatch is reported with a message that says what differed.

use std::path::Path;

use warden::harness::{RunOptions, RunSummary, run};
use warden_tests::{Scratch, artifacts};

const KEY: &str = "harness-test-key-9876";

/// A test file using the probe plugin: one sealed integration, `api.example.com` allowed.
fn probe_file(cases: &str) -> String {
    format!(
        r#"
[flow]
allowed_hosts = ["https://api.example.com"]

[secrets]
vo_key = "{KEY}"
other_key = "other-secret-value-5555"

[integrations.victorops]
type = "custom"
external_id = "vo-ext"
secrets = ["vo_key"]

[event]
user = {{ email = "alice@example.com" }}
fields = {{ reason = "fix prod" }}

{cases}
"#
    )
}

async fn run_probe(cases: &str) -> RunSummary {
    let scratch = Scratch::new();
    let file = scratch.write("tests/probe.toml", probe_file(cases));
    run(&RunOptions::new([file]).plugin(artifacts::PROBE)).await
}

/// The single case's failure messages, joined.
fn failures(summary: &RunSummary) -> String {
    assert!(
        summary.load_errors.is_empty(),
        "unexpected load errors: {:?}",
        summary.load_errors
    );
    assert_eq!(summary.results.len(), 1, "{}", summary.render());
    let result = &summary.results[0];
    assert!(!result.passed(), "expected the case to fail");
    result.failures.join("\n")
}

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_suite_passes() {
    let summary =
        run(&RunOptions::new([repo("tests/plugins/probe")]).plugin(artifacts::PROBE)).await;
    summary.assert_passed();
    assert_eq!(summary.passed(), 10, "{}", summary.render());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_allowlist_suite_passes() {
    let summary =
        run(&RunOptions::new([repo("plugins/allowlist")]).plugin(artifacts::ALLOWLIST)).await;
    summary.assert_passed();
    assert_eq!(summary.passed(), 6);
    assert!(summary.render().ends_with("\n6 passed, 0 failed\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_victorops_suite_passes() {
    let summary =
        run(&RunOptions::new([repo("plugins/victorops")]).plugin(artifacts::VICTOROPS)).await;
    summary.assert_passed();
    assert_eq!(summary.passed(), 22);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_decision_kind_shows_both() {
    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "deny:nope" }
expect = { decision = "approve" }
"#,
    )
    .await;
    assert_eq!(
        failures(&summary),
        "decision:\n  - expected approve\n  + got deny `nope`"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_reason_shows_both_exactly_and_by_pattern() {
    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "approve:on call" }
expect = { decision = "approve", reason = "on holiday", reason_matches = "^off" }
"#,
    )
    .await;
    assert_eq!(
        failures(&summary),
        "reason:\n  - expected `on holiday`\n  + got `on call`\nreason:\n  - expected to match /^off/\n  + got `on call`"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hook_failure_where_a_decision_was_expected_and_the_reverse() {
    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "error" }
expect = { decision = "continue" }
"#,
    )
    .await;
    let text = failures(&summary);
    assert!(
        text.starts_with("decision:\n  - expected continue\n  + the hook failed: "),
        "{text}"
    );
    assert!(text.contains("probe failed on purpose"), "{text}");

    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "continue" }
expect = { failure = "deadline" }
"#,
    )
    .await;
    assert_eq!(
        failures(&summary),
        "failure:\n  - expected the hook to fail with `deadline`\n  + it decided continue"
    );

    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "panic" }
expect = { failure = "deadline" }
"#,
    )
    .await;
    let text = failures(&summary);
    assert!(
        text.starts_with("failure:\n  - expected a failure containing `deadline`\n  + "),
        "{text}"
    );
    assert!(text.contains("trapped"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn identities_after_the_run_are_diffed() {
    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "persist:custom vo-ext alice-new" }
identities = [{ email = "bob@example.com", service_id = "vo-ext", user_id = "bob" }]
[case.expect]
decision = "approve"
identities = [
    { email = "bob@example.com", service_id = "vo-ext", user_id = "bob" },
    { email = "alice@example.com", service_id = "vo-ext", user_id = "alice-old" },
]
"#,
    )
    .await;
    assert_eq!(
        failures(&summary),
        "identities stored after the run:\n  + alice@example.com custom/vo-ext = alice-new\n  - alice@example.com custom/vo-ext = alice-old\n    bob@example.com custom/vo-ext = bob"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_log_line_shows_the_log() {
    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "log-flood:2" }
[case.expect]
decision = "continue"
logs = [{ level = "info", contains = "flood 1" }, { level = "warn", matches = "flood \\d" }]
"#,
    )
    .await;
    assert_eq!(
        failures(&summary),
        "log:\n  - expected a line level warn, matching /flood \\d/ after the lines matched before it\n  + INFO  plugin: flood 0\n  + INFO  plugin: flood 1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_calls_and_call_counts_are_checked() {
    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "http:GET https://api.example.com/v1/a" }
[[case.mock]]
url = "/v1/a"
times = 2
respond = { status = 204 }
[case.expect]
decision = "approve"
http_calls = ["GET https://api.example.com/v1/b", "GET https://api.example.com/v1/a"]
"#,
    )
    .await;
    assert_eq!(
        failures(&summary),
        "mock #1 `any method /v1/a`:\n  - expected 2 call(s)\n  + got 1\nHTTP calls (- expected, + made):\n  - GET https://api.example.com/v1/b\n    GET https://api.example.com/v1/a"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmatched_request_names_the_closest_mock_and_never_the_secret() {
    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "http-sealed:victorops https://api.example.com/v2/users?email=alice@example.com" }
[[case.mock]]
method = "POST"
url = "https://api.example.com/v9/elsewhere"
respond = { status = 200 }
[[case.mock]]
method = "GET"
url = "https://api.example.com/v2/users"
query = { email = "bob@example.com" }
headers = { X-Api-Key = { secret = "other_key" }, X-Api-Id = "vo-ext" }
respond = { status = 200 }
[case.expect]
decision = "deny"
"#,
    )
    .await;
    let text = failures(&summary);
    assert_eq!(
        text,
        format!(
            "a request matched no mock:\n  GET https://api.example.com/v2/users?email=alice@example.com\n    X-Api-Key: [REDACTED] (sealed secret `vo_key`)\n    X-Api-Id: vo-ext\n  closest mock: #2 `GET https://api.example.com/v2/users?email=bob@example.com`\n    query `email`: the mock expects `bob@example.com`, the request has `alice@example.com`\n    header `X-Api-Key`: the mock expects the value of secret `other_key`, the request has [REDACTED] (sealed secret `vo_key`)"
        )
    );
    assert!(!summary.render().contains(KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn method_path_origin_and_body_differences_are_named() {
    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "http:POST https://other.example.com/v1/x" }
flow = { allowed_hosts = ["https://api.example.com", "https://other.example.com"] }
[[case.mock]]
method = "GET"
url = "https://api.example.com/v1/y"
body_json = { a = 1 }
respond = { status = 200 }
[case.expect]
decision = "deny"
"#,
    )
    .await;
    let text = failures(&summary);
    for line in [
        "POST https://other.example.com/v1/x",
        "closest mock: #1 `GET https://api.example.com/v1/y`",
        "method: the mock expects GET, the request is POST",
        "origin: the mock expects https://api.example.com, the request goes to https://other.example.com",
        "path: the mock expects /v1/y, the request has /v1/x",
        "body: the mock expects JSON {\"a\":1}, the request has no body",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_a_mock_repeats_must_come_with_each_of_its_values() {
    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "http:GET https://api.example.com/x?a=2" }
[[case.mock]]
url = "https://api.example.com/x?a=1&a=2"
respond = { status = 200 }
[case.expect]
decision = "deny"
"#,
    )
    .await;
    let text = failures(&summary);
    assert!(
        text.contains("query `a`: the mock expects `1`, the request has `2`"),
        "{text}"
    );
    // The same key in the url and in `query` is a file to fix, not one value winning.
    let scratch = Scratch::new();
    let file = scratch.write(
        "tests/probe.toml",
        probe_file(
            r#"
[[case]]
name = "c"
vars = { action = "http:GET https://api.example.com/x?a=9" }
[[case.mock]]
url = "https://api.example.com/x?a=1"
query = { a = "9" }
respond = { status = 200 }
[case.expect]
decision = "approve"
"#,
        ),
    );
    let summary = run(&RunOptions::new([file]).plugin(artifacts::PROBE)).await;
    let errors: Vec<&str> = summary
        .load_errors
        .iter()
        .map(|e| e.message.as_str())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("query `a` is in both the url and `query`")),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unexpected_and_missing_refusals_fail() {
    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "integration:billing" }
expect = { decision = "deny" }
"#,
    )
    .await;
    assert_eq!(
        failures(&summary),
        "unexpected refusal (list it under expect.refusals if it is meant):\n  + integration refused: environment `test` has no integration under alias `billing`"
    );

    let summary = run_probe(
        r#"
[[case]]
name = "c"
vars = { action = "continue" }
expect = { decision = "continue", refusals = ["host refused"] }
"#,
    )
    .await;
    assert_eq!(
        failures(&summary),
        "refusals:\n  - expected a refusal containing `host refused`\n  + there was none"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_flow_is_reported_by_the_real_config_validation() {
    let summary = run_probe(
        r#"
[[case]]
name = "c"
integrations = { billing = { type = "custom", external_id = "b", secrets = ["missing"] } }
flow = { limits = { memory_mib = 0 } }
expect = { decision = "continue" }
"#,
    )
    .await;
    let text = failures(&summary);
    assert!(text.starts_with("the case's flow is invalid:"), "{text}");
    assert!(
        text.contains("integrations.billing.secrets: integration `billing` names secret `missing`"),
        "{text}"
    );
    assert!(
        text.contains("flows.test.limits.memory_mib: must be between 1 and 4096, not 0"),
        "{text}"
    );
}

/// A value of the wrong type fails when the config is read, before its validation: the
/// error still names the key, as the test file's author wrote it under the case.
#[tokio::test(flavor = "multi_thread")]
async fn a_limit_of_the_wrong_type_is_named_with_its_key() {
    let summary = run_probe(
        r#"
[[case]]
name = "slow"
flow = { limits = { memory_mib = 32, timeout_ms = "slow" } }
expect = { decision = "continue" }
"#,
    )
    .await;
    assert_eq!(
        failures(&summary),
        "the case's flow is invalid:\n  flows.test.limits.timeout_ms: invalid type: string \"slow\", expected u64"
    );
}

/// The config's errors quote the test file's keys and values: they stay on the case's one
/// line each, escaped, as every other text of the test file the report quotes.
#[tokio::test(flavor = "multi_thread")]
async fn a_flow_error_quoting_the_test_files_text_is_escaped_on_one_line() {
    let summary = run_probe(
        r#"
[[case]]
name = "c"
flow = { limits = { "x\nFAIL forged \u001b[31m" = 1 } }
expect = { decision = "continue" }
"#,
    )
    .await;
    assert_eq!(
        failures(&summary),
        "the case's flow is invalid:\n  flows.test.limits.x\\nFAIL forged \\x1b[31m: unknown key"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_test_files_are_load_errors_naming_the_file_and_place() {
    let scratch = Scratch::new();
    let typo = scratch.write(
        "tests/typo.toml",
        "[[case]]\nname = \"c\"\nexpect = { decison = \"approve\" }\n",
    );
    let no_expectation = scratch.write(
        "tests/none.toml",
        "event = { user = { email = \"a@x.com\" } }\n[[case]]\nname = \"c\"\nexpect = {}\n",
    );
    let no_cases = scratch.write("tests/empty.toml", "hook = \"on_request\"\n");
    // Expectations that could never be checked, or never fail.
    let reason_of_a_failure = scratch.write(
        "tests/reason.toml",
        "event = { user = { email = \"a@x.com\" } }\n[[case]]\nname = \"c\"\nexpect = { failure = \"probe failed\", reason = \"x\" }\n",
    );
    let any_failure = scratch.write(
        "tests/any.toml",
        "event = { user = { email = \"a@x.com\" } }\n[[case]]\nname = \"c\"\nexpect = { failure = \" \" }\n",
    );
    let summary =
        run(&RunOptions::new([scratch.path().join("tests")]).plugin(artifacts::PROBE)).await;
    assert_eq!(summary.results.len(), 0);
    assert_eq!(summary.failed(), 5);
    assert!(!summary.success());
    let message = |path: &Path| {
        summary
            .load_errors
            .iter()
            .find(|e| e.file == path)
            .unwrap_or_else(|| panic!("no error for {}", path.display()))
            .message
            .clone()
    };
    let typo = message(&typo);
    assert!(
        typo.contains("line 3") && typo.contains("unknown field `decison`"),
        "{typo}"
    );
    assert_eq!(
        message(&no_expectation),
        "case `c` (case[0]): [case.expect] needs `decision` or `failure`"
    );
    assert_eq!(
        message(&no_cases),
        "no test cases: a test file needs at least one [[case]]"
    );
    assert!(
        message(&reason_of_a_failure)
            .contains("takes `reason` and `reason_matches` only with `decision`"),
        "{}",
        message(&reason_of_a_failure)
    );
    assert!(
        message(&any_failure).contains("expect.failure is empty"),
        "{}",
        message(&any_failure)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unbuilt_plugin_says_how_to_build_it() {
    let scratch = Scratch::new();
    scratch.write(
        "myplugin/Cargo.toml",
        "[package]\nname = \"my-plugin\"\n[lib]\ncrate-type = [\"cdylib\"]\n[workspace]\n",
    );
    scratch.write(
        "myplugin/tests/t.toml",
        "event = { user = { email = \"a@x.com\" } }\n[[case]]\nname = \"c\"\nexpect = { decision = \"continue\" }\n",
    );
    let summary = run(&RunOptions::new([scratch.path().join("myplugin")])).await;
    assert_eq!(summary.load_errors.len(), 1, "{}", summary.render());
    let message = &summary.load_errors[0].message;
    assert!(message.starts_with("plugin not built: "), "{message}");
    assert!(
        message.contains("my_plugin.wasm does not exist"),
        "{message}"
    );
    assert!(
        message.ends_with(&format!(
            "run `cargo build --release --target wasm32-wasip2` in {}",
            std::path::absolute(scratch.path().join("myplugin"))
                .unwrap()
                .display()
        )),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn filter_and_junit() {
    let scratch = Scratch::new();
    let file = scratch.write(
        "tests/probe.toml",
        probe_file(
            r#"
[[case]]
name = "passes"
vars = { action = "approve:ok" }
expect = { decision = "approve" }
[[case]]
name = "fails <with> \"markup\" & more"
vars = { action = "approve:a <b> & \"c\"" }
expect = { decision = "deny" }
"#,
        ),
    );
    let only = run(&RunOptions::new([&file])
        .plugin(artifacts::PROBE)
        .filter("passes"))
    .await;
    assert_eq!((only.passed(), only.failed()), (1, 0));

    let both = run(&RunOptions::new([&file]).plugin(artifacts::PROBE)).await;
    assert_eq!((both.passed(), both.failed()), (1, 1));
    let xml = both.junit();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"warden test\" tests=\"2\" failures=\"1\" errors=\"0\""), "{xml}");
    assert!(xml.contains("<testcase name=\"passes\""), "{xml}");
    assert!(
        xml.contains("<testcase name=\"fails &lt;with&gt; &quot;markup&quot; &amp; more\""),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"decision: - expected deny + got approve `a &lt;b&gt; &amp; &quot;c&quot;`\">decision:\n  - expected deny\n  + got approve `a &lt;b&gt; &amp; &quot;c&quot;`"),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), 2);
    assert_eq!(xml.matches("</testsuite>").count(), 1);
}

/// A case's event reaches the plugin as `warden serve` would hand it on: `duration` as its
/// seconds (a plugin tested on the text "2h" would fail closed in production), and a value
/// serve would refuse is a failure of the case.
#[tokio::test(flavor = "multi_thread")]
async fn a_cases_fields_reach_the_plugin_as_serve_hands_them_on() {
    let summary = run_probe(
        r#"
[[case]]
name = "duration in seconds"
vars = { action = "field:duration" }
event = { user = { email = "alice@example.com" }, fields = { duration = "2h" } }
expect = { decision = "approve", reason = "Some(FieldValue::DurationSeconds(7200))" }

[[case]]
name = "a duration serve refuses"
vars = { action = "field:duration" }
event = { user = { email = "alice@example.com" }, fields = { duration = "forever" } }
expect = { decision = "approve" }
"#,
    )
    .await;
    assert_eq!(summary.results.len(), 2, "{}", summary.render());
    assert!(summary.results[0].passed(), "{}", summary.render());
    let refused = summary.results[1].failures.join("\n");
    assert!(
        refused.contains("the event's fields, as warden serve refuses them: field `duration`"),
        "{refused}"
    );
}

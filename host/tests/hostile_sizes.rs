//! Every byte a plugin can make the host keep is bounded (`warden::runtime::budget`; SECURITY.md,
//! "Limits"). The probe hands the host floods of empty lines and names, URLs, errors and
//! reasons of megabytes; what the host keeps of one event — the report, the request's history
//! and audit lines in the store, the API's answer — stays within the documented bytes, and
//! whatever was cut carries a marker saying how much was dropped.

use serde_json::Value;
use warden::runtime::budget::{
    self, CALL_BYTES, HOOK_ENTRY_BYTES, HOOK_RUN_BYTES, LINE_OVERHEAD, MAX_MESSAGE_BYTES,
    MAX_REFUSAL_BYTES, MAX_URL_PART_BYTES, RECORD_OVERHEAD, REFUSAL_BYTES,
};
use warden::serve::Server;
use warden::{Config, Decision, EventInput, FailureKind, HookName, HookReport, Warden};
use warden_tests::{Scratch, artifacts, toml_path};

const SECRET: &str = "s3cr3t-VALUE-7f3a9c";
const ADMIN: &str = "admin-token-sizes";
const LOG_MAX_BYTES: usize = 64 << 10;
const MIB: usize = 1 << 20;

/// Environment `main` holds integration `victorops` (service `custom`/`vo-ext`, secret
/// [`SECRET`]); each flow runs the probe there with the action given.
fn config_text(scratch: &Scratch, flows: &[(&str, &str)]) -> String {
    scratch.write("vo.key", SECRET);
    scratch.write("admin.token", ADMIN);
    let mut text = r#"
[store]
path = "warden.db"

[serve.tokens.admin]
token_file = "admin.token"
user = "admin@example.com"
role = "admin"

[secrets.vo_key]
source = "file"
path = "vo.key"

[integrations.victorops]
type = "custom"
external_id = "vo-ext"
secrets = ["vo_key"]

[environments.main]
integrations = { victorops = "victorops" }
"#
    .to_string();
    for (name, action) in flows {
        // Room for a million host calls in a debug build on a busy machine.
        text.push_str(&format!(
            "\n[flows.{name}]\nenvironment = \"main\"\nplugin = {}\nvars = {{ action = {action:?} }}\nlimits = {{ timeout_ms = 120000 }}\n",
            toml_path(artifacts::PROBE)
        ));
    }
    text
}

async fn start(scratch: &Scratch, flows: &[(&str, &str)]) -> Warden {
    let config = Config::load(&scratch.config(&config_text(scratch, flows)))
        .unwrap_or_else(|e| panic!("{e}"));
    Warden::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn run(warden: &Warden, flow: &str) -> HookReport {
    let event =
        EventInput::from_json(r#"{"user":{"email":"alice@example.com"},"fields":{}}"#).unwrap();
    warden
        .run_hook(flow, HookName::OnRequest, &event)
        .await
        .unwrap()
}

/// The outcome of each HTTP call the hook made.
fn outcomes(report: &HookReport) -> Vec<&str> {
    report
        .http_calls
        .iter()
        .map(|c| c.outcome.as_str())
        .collect()
}

/// What `report` keeps, counted as the event's budget counts it.
fn kept(report: &HookReport) -> usize {
    let logs: usize = report
        .logs
        .iter()
        .map(|l| l.message.len() + LINE_OVERHEAD)
        .sum();
    let refusals: usize = report
        .refusals
        .iter()
        .map(|r| budget::shown_len(&r.detail) + RECORD_OVERHEAD)
        .sum();
    let calls: usize = report
        .http_calls
        .iter()
        .map(|c| {
            [&c.method, &c.origin, &c.path, &c.outcome]
                .into_iter()
                .map(|t| budget::shown_len(t))
                .sum::<usize>()
                + RECORD_OVERHEAD
        })
        .sum();
    logs + refusals + calls + message(report).map_or(0, |m| budget::shown_len(&m))
}

/// The reason, or the failure's message.
fn message(report: &HookReport) -> Option<String> {
    match &report.outcome {
        Ok(Decision::Approve { reason } | Decision::Deny { reason }) => reason.clone(),
        Ok(Decision::Ignore { message }) => message.clone(),
        Ok(Decision::Continue) => None,
        Err(failure) => match &failure.kind {
            FailureKind::Trap { message } | FailureKind::PluginError { message } => {
                Some(message.clone())
            }
            FailureKind::Host { message } => Some(message.clone()),
            _ => None,
        },
    }
}

/// The first 3000 characters of `text`: a failing run must not print megabytes.
fn start_of(text: &str) -> String {
    text.chars().take(3000).collect()
}

fn shown(report: &HookReport) -> String {
    start_of(&format!("{report:?}"))
}

/// The bytes a cut marker at the end of `text` says were dropped.
fn dropped(text: &str) -> usize {
    budget::split_marker(text)
        .unwrap_or_else(|| panic!("no cut marker at the end of {}", start_of(text)))
        .1
}

/// The lines the host added to count what it dropped.
fn host_lines(report: &HookReport) -> Vec<&str> {
    report
        .logs
        .iter()
        .filter(|l| l.source == warden::capabilities::log::LogSource::Host)
        .map(|l| l.message.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_million_empty_log_lines_keep_a_bounded_number_of_bytes() {
    let scratch = Scratch::new();
    let warden = start(&scratch, &[("empty", "flood-empty-lines:1000000")]).await;
    let report = run(&warden, "empty").await;
    assert_eq!(report.outcome, Ok(Decision::Continue));
    // Each line counts as its text and the overhead: 64 KiB holds 1024 empty lines.
    assert!(
        report.logs.len() <= LOG_MAX_BYTES / LINE_OVERHEAD + 3,
        "{} lines kept",
        report.logs.len()
    );
    assert!(
        kept(&report) <= LOG_MAX_BYTES + 3 * 200,
        "{}",
        kept(&report)
    );
    let counted = host_lines(&report);
    assert!(
        counted
            .iter()
            .any(|l| l.starts_with("998976 plugin log line(s) dropped")),
        "{counted:?}"
    );
    assert!(
        counted
            .iter()
            .any(|l| l.starts_with("1000000 byte(s) of plugin stdout dropped")),
        "{counted:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_names_make_bounded_refusals_and_records() {
    let scratch = Scratch::new();
    let four_mib = 4 * MIB;
    let flows = [
        ("alias", format!("huge:alias {four_mib}")),
        ("secret", format!("huge:secret {four_mib}")),
        ("service", format!("huge:service {four_mib}")),
        ("email", format!("huge:email {four_mib}")),
        // Under the 8 KiB a URL may take: parsed, refused, recorded, all cut.
        ("path", "huge:url 6000".to_string()),
        ("host", "huge:host 6000".to_string()),
        // Over it: refused before the host copies or parses it.
        ("long_url", format!("huge:url {four_mib}")),
    ];
    let flows: Vec<(&str, &str)> = flows.iter().map(|(f, a)| (*f, a.as_str())).collect();
    let warden = start(&scratch, &flows).await;
    for (flow, _) in &flows {
        let report = run(&warden, flow).await;
        let context = format!("{flow}: {}", shown(&report));
        if *flow == "email" {
            let reason = message(&report).expect(&context);
            assert!(
                reason.contains("email is longer than 320 bytes"),
                "{context}"
            );
        } else {
            assert_eq!(report.outcome, Ok(Decision::Continue), "{context}");
        }
        assert!(kept(&report) <= 4 << 10, "{}: {context}", kept(&report));
        for refusal in &report.refusals {
            assert!(
                budget::shown_len(&refusal.detail) <= MAX_REFUSAL_BYTES,
                "{context}"
            );
        }
        for call in &report.http_calls {
            assert!(call.origin.len() <= MAX_URL_PART_BYTES, "{context}");
            assert!(call.path.len() <= MAX_URL_PART_BYTES, "{context}");
        }
        // The quoted name is cut where it was too long, with how much went.
        let cut: Vec<usize> = match *flow {
            "alias" | "secret" | "service" => report
                .refusals
                .iter()
                .map(|r| {
                    let (head, tail) = r.detail.split_once("more bytes)").expect(&context);
                    assert!(tail.len() < 100, "{context}");
                    dropped(&format!("{head}more bytes)"))
                })
                .collect(),
            "path" => report.http_calls.iter().map(|c| dropped(&c.path)).collect(),
            "host" => report
                .http_calls
                .iter()
                .map(|c| dropped(&c.origin))
                .collect(),
            _ => vec![],
        };
        match *flow {
            "alias" | "secret" | "service" => assert_eq!(cut.len(), 1, "{context}"),
            "path" | "host" => assert!(cut == [cut[0]] && cut[0] > 5000, "{context}"),
            "email" => assert!(report.refusals.is_empty(), "a granted service: {context}"),
            _ => {
                assert_eq!(report.http_calls[0].outcome, "invalid", "{context}");
                assert_eq!(
                    report.http_calls[0].origin, "(a URL over 8192 bytes)",
                    "{context}"
                );
            }
        }
        if let Some(&dropped) = cut.first()
            && ["alias", "secret", "service"].contains(flow)
        {
            assert!(dropped > four_mib - 300, "{dropped}: {context}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_error_reason_or_log_line_is_cut_with_a_marker() {
    let scratch = Scratch::new();
    let four_mib = 4 * MIB;
    let flows: Vec<(String, String)> = ["error", "reason", "log", "panic"]
        .iter()
        .map(|what| (what.to_string(), format!("huge:{what} {four_mib}")))
        .collect();
    let flows: Vec<(&str, &str)> = flows
        .iter()
        .map(|(f, a)| (f.as_str(), a.as_str()))
        .collect();
    let warden = start(&scratch, &flows).await;
    for (flow, _) in &flows {
        let report = run(&warden, flow).await;
        let context = format!("{flow}: {}", shown(&report));
        assert!(
            kept(&report) <= LOG_MAX_BYTES + MAX_MESSAGE_BYTES + 1000,
            "{context}"
        );
        match *flow {
            "error" | "reason" => {
                let text = message(&report).expect(&context);
                assert!(budget::shown_len(&text) <= MAX_MESSAGE_BYTES, "{context}");
                let json = serde_json::to_string(&text).unwrap();
                assert!(json.len() <= MAX_MESSAGE_BYTES + 2, "{context}");
                // Each control character shows as six bytes: 4 KiB keep about 680 of them.
                assert!(dropped(&text) > four_mib - 700, "{context}");
                if *flow == "error" {
                    let failure = report.outcome.as_ref().unwrap_err().to_string();
                    assert!(
                        failure.contains("the plugin returned an error"),
                        "{context}"
                    );
                }
            }
            "log" => {
                assert!(
                    host_lines(&report).iter().any(|l| l
                        .starts_with(&format!("1 plugin log line(s) dropped ({four_mib} bytes)"))),
                    "{context}"
                );
            }
            _ => {
                let text = message(&report).expect(&context);
                assert!(budget::shown_len(&text) <= MAX_MESSAGE_BYTES, "{context}");
                assert!(
                    host_lines(&report)
                        .iter()
                        .any(|l| l.contains("of plugin stderr dropped")),
                    "{context}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_empty_headers_is_refused_by_its_count_before_any_is_read() {
    let scratch = Scratch::new();
    let warden = start(&scratch, &[("headers", "huge-once:headers 100000")]).await;
    let report = run(&warden, "headers").await;
    let context = shown(&report);
    let reason = message(&report).expect(&context);
    assert!(
        reason.contains("the request has 100000 headers; at most 256 are sent"),
        "{context}"
    );
    assert_eq!(outcomes(&report), ["invalid"], "{context}");
    assert!(report.refusals.is_empty(), "{context}");
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_that_all_point_at_one_long_string_are_read_only_until_over_the_bound() {
    // Eight query pairs (or headers) of one 4 MiB string the plugin holds once: the host reads
    // entries until the URL (or the headers) is over its bound, 8 MiB, not all 64 MiB (under
    // the 128 MiB wasmtime lets one host call lift; more entries than that end the hook).
    let scratch = Scratch::new();
    let flows = [
        ("query", "aliased:query 4194304 8"),
        ("headers", "aliased:headers 4194304 8"),
    ];
    let warden = start(&scratch, &flows).await;
    for (flow, told) in [
        ("query", "the URL is at least 8388629 bytes with its query"),
        ("headers", "the headers are at least 8388608 bytes"),
    ] {
        let report = run(&warden, flow).await;
        let context = shown(&report);
        let reason = message(&report).expect(&context);
        assert!(reason.contains(told), "{context}");
        assert_eq!(outcomes(&report), ["invalid"], "{context}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_start_left_where_a_quoted_name_is_cut_is_dropped() {
    let scratch = Scratch::new();
    // A marker for a four-digit count takes 20 bytes: the quoted name keeps eight bytes of
    // the value.
    let pad = budget::MAX_NAME_BYTES - 20 - 8;
    let action = format!("secret-at-cut:victorops {pad}");
    let warden = start(&scratch, &[("cut", action.as_str())]).await;
    let report = run(&warden, "cut").await;
    assert_eq!(report.refusals.len(), 2, "{}", shown(&report));
    for refusal in &report.refusals {
        assert!(refusal.detail.contains("a...("), "{}", refusal.detail);
        assert!(refusal.detail.len() <= MAX_REFUSAL_BYTES);
    }
    let everything = format!("{report:?}").to_ascii_lowercase();
    assert!(!everything.contains(&SECRET[..6].to_ascii_lowercase()));
}

#[tokio::test(flavor = "multi_thread")]
async fn everything_one_event_hands_the_host_stays_under_the_ceiling() {
    let scratch = Scratch::new();
    let action = format!("hoard-host:{MIB} 16");
    let warden = start(&scratch, &[("hoard", action.as_str())]).await;
    let report = run(&warden, "hoard").await;
    let context = shown(&report);
    assert!(
        matches!(
            report.outcome.as_ref().map_err(|f| &f.kind),
            Err(FailureKind::PluginError { .. })
        ),
        "{context}"
    );
    assert!(
        kept(&report) <= budget::ceiling(LOG_MAX_BYTES),
        "{} > {}: {context}",
        kept(&report),
        budget::ceiling(LOG_MAX_BYTES)
    );
    let refusals: usize = report
        .refusals
        .iter()
        .map(|r| budget::shown_len(&r.detail))
        .sum();
    assert!(refusals <= REFUSAL_BYTES + 4 * 200, "{refusals}");
    assert!(
        report
            .refusals
            .iter()
            .any(|r| r.detail.contains("more refusal(s) not recorded")),
        "{context}"
    );
    let calls: usize = report
        .http_calls
        .iter()
        .map(|c| c.origin.len() + c.path.len())
        .sum();
    assert!(calls <= CALL_BYTES, "{calls}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_hoarding_resource_handles_is_stopped_at_the_cap() {
    let scratch = Scratch::new();
    let warden = start(
        &scratch,
        &[("hoard", "hoard-handles:1000000"), ("calm", "approve:ok")],
    )
    .await;
    let report = run(&warden, "hoard").await;
    let failure = report.outcome.as_ref().expect_err("the hoard must fail");
    let held: usize = report
        .logs
        .iter()
        .filter_map(|l| l.message.strip_prefix("holding "))
        .map(|n| n.parse().unwrap())
        .max()
        .unwrap();
    // The line before the get that failed: at most the cap was ever held.
    assert!(
        held <= budget::MAX_HANDLES,
        "{held} handles held; {failure}"
    );
    let next = run(&warden, "calm").await;
    assert_eq!(
        next.outcome,
        Ok(Decision::Approve {
            reason: Some("ok".into())
        })
    );
}

/// The bytes request `id` takes in the store: its row's reason, its history, its audit lines.
fn stored_bytes(db: &rusqlite::Connection, id: &str) -> usize {
    let sum = |sql: &str| -> usize {
        db.query_row(sql, [id], |row| row.get::<_, Option<i64>>(0))
            .unwrap()
            .unwrap_or(0) as usize
    };
    sum("SELECT length(reason) FROM requests WHERE id = ?1")
        + sum("SELECT sum(length(entry)) FROM request_history WHERE request_id = ?1")
        + sum("SELECT sum(length(detail)) FROM audit_log WHERE request_id = ?1")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_hook_run_adds_a_bounded_number_of_bytes_to_the_store_and_the_answer() {
    let scratch = Scratch::new();
    // Both on_request and after_request run the action: two hook runs per request.
    let hoard = format!("hoard-host:{MIB} 8");
    let config = scratch.config(&config_text(
        &scratch,
        &[("calm", "continue"), ("hoard", hoard.as_str())],
    ));
    let server = Server::start(&config, Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.local_addr());
    let db = rusqlite::Connection::open(scratch.path().join("warden.db")).unwrap();
    let mut answers = Vec::new();
    for flow in ["calm", "hoard"] {
        let created = http
            .post(format!("{base}/v1/flows/{flow}/requests"))
            .bearer_auth(ADMIN)
            .body("{}")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let created: Value = serde_json::from_str(&created).unwrap();
        let id = created["id"].as_str().expect("an id").to_string();
        let answer = http
            .get(format!("{base}/v1/requests/{id}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        answers.push((answer, stored_bytes(&db, &id)));
    }
    server.shutdown().await.unwrap();

    let (calm, calm_stored) = &answers[0];
    let (hoard, hoard_stored) = &answers[1];
    let request: Value = serde_json::from_str(hoard).unwrap();
    let hooks: Vec<&Value> = request["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "hook")
        .collect();
    assert_eq!(hooks.len(), 2, "{}", start_of(&request.to_string()));
    for entry in &hooks {
        assert_eq!(
            entry["outcome"],
            "failed",
            "{}",
            start_of(&entry.to_string())
        );
        assert!(!entry["refusals"].as_array().unwrap().is_empty());
        let json = entry.to_string();
        assert!(json.len() <= HOOK_ENTRY_BYTES, "{} bytes", json.len());
    }
    let runs = hooks.len();
    assert!(
        hoard.len() <= calm.len() + runs * HOOK_RUN_BYTES,
        "the answer grew by {} bytes for {runs} hook runs",
        hoard.len() - calm.len()
    );
    assert!(
        *hoard_stored <= calm_stored + runs * HOOK_RUN_BYTES,
        "the store grew by {} bytes for {runs} hook runs",
        hoard_stored - calm_stored
    );
}

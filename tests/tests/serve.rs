//! `warden serve` end to end through its HTTP API: the probe and allowlist plugins in the
//! real host, each transition and refusal, restarts, reloads, back-pressure and metrics.

#[path = "serve/connections.rs"]
mod connections;
#[path = "serve/setup.rs"]
mod setup;

use std::time::Duration;

use serde_json::json;
use warden_tests::web::TestServer;
use warden_tests::{artifacts, toml_path};

use setup::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_approval_escalates_and_access_ends_when_the_duration_runs_out() {
    let h = Harness::standard().await;
    let reply = h
        .submit("auto", ALICE, json!({ "duration": { "seconds": 1 } }))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.body["state"], "escalated");
    assert_eq!(reply.body["decision"], "approve");
    assert_eq!(reply.body["reason"], "on call");
    assert!(reply.body["expires_at"].is_string());
    let id = reply.body["id"].as_str().unwrap().to_string();

    let done = h
        .wait_for_state(&id, "deescalated", Duration::from_secs(5))
        .await;
    assert_eq!(
        transitions(&done),
        ["requested", "approved", "escalated", "deescalated"]
    );
    // The probe implements on_request, after_request and on_escalate (which denies: a
    // decision on_escalate may not make, so it is recorded as a failure and access is
    // granted as a human, here the plugin's approval, decided).
    assert_eq!(
        hooks(&done),
        pairs(&[
            ("on_request", "approve"),
            ("after_request", "approve"),
            ("on_approve", "skipped"),
            ("after_approve", "skipped"),
            ("on_escalate", "failed"),
            ("after_escalate", "skipped"),
            ("on_deescalate", "skipped"),
            ("after_deescalate", "skipped"),
        ])
    );
    let escalate = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["hook"] == "on_escalate")
        .unwrap();
    assert!(
        escalate["error"]
            .as_str()
            .unwrap()
            .contains("may not decide"),
        "{escalate}"
    );
    assert_eq!(escalate["blame"], "plugin");
    assert!(escalate["elapsed_ms"].as_f64().unwrap() > 0.0);

    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"warden_hook_calls_total{flow="auto",hook="on_request",outcome="approve"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"warden_hook_failures_total{flow="auto",hook="on_escalate",kind="invalid-decision"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"warden_hook_duration_seconds_count{flow="auto",hook="on_request"}"#
        ),
        1.0
    );
    assert_eq!(metric(&m, r#"warden_requests{state="deescalated"}"#), 1.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_human_approves_a_pending_request_with_the_refusals_on_the_way() {
    let h = Harness::standard().await;
    let reply = h
        .submit("human", ALICE, json!({ "reason": "deploy" }))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.body["state"], "pending");
    assert_eq!(reply.body["decision"], "continue");
    let id = reply.body["id"].as_str().unwrap().to_string();

    // A requester may not approve.
    let r = h.decide(&id, "approve", DAVE, "").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.body["error"].as_str().unwrap().contains("approver"),
        "{}",
        r.text
    );
    // An approver may not approve as someone else.
    let r = h
        .send(
            "POST",
            &format!("/v1/requests/{id}/approve"),
            Some(BOB),
            Some(json!({ "approver": { "email": "eve@example.com" } })),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // Unknown request.
    assert_eq!(h.decide("req-nope", "approve", BOB, "").await.status, 404);

    let r = h.decide(&id, "approve", BOB, "looks fine").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["state"], "escalated");
    assert_eq!(r.body["reason"], "looks fine");
    let approved = r.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["to"] == "approved")
        .unwrap()
        .clone();
    assert_eq!(approved["actor"], "bob@example.com");
    // No duration: access stays until removed.
    assert!(r.body.get("expires_at").is_none());

    // Wrong state.
    let again = h.decide(&id, "approve", BOB, "").await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(again.body["error"].as_str().unwrap().contains("escalated"));
    assert_eq!(h.decide(&id, "deny", BOB, "").await.status, 409);

    // The audit log holds every change, and only admins read it.
    assert_eq!(
        h.send("GET", "/v1/admin/audit", Some(BOB), None)
            .await
            .status,
        403
    );
    let audit = h.send("GET", "/v1/admin/audit", Some(CAROL), None).await;
    let actions: Vec<(&str, &str)> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("alice@example.com", "request"),
            ("warden", "request"),
            ("bob@example.com", "approve"),
            ("warden", "escalate"),
        ]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn self_approval_is_refused_unless_the_flow_allows_it() {
    let h = Harness::standard().await;
    // carol is an admin, so she may both request and approve.
    let id = h.submit("human", CAROL, json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = h.decide(&id, "approve", CAROL, "me").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("allow_self_approval")
    );
    assert_eq!(h.get(&id).await["state"], "pending");

    let id = h.submit("selfok", CAROL, json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = h.decide(&id, "approve", CAROL, "me").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["state"], "escalated");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn denials_by_a_plugin_and_by_a_human() {
    let h = Harness::standard().await;
    let r = h.submit("refuse", ALICE, json!({})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["state"], "denied");
    assert_eq!(r.body["decision"], "deny");
    assert_eq!(r.body["reason"], "not today");

    let id = h.submit("human", ALICE, json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = h.decide(&id, "deny", BOB, "no").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["state"], "denied");
    assert_eq!(r.body["reason"], "no");
    assert_eq!(transitions(&r.body), ["requested", "pending", "denied"]);
    assert_eq!(h.decide(&id, "approve", BOB, "").await.status, 409);

    // The allowlist plugin: alice is on it, dave is not.
    assert_eq!(
        h.submit("allow", ALICE, json!({})).await.body["state"],
        "escalated"
    );
    assert_eq!(
        h.submit("allow", DAVE, json!({})).await.body["state"],
        "pending"
    );

    let listed = h
        .send("GET", "/v1/requests?state=pending", Some(BOB), None)
        .await;
    let pending: Vec<&str> = listed.body["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requester"].as_str().unwrap())
        .collect();
    assert_eq!(pending, ["dave@example.com"]);
    // A requester lists only their own.
    let mine = h.send("GET", "/v1/requests", Some(DAVE), None).await;
    assert_eq!(mine.body["requests"].as_array().unwrap().len(), 1);
    assert_eq!(
        h.send("GET", "/v1/requests?state=bogus", Some(BOB), None)
            .await
            .status,
        400
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_hook_falls_back_to_a_human_and_is_counted() {
    let h = Harness::standard().await;
    let r = h.submit("broken", ALICE, json!({})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["state"], "pending");
    assert!(
        r.body["reason"]
            .as_str()
            .unwrap()
            .contains("a human decides"),
        "{}",
        r.text
    );
    let on_request = &r.body["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["hook"] == "on_request")
        .unwrap()
        .clone();
    assert_eq!(on_request["outcome"], "failed");
    assert_eq!(on_request["blame"], "plugin");
    assert!(
        on_request["error"]
            .as_str()
            .unwrap()
            .contains("probe panicked"),
        "{on_request}"
    );
    let id = r.body["id"].as_str().unwrap();
    assert_eq!(
        h.decide(id, "approve", BOB, "ok").await.body["state"],
        "escalated"
    );

    // A grant refusal is counted by kind; the probe turns it into a denial.
    let r = h.submit("nohost", ALICE, json!({})).await;
    assert_eq!(r.body["state"], "denied", "{}", r.text);

    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"warden_hook_failures_total{flow="broken",hook="on_request",kind="trap"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            r#"warden_hook_calls_total{flow="broken",hook="on_request",outcome="failed"}"#
        ),
        1.0
    );
    // The probe runs the same action in on_request and after_request: two refusals.
    assert_eq!(
        metric(
            &m,
            r#"warden_grant_refusals_total{flow="nohost",kind="host"}"#
        ),
        2.0
    );
    assert_eq!(metric(&m, r#"warden_requests{state="escalated"}"#), 1.0);
    assert_eq!(metric(&m, r#"warden_requests{state="denied"}"#), 1.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_naming_what_is_wrong() {
    let h = Harness::standard().await;
    let r = h.submit("nosuch", ALICE, json!({})).await;
    assert_eq!(r.status, 404);
    assert!(r.body["error"].as_str().unwrap().contains("nosuch"));

    let r = h.submit("strict", ALICE, json!({})).await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("reason")),
        "{}",
        r.text
    );
    let r = h.submit("strict", ALICE, json!({ "reason": "  " })).await;
    assert_eq!(r.body["field"], "reason", "{}", r.text);
    let r = h
        .submit(
            "strict",
            ALICE,
            json!({ "reason": "x", "duration": "soon" }),
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("duration")),
        "{}",
        r.text
    );
    let r = h
        .submit("strict", ALICE, json!({ "reason": "x", "tickets": [1, 2] }))
        .await;
    assert_eq!(r.body["field"], "tickets", "{}", r.text);
    let r = h
        .submit("strict", ALICE, json!({ "reason": "x", "colour": "red" }))
        .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("colour")),
        "{}",
        r.text
    );
    // A duration written as text is stored as seconds.
    let r = h
        .submit("strict", ALICE, json!({ "reason": "x", "duration": "2h" }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["fields"]["duration"], json!({ "seconds": 7200 }));

    let r = h
        .send(
            "POST",
            "/v1/flows/human/requests",
            Some(ALICE),
            Some(json!({ "feilds": {} })),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body["error"].as_str().unwrap().contains("feilds"),
        "{}",
        r.text
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_roles_and_the_body_cap() {
    let h = Harness::start("max_body_bytes = 2048", &standard_flows()).await;
    let path = "/v1/flows/human/requests";
    let r = h.send("POST", path, None, Some(json!({}))).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    assert_eq!(
        h.send("POST", path, Some("wrong"), Some(json!({})))
            .await
            .status,
        401
    );

    // A requester asks only for themselves; an admin may ask for others.
    let for_bob = json!({ "requester": { "email": "bob@example.com" } });
    assert_eq!(
        h.send("POST", path, Some(ALICE), Some(for_bob.clone()))
            .await
            .status,
        403
    );
    let r = h.send("POST", path, Some(CAROL), Some(for_bob)).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["requester"], "bob@example.com");
    let id = r.body["id"].as_str().unwrap();
    // Requesters read only their own requests.
    assert_eq!(
        h.send("GET", &format!("/v1/requests/{id}"), Some(ALICE), None)
            .await
            .status,
        403
    );
    // Only admins reload.
    assert_eq!(
        h.send("POST", "/v1/admin/reload", Some(BOB), None)
            .await
            .status,
        403
    );

    let big = json!({ "fields": { "reason": "x".repeat(4096) } });
    let r = h.send("POST", path, Some(ALICE), Some(big)).await;
    assert_eq!(r.status, 413, "{}", r.text);

    assert_eq!(h.send("GET", "/healthz", None, None).await.status, 200);
    // Readiness: the store answers (PostgreSQL's 503 while it does not: host/tests/replicas.rs).
    let ready = h.send("GET", "/readyz", None, None).await;
    assert_eq!((ready.status, ready.text.as_str()), (200, "ready\n"));
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, r#"warden_api_responses_total{status="401"}"#),
        2.0
    );
    assert_eq!(
        metric(&m, r#"warden_api_responses_total{status="413"}"#),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_makes_a_retry_return_the_first_request() {
    let h = Harness::standard().await;
    let send = || {
        h.send_with(
            "POST",
            "/v1/flows/human/requests",
            Some(ALICE),
            Some(json!({ "fields": { "reason": "r" } })),
            &[("Idempotency-Key", "abc-1")],
        )
    };
    let first = send().await;
    assert_eq!(first.status, 201);
    let second = send().await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(first.body["id"], second.body["id"]);
    // The same key for another request is a mistake, told as one.
    let reused = h
        .send_with(
            "POST",
            "/v1/flows/human/requests",
            Some(ALICE),
            Some(json!({ "fields": { "reason": "something else" } })),
            &[("Idempotency-Key", "abc-1")],
        )
        .await;
    assert_eq!(reused.status, 422, "{}", reused.text);
    assert!(
        reused.text.contains("a new request needs a new key"),
        "{}",
        reused.text
    );
    // The same key from another sender is another request.
    let other = h
        .send_with(
            "POST",
            "/v1/flows/human/requests",
            Some(DAVE),
            Some(json!({})),
            &[("Idempotency-Key", "abc-1")],
        )
        .await;
    assert_eq!(other.status, 201);
    assert_ne!(other.body["id"], first.body["id"]);
    // A key is visible ASCII, at most 200 bytes: nothing else is filed under one.
    for bad in ["tab\tinside", "space inside", &"k".repeat(201)] {
        let refused = h
            .send_with(
                "POST",
                "/v1/flows/human/requests",
                Some(ALICE),
                Some(json!({})),
                &[("Idempotency-Key", bad)],
            )
            .await;
        assert_eq!(refused.status, 422, "{bad:?}: {}", refused.text);
        assert!(refused.text.contains("visible ASCII"), "{}", refused.text);
    }
    let all = h.send("GET", "/v1/requests", Some(CAROL), None).await;
    assert_eq!(all.body["requests"].as_array().unwrap().len(), 2);
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            r#"warden_hook_calls_total{flow="human",hook="on_request",outcome="continue"}"#
        ),
        2.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_reused_for_another_user_of_the_same_email_is_refused() {
    let h = Harness::standard().await;
    // Filed for someone, the key's request is theirs as hooks see them: the same email with
    // another username is another request.
    let for_alice = |username: &str| {
        h.send_with(
            "POST",
            "/v1/flows/human/requests",
            Some(CAROL),
            Some(json!({
                "requester": { "email": "alice@example.com", "username": username },
                "fields": {},
            })),
            &[("Idempotency-Key", "for-alice")],
        )
    };
    assert_eq!(for_alice("alice-ro").await.status, 201);
    assert_eq!(for_alice("alice-ro").await.status, 200);
    let other_user = for_alice("alice-admin").await;
    assert_eq!(other_user.status, 422, "{}", other_user.text);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_pending_and_active_requests_and_their_timers() {
    let mut h = Harness::standard().await;
    let pending = h.submit("human", ALICE, json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    // One whose access runs out while warden is down, one that outlives the restart with
    // seconds to spare however slowly a loaded machine stops and starts warden.
    let short = h
        .submit("auto", ALICE, json!({ "duration": { "seconds": 1 } }))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let long = h
        .submit("auto", ALICE, json!({ "duration": { "seconds": 6 } }))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let server = h.server.take().unwrap();
    server.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    h.restart().await;

    // Overdue: removed at once on start.
    h.wait_for_state(&short, "deescalated", Duration::from_secs(1))
        .await;
    assert_eq!(h.get(&long).await["state"], "escalated");
    assert_eq!(h.get(&pending).await["state"], "pending");
    let r = h.decide(&pending, "approve", BOB, "after restart").await;
    assert_eq!(r.body["state"], "escalated", "{}", r.text);
    let done = h
        .wait_for_state(&long, "deescalated", Duration::from_secs(7))
        .await;
    // Exactly once.
    assert_eq!(
        transitions(&done)
            .iter()
            .filter(|t| *t == "deescalated")
            .count(),
        1
    );
    h.stop().await;
}

/// A step's state change may wait to be written with the next one, but only while no hook
/// runs: a hook that runs (here a slow `after_request`) finds the change already stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_hook_that_runs_finds_the_state_change_before_it_stored() {
    let web = TestServer::start().await;
    let flow = format!(
        "[flows.slowafter]\nenvironment = \"main\"\nplugin = {}\n\
         vars = {{ action = \"continue\", after_action = \"http:GET {}/slow?ms=1500\" }}\n\
         allowed_hosts = [{:?}]\n",
        toml_path(artifacts::PROBE),
        web.origin(),
        web.origin()
    );
    let h = Harness::start("", &flow).await;
    let in_flight = h.submit_in_background("slowafter");
    wait_for_hit(&web).await;
    let listed = h.send("GET", "/v1/requests", Some(CAROL), None).await;
    let states: Vec<&str> = listed.body["requests"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", listed.text))
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["pending"],
        "while after_request runs: {}",
        listed.text
    );
    let done = in_flight.await.unwrap();
    assert_eq!(done.status, 201, "{}", done.text);
    assert_eq!(done.body["state"], "pending");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_a_reload_rotated_away_stays_redacted() {
    let web = TestServer::start().await;
    let origin = web.origin();
    // Follows `[environments.main]` in the harness's config, so its first line is that
    // table's; the server keeps every key sent it sealed, and recalls them all.
    let flows = |key_path: &str| {
        format!(
            "integrations = {{ victorops = \"victorops\" }}\n\
             [secrets.vo_key]\nsource = \"file\"\npath = \"{key_path}\"\n\
             [integrations.victorops]\ntype = \"custom\"\nexternal_id = \"vo-ext\"\nsecrets = [\"vo_key\"]\n{}{}",
            probe_flow(
                "keep",
                &format!("http-sealed:victorops {origin}/keep"),
                &format!("allowed_hosts = [{origin:?}]\nreveal_secrets = false"),
            ),
            probe_flow(
                "recall",
                &format!("http:GET {origin}/recall?case=upper"),
                &format!("allowed_hosts = [{origin:?}]\nreveal_secrets = false"),
            ),
        )
    };
    let old_key = "old-key-value-1f3a";
    let h = {
        let h = Harness::start("", "").await;
        h.scratch.write("vo-old.key", old_key);
        h.scratch.write("vo-new.key", "new-key-value-9c2e");
        h.scratch
            .config(&config_text(&h.scratch, "", &flows("vo-old.key")));
        let r = h.send("POST", "/v1/admin/reload", Some(CAROL), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        h
    };
    let kept = h.submit("keep", ALICE, json!({})).await;
    assert_eq!(kept.status, 201, "{}", kept.text);
    // The key rotated: the next reload reads the new one.
    h.scratch
        .config(&config_text(&h.scratch, "", &flows("vo-new.key")));
    let r = h.send("POST", "/v1/admin/reload", Some(CAROL), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let kept = h.submit("keep", ALICE, json!({})).await;
    assert_eq!(kept.status, 201, "{}", kept.text);
    let recalled = h.submit("recall", ALICE, json!({})).await;
    let reason = recalled.body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.ends_with("recalled [REDACTED] [REDACTED]"),
        "{}",
        recalled.text
    );
    let stored = h.get(recalled.body["id"].as_str().unwrap()).await;
    assert!(
        !stored.to_string().to_ascii_lowercase().contains(old_key),
        "{stored:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_swaps_plugins_while_running_hooks_finish_on_the_old_one() {
    let web = TestServer::start().await;
    let h = Harness::start("", &slow_flows(&web, "/slow?ms=1500")).await;
    let in_flight = h.submit_in_background("slow");
    wait_for_hit(&web).await;
    let text = config_text(
        &h.scratch,
        "",
        &probe_flow(
            "slow",
            "deny:reloaded",
            "[flows.fresh]\nenvironment = \"main\"\nplugin = \"missing.wasm\"\n",
        ),
    );
    // First an invalid config: refused, the old one keeps serving.
    h.scratch.config(&text);
    let r = h.send("POST", "/v1/admin/reload", Some(CAROL), None).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.body["error"].as_str().unwrap().contains("missing.wasm"),
        "{}",
        r.text
    );

    h.scratch.config(&config_text(
        &h.scratch,
        "",
        &probe_flow("slow", "deny:reloaded", ""),
    ));
    let r = h.send("POST", "/v1/admin/reload", Some(CAROL), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["flows"], json!(["slow"]));

    let after = h.submit("slow", ALICE, json!({})).await;
    assert_eq!(after.body["state"], "denied");
    assert_eq!(after.body["reason"], "reloaded");

    let before = in_flight.await.unwrap();
    assert_eq!(before.status, 201, "{}", before.text);
    assert_eq!(before.body["state"], "escalated");
    assert_eq!(before.body["reason"], "status=200 body=finally");

    let m = h.metrics().await;
    assert_eq!(metric(&m, r#"warden_reloads_total{result="ok"}"#), 1.0);
    assert_eq!(metric(&m, r#"warden_reloads_total{result="refused"}"#), 1.0);
    let egress = format!(
        r#"warden_http_egress_total{{flow="slow",host="{}",status="200"}}"#,
        web.origin()
    );
    // on_request and after_request each made the call.
    assert_eq!(metric(&m, &egress), 2.0, "{m}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn beyond_max_in_flight_requests_are_refused_with_retry_after() {
    let web = TestServer::start().await;
    let h = Harness::start("max_in_flight = 1", &slow_flows(&web, "/slow?ms=1000")).await;
    // Bob signed in to the console before the only slot is taken.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = browser
        .post(h.url("/signin"))
        .body(format!("token={BOB}&next=%2F"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let bob = signed_in.headers()["set-cookie"].to_str().unwrap();
    let bob = bob.split(';').next().unwrap().to_string();
    let url = h.url("/v1/flows/slow/requests");
    let http = h.http.clone();
    let first = tokio::spawn(async move {
        reply(
            http.post(url)
                .bearer_auth(ALICE)
                .body("{}")
                .send()
                .await
                .unwrap(),
        )
        .await
    });
    wait_for_hit(&web).await;
    let r = h.submit("slow", ALICE, json!({})).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.headers["retry-after"], "1");
    // A request with no token, or one warden does not know, takes no slot: it is refused for
    // what it is, not turned away as though warden were busy.
    let path = "/v1/flows/slow/requests";
    for token in [None, Some("a-guess")] {
        let stranger = h.send("POST", path, token, Some(json!({}))).await;
        assert_eq!(stranger.status, 401, "{token:?}: {}", stranger.text);
    }
    // The console alike: a page takes a slot once its session is found. The sign-in form,
    // the stylesheet and a cookie naming no session are answered; a signed-in page is busy.
    let page = |path: &str, cookie: &str| {
        browser
            .get(h.url(path))
            .header("cookie", cookie.to_string())
            .send()
    };
    for path in ["/signin", "/console.css"] {
        assert_eq!(page(path, "").await.unwrap().status(), 200, "{path}");
    }
    let forged = format!("warden_session={}", "a".repeat(64));
    assert_eq!(page("/", &forged).await.unwrap().status(), 303);
    let busy = page("/", &bob).await.unwrap();
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "1");
    // Health and metrics stay reachable, and metrics count the request holding the slot.
    assert_eq!(h.send("GET", "/healthz", None, None).await.status, 200);
    assert_eq!(metric(&h.metrics().await, "warden_api_in_flight"), 1.0);
    assert_eq!(first.await.unwrap().status, 201);
    assert_eq!(metric(&h.metrics().await, "warden_api_in_flight"), 0.0);
    assert_eq!(h.submit("slow", ALICE, json!({})).await.status, 201);
    assert_eq!(page("/", &bob).await.unwrap().status(), 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escalation_the_store_refused_to_write_is_finished_while_warden_runs() {
    // `on_escalate` runs (and may grant access) after the approval is written and before
    // the escalation and its end are: a write refused there left the request approved, its
    // access without an end, until a restart.
    let web = TestServer::start().await;
    let flow = format!(
        "[flows.esc]\nenvironment = \"main\"\nplugin = {}\nallowed_hosts = [{:?}]\n\
         vars = {{ action = \"approve:on call\", escalate_action = \"http:GET {}/slow?ms=500\" }}\n",
        toml_path(artifacts::PROBE),
        web.origin(),
        web.origin()
    );
    let h = Harness::start("", &flow).await;
    let (http, url) = (h.http.clone(), h.url("/v1/flows/esc/requests"));
    let submitted = tokio::spawn(async move {
        let body = json!({ "fields": { "duration": { "seconds": 3600 } } });
        reply(
            http.post(url)
                .bearer_auth(ALICE)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap(),
        )
        .await
    });
    // While `on_escalate` waits on the server, another process takes the store's write lock
    // and holds it past warden's busy timeout.
    wait_for_hit(&web).await;
    let db = rusqlite::Connection::open(h.scratch.path().join("warden.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let refused = submitted.await.unwrap();
    db.execute_batch("ROLLBACK").unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text);
    let listed = h.send("GET", "/v1/requests", Some(CAROL), None).await;
    let id = listed.body["requests"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(h.get(&id).await["state"], "approved");
    // Finished without a restart (the expiry sleeper looks at least every 30 s): escalated,
    // with its end.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let request = h.get(&id).await;
        if request["state"] == "escalated" {
            assert!(!request["expires_at"].is_null(), "{request}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{request}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_finishes_hooks_in_flight_and_keeps_their_result() {
    let web = TestServer::start().await;
    let mut h = Harness::start("", &slow_flows(&web, "/slow?ms=800")).await;
    let in_flight = h.submit_in_background("slow");
    wait_for_hit(&web).await;
    h.server.take().unwrap().shutdown().await.unwrap();
    let done = in_flight.await.unwrap();
    assert_eq!(done.status, 201, "{}", done.text);
    assert_eq!(done.body["state"], "escalated");
    let id = done.body["id"].as_str().unwrap().to_string();

    h.restart().await;
    assert_eq!(h.get(&id).await["state"], "escalated");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_arriving_while_shutdown_drains_is_refused_at_once() {
    // A listener kept open through the drain would take the connection into its backlog and
    // answer nothing; refused, the client (or its load balancer) goes elsewhere at once.
    let web = TestServer::start().await;
    let mut h = Harness::start("", &slow_flows(&web, "/slow?ms=3000")).await;
    let addr = h.server.as_ref().unwrap().local_addr();
    let in_flight = h.submit_in_background("slow");
    wait_for_hit(&web).await;
    let stopping = tokio::spawn(h.server.take().unwrap().shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "the hook in flight should still be running"
    );
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert_eq!(
        refused.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    stopping.await.unwrap().unwrap();
    assert_eq!(in_flight.await.unwrap().status, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_step_costs_the_same_few_store_writes() {
    // A step's hook entries and deferred transitions wait in its claim and share its writes:
    // what a step costs is the store's main load (scripts/bench-serve), so it is pinned here.
    let h = Harness::standard().await;
    let (to_human, pending) = writes_of(&h, h.submit("human", ALICE, json!({}))).await;
    assert_eq!(pending.body["state"], "pending", "{}", pending.text);
    let id = pending.body["id"].as_str().unwrap().to_string();
    let (approved, escalated) = writes_of(&h, h.decide(&id, "approve", BOB, "ok")).await;
    assert_eq!(escalated.body["state"], "escalated", "{}", escalated.text);
    let (by_plugin, auto) = writes_of(&h, h.submit("auto", ALICE, json!({}))).await;
    assert_eq!(auto.body["state"], "escalated", "{}", auto.text);
    let (timed, _) = writes_of(
        &h,
        h.submit("auto", ALICE, json!({ "duration": { "seconds": 3600 } })),
    )
    .await;
    assert_eq!(
        (to_human, approved, by_plugin, timed),
        (3.0, 2.0, 3.0, 4.0),
        "writes: to a human, approved by a human, by the plugin, by the plugin with a duration"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn access_resumed_after_a_stop_is_timed_from_its_approval_not_the_restart() {
    // on_escalate may have granted access before the stop; counted from the restart, an
    // hour down would have added an hour to a minute's access.
    let mut h = Harness::standard().await;
    let filed = h
        .submit("human", ALICE, json!({ "duration": { "seconds": 60 } }))
        .await;
    assert_eq!(filed.body["state"], "pending", "{}", filed.text);
    let id = filed.body["id"].as_str().unwrap().to_string();
    h.server.take().unwrap().shutdown().await.unwrap();
    // As a stop right after the approval's commit leaves it, an hour ago.
    let db = rusqlite::Connection::open(h.scratch.path().join("warden.db")).unwrap();
    let an_hour_ago = warden::store::requests::now_ms() - 3_600_000;
    db.execute(
        "UPDATE requests SET state = 'approved', decision = 'approve', updated_at = ?2 WHERE id = ?1",
        rusqlite::params![id, an_hour_ago],
    )
    .unwrap();
    drop(db);
    h.restart().await;
    h.wait_for_state(&id, "deescalated", Duration::from_secs(20))
        .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_cannot_be_read_stops_neither_a_start_nor_a_listing() {
    // Written by another version, or damaged: its `fields` are not a JSON object. It stopped
    // `warden serve` from starting (the resume at start read it) and answered every listing
    // that reached it 503.
    let mut h = Harness::standard().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let filed = h.submit("human", ALICE, json!({})).await;
        assert_eq!(filed.status, 201, "{}", filed.text);
        ids.push(filed.body["id"].as_str().unwrap().to_string());
    }
    h.server.take().unwrap().shutdown().await.unwrap();
    let db = rusqlite::Connection::open(h.scratch.path().join("warden.db")).unwrap();
    // Both as a stop in their request step leaves them: the damaged one, and one to resume.
    db.execute(
        "UPDATE requests SET state = 'requested', fields = '[1]' WHERE id = ?1",
        [&ids[1]],
    )
    .unwrap();
    db.execute(
        "UPDATE requests SET state = 'requested' WHERE id = ?1",
        [&ids[2]],
    )
    .unwrap();
    drop(db);
    h.restart().await;
    // The other was resumed: to a human.
    assert_eq!(h.get(&ids[2]).await["state"], "pending");
    let listed = h.send("GET", "/v1/requests", Some(CAROL), None).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let shown: Vec<&str> = listed.body["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(shown, [ids[2].as_str(), ids[0].as_str()]);
    // A page cut just past it goes on after it.
    let first = h
        .send("GET", "/v1/requests?limit=1", Some(CAROL), None)
        .await;
    let next = first.body["next"].as_str().unwrap().to_string();
    let second = h
        .send(
            "GET",
            &format!("/v1/requests?limit=1&before={next}"),
            Some(CAROL),
            None,
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.body["requests"][0]["id"], ids[0].as_str());
    // Opened by its id: named, and not a store to retry (503 with Retry-After, for ever).
    let opened = h
        .send(
            "GET",
            &format!("/v1/requests/{}", ids[1]),
            Some(CAROL),
            None,
        )
        .await;
    assert_eq!(opened.status, 500, "{}", opened.text);
    assert!(opened.headers.get("retry-after").is_none());
    let said = opened.body["error"].as_str().unwrap();
    assert!(
        said.contains(&ids[1]) && said.contains("trying again will not help"),
        "{said}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_a_reload_takes_from_a_flow_stays_redacted_from_what_it_receives() {
    // The flow sent the key sealed to a server that keeps what it receives; a reload took
    // the key from its environment (the operator cutting it off). Redacted only for what
    // the flow is granted now, the server's echo reached the plugin in clear: hex-encoded,
    // past any redaction of its reason.
    let web = TestServer::start().await;
    let origin = web.origin();
    let key = "sealed-key-value-5b7e21";
    let flows = |environment_holds: &str| {
        format!(
            "{environment_holds}\n\
             [environments.other]\nintegrations = {{ victorops = \"victorops\" }}\n\
             [secrets.vo_key]\nsource = \"file\"\npath = \"vo.key\"\n\
             [integrations.victorops]\ntype = \"custom\"\nexternal_id = \"vo-ext\"\nsecrets = [\"vo_key\"]\n{}{}",
            probe_flow(
                "keep",
                &format!("http-sealed:victorops {origin}/keep"),
                &format!("allowed_hosts = [{origin:?}]\nreveal_secrets = false"),
            ),
            probe_flow(
                "keep_recall",
                &format!("http-hex:{origin}/recall?case=upper"),
                &format!("allowed_hosts = [{origin:?}]\nreveal_secrets = false"),
            ),
        )
    };
    let h = Harness::start("", "").await;
    h.scratch.write("vo.key", key);
    let reload = |text: String| {
        h.scratch.config(&config_text(&h.scratch, "", &text));
        h.send("POST", "/v1/admin/reload", Some(CAROL), None)
    };
    let r = reload(flows("integrations = { victorops = \"victorops\" }")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let kept = h.submit("keep", ALICE, json!({})).await;
    assert_eq!(kept.status, 201, "{}", kept.text);
    assert_eq!(web.kept(), [key]);
    // Taken away from `main`, whose flows then hold no secret at all.
    let r = reload(flows("")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // And a second reload later: still known as once sealed.
    let r = reload(flows("")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let recalled = h.submit("keep_recall", ALICE, json!({})).await;
    let hex = recalled.body["reason"].as_str().unwrap_or_default();
    let seen = String::from_utf8(warden_tests::unhex(hex).unwrap()).unwrap();
    assert!(seen.starts_with("200\n"), "{seen}");
    assert!(
        !seen.to_ascii_lowercase().contains(key),
        "the key came back in clear: {seen}"
    );
}

/// Serves flow `flow` (the probe doing `action` in on_request, `escalate_action` in
/// on_escalate; one of them calls `web`, slowly) beside the standard ones, files a request to
/// it, and once its hook has called `web`, reloads a config without the flow: the harness,
/// the request on its way, and the reload's answer.
async fn reload_away_while_a_hook_waits(
    web: &TestServer,
    flow: &str,
    action: &str,
    escalate_action: &str,
) -> (Harness, tokio::task::JoinHandle<Reply>, Reply) {
    let text = format!(
        "[flows.{flow}]\nenvironment = \"main\"\nplugin = {}\nallowed_hosts = [{:?}]\n\
         vars = {{ action = {action:?}, escalate_action = {escalate_action:?} }}\n",
        toml_path(artifacts::PROBE),
        web.origin(),
    );
    let h = Harness::start("", &[text.as_str(), &standard_flows()].concat()).await;
    let submitted = h.submit_in_background(flow);
    wait_for_hit(web).await;
    h.scratch
        .config(&config_text(&h.scratch, "", &standard_flows()));
    let r = h.send("POST", "/v1/admin/reload", Some(CAROL), None).await;
    (h, submitted, r)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_removing_a_flow_whose_plugin_is_granting_access_is_refused() {
    // Approved, its on_escalate granting (a slow provider): the request is not escalated
    // yet, and a reload removing its flow went through, leaving access no hook can remove.
    let web = TestServer::start().await;
    // Kept to the end: the server answers the request on its way.
    let (_h, submitted, r) = reload_away_while_a_hook_waits(
        &web,
        "esc",
        "approve:on call",
        &format!("http:GET {}/slow?ms=3000", web.origin()),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text
            .contains("flow `esc` is removed, but its plugin is granting access"),
        "{}",
        r.text
    );
    assert_eq!(submitted.await.unwrap().body["state"], "escalated");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_flow_a_reload_removed_mid_way_is_not_granted() {
    // Its on_request slow (a provider), the request is `requested` while a reload removes
    // its flow: the reload's check does not see it, and the operation, on the config it
    // began with, approved it and granted access no hook could ever remove.
    let web = TestServer::start().await;
    let (h, submitted, r) = reload_away_while_a_hook_waits(
        &web,
        "fast",
        &format!("http:GET {}/slow?ms=2000", web.origin()),
        "approve:granted",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let answered = submitted.await.unwrap();
    assert_eq!(answered.status, 409, "{}", answered.text);
    assert!(
        answered.text.contains("which the config no longer has"),
        "{}",
        answered.text
    );
    let listed = h
        .send("GET", "/v1/requests?flow=fast", Some(CAROL), None)
        .await;
    let states: Vec<&str> = listed.body["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert!(
        states.iter().all(|s| *s != "approved" && *s != "escalated"),
        "{states:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_removing_a_flow_counts_its_requests_that_cannot_be_read() {
    // A listing leaves out what does not read; the reload's check used one, and saw no
    // access held where an unreadable request (and any behind three of them) held it.
    let mut h = Harness::standard().await;
    let filed = h.submit("auto", ALICE, json!({})).await;
    assert_eq!(filed.body["state"], "escalated", "{}", filed.text);
    let id = filed.body["id"].as_str().unwrap().to_string();
    h.server.take().unwrap().shutdown().await.unwrap();
    let db = rusqlite::Connection::open(h.scratch.path().join("warden.db")).unwrap();
    db.execute("UPDATE requests SET fields = '[1]' WHERE id = ?1", [&id])
        .unwrap();
    drop(db);
    h.restart().await;
    let without_auto = standard_flows().replace("[flows.auto]", "[flows.auto_gone]");
    h.scratch
        .config(&config_text(&h.scratch, "", &without_auto));
    let r = h.send("POST", "/v1/admin/reload", Some(CAROL), None).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(
        r.text
            .contains("flow `auto` is removed, but access its plugin granted is still held (1 that cannot be read)"),
        "{}",
        r.text
    );
    h.stop().await;
}

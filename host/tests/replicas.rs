//! `warden serve` replicas on one PostgreSQL database (issue 19), end to end: two real
//! `warden serve` processes over the throwaway cluster (`warden::store::test_cluster`), one
//! client loading both. What a client was told with a 2xx survives a replica's SIGKILL and
//! the database's restart; replicas coordinate through the database alone (an expiry ends
//! access once, an idempotent retry on the other replica returns the first request, of two
//! approvals racing on two replicas one wins and one gets 409); while the database is down
//! writes answer 503 with `Retry-After` and `/readyz` says so, and the replicas serve again by
//! themselves once it is back.
//!
//! Without PostgreSQL installed the tests print why and pass, unless
//! `WARDEN_REQUIRE_POSTGRES` is set (as `scripts/test` does).

mod listing;
#[path = "replicas/setup.rs"]
mod setup;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use warden::store::test_cluster;
use warden_tests::receiver::Receiver;
use warden_tests::{Scratch, artifacts, toml_path};

use setup::*;

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_one_database_through_a_sigkill() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let scratch = Scratch::new();
    write_config(&scratch, url.as_str(), "");
    let a = start(&scratch, "a-0");
    let b = start(&scratch, "b");
    let http = reqwest::Client::new();

    // An idempotent retry reaching the other replica returns the first request.
    let body = new_request("retry@example.com");
    let first = post(
        &http,
        format!("{}/v1/flows/manual/requests", a.url),
        body.clone(),
        Some("k-1"),
    )
    .await
    .unwrap();
    assert_eq!(first.status, 201);
    let again = post(
        &http,
        format!("{}/v1/flows/manual/requests", b.url),
        body,
        Some("k-1"),
    )
    .await
    .unwrap();
    assert_eq!(again.status, 200, "a replay answers 200: {:?}", again.body);
    let (first, again) = (first.body.unwrap(), again.body.unwrap());
    assert_eq!(first["id"], again["id"], "the retry made a second request");

    // Approvals racing on the two replicas: one wins, the other is told 409, and the
    // request is approved (its hooks run) once.
    for race in 0..6 {
        let body = new_request(&format!("race{race}@example.com"));
        let made = post(
            &http,
            format!("{}/v1/flows/manual/requests", a.url),
            body,
            None,
        )
        .await
        .unwrap();
        let id = made.body.unwrap()["id"].as_str().unwrap().to_string();
        let approve = |replica: &str| {
            let url = format!("{replica}/v1/requests/{id}/approve");
            post_as(&http, APPROVER_TOKEN, url, json!({}), None)
        };
        let (one, other) = tokio::join!(approve(&a.url), approve(&b.url));
        let mut statuses = [one.unwrap().status, other.unwrap().status];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "race {race}");
        let view = get(&http, &format!("{}/v1/requests/{id}", b.url)).await;
        let history = view["history"].as_array().unwrap();
        assert_eq!(
            count(history, "transition", "to", "approved"),
            1,
            "{view:#}"
        );
        assert_eq!(count(history, "hook", "hook", "on_approve"), 1, "{view:#}");
    }

    // Load over both; replica a is killed in the middle and started again after the load.
    let log: Log = Arc::default();
    let until = Instant::now() + LOAD_FOR;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client(
                [a.url.clone(), b.url.clone()],
                c,
                until,
                log.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(LOAD_FOR / 3).await;
    let killed_at = SystemTime::now();
    kill(a);
    for c in clients {
        c.await.unwrap();
    }
    // Access granted just before the kill runs out while a is down.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let restarted_at = SystemTime::now();
    let a = start(&scratch, "a-1");
    let acks = log.lock().unwrap().clone();
    assert!(
        acks.len() > 2 * CLIENTS,
        "too little load got through to test anything: {} acknowledged",
        acks.len()
    );
    check_acknowledged(&a.url, &acks).await;
    check_acknowledged(&b.url, &acks).await;

    // Every access that ran out ended once (both replicas' sleepers saw it due), and some
    // ran out while a was down. Requests a was working on when killed are resumed once its
    // claims run out (`store::backend::CLAIM_LEASE_MS`), by either replica.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut expired_while_down = 0;
    loop {
        let requests = listing::all_requests(&http, &b.url, ADMIN_TOKEN).await;
        let now = SystemTime::now();
        let waiting = requests.iter().any(|r| {
            let overdue = r["state"] == "escalated"
                && humantime::parse_rfc3339(r["expires_at"].as_str().unwrap()).unwrap()
                    + Duration::from_millis(500)
                    < now;
            overdue || r["state"] == "requested" || r["state"] == "approved"
        });
        if waiting {
            assert!(
                Instant::now() < deadline,
                "requests rest in passing states or past their expiry: {requests:#?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        for request in &requests {
            let id = request["id"].as_str().unwrap();
            let view = get(&http, &format!("{}/v1/requests/{id}", a.url)).await;
            let history = view["history"].as_array().unwrap();
            for to in ["requested", "pending", "approved", "denied", "escalated"] {
                assert!(
                    count(history, "transition", "to", to) <= 1,
                    "{id} entered {to} more than once: {view:#}"
                );
            }
            if view["state"] != "deescalated" {
                continue;
            }
            assert_eq!(
                count(history, "transition", "to", "deescalated"),
                1,
                "{view:#}"
            );
            assert_eq!(
                count(history, "hook", "hook", "on_deescalate"),
                1,
                "{view:#}"
            );
            let expired = humantime::parse_rfc3339(view["expires_at"].as_str().unwrap()).unwrap();
            if killed_at <= expired && expired < restarted_at {
                expired_while_down += 1;
            }
        }
        break;
    }
    eprintln!(
        "{} answers acknowledged; {expired_while_down} accesses ran out while replica a was down",
        acks.len()
    );
    assert!(
        expired_while_down > 0,
        "no access ran out while replica a was down; the outage is too short to test expiries"
    );
    kill(a);
    kill(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_restart_answers_503_with_retry_after_and_the_replicas_recover() {
    let Some(server) = tokio::task::spawn_blocking(test_cluster::dedicated)
        .await
        .unwrap()
    else {
        return;
    };
    let scratch = Scratch::new();
    write_config(&scratch, &server.url(), "");
    let (a, b) = (start(&scratch, "a"), start(&scratch, "b"));
    let urls = [a.url.clone(), b.url.clone()];
    let http = reqwest::Client::new();
    for url in &urls {
        let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
        assert_eq!(
            ready.status(),
            200,
            "{url} is ready while the database runs"
        );
    }
    let browser = no_redirects();
    let cookie = console_sign_in(&browser, &a.url).await;
    let console_page = |url: &str| {
        browser
            .get(format!("{url}/"))
            .header("cookie", &cookie)
            .send()
    };

    // Clients submit to both replicas until told to stop, keeping every answer.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<Answered>>> = Arc::default();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (urls, stop, answers) = (urls.clone(), stop.clone(), answers.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let url = format!("{}/v1/flows/manual/requests", urls[n % 2]);
                    let body = new_request(&format!("d{c}-{n}@example.com"));
                    n += 1;
                    if let Some(answer) = post(&http, url, body, None).await {
                        answers.lock().unwrap().push((
                            answer.status,
                            answer.retry_after,
                            answer.body,
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.stop();
        server
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for url in &urls {
        let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
        assert_eq!(
            ready.status(),
            503,
            "{url} is not ready without its database"
        );
        assert!(ready.headers().contains_key("retry-after"));
        let text = ready.text().await.unwrap();
        assert!(
            text.contains("the store does not answer") && !text.contains("127.0.0.1"),
            "says why without naming the database to anyone who asks: {text}"
        );
        let live = http.get(format!("{url}/healthz")).send().await.unwrap();
        assert_eq!(live.status(), 200, "{url} is alive all the same");
        // The console cannot tell who is signed in: it says so, not "sign in".
        let page = console_page(url).await.unwrap();
        assert_eq!(
            page.status(),
            503,
            "{url}: the console without its database"
        );
        assert!(page.headers().contains_key("retry-after"));
        let text = page.text().await.unwrap();
        assert!(
            text.contains("cannot reach its store") && !text.contains("127.0.0.1"),
            "{text}"
        );
    }
    let down = answers.lock().unwrap().len();
    server = tokio::task::spawn_blocking(move || {
        server.run().expect("the cluster starts again");
        server
    })
    .await
    .unwrap();

    // Back by themselves: both ready and storing requests again.
    let deadline = Instant::now() + Duration::from_secs(60);
    for url in &urls {
        loop {
            let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
            if ready.status() == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not become ready again"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    for url in &urls {
        let body = new_request("after@example.com");
        let made = post(&http, format!("{url}/v1/flows/manual/requests"), body, None)
            .await
            .unwrap();
        assert_eq!(made.status, 201, "{url} stores requests again");
        let page = console_page(url).await.unwrap();
        assert_eq!(
            page.status(),
            200,
            "{url}: still signed in after the database's restart"
        );
    }

    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let statuses: BTreeSet<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    assert!(
        statuses.is_subset(&BTreeSet::from([201, 503])),
        "only 201 and 503 while the database restarts: {statuses:?}"
    );
    let unavailable = answers.iter().filter(|(s, _, _)| *s == 503).count();
    assert!(
        unavailable > 0,
        "no client was told 503 while the database was down ({down} answers by then)"
    );
    for (status, retry_after, body) in answers.iter() {
        if *status == 503 {
            assert!(retry_after.is_some(), "a 503 without Retry-After: {body:?}");
        }
    }
    // Every 201 a client got is stored, with the history it was shown.
    let acks: Vec<Acknowledged> = answers
        .iter()
        .filter(|(s, _, _)| *s == 201)
        .filter_map(|(_, _, body)| body.as_ref())
        .map(|view| Acknowledged {
            id: view["id"].as_str().unwrap().to_string(),
            state: view["state"].as_str().unwrap().to_string(),
            history: view["history"].as_array().unwrap().clone(),
        })
        .collect();
    assert!(
        acks.len() > CLIENTS,
        "too little load: {} stored",
        acks.len()
    );
    check_acknowledged(&urls[0], &acks).await;
    eprintln!(
        "{} requests stored, {unavailable} answered 503 while the database restarted",
        acks.len()
    );
    kill(a);
    kill(b);
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_notification_is_sent_once_by_one_of_the_replicas() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    const KEY: &str = "signing-key-for-replica-tests";
    const REQUESTS: usize = 24;
    let receiver = Receiver::start(KEY, 0).await;
    let scratch = Scratch::new();
    scratch.write("signing.key", KEY);
    // Both replicas deliver the same outbox: each wakes on its own commits and looks every
    // second for the other's.
    let channel = webhook_channel(&receiver.url("/ok/hook"));
    write_config(&scratch, url.as_str(), &channel);
    let (a, b) = (start(&scratch, "a"), start(&scratch, "b"));
    let http = reqwest::Client::new();
    let mut ids = BTreeSet::new();
    for n in 0..REQUESTS {
        let replica = if n % 2 == 0 { &a.url } else { &b.url };
        let body = new_request(&format!("n{n}@example.com"));
        let made = post(
            &http,
            format!("{replica}/v1/flows/manual/requests"),
            body,
            None,
        )
        .await
        .unwrap();
        assert_eq!(made.status, 201);
        ids.insert(made.body.unwrap()["id"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.got().len() < REQUESTS {
        assert!(
            Instant::now() < deadline,
            "{} of {REQUESTS} notifications arrived",
            receiver.got().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Long enough for a second sending to show: both replicas look at least every second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = receiver.got();
    assert!(got.iter().all(|r| r.signature_ok == Some(true)), "{got:?}");
    let deliveries: BTreeSet<_> = got.iter().map(|r| r.delivery.clone()).collect();
    let requests: BTreeSet<String> = got
        .iter()
        .map(|r| r.body["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        got.len(),
        REQUESTS,
        "a notification was sent twice: {got:#?}"
    );
    assert_eq!(deliveries.len(), REQUESTS);
    assert_eq!(requests, ids, "one notification per request");
    // The outbox is empty, as both replicas' metrics say.
    for replica in [&a.url, &b.url] {
        let metrics = http.get(format!("{replica}/metrics")).send().await.unwrap();
        let text = metrics.text().await.unwrap();
        assert!(
            text.contains("warden_outbox_depth{channel=\"hook\"} 0")
                || !text.contains("warden_outbox_depth{"),
            "{text}"
        );
        assert!(
            text.contains("warden_requests{state=\"pending\"} 24"),
            "{text}"
        );
        // Each replica stored half the requests and counts its own writes.
        let writes: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("warden_store_writes_total "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_default();
        assert!(writes >= 2.0 * (REQUESTS / 2) as f64, "{text}");
    }
    kill(a);
    kill(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_without_a_channel_leaves_its_notifications_to_the_one_that_has_it() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    const KEY: &str = "signing-key-for-replica-tests";
    let receiver = Receiver::start(KEY, 0).await;
    // Replica a has the channel (its receiver failing, so the row waits between attempts);
    // replica b runs a config without it, as in a rolling change or after a refused reload.
    let (with, without) = (Scratch::new(), Scratch::new());
    with.write("signing.key", KEY);
    let channel = webhook_channel(&receiver.url("/fail/hook"));
    write_config(&with, url.as_str(), &channel);
    write_config(&without, url.as_str(), "");
    let (a, b) = (start(&with, "a"), start(&without, "b"));
    let http = reqwest::Client::new();
    let made = post(
        &http,
        format!("{}/v1/flows/manual/requests", a.url),
        new_request("n@example.com"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(made.status, 201);
    let id = made.body.unwrap()["id"].as_str().unwrap().to_string();
    // Five attempts, 250 ms, 0.5, 1 and 2 s apart: b looks at the outbox every second
    // meanwhile, and gave the row up at its first look before.
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.got().len() < 5 {
        let history = get(&http, &format!("{}/v1/requests/{id}", b.url)).await["history"].clone();
        let given_up = history
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "notification");
        assert!(given_up.is_none(), "given up: {given_up:?}");
        assert!(
            Instant::now() < deadline,
            "{} attempts arrived",
            receiver.got().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = get(&http, &format!("{}/v1/requests/{id}", a.url)).await["history"].clone();
    assert_eq!(
        count(
            history.as_array().unwrap(),
            "notification",
            "channel",
            "hook"
        ),
        0
    );
    kill(a);
    kill(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugins_reason_or_error_holding_a_nul_is_stored_on_postgresql() {
    // PostgreSQL's text cannot hold a NUL: a plugin's reason, or its error, that held one
    // failed the request's step, its fail-closed path too.
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let scratch = Scratch::new();
    let probe = toml_path(artifacts::PROBE);
    let flows = format!(
        "\n[flows.nul-reason]\nenvironment = \"main\"\nplugin = {probe}\n\
         vars = {{ action = \"approve:on\\u0000call\" }}\n\
         \n[flows.nul-error]\nenvironment = \"main\"\nplugin = {probe}\n\
         vars = {{ action = \"no\\u0000such\" }}\n"
    );
    write_config(&scratch, url.as_str(), &flows);
    let a = start(&scratch, "a");
    let http = reqwest::Client::new();
    let submit = |flow: &str| {
        post(
            &http,
            format!("{}/v1/flows/{flow}/requests", a.url),
            new_request("n@example.com"),
            None,
        )
    };
    let approved = submit("nul-reason").await.unwrap();
    assert_eq!(approved.status, 201);
    let approved = approved.body.unwrap();
    assert_eq!(approved["state"], "escalated", "{approved}");
    assert_eq!(approved["reason"], "on\u{fffd}call");
    let failed = submit("nul-error").await.unwrap();
    assert_eq!(failed.status, 201);
    let failed = failed.body.unwrap();
    assert_eq!(failed["state"], "pending", "{failed}");
    let history = failed["history"].to_string();
    assert!(
        history.contains("unknown action `no\u{fffd}such`"),
        "{history}"
    );
    kill(a);
}

#[tokio::test]
async fn check_and_hook_run_on_the_postgresql_store() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let scratch = Scratch::new();
    write_config(&scratch, url.as_str(), "");
    let config = scratch.path().join("warden.toml");
    let config = config.to_str().unwrap();
    let (ok, out, err) = warden(&["check", "--config", config], "");
    assert!(ok, "{err}");
    assert!(out.contains(&format!("store {}", url.as_str())), "{out}");
    // The hook's plugin persists an identity: into the database, where `warden users` (and
    // every replica) finds it.
    let event = r#"{"user":{"email":"hook@example.com"},"fields":{}}"#;
    let args = [
        "hook", "--config", config, "--flow", "persist", "--event", "-",
    ];
    let (ok, out, err) = warden(&args, event);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = warden(&["users", "--config", config, "list"], "");
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("hook@example.com") && l.contains("user-1")),
        "{out}"
    );
}

/// A browser signed in to the console on one replica is signed in on the other, and
/// signing out on either ends the session on both.
#[tokio::test]
async fn a_console_session_is_shared_by_the_replicas() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let scratch = Scratch::new();
    write_config(&scratch, url.as_str(), "");
    let (a, b) = (start(&scratch, "a"), start(&scratch, "b"));
    let http = no_redirects();
    let cookie = console_sign_in(&http, &a.url).await;
    let page = |replica: &str, path: &str| {
        http.get(format!("{replica}{path}"))
            .header("cookie", &cookie)
            .send()
    };
    let on_b = page(&b.url, "/audit").await.unwrap();
    assert_eq!(on_b.status(), 200, "signed in on the other replica");
    let text = on_b.text().await.unwrap();
    assert!(text.contains("console-sign-in"), "the audit page: {text}");
    let csrf = text
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's forms carry the session's CSRF token")
        .to_string();
    let signed_out = http
        .post(format!("{}/logout", b.url))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), 303);
    for replica in [&a.url, &b.url] {
        let after = page(replica, "/").await.unwrap();
        assert_eq!(after.status(), 303, "{replica}: signed out on both");
    }
    kill(a);
    kill(b);
}

/// Expiries arriving faster than deescalate hooks finish: each expiry sweep holds one of the
/// replica's 16 pooled connections until its hooks are done. At most a few run at once, so
/// the rest of the replica (here `/readyz` and a listing) keeps its connections; every
/// access still ends.
#[tokio::test(flavor = "multi_thread")]
async fn slow_deescalations_do_not_take_every_connection_from_the_replica() {
    let Some(url) = test_cluster::database().await else {
        return;
    };
    let scratch = Scratch::new();
    let slow = format!(
        r#"
# Approves at once; each deescalation takes 3 s (an integration that answers slowly).
[flows.slow]
environment = "main"
plugin = {}
vars = {{ action = "approve:fine", deescalate_action = "sleep:3000" }}
"#,
        toml_path(artifacts::WITNESS)
    );
    write_config(&scratch, url.as_str(), &slow);
    let a = start(&scratch, "a");
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..30 {
        let filed = post(
            &http,
            format!("{}/v1/flows/slow/requests", a.url),
            new_request(&format!("user{i}@example.com")),
            None,
        )
        .await
        .unwrap();
        assert_eq!(filed.status, 201, "{:?}", filed.body);
        let body = filed.body.unwrap();
        assert_eq!(body["state"], "escalated", "{body:#}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    // While the deescalations run: the replica answers at once (a pool taken by sweeps
    // answers only after its 5 s wait for a connection, with 503).
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        for path in ["/readyz", "/v1/requests?limit=1"] {
            let asked = Instant::now();
            let answer = http
                .get(format!("{}{path}", a.url))
                .bearer_auth(ADMIN_TOKEN)
                .timeout(Duration::from_secs(20))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "{path}");
            assert!(
                asked.elapsed() < Duration::from_secs(3),
                "{path} waited {:?} for a connection",
                asked.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let view = get(&http, &format!("{}/v1/requests/{id}", a.url)).await;
            if view["state"] == "deescalated" {
                break;
            }
            assert!(Instant::now() < deadline, "access not ended: {view:#}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    kill(a);
}

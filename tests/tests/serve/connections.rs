//! What a client that is slow on purpose, or opens many connections, gets from `warden serve`:
//! its connections closed once `client_timeout_ms` has passed, a body that trickles answered
//! `408`, a head over 64 KiB `431`, and past `max_connections` nothing more accepted until
//! one closes. Raw TCP, since
//! an HTTP client library would not misbehave this way.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use warden_tests::raw_client;

use crate::setup::*;

async fn connect(h: &Harness) -> TcpStream {
    TcpStream::connect(h.server.as_ref().unwrap().local_addr())
        .await
        .unwrap()
}

/// Everything the server sends until it closes the connection; panics if it is still open
/// after `within`.
async fn read_until_closed(conn: &mut TcpStream, within: Duration) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(within, conn.read_to_end(&mut got))
        .await
        .expect("the server kept the connection open")
        .unwrap_or_default();
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_that_send_nothing_or_trickle_a_head_are_closed_after_the_client_timeout() {
    let h = Harness::start("client_timeout_ms = 400", &standard_flows()).await;

    let started = Instant::now();
    let mut silent = connect(&h).await;
    assert_eq!(
        read_until_closed(&mut silent, Duration::from_secs(5)).await,
        ""
    );
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );

    // A byte every 100 ms keeps a socket busy but never finishes a head.
    let started = Instant::now();
    let mut trickle = connect(&h).await;
    let head = b"GET /healthz HTTP/1.1\r\nHost: warden\r\nX-Slow: ";
    let mut sent = 0;
    for byte in head.iter().cycle().take(200) {
        if trickle.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(10) {
            panic!("still open after {sent} bytes");
        }
    }
    let rest = read_until_closed(&mut trickle, Duration::from_secs(5)).await;
    assert!(
        sent < 20,
        "sent {sent} bytes before the server closed it; then {rest:?}"
    );

    // A kept-alive connection is served, then closed once idle as long.
    let mut kept = connect(&h).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: warden\r\n\r\n")
        .await
        .unwrap();
    let answered = read_until_closed(&mut kept, Duration::from_secs(5)).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(answered.ends_with("ok\n"), "{answered}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_over_64_kib_is_refused_431_and_one_under_it_is_served() {
    let h = Harness::start("max_body_bytes = 1048576", &standard_flows()).await;
    for (filler, status) in [(60 << 10, "200"), (70 << 10, "431")] {
        let mut conn = connect(&h).await;
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: warden\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
            "x".repeat(filler)
        );
        // The server may answer and close before the whole head is written.
        let _ = conn.write_all(head.as_bytes()).await;
        let answer = read_until_closed(&mut conn, Duration::from_secs(5)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{filler} bytes: {answer}"
        );
    }
    // The head's bound is not the body's: a body far over 64 KiB is read whole (and refused
    // by the API for what it says, a reason over its cap).
    let reason = "r".repeat(600 << 10);
    let reply = h
        .submit("human", ALICE, serde_json::json!({ "reason": reason }))
        .await;
    assert_eq!(reply.status, 422, "{}", reply.text);
    assert!(reply.text.contains("`reason`"), "{}", reply.text);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_on_their_way_hold_their_own_connections_not_the_in_flight_slots() {
    let h = Harness::start(
        "max_in_flight = 2\nclient_timeout_ms = 3000",
        &standard_flows(),
    )
    .await;
    // Heads that promise bodies never sent, as many as the slots and more: to the console's
    // sign-in (no token needed) and to the API.
    let mut waiting = Vec::new();
    for (path, token) in [
        ("/signin", None),
        ("/signin", None),
        ("/signin", None),
        ("/v1/flows/human/requests", Some(ALICE)),
        ("/v1/flows/human/requests", Some(ALICE)),
    ] {
        let mut conn = connect(&h).await;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: warden\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 30000\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        waiting.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Everyone else is served meanwhile.
    let filed = h
        .submit("human", ALICE, serde_json::json!({ "reason": "meanwhile" }))
        .await;
    assert_eq!(filed.status, 201, "{}", filed.text);
    let listed = h.send("GET", "/v1/requests", Some(ALICE), None).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let page = h.send("GET", "/signin", None, None).await;
    assert_eq!(page.status, 200, "{}", page.text);
    // And the bodies that never came are answered 408 in their time.
    for mut conn in waiting {
        let answer = read_until_closed(&mut conn, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    h.stop().await;
}

/// A connection whose request (with `auth`, a header line or nothing) promises a body of
/// 1000 bytes and sends 900 of them, the rest never.
async fn body_never_finished(h: &Harness, auth: &str) -> TcpStream {
    let mut conn = connect(h).await;
    let head = format!(
        "POST /v1/flows/human/requests HTTP/1.1\r\nHost: warden\r\n{auth}Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{}",
        " ".repeat(900)
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_on_their_way_hold_no_more_bytes_than_max_in_flight_bodies() {
    let h = Harness::start(
        "max_in_flight = 1\nmax_body_bytes = 1024\nclient_timeout_ms = 5000",
        &standard_flows(),
    )
    .await;
    // 900 of a promised 1000 bytes, the rest never sent: 900 of the 1024 held.
    let alice = format!("Authorization: Bearer {ALICE}\r\n");
    let mut holding = body_never_finished(&h, &alice).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A body of 200 more bytes does not fit; a request with none does.
    let reason = "r".repeat(150);
    let refused = h
        .submit("human", ALICE, serde_json::json!({ "reason": reason }))
        .await;
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(refused.text.contains("request bodies"), "{}", refused.text);
    assert_eq!(
        h.send("GET", "/v1/requests", Some(ALICE), None)
            .await
            .status,
        200
    );
    // Once the first is answered (408), its bytes are free again.
    let answer = read_until_closed(&mut holding, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let filed = h
        .submit("human", ALICE, serde_json::json!({ "reason": reason }))
        .await;
    assert_eq!(filed.status, 201, "{}", filed.text);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_caller_holding_bodies_it_never_finishes_leaves_room_for_the_others() {
    // 8 × 1024 shared; a caller may hold a quarter: 2048.
    let h = Harness::start(
        "max_in_flight = 8\nmax_body_bytes = 1024\nclient_timeout_ms = 5000",
        &standard_flows(),
    )
    .await;
    // Two bodies of 900 of a promised 1000 bytes, the rest never sent: 1800 of alice's 2048.
    let alice = format!("Authorization: Bearer {ALICE}\r\n");
    let holding = vec![
        body_never_finished(&h, &alice).await,
        body_never_finished(&h, &alice).await,
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Her next body does not fit her share; another caller's does.
    let reason = "r".repeat(300);
    let refused = h
        .submit("human", ALICE, serde_json::json!({ "reason": reason }))
        .await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert!(
        refused.text.contains("as one caller may"),
        "{}",
        refused.text
    );
    let filed = h
        .submit("human", BOB, serde_json::json!({ "reason": reason }))
        .await;
    assert_eq!(filed.status, 201, "{}", filed.text);
    // Once hers are answered (408), her share is free again.
    for mut conn in holding {
        let answer = read_until_closed(&mut conn, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    let filed = h
        .submit("human", ALICE, serde_json::json!({ "reason": reason }))
        .await;
    assert_eq!(filed.status, 201, "{}", filed.text);
    h.stop().await;
}

/// The budget of bodies being read is the API's callers': a client with no token, or an
/// unknown one, is answered before its body is read, so it cannot fill that budget and turn
/// everyone else's requests away; and a body announced over `max_body_bytes` is refused
/// before any of it is read, with no `100 Continue` inviting it.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_without_a_known_token_take_nothing_from_the_budget_callers_share() {
    let h = Harness::start(
        "max_in_flight = 1\nmax_body_bytes = 1024\nclient_timeout_ms = 5000",
        &standard_flows(),
    )
    .await;
    // 900 of a promised 1000 bytes each, the rest never sent, without a known token.
    let mut strangers = Vec::new();
    for auth in ["", "Authorization: Bearer a-guess\r\n"] {
        strangers.push(body_never_finished(&h, auth).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A caller's body still fits the whole budget.
    let reason = "r".repeat(150);
    let filed = h
        .submit("human", ALICE, serde_json::json!({ "reason": reason }))
        .await;
    assert_eq!(filed.status, 201, "{}", filed.text);
    // The strangers were answered at once, not after the client timeout.
    let started = Instant::now();
    for mut conn in strangers {
        let answer = read_until_closed(&mut conn, Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Announced too long: 413 before a byte of it is asked for.
    let mut conn = connect(&h).await;
    let head = format!(
        "POST /v1/flows/human/requests HTTP/1.1\r\nHost: warden\r\nAuthorization: Bearer {ALICE}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 100000000\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut conn, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(
        answer.contains("larger than serve.max_body_bytes"),
        "{answer}"
    );
    // A method a route does not take is that, token or not (and no guess is counted).
    let wrong = h.send("GET", "/v1/admin/reload", None, None).await;
    assert_eq!(wrong.status, 405, "{}", wrong.text);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_does_not_arrive_in_time_is_answered_408_and_nothing_is_filed() {
    let h = Harness::start("client_timeout_ms = 500", &standard_flows()).await;
    let mut conn = connect(&h).await;
    let body = br#"{"fields":{"reason":"slow"}}"#;
    let head = format!(
        "POST /v1/flows/human/requests HTTP/1.1\r\nHost: warden\r\nAuthorization: Bearer {ALICE}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..5]).await.unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let json: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        json["error"],
        "the request's body did not arrive within 500 ms (serve.client_timeout_ms)"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    let counted = metric(
        &h.metrics().await,
        r#"warden_api_responses_total{status="408"}"#,
    );
    assert_eq!(counted, 1.0, "the 408 is counted as what the client got");

    let listed = h.send("GET", "/v1/requests", Some(CAROL), None).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(
        listed.body["requests"].as_array().unwrap().len(),
        0,
        "{}",
        listed.text
    );
    // A body sent in time is served as ever.
    let reply = h.submit("human", ALICE, serde_json::json!({})).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn past_max_connections_a_new_one_waits_until_another_closes() {
    let h = Harness::start(
        "max_connections = 2\nmax_connections_per_address = 2\nclient_timeout_ms = 60000",
        &standard_flows(),
    )
    .await;
    let held = [connect(&h).await, connect(&h).await];
    let url = h.url("/healthz");
    let third = tokio::spawn(async move {
        let started = Instant::now();
        let answer = reqwest::get(url).await.unwrap().text().await.unwrap();
        (answer, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served beside two held ones"
    );
    drop(held);
    let (answer, waited) = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a held connection closed")
        .unwrap();
    assert_eq!(answer, "ok\n");
    assert!(waited >= Duration::from_millis(650), "{waited:?}");
    h.stop().await;
}

/// `warden_api_connections` as a fresh connection of its own finds it (itself included).
async fn open_connections(h: &Harness) -> f64 {
    let text = reqwest::get(h.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric(&text, "warden_api_connections")
}

#[tokio::test(flavor = "multi_thread")]
async fn open_connections_are_counted_until_they_close() {
    let h = Harness::start("client_timeout_ms = 60000", &standard_flows()).await;
    let held = [connect(&h).await, connect(&h).await];
    // The two are accepted by the time a third is answered: connections are taken in order.
    assert_eq!(open_connections(&h).await, 3.0);
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_connections(&h).await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "closed connections still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_changing_the_listeners_limits_says_they_need_a_restart() {
    let h = Harness::start("max_connections = 100", &standard_flows()).await;
    // `[http] spin_wait_us` is not among them: plugins' requests take it from the reload on.
    let changed = "max_connections = 200\nmax_connections_per_address = 7\ntrusted_proxies = [\"10.0.0.5\"]\nclient_timeout_ms = 3000\nmax_in_flight = 7\nnew_requests_per_minute = 2\nunknown_tokens_per_minute = 3\n\n[http]\nspin_wait_us = 0";
    h.scratch
        .config(&config_text(&h.scratch, changed, &standard_flows()));
    let reply = h.send("POST", "/v1/admin/reload", Some(CAROL), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.body["restart_needed_for"],
        serde_json::json!([
            "serve.max_in_flight",
            "serve.max_connections",
            "serve.max_connections_per_address",
            "serve.trusted_proxies (for max_connections_per_address)",
            "serve.client_timeout_ms",
            "serve.new_requests_per_minute",
            "serve.unknown_tokens_per_minute"
        ])
    );
    h.stop().await;
}

async fn connect_reading_little(h: &Harness) -> TcpStream {
    raw_client::connect_reading_little(h.server.as_ref().unwrap().local_addr()).await
}

/// Asks for a listing on `conn` and reads only the status line of its answer.
async fn ask_and_read_the_status(conn: &mut TcpStream, token: &str) -> String {
    let head = format!(
        "GET /v1/requests?limit=100 HTTP/1.1\r\nHost: warden\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut status = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut status))
        .await
        .expect("an answer began")
        .unwrap();
    String::from_utf8_lossy(&status).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_not_reading_its_large_answers_is_refused_more_until_it_reads_them() {
    let h = Harness::start("client_timeout_ms = 20000", &standard_flows()).await;
    let reason = "r".repeat(60_000);
    for _ in 0..20 {
        let filed = h
            .submit("human", ALICE, serde_json::json!({ "reason": reason }))
            .await;
        assert_eq!(filed.status, 201, "{}", filed.text);
    }
    let page = h
        .send("GET", "/v1/requests?limit=100", Some(ALICE), None)
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    let listed = page.body["requests"].as_array().unwrap().len();
    assert!(page.text.len() > 1_000_000, "{}", page.text.len());

    // Alice asks for the page again and again, reading only the first bytes of each answer:
    // warden holds four pages' worth of her unsent answers (4 MiB), then refuses the next.
    let mut unread = Vec::new();
    let refusal = loop {
        assert!(
            unread.len() < 6,
            "{} unread pages and no refusal",
            unread.len()
        );
        let mut conn = connect_reading_little(&h).await;
        let status = ask_and_read_the_status(&mut conn, ALICE).await;
        if status == "HTTP/1.1 200" {
            unread.push(conn);
            continue;
        }
        assert_eq!(status, "HTTP/1.1 429");
        break raw_client::read_until_idle(&mut conn, Duration::from_millis(500)).await;
    };
    assert!(unread.len() >= 3, "refused after {} pages", unread.len());
    assert!(
        refusal.to_ascii_lowercase().contains("retry-after: 1"),
        "{refusal}"
    );
    assert!(
        refusal.contains("your earlier answers are still being sent"),
        "{refusal}"
    );
    // A change she makes meanwhile is answered, not refused: it is made by then, and a
    // client told to retry it would make it twice (the answer echoes 60 KB of fields).
    let filed = h
        .submit("human", ALICE, serde_json::json!({ "reason": reason }))
        .await;
    assert_eq!(filed.status, 201, "{}", filed.text);
    assert!(filed.text.len() > 60_000);
    // Another caller's large answer is sent meanwhile.
    let carols = h
        .send("GET", "/v1/requests?limit=100", Some(CAROL), None)
        .await;
    assert_eq!(carols.status, 200, "{}", carols.text);
    assert!(carols.text.len() > 1_000_000);

    // An answer read at last arrives whole.
    let mut first = unread.remove(0);
    let rest = raw_client::read_until_idle(&mut first, Duration::from_millis(500)).await;
    let body = rest.split("\r\n\r\n").nth(1).unwrap();
    let json: Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["requests"].as_array().unwrap().len(), listed);

    // Once her connections close, what they held is let go.
    drop(unread);
    let started = Instant::now();
    loop {
        let again = h
            .send("GET", "/v1/requests?limit=100", Some(ALICE), None)
            .await;
        if again.status == 200 {
            break;
        }
        assert_eq!(again.status, 429, "{}", again.text);
        assert!(started.elapsed() < Duration::from_secs(5), "still refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_a_reload_removes_while_its_body_arrives_acts_no_more() {
    // The token is looked up when the head arrives, before the body is read; a reload may
    // remove it while the body trickles in.
    let h = Harness::standard().await;
    let mut conn = connect(&h).await;
    let head = format!(
        "POST /v1/flows/human/requests HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.scratch.write("tokens/alice", "alice-token-rotated\n");
    h.server.as_ref().unwrap().reload("test").await.unwrap();
    conn.write_all(b"}").await.unwrap();
    let answer = read_until_closed(&mut conn, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let all = h.send("GET", "/v1/requests", Some(CAROL), None).await;
    assert_eq!(
        all.body["requests"],
        serde_json::json!([]),
        "nothing was filed"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_waits_for_a_slow_reader_no_longer_than_the_client_timeout() {
    // A reader taking 4 KiB every 25 ms keeps each write making progress, so the stall
    // limit never ends it, and takes about seven seconds over a megabyte's answer (at a
    // few KiB a second, minutes), all of which the drain waited.
    let mut h = Harness::start("client_timeout_ms = 1000", &standard_flows()).await;
    let reason = "r".repeat(60_000);
    for _ in 0..20 {
        let filed = h
            .submit("human", ALICE, serde_json::json!({ "reason": reason }))
            .await;
        assert_eq!(filed.status, 201, "{}", filed.text);
    }
    let mut conn = connect_reading_little(&h).await;
    assert_eq!(
        ask_and_read_the_status(&mut conn, ALICE).await,
        "HTTP/1.1 200"
    );
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading_slowly = stopped.clone();
    let reader = tokio::spawn(async move {
        let mut read = 0;
        let mut buf = [0u8; 4096];
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 {
                break;
            }
            read += n;
            // Once warden has stopped, what its kernel still holds is read at once.
            if !reading_slowly.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        read
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    h.server.take().unwrap().shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the stop waited {:?} for a slow reader",
        started.elapsed()
    );
    stopped.store(true, std::sync::atomic::Ordering::Relaxed);
    // Cut short, not finished: the answer is over a megabyte.
    let read = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the connection was closed")
        .unwrap();
    assert!(read < 1_000_000, "{read}");
}

/// What `/healthz` answers on `conn`, which it then closes.
async fn healthz_on(conn: &mut TcpStream) -> String {
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: warden\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    read_until_closed(conn, Duration::from_secs(5)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_holds_no_more_than_its_share_of_the_connections() {
    // Each connection sending a request now and then is never idle: one address could hold
    // them all, and everyone else (a load balancer's `/healthz` among them) would wait.
    let h = Harness::start(
        "max_connections = 4\nmax_connections_per_address = 2\nclient_timeout_ms = 60000",
        &standard_flows(),
    )
    .await;
    let held = [connect(&h).await, connect(&h).await];
    // A third from the same address is closed as it arrives.
    let mut third = connect(&h).await;
    assert_eq!(
        read_until_closed(&mut third, Duration::from_secs(5)).await,
        ""
    );
    // Another address is served meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket
        .connect(h.server.as_ref().unwrap().local_addr())
        .await
        .unwrap();
    let answered = healthz_on(&mut other).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    // A trusted proxy's connections are many clients': not held to the share, however it
    // is named.
    drop(other);
    let proxied = Harness::start(
        "max_connections = 4\nmax_connections_per_address = 1\nclient_timeout_ms = 60000\ntrusted_proxies = [\"::ffff:127.0.0.1\"]",
        &standard_flows(),
    )
    .await;
    let through_proxy = [connect(&proxied).await, connect(&proxied).await];
    let answered = healthz_on(&mut connect(&proxied).await).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    drop(through_proxy);
    proxied.stop().await;
    // Once one closes, the first address may open another.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if healthz_on(&mut connect(&h).await)
            .await
            .starts_with("HTTP/1.1 200")
        {
            break;
        }
        assert!(Instant::now() < deadline, "still refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.stop().await;
}

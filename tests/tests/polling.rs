//! `warden serve` and `[http] spin_wait_us`: a plugin's request polls for a fast server's
//! answer only while the server answers no other request (`host/src/capabilities/http/spin.rs`).
//!
//! A test binary of its own: what stands polling down is counted for the whole process, and
//! the polls are too, so another test's requests in flight would make this one's outcome.

#[allow(dead_code)]
#[path = "serve/setup.rs"]
mod setup;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use setup::*;

/// An HTTP/1.1 server on threads of its own that answers every request at once, so that its
/// answers are fast whatever the test's runtime is doing. Returns its origin.
fn fast_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0];
                loop {
                    match socket.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                    if head.ends_with(b"\r\n\r\n") {
                        head.clear();
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if socket.write_all(answer).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    origin
}

/// Answers polled for so far in this process, caught or missed.
async fn answer_polls(h: &Harness) -> f64 {
    let text = h.metrics().await;
    metric(&text, r#"warden_http_answer_polls_total{result="caught"}"#)
        + metric(&text, r#"warden_http_answer_polls_total{result="missed"}"#)
}

/// Submits to `flow` until the process has polled for more answers than `before`; panics
/// after 300 requests.
async fn submit_until_polled(h: &Harness, flow: &str, before: f64) {
    for _ in 0..300 {
        let reply = h.submit(flow, ALICE, serde_json::json!({})).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        if answer_polls(h).await > before {
            return;
        }
    }
    panic!("300 requests to a server on loopback, one at a time, and no answer polled for");
}

/// Waits (10 s at most) until `warden_api_in_flight` is `count`.
async fn wait_for_api_in_flight(h: &Harness, count: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&h.metrics().await, "warden_api_in_flight") != count {
        assert!(
            Instant::now() < deadline,
            "warden_api_in_flight never became {count}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_poll_for_fast_answers_only_while_one_api_request_is_being_answered() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        // On one CPU no request ever polls (`http/spin.rs`): nothing to stand down.
        return;
    }
    let origin = fast_server();
    let flows = probe_flow(
        "fast",
        &format!("http:GET {origin}/oncall"),
        &format!("allowed_hosts = [{origin:?}]"),
    ) + &probe_flow("spinning", "loop", "limits = { timeout_ms = 8000 }");
    // The longest limit, so an answer in a debug build still counts as fast.
    let serve = "client_timeout_ms = 60000\n\n[http]\nspin_wait_us = 1000";
    let h = Harness::start(serve, &flows).await;
    submit_until_polled(&h, "fast", answer_polls(&h).await).await;

    // A second API request being answered: one whose hook spins until its deadline (no
    // plugin HTTP request of its own, which would stand polling down by itself).
    let spinning = {
        let (http, url) = (h.http.clone(), h.url("/v1/flows/spinning/requests"));
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(ALICE)
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    wait_for_api_in_flight(&h, 1.0).await;
    let before = answer_polls(&h).await;
    for _ in 0..30 {
        let reply = h.submit("fast", ALICE, serde_json::json!({})).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        assert_eq!(reply.body["decision"], "approve", "{}", reply.text);
    }
    assert_eq!(
        answer_polls(&h).await,
        before,
        "a plugin's request polled while two API requests were being answered"
    );

    // Once it is answered, the next fast answers are polled for again.
    assert_eq!(spinning.await.unwrap(), 201);
    wait_for_api_in_flight(&h, 0.0).await;
    submit_until_polled(&h, "fast", before).await;
    h.stop().await;
}

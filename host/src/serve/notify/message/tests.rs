use serde_json::json;

use super::*;
use crate::config::NotifyEvent;
use crate::secrets::SecretValue;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn hmac_matches_rfc_4231() {
    // Test cases 1, 2 and 6 (a key longer than the block) of RFC 4231.
    assert_eq!(
        hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    );
    assert_eq!(
        hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        hex(&hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
    assert_eq!(
        signature(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

fn notification(event: NotifyEvent, body: serde_json::Value) -> Notification {
    Notification {
        seq: 1,
        delivery_id: "dlv-1".into(),
        request_id: "req-1".into(),
        channel: "ops".into(),
        event,
        body,
        attempts: 0,
        created_at: 0,
        held_until: 0,
    }
}

#[test]
fn a_webhook_body_has_every_field_and_secrets_taken_out() {
    let n = notification(
        NotifyEvent::HookFailed,
        json!({
            "request_id": "req-1", "flow": "f", "event": "hook_failed", "requester": "a@x.com",
            "state": "pending", "decision": "continue", "reason": null, "hook": "on_request",
            "error": "trap: token hunter2-secret leaked", "at": 1_700_000_000_000i64,
        }),
    );
    let redactor = Redactor::new(vec![SecretValue::new("hunter2-secret")]);
    let body = webhook_body(&n, Some("https://w.example"), &redactor);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["delivery_id"], "dlv-1");
    assert_eq!(doc["event"], "hook_failed");
    assert_eq!(doc["request_id"], "req-1");
    assert_eq!(doc["flow"], "f");
    assert_eq!(doc["requester"], "a@x.com");
    assert_eq!(doc["hook"], "on_request");
    assert_eq!(doc["link"], "https://w.example/requests/req-1");
    assert_eq!(doc["time"], "2023-11-14T22:13:20.000Z");
    let error = doc["error"].as_str().unwrap();
    assert!(!error.contains("hunter2"), "{error}");
    assert!(error.contains("REDACTED"), "{error}");
    // Without a public_url there is no link.
    let doc: serde_json::Value =
        serde_json::from_slice(&webhook_body(&n, None, &redactor)).unwrap();
    assert!(doc["link"].is_null());
}

#[test]
fn a_reason_a_person_wrote_is_sent_as_written_so_it_tests_no_guess_of_a_secret() {
    let n = notification(
        NotifyEvent::Decided,
        json!({
            "flow": "f", "requester": "a@x.com", "state": "denied", "decision": "deny",
            "reason": "is it hunter2-secret?", "actor": "b@x.com", "at": 0,
        }),
    );
    let knows = Redactor::new(vec![SecretValue::new("hunter2-secret")]);
    let doc: serde_json::Value = serde_json::from_slice(&webhook_body(&n, None, &knows)).unwrap();
    assert_eq!(doc["reason"], "is it hunter2-secret?");
    let slack = slack_body(&n, None, &knows);
    assert_eq!(slack, slack_body(&n, None, &Redactor::default()));
}

#[test]
fn a_slack_message_escapes_what_a_requester_wrote() {
    let n = notification(
        NotifyEvent::Waiting,
        json!({
            "flow": "f", "requester": "<!here>a@x.com", "state": "pending", "decision": "continue",
            "reason": "<https://evil.example|click> & <!channel>", "at": 0,
        }),
    );
    let body = slack_body(&n, Some("https://w.example"), &Redactor::default());
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let text = doc.to_string();
    // Every `mrkdwn` text: what Slack parses for links, mentions and formatting.
    let mut parsed = vec![doc["text"].as_str().unwrap().to_string()];
    for block in doc["blocks"].as_array().unwrap() {
        let texts = block["fields"]
            .as_array()
            .into_iter()
            .chain(block["elements"].as_array())
            .flatten()
            .chain(Some(&block["text"]));
        for t in texts {
            if t["type"] == "mrkdwn" {
                parsed.push(t["text"].as_str().unwrap().to_string());
            }
        }
    }
    for t in &parsed {
        assert!(!t.contains("evil") && !t.contains("<!"), "{t}");
    }
    // The reason, as plain text: shown as written, nothing in it parsed.
    let reason = doc["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| {
            b["text"]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("Reason: "))
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(reason["text"]["type"], "plain_text");
    assert_eq!(
        reason["text"]["text"],
        "Reason: <https://evil.example|click> & <!channel>"
    );
    assert_eq!(
        doc["blocks"][0]["text"]["text"],
        "Access request waiting for a decision"
    );
    assert!(text.contains("<https://w.example/requests/req-1|Open request req-1>"));
    // The notification's own text too (an admin may file for any email).
    assert!(!text.contains("<!here>"), "{text}");
    assert!(
        doc["text"]
            .as_str()
            .unwrap()
            .contains("&lt;!here&gt;a@x.com (f)")
    );
}

#[test]
fn long_text_is_cut() {
    let long = "x".repeat(5000);
    let n = notification(
        NotifyEvent::Decided,
        json!({ "reason": long, "state": "denied" }),
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&slack_body(&n, None, &Redactor::default())).unwrap();
    assert_eq!(doc["blocks"][0]["text"]["text"], "Access request denied");
    assert!(doc.to_string().len() < 2500);
}

#[test]
fn a_decision_is_titled_by_what_was_decided() {
    for (state, title) in [
        ("approved", "Access request approved"),
        ("denied", "Access request denied"),
        // Ignored by the flow's plugin: nothing granted, no one asked.
        ("ignored", "Access request ignored"),
    ] {
        let n = notification(
            NotifyEvent::Decided,
            json!({ "state": state, "requester": "a@x.com", "flow": "f" }),
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&slack_body(&n, None, &Redactor::default())).unwrap();
        assert_eq!(doc["blocks"][0]["text"]["text"], title);
        assert!(doc["text"].as_str().unwrap().starts_with(title), "{doc}");
    }
}

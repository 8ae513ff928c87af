//! What a notification says, per channel type: a Slack Block Kit message, or the signed
//! JSON document of a webhook (its fields and signature are documented in
//! docs/operators.md, "Notifications", for receivers to verify).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::secrets::redact::Redactor;
use crate::store::outbox::Notification;
use crate::store::requests::rfc3339;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body under the channel's secret>`.
pub const SIGNATURE_HEADER: &str = "X-Warden-Signature";
/// The header carrying the notification's delivery id, the same on every attempt.
pub const DELIVERY_HEADER: &str = "X-Warden-Delivery";
/// The header carrying the event kind (`waiting`, `decided`, `removed`, `hook_failed`).
pub const EVENT_HEADER: &str = "X-Warden-Event";

/// The longest text of one field a message carries; Slack refuses a section field over
/// 2000 characters, and a reason or error longer than this is no use in a chat message.
const MAX_FIELD_CHARS: usize = 1000;

/// HMAC-SHA256 (RFC 2104) of `body` under `key`.
pub fn hmac_sha256(key: &[u8], body: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The `X-Warden-Signature` value of `body` under `key`: `sha256=` and 64 hex digits.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mac = hmac_sha256(key, body);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The console page of the request, when `public_url` is set.
pub fn link(public_url: Option<&str>, request_id: &str) -> Option<String> {
    public_url.map(|base| format!("{base}/requests/{request_id}"))
}

fn text(body: &Value, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(str::to_string)
}

/// `n`'s body with the secret values `redactor` knows taken out of a hook's error, and the
/// free text (the error, a reason) cut to a bounded length.
///
/// A reason is sent as written. A plugin's was redacted when its hook's report was made; a
/// person's (an approver denying, a requester revoking) is theirs, and the API and history
/// show it as written: redacted here against every configured secret, it would tell them,
/// in the channel, whether a guess they typed is one.
fn cleaned(n: &Notification, redactor: &Redactor) -> Value {
    let mut body = n.body.clone();
    if let Some(Value::String(s)) = body.get_mut("error") {
        *s = cut(&redactor.redact(s), MAX_FIELD_CHARS);
    }
    if let Some(Value::String(s)) = body.get_mut("reason") {
        *s = cut(s, MAX_FIELD_CHARS);
    }
    body
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The webhook's JSON document for `n`.
pub fn webhook_body(n: &Notification, public_url: Option<&str>, redactor: &Redactor) -> Vec<u8> {
    let body = cleaned(n, redactor);
    let at = body
        .get("at")
        .and_then(Value::as_i64)
        .unwrap_or(n.created_at);
    let doc = json!({
        "delivery_id": n.delivery_id,
        "event": n.event.as_str(),
        "request_id": n.request_id,
        "flow": body.get("flow"),
        "state": body.get("state"),
        "requester": body.get("requester"),
        "decision": body.get("decision"),
        "reason": body.get("reason"),
        "actor": body.get("actor"),
        "hook": body.get("hook"),
        "error": body.get("error"),
        "link": link(public_url, &n.request_id),
        "time": rfc3339(at),
    });
    doc.to_string().into_bytes()
}

/// Text for a Slack `mrkdwn` field: `&`, `<` and `>` escaped, as Slack asks, so a name
/// cannot make a link, a mention or a formatting control of its own. (Free text, a reason or
/// an error, goes as `plain_text` instead.)
pub fn mrkdwn_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The Slack Block Kit message for `n`.
pub fn slack_body(n: &Notification, public_url: Option<&str>, redactor: &Redactor) -> Vec<u8> {
    use crate::config::NotifyEvent;
    let body = cleaned(n, redactor);
    let get = |key| text(&body, key).unwrap_or_default();
    let flow = get("flow");
    let state = get("state");
    let title = match n.event {
        NotifyEvent::Waiting => "Access request waiting for a decision".to_string(),
        NotifyEvent::Decided if state == "denied" => "Access request denied".to_string(),
        // The flow's plugin ignored it: nothing was granted, and no one is asked.
        NotifyEvent::Decided if state == "ignored" => "Access request ignored".to_string(),
        NotifyEvent::Decided => "Access request approved".to_string(),
        NotifyEvent::Removed => "Access removed".to_string(),
        NotifyEvent::HookFailed => format!("A hook failed in flow {flow}"),
    };
    let field = |label: &str, value: &str| json!({ "type": "mrkdwn", "text": format!("*{label}*\n{}", mrkdwn_escape(value)) });
    let mut fields = vec![
        field("Requester", &get("requester")),
        field("Flow", &flow),
        field("State", &state),
    ];
    if n.event == NotifyEvent::Decided
        && let Some(actor) = text(&body, "actor")
    {
        fields.push(field("Decided by", &actor));
    }
    if let Some(hook) = text(&body, "hook") {
        fields.push(field("Hook", &hook));
    }
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": cut(&title, 140) } }),
        json!({ "type": "section", "fields": fields }),
    ];
    // What a requester, an approver or a plugin wrote, as plain text: `mrkdwn` would make
    // its `*`, `_`, `~` and backticks formatting and its bare URLs links, and has no escape
    // for them.
    for (label, key) in [("Reason", "reason"), ("Error", "error")] {
        if let Some(said) = text(&body, key) {
            blocks.push(json!({
                "type": "section",
                "text": { "type": "plain_text", "text": format!("{label}: {said}"), "emoji": false },
            }));
        }
    }
    if let Some(url) = link(public_url, &n.request_id) {
        blocks.push(json!({
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": format!("<{}|Open request {}>", mrkdwn_escape(&url), mrkdwn_escape(&n.request_id)),
            },
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": format!("request {} · delivery {}", mrkdwn_escape(&n.request_id), n.delivery_id) }],
    }));
    json!({
        // The notification's own text, which Slack reads as `mrkdwn` too.
        "text": mrkdwn_escape(&format!("{title}: {} ({flow}), request {}", get("requester"), n.request_id)),
        "blocks": blocks,
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests;

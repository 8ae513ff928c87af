//! The notification outbox: one row per notification and channel, written by a request's
//! claim in the same commit as the state change (or failed hook) it tells of, so a change
//! is never stored without its notification nor a notification sent for a change that did
//! not commit. `serve::notify` delivers rows and deletes them once a channel took them;
//! a row kept past its channel's `retry_for_seconds` is given up: deleted, with an entry in
//! its request's history and a line in the audit log. A row delivered just before a crash
//! is delivered again after it (at least once); its `delivery_id` lets receivers see that.

use rusqlite::{Connection, params};
use serde_json::{Value, json};

use crate::config::NotifyEvent;
use crate::store::requests::{
    self, HistoryEntry, HistoryEvent, RequestRecord, RequestWrite, State, Transition, now_ms,
};

pub(super) const MIGRATION: &str = "CREATE TABLE outbox (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id TEXT NOT NULL UNIQUE,
        request_id  TEXT NOT NULL,
        channel     TEXT NOT NULL,
        event       TEXT NOT NULL,
        body        TEXT NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at     INTEGER NOT NULL,
        last_error  TEXT,
        created_at  INTEGER NOT NULL
    );
    CREATE INDEX outbox_due ON outbox (channel, next_at);";

/// One notification waiting for its channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub seq: i64,
    /// Sent with every attempt, the same each time: receivers drop duplicates by it.
    pub delivery_id: String,
    pub request_id: String,
    pub channel: String,
    pub event: NotifyEvent,
    /// What happened, as [`enqueue`] recorded it (see `serve::notify` for the fields).
    pub body: Value,
    pub attempts: u32,
    pub created_at: i64,
    /// The hold it was taken under: what the take set its `next_at` to. What a replica then
    /// writes of it (delivered, retried, handed back, given up) matches it, so a replica
    /// that outlived its hold (frozen, paused) moves nothing another replica took since.
    /// SQLite's one process holds nothing: there it is the row's `next_at` as read.
    pub held_until: i64,
}

/// Which channels a flow's event goes to (read from the config current at the commit).
pub type Route<'a> = &'a dyn Fn(&str, NotifyEvent) -> Vec<String>;

/// The event a state change tells of, if any.
fn event_of(t: &Transition) -> Option<NotifyEvent> {
    match t.to {
        State::Pending => Some(NotifyEvent::Waiting),
        // An ignored request is closed by the plugin without a human: its requester learns
        // of it as of any other decision.
        State::Approved | State::Denied | State::Ignored => Some(NotifyEvent::Decided),
        State::Deescalated => Some(NotifyEvent::Removed),
        State::Requested | State::Escalated => None,
    }
}

fn failed_hook(w: &RequestWrite) -> Option<(&str, Option<&str>)> {
    match w {
        RequestWrite::Entry(HistoryEntry {
            event:
                HistoryEvent::Hook {
                    hook,
                    outcome,
                    error,
                    ..
                },
            ..
        }) if outcome == "failed" => Some((hook, error.as_deref())),
        _ => None,
    }
}

/// The events `writes` (then `then`) tell of, each with what a notification says of it.
fn events(writes: &[RequestWrite], then: Option<&Transition>) -> Vec<(NotifyEvent, Value)> {
    let transition = |t: &Transition| {
        Some((
            event_of(t)?,
            json!({
                "state": t.to.as_str(),
                "decision": t.decision,
                "reason": t.shown_reason(),
                "actor": t.actor,
            }),
        ))
    };
    writes
        .iter()
        .filter_map(|w| match w {
            RequestWrite::Transition(t) => transition(t),
            RequestWrite::Entry(_) => failed_hook(w).map(|(hook, error)| {
                (
                    NotifyEvent::HookFailed,
                    json!({ "hook": hook, "error": error }),
                )
            }),
        })
        .chain(then.and_then(transition))
        .collect()
}

/// Whether `writes` (then `then`) tell of anything a flow could notify about: when not,
/// the claim's commit need not look the request up. Allocates nothing.
pub fn notable(writes: &[RequestWrite], then: Option<&Transition>) -> bool {
    writes.iter().any(|w| match w {
        RequestWrite::Transition(t) => event_of(t).is_some(),
        RequestWrite::Entry(_) => failed_hook(w).is_some(),
    }) || then.is_some_and(|t| event_of(t).is_some())
}

/// Which channels a flow's event goes to, for a commit that may outlive the caller's
/// borrow (SQLite's commit thread, an await on PostgreSQL): `serve::notify::Outbox`.
pub trait Router: Send + Sync {
    fn route(&self, flow: &str, event: NotifyEvent) -> Vec<String>;
}

/// One row [`enqueue`] writes (and PostgreSQL's store alike).
pub struct NewRow {
    pub delivery_id: String,
    pub channel: String,
    pub event: NotifyEvent,
    pub body: String,
    pub at: i64,
}

/// The rows the events in `writes` (then `then`) of `rec`, as just written, call for: one
/// per channel `route` names for each.
pub fn rows(
    rec: &RequestRecord,
    writes: &[RequestWrite],
    then: Option<&Transition>,
    route: Route<'_>,
) -> Vec<NewRow> {
    let now = now_ms();
    let mut rows = Vec::new();
    for (event, detail) in events(writes, then) {
        let channels = route(&rec.flow, event);
        if channels.is_empty() {
            continue;
        }
        let mut body = json!({
            "request_id": rec.id,
            "flow": rec.flow,
            "event": event.as_str(),
            "requester": rec.requester,
            "state": rec.state.as_str(),
            "decision": rec.decision,
            // A human's decision without a reason stores an empty one: none.
            "reason": rec.reason.as_deref().filter(|r| !r.is_empty()),
            "at": now,
        });
        // The event's own state and decision, not the request's after the whole commit.
        if let (Value::Object(body), Value::Object(detail)) = (&mut body, detail) {
            body.extend(detail);
        }
        let text = body.to_string();
        for channel in channels {
            rows.push(NewRow {
                delivery_id: new_delivery_id(),
                channel,
                event,
                body: text.clone(),
                at: now,
            });
        }
    }
    rows
}

/// Writes a row per channel `route` names for each event in `writes` (then `then`) of
/// request `id`, on `conn`, which holds the transaction writing them. Returns how many.
pub fn enqueue(
    conn: &Connection,
    id: &str,
    writes: &[RequestWrite],
    then: Option<&Transition>,
    route: Route<'_>,
) -> rusqlite::Result<usize> {
    if !notable(writes, then) {
        return Ok(0);
    }
    let Some(rec) = requests::get(conn, id)? else {
        return Ok(0);
    };
    let rows = rows(&rec, writes, then, route);
    for row in &rows {
        conn.prepare_cached(
            "INSERT INTO outbox (delivery_id, request_id, channel, event, body, next_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        )?
        .execute(params![
            row.delivery_id,
            rec.id,
            row.channel,
            row.event.as_str(),
            row.body,
            row.at
        ])?;
    }
    Ok(rows.len())
}

pub(crate) fn new_delivery_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random numbers");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("dlv-{hex}")
}

fn row_to_notification(row: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    let event: String = row.get(4)?;
    let body: String = row.get(5)?;
    let bad = |i, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    Ok(Notification {
        seq: row.get(0)?,
        delivery_id: row.get(1)?,
        request_id: row.get(2)?,
        channel: row.get(3)?,
        event: NotifyEvent::parse(&event)
            .ok_or_else(|| bad(4, format!("unknown event `{event}`")))?,
        body: serde_json::from_str(&body).map_err(|e| bad(5, e.to_string()))?,
        attempts: row.get(6)?,
        created_at: row.get(7)?,
        held_until: row.get(8)?,
    })
}

/// An outbox row that does not read as a notification (an event this warden does not know,
/// a body that is not JSON: written by another version, or by hand). Given up on its own,
/// so it neither stops its channel nor sinks the rows taken with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub seq: i64,
    pub delivery_id: String,
    pub request_id: String,
    pub channel: String,
    pub error: String,
}

impl Unreadable {
    /// What giving it up writes to the audit log.
    pub fn detail(&self) -> Value {
        serde_json::json!({
            "channel": self.channel,
            "seq": self.seq,
            "delivery": self.delivery_id,
            "error": format!("the outbox row cannot be read: {}", self.error),
        })
    }
}

/// Up to `limit` of `channel`'s notifications due by `now`, oldest first, and the rows among
/// them that do not read as notifications.
pub fn due(
    conn: &Connection,
    channel: &str,
    now: i64,
    limit: usize,
) -> rusqlite::Result<(Vec<Notification>, Vec<Unreadable>)> {
    let rows = conn
        .prepare_cached(
            "SELECT seq, delivery_id, request_id, channel, event, body, attempts, created_at, next_at
             FROM outbox WHERE channel = ?1 AND next_at <= ?2 ORDER BY next_at, seq LIMIT ?3",
        )?
        .query_map(params![channel, now, limit as i64], |row| {
            Ok(row_to_notification(row).map_err(|e| Unreadable {
                seq: row.get(0).unwrap_or_default(),
                delivery_id: row.get(1).unwrap_or_default(),
                request_id: row.get(2).unwrap_or_default(),
                channel: row.get(3).unwrap_or_default(),
                error: e.to_string(),
            }))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (mut due, mut unreadable) = (Vec::new(), Vec::new());
    for row in rows {
        match row {
            Ok(n) => due.push(n),
            Err(u) => unreadable.push(u),
        }
    }
    Ok((due, unreadable))
}

/// Gives up `u`: deleted, and recorded in the audit log. Run it in a transaction or
/// savepoint.
pub fn give_up_unreadable(conn: &Connection, u: &Unreadable) -> rusqlite::Result<()> {
    delivered(conn, u.seq)?;
    requests::audit(
        conn,
        "warden",
        "notify-failed",
        Some(&u.request_id),
        &u.detail(),
    )
}

/// When `channel`'s next notification is due, if it has any.
pub fn next_due(conn: &Connection, channel: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT MIN(next_at) FROM outbox WHERE channel = ?1")?
        .query_row(params![channel], |r| r.get(0))
}

/// The channel took it.
pub fn delivered(conn: &Connection, seq: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?
        .execute(params![seq])?;
    Ok(())
}

/// The attempt failed; the next is due at `next_at`.
pub fn retry_at(conn: &Connection, seq: i64, next_at: i64, error: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE outbox SET attempts = attempts + 1, next_at = ?2, last_error = ?3 WHERE seq = ?1",
    )?
    .execute(params![seq, next_at, error])?;
    Ok(())
}

/// Gives `n` up after `attempts` attempts: deleted, and recorded on its request's history
/// and in the audit log. Run it in a transaction or savepoint.
pub fn give_up(
    conn: &Connection,
    n: &Notification,
    attempts: u32,
    error: &str,
) -> rusqlite::Result<()> {
    delivered(conn, n.seq)?;
    let (entry, detail) = given_up(n, attempts, error);
    // Entries only: no state to check, so this writes whatever the request's state; none
    // for a request no longer there (its history would refer to nothing), only the audit.
    if requests::exists(conn, &n.request_id)? {
        requests::write(conn, &n.request_id, &[RequestWrite::Entry(entry)], None)?;
    }
    requests::audit(
        conn,
        "warden",
        "notify-failed",
        Some(&n.request_id),
        &detail,
    )
}

/// What giving `n` up records: its request's history entry and the audit line's detail.
pub fn given_up(n: &Notification, attempts: u32, error: &str) -> (HistoryEntry, Value) {
    let entry = HistoryEntry {
        at: now_ms(),
        step: "notify".into(),
        event: HistoryEvent::Notification {
            channel: n.channel.clone(),
            event: n.event.as_str().into(),
            delivery: n.delivery_id.clone(),
            attempts,
            error: error.to_string(),
        },
    };
    let detail = json!({
        "channel": n.channel,
        "event": n.event.as_str(),
        "delivery": n.delivery_id,
        "attempts": attempts,
        "error": error,
    });
    (entry, detail)
}

/// Notifications waiting, by channel.
pub fn depth(conn: &Connection) -> rusqlite::Result<Vec<(String, u64)>> {
    conn.prepare_cached("SELECT channel, COUNT(*) FROM outbox GROUP BY channel ORDER BY channel")?
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
        .collect()
}

#[cfg(test)]
mod tests;

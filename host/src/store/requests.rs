//! Access requests, their history and the audit log, in the same SQLite store as identities.
//! Every state change is all or nothing: the new state, its history entry and its audit line
//! commit together (with whatever else waited to be written for the request) or not at all.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// Where a request is. `requested` and `approved` are passing states: a request rests in
/// them only while its hooks run (or if warden stopped right then; see `Lifecycle::recover`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Requested,
    Pending,
    Approved,
    Denied,
    Escalated,
    Deescalated,
}

impl State {
    pub const ALL: [State; 6] = [
        Self::Requested,
        Self::Pending,
        Self::Approved,
        Self::Denied,
        Self::Escalated,
        Self::Deescalated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Escalated => "escalated",
            Self::Deescalated => "deescalated",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state `{s}`; states are {}", names.join(", "))
            })
    }
}

/// One step of a request's history, as stored and as `GET /v1/requests/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Unix milliseconds.
    pub at: i64,
    pub step: String,
    #[serde(flatten)]
    pub event: HistoryEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HistoryEvent {
    /// A hook ran (or was skipped because the plugin does not implement it).
    Hook {
        hook: String,
        ran: bool,
        /// `continue`, `approve`, `deny`, `ignore`, or `failed`.
        outcome: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Why the hook failed, and who is to blame; the request then took the default path.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        blame: Option<String>,
        elapsed_ms: f64,
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        refusals: Vec<String>,
    },
    /// The request changed state.
    Transition {
        from: Option<State>,
        to: State,
        actor: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A request as stored, without its history.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub id: String,
    pub flow: String,
    pub requester: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub state: State,
    /// What decided the request so far: `continue` (a human decides), `approve` or `deny`.
    pub decision: String,
    pub reason: Option<String>,
    pub created_by: String,
    pub duration: Option<Duration>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub struct NewRequest<'a> {
    pub id: &'a str,
    pub flow: &'a str,
    pub requester: &'a str,
    pub fields: &'a serde_json::Map<String, serde_json::Value>,
    pub created_by: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub duration: Option<Duration>,
}

/// A state change: applied only if the request is in one of `from`.
pub struct Transition<'a> {
    pub from: &'a [State],
    pub to: State,
    pub decision: &'a str,
    pub reason: Option<&'a str>,
    pub actor: &'a str,
    pub step: &'a str,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub request_id: Option<String>,
    pub detail: serde_json::Value,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// `at` (Unix milliseconds) as RFC 3339.
pub fn rfc3339(at: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(at.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

#[derive(Clone)]
pub struct Requests {
    store: Arc<Store>,
    /// Hook entries and deferred transitions not yet written, by request, in order. They go
    /// into the next transaction on the request (its next transition, or a flush before a
    /// hook runs or the answer is sent), so a step costs one commit rather than one per hook.
    /// Only the operation holding a request's claim touches them.
    unwritten: Arc<Mutex<HashMap<String, Vec<Unwritten>>>>,
}

#[derive(Clone)]
enum Unwritten {
    Entry(HistoryEntry),
    Transition(OwnedTransition),
}

/// A [`Transition`] kept until its request's next write.
#[derive(Clone)]
struct OwnedTransition {
    from: Vec<State>,
    to: State,
    decision: String,
    reason: Option<String>,
    actor: String,
    step: String,
    expires_at: Option<i64>,
}

impl From<&Transition<'_>> for OwnedTransition {
    fn from(t: &Transition<'_>) -> Self {
        Self {
            from: t.from.to_vec(),
            to: t.to,
            decision: t.decision.to_string(),
            reason: t.reason.map(str::to_string),
            actor: t.actor.to_string(),
            step: t.step.to_string(),
            expires_at: t.expires_at,
        }
    }
}

/// Writes `unwritten` in order, then `then` if given. Every state is checked before anything
/// is written: `Ok(false)` (nothing written) when `then` does not apply; an error (nothing
/// written) when a deferred transition no longer does, which a request's claim rules out.
fn write_unwritten(
    conn: &Connection,
    id: &str,
    unwritten: &[Unwritten],
    then: Option<&OwnedTransition>,
) -> rusqlite::Result<bool> {
    let transitions: Vec<&OwnedTransition> = unwritten
        .iter()
        .filter_map(|u| match u {
            Unwritten::Transition(t) => Some(t),
            Unwritten::Entry(_) => None,
        })
        .chain(then)
        .collect();
    let mut froms = Vec::with_capacity(transitions.len());
    if !transitions.is_empty() {
        let current: Option<String> = conn
            .prepare_cached("SELECT state FROM requests WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        let Some(mut state) = current.and_then(|s| s.parse::<State>().ok()) else {
            return Ok(false);
        };
        let deferred = transitions.len() - usize::from(then.is_some());
        for (i, t) in transitions.iter().enumerate() {
            if !t.from.contains(&state) {
                if i < deferred {
                    return Err(crate::store::failure(&format!(
                        "request {id}: its deferred step `{}` found it {state}",
                        t.step
                    )));
                }
                return Ok(false);
            }
            froms.push(state);
            state = t.to;
        }
    }
    let mut froms = froms.into_iter();
    for u in unwritten {
        match u {
            Unwritten::Entry(entry) => append_history(conn, id, entry)?,
            Unwritten::Transition(t) => write_transition(conn, id, t, froms.next().unwrap())?,
        }
    }
    if let Some(t) = then {
        write_transition(conn, id, t, froms.next().unwrap())?;
    }
    Ok(true)
}

fn write_transition(
    conn: &Connection,
    id: &str,
    t: &OwnedTransition,
    from: State,
) -> rusqlite::Result<()> {
    let now = now_ms();
    conn.prepare_cached(
        "UPDATE requests SET state = ?2, decision = ?3, reason = COALESCE(?4, reason),
             expires_at = COALESCE(?5, expires_at), updated_at = ?6
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        t.to.as_str(),
        t.decision,
        t.reason,
        t.expires_at,
        now
    ])?;
    append_history(
        conn,
        id,
        &HistoryEntry {
            at: now,
            step: t.step.clone(),
            event: HistoryEvent::Transition {
                from: Some(from),
                to: t.to,
                actor: t.actor.clone(),
                reason: t.reason.clone(),
            },
        },
    )?;
    append_audit(
        conn,
        &t.actor,
        &t.step,
        Some(id),
        &serde_json::json!({
            "from": from.as_str(),
            "to": t.to.as_str(),
            "reason": t.reason,
        }),
    )
}

const COLUMNS: &str = "id, flow, requester, fields, state, decision, reason, created_by,
    duration_seconds, expires_at, created_at, updated_at";

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<RequestRecord> {
    let fields: String = row.get(3)?;
    let state: String = row.get(4)?;
    let bad = |i, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    Ok(RequestRecord {
        id: row.get(0)?,
        flow: row.get(1)?,
        requester: row.get(2)?,
        fields: serde_json::from_str(&fields).map_err(|e| bad(3, e.to_string()))?,
        state: state.parse().map_err(|e| bad(4, e))?,
        decision: row.get(5)?,
        reason: row.get(6)?,
        created_by: row.get(7)?,
        duration: row
            .get::<_, Option<i64>>(8)?
            .map(|s| Duration::from_secs(s as u64)),
        expires_at: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
    })
}

fn append_history(conn: &Connection, id: &str, entry: &HistoryEntry) -> rusqlite::Result<()> {
    let json = serde_json::to_string(entry).expect("history entries serialize");
    conn.prepare_cached(
        "INSERT INTO request_history (request_id, seq, entry)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM request_history WHERE request_id = ?1), ?2)",
    )?.execute(
        params![id, json],
    )?;
    Ok(())
}

fn append_audit(
    conn: &Connection,
    actor: &str,
    action: &str,
    request_id: Option<&str>,
    detail: &serde_json::Value,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, actor, action, request_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        now_ms(),
        actor,
        action,
        request_id,
        detail.to_string()
    ])?;
    Ok(())
}

fn read_record(conn: &Connection, id: &str) -> rusqlite::Result<Option<RequestRecord>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM requests WHERE id = ?1"))?
        .query_row(params![id], row_to_record)
        .optional()
}

fn read_history(conn: &Connection, id: &str) -> rusqlite::Result<Vec<HistoryEntry>> {
    let mut stmt = conn
        .prepare_cached("SELECT entry FROM request_history WHERE request_id = ?1 ORDER BY seq")?;
    stmt.query_map(params![id], |r| {
        let text: String = r.get(0)?;
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })
    })?
    .collect()
}

impl Requests {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            unwritten: Arc::default(),
        }
    }

    fn unwritten(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Unwritten>>> {
        self.unwritten.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entries waiting for `id`'s next transaction (left in place until it commits).
    fn waiting(&self, id: &str) -> Vec<Unwritten> {
        self.unwritten().get(id).cloned().unwrap_or_default()
    }

    /// Forgets the first `n` waiting entries of `id`, once they are committed.
    fn written(&self, id: &str, n: usize) {
        let mut unwritten = self.unwritten();
        if let Some(entries) = unwritten.get_mut(id) {
            entries.drain(..n.min(entries.len()));
            if entries.is_empty() {
                unwritten.remove(id);
            }
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Stores a new request in state `requested` and returns it; with an idempotency key
    /// already used by `created_by`, stores nothing and returns the earlier request's id.
    pub async fn insert(
        &self,
        new: &NewRequest<'_>,
    ) -> Result<Result<RequestRecord, String>, StoreError> {
        let now = now_ms();
        let record = RequestRecord {
            id: new.id.to_string(),
            flow: new.flow.to_string(),
            requester: new.requester.to_string(),
            fields: new.fields.clone(),
            state: State::Requested,
            decision: "continue".into(),
            reason: None,
            created_by: new.created_by.to_string(),
            duration: new.duration,
            expires_at: None,
            created_at: now,
            updated_at: now,
        };
        let idempotency_key = new.idempotency_key.map(str::to_string);
        self.store
            .write(move |c| {
                if let Some(key) = &idempotency_key {
                    let existing: Option<String> = c
                        .prepare_cached(
                            "SELECT id FROM requests WHERE created_by = ?1 AND idempotency_key = ?2",
                        )?
                        .query_row(params![record.created_by, key], |r| r.get(0))
                        .optional()?;
                    if let Some(id) = existing {
                        return Ok(Err(id));
                    }
                }
                c.prepare_cached(
                    "INSERT INTO requests (id, flow, requester, fields, state, decision, created_by,
                         idempotency_key, duration_seconds, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
                )?
                .execute(params![
                    record.id,
                    record.flow,
                    record.requester,
                    serde_json::Value::Object(record.fields.clone()).to_string(),
                    record.state.as_str(),
                    record.decision,
                    record.created_by,
                    idempotency_key,
                    record.duration.map(|d| d.as_secs() as i64),
                    now,
                ])?;
                append_history(
                    c,
                    &record.id,
                    &HistoryEntry {
                        at: now,
                        step: "request".into(),
                        event: HistoryEvent::Transition {
                            from: None,
                            to: State::Requested,
                            actor: record.created_by.clone(),
                            reason: None,
                        },
                    },
                )?;
                append_audit(
                    c,
                    &record.created_by,
                    "request",
                    Some(&record.id),
                    &serde_json::json!({ "flow": record.flow, "requester": record.requester }),
                )?;
                Ok(Ok(record))
            })
            .await
    }

    pub fn get(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.store.read(|c| read_record(c, id))
    }

    /// Requests, newest first, optionally only those in `state` and of `requester`.
    pub fn list(
        &self,
        state: Option<State>,
        requester: Option<&str>,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.store.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM requests
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR requester = ?2)
                 ORDER BY created_at DESC, id DESC LIMIT 1000"
            ))?;
            stmt.query_map(params![state.map(State::as_str), requester], row_to_record)?
                .collect()
        })
    }

    pub fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.store.read(|c| read_history(c, id))
    }

    /// Adds `entry` to `id`'s history with the request's next transaction.
    pub fn note(&self, id: &str, entry: HistoryEntry) {
        self.unwritten()
            .entry(id.to_string())
            .or_default()
            .push(Unwritten::Entry(entry));
    }

    /// Applies `t` with the request's next write instead of now. Only for a step after which
    /// nothing runs before that write: whatever runs must first see the state committed.
    pub fn defer(&self, id: &str, t: &Transition<'_>) {
        self.unwritten()
            .entry(id.to_string())
            .or_default()
            .push(Unwritten::Transition(t.into()));
    }

    /// Whether a deferred transition of `id` waits to be written.
    pub fn has_deferred(&self, id: &str) -> bool {
        self.unwritten()
            .get(id)
            .is_some_and(|w| w.iter().any(|u| matches!(u, Unwritten::Transition(_))))
    }

    /// Writes what waits for `id`, then `then` if it applies, then runs `read` in the same
    /// write; `None` (nothing written, what waits keeps waiting) when `then` does not apply.
    async fn write_waiting<R: Send + 'static>(
        &self,
        id: &str,
        then: Option<OwnedTransition>,
        read: impl FnOnce(&Connection, &str) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<Option<R>, StoreError> {
        let waiting = self.waiting(id);
        let n = waiting.len();
        let owned_id = id.to_string();
        let outcome = self
            .store
            .write(move |c| {
                if !write_unwritten(c, &owned_id, &waiting, then.as_ref())? {
                    return Ok(None);
                }
                read(c, &owned_id).map(Some)
            })
            .await?;
        if outcome.is_some() {
            self.written(id, n);
        }
        Ok(outcome)
    }

    /// Writes what still waits for `id`.
    pub async fn flush(&self, id: &str) -> Result<(), StoreError> {
        if !self.unwritten().contains_key(id) {
            return Ok(());
        }
        self.write_waiting(id, None, |_, _| Ok(())).await?;
        Ok(())
    }

    /// [`Requests::flush`], then the request and its whole history as just committed
    /// (read in the same write, where the pages are at hand), for the answer.
    pub async fn finish(
        &self,
        id: &str,
    ) -> Result<Option<(RequestRecord, Vec<HistoryEntry>)>, StoreError> {
        let finished = self
            .write_waiting(id, None, |c, id| {
                let Some(record) = read_record(c, id)? else {
                    return Ok(None);
                };
                Ok(Some((record, read_history(c, id)?)))
            })
            .await?;
        Ok(finished.flatten())
    }

    /// [`Requests::flush`] at once, for a request's last chance (its claim being dropped).
    pub fn flush_now(&self, id: &str) -> Result<(), StoreError> {
        let waiting = self.waiting(id);
        if waiting.is_empty() {
            return Ok(());
        }
        self.store.with(|c| {
            let tx = c.transaction()?;
            write_unwritten(&tx, id, &waiting, None)?;
            tx.commit()
        })?;
        self.written(id, waiting.len());
        Ok(())
    }

    /// Applies `t` now if the request is in one of `t.from` (after what waits to be written);
    /// returns whether it was. A refused transition writes nothing, and what waits keeps
    /// waiting.
    pub async fn transition(&self, id: &str, t: &Transition<'_>) -> Result<bool, StoreError> {
        let applied = self
            .write_waiting(id, Some(t.into()), |_, _| Ok(()))
            .await?;
        Ok(applied.is_some())
    }

    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        request_id: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.store.with(|c| {
            let tx = c.transaction()?;
            append_audit(&tx, actor, action, request_id, detail)?;
            tx.commit()
        })
    }

    /// The newest `limit` audit entries, oldest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.read(|c| {
            let mut stmt = c.prepare(
                "SELECT seq, at, actor, action, request_id, detail FROM
                 (SELECT * FROM audit_log ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
            )?;
            stmt.query_map(params![limit as i64], |r| {
                let detail: String = r.get(5)?;
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    request_id: r.get(4)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })?
            .collect()
        })
    }

    /// Up to `limit` audit entries older than `before` (a `seq`; all when `None`), newest
    /// first: one page of the console's audit view.
    pub(crate) fn audit_page(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.read(|c| {
            let mut stmt = c.prepare(
                "SELECT seq, at, actor, action, request_id, detail FROM audit_log
                 WHERE ?1 IS NULL OR seq < ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            stmt.query_map(params![before, limit as i64], |r| {
                let detail: String = r.get(5)?;
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    request_id: r.get(4)?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })?
            .collect()
        })
    }

    pub fn ids_in(&self, state: State) -> Result<Vec<String>, StoreError> {
        self.store.read(|c| {
            let mut stmt =
                c.prepare("SELECT id FROM requests WHERE state = ?1 ORDER BY created_at")?;
            stmt.query_map(params![state.as_str()], |r| r.get(0))?
                .collect()
        })
    }

    /// Escalated requests whose access has run out by `now`.
    pub fn expired(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.store.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id FROM requests WHERE state = 'escalated' AND expires_at <= ?1
                 ORDER BY expires_at",
            )?;
            stmt.query_map(params![now], |r| r.get(0))?.collect()
        })
    }

    /// The earliest expiry after `now`.
    pub fn next_expiry(&self, now: i64) -> Result<Option<i64>, StoreError> {
        self.store.read(|c| {
            c.prepare_cached("SELECT MIN(expires_at) FROM requests WHERE state = 'escalated' AND expires_at > ?1")?.query_row(
                params![now],
                |r| r.get(0),
            )
        })
    }

    pub fn count_by_state(&self) -> Result<Vec<(State, u64)>, StoreError> {
        let counted: Vec<(String, i64)> = self.store.read(|c| {
            let mut stmt = c.prepare("SELECT state, COUNT(*) FROM requests GROUP BY state")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })?;
        Ok(State::ALL
            .into_iter()
            .map(|state| {
                let n = counted
                    .iter()
                    .find(|(s, _)| s == state.as_str())
                    .map_or(0, |(_, n)| *n as u64);
                (state, n)
            })
            .collect())
    }

    /// Folds the write-ahead log into the database file, for a clean shutdown.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.store.with(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .optional()
                .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests() -> Requests {
        Requests::new(Arc::new(Store::open_in_memory().unwrap()))
    }

    fn new<'a>(
        id: &'a str,
        key: Option<&'a str>,
        fields: &'a serde_json::Map<String, serde_json::Value>,
    ) -> NewRequest<'a> {
        NewRequest {
            id,
            flow: "f",
            requester: "a@x.com",
            fields,
            created_by: "a@x.com",
            idempotency_key: key,
            duration: Some(Duration::from_secs(60)),
        }
    }

    #[tokio::test]
    async fn an_idempotency_key_returns_the_first_request() {
        let r = requests();
        let fields = serde_json::Map::new();
        assert_eq!(
            r.insert(&new("r1", Some("k"), &fields))
                .await
                .unwrap()
                .unwrap()
                .id,
            "r1"
        );
        assert_eq!(
            r.insert(&new("r2", Some("k"), &fields))
                .await
                .unwrap()
                .map(|rec| rec.id),
            Err("r1".to_string())
        );
        assert!(r.insert(&new("r3", None, &fields)).await.unwrap().is_ok());
        assert!(r.get("r2").unwrap().is_none());
        assert_eq!(r.get("r1").unwrap().unwrap().state, State::Requested);
    }

    #[tokio::test]
    async fn transitions_apply_only_from_the_named_states_and_are_recorded() {
        let r = requests();
        let fields = serde_json::Map::new();
        r.insert(&new("r1", None, &fields)).await.unwrap().unwrap();
        let to_pending = Transition {
            from: &[State::Requested],
            to: State::Pending,
            decision: "continue",
            reason: None,
            actor: "warden",
            step: "request",
            expires_at: None,
        };
        assert!(r.transition("r1", &to_pending).await.unwrap());
        assert!(
            !r.transition("r1", &to_pending).await.unwrap(),
            "already pending"
        );
        assert!(!r.transition("nope", &to_pending).await.unwrap());
        let history = r.history("r1").unwrap();
        assert_eq!(history.len(), 2);
        assert!(matches!(
            history[1].event,
            HistoryEvent::Transition {
                from: Some(State::Requested),
                to: State::Pending,
                ..
            }
        ));
        let audit = r.audit_log(10).unwrap();
        assert_eq!(
            audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
            ["request", "request"]
        );
        assert_eq!(audit[1].detail["to"], "pending");
    }

    #[tokio::test]
    async fn hook_notes_are_written_with_the_next_transition_or_a_flush_in_order() {
        let r = requests();
        let fields = serde_json::Map::new();
        r.insert(&new("r1", None, &fields)).await.unwrap().unwrap();
        let note = |hook: &str| HistoryEntry {
            at: now_ms(),
            step: "request".into(),
            event: HistoryEvent::Hook {
                hook: hook.into(),
                ran: true,
                outcome: "continue".into(),
                reason: None,
                error: None,
                blame: None,
                elapsed_ms: 0.0,
                refusals: Vec::new(),
            },
        };
        let hooks = |r: &Requests| {
            r.history("r1")
                .unwrap()
                .into_iter()
                .map(|e| match e.event {
                    HistoryEvent::Hook { hook, .. } => hook,
                    HistoryEvent::Transition { to, .. } => format!("-> {to}"),
                })
                .collect::<Vec<_>>()
        };
        r.note("r1", note("on_request"));
        assert_eq!(
            hooks(&r),
            ["-> requested"],
            "a note waits for a transaction"
        );
        let to_approved = Transition {
            from: &[State::Pending],
            to: State::Approved,
            decision: "approve",
            reason: None,
            actor: "warden",
            step: "approve",
            expires_at: None,
        };
        // A refused transition writes nothing, and the note keeps waiting.
        assert!(!r.transition("r1", &to_approved).await.unwrap());
        assert_eq!(hooks(&r), ["-> requested"]);
        let to_pending = Transition {
            from: &[State::Requested],
            to: State::Pending,
            ..to_approved
        };
        assert!(r.transition("r1", &to_pending).await.unwrap());
        r.note("r1", note("after_request"));
        r.flush("r1").await.unwrap();
        r.flush("r1").await.unwrap();
        assert_eq!(
            hooks(&r),
            ["-> requested", "on_request", "-> pending", "after_request"]
        );
    }

    #[tokio::test]
    async fn deferred_transitions_are_written_in_order_with_the_next_write_or_not_at_all() {
        let r = requests();
        let fields = serde_json::Map::new();
        r.insert(&new("r1", None, &fields)).await.unwrap().unwrap();
        let step = |from: &'static [State], to: State, step: &'static str| Transition {
            from,
            to,
            decision: "approve",
            reason: None,
            actor: "warden",
            step,
            expires_at: None,
        };
        let skipped = |hook: &str| HistoryEntry {
            at: now_ms(),
            step: "approve".into(),
            event: HistoryEvent::Hook {
                hook: hook.into(),
                ran: false,
                outcome: "skipped".into(),
                reason: None,
                error: None,
                blame: None,
                elapsed_ms: 0.0,
                refusals: Vec::new(),
            },
        };
        r.defer("r1", &step(&[State::Requested], State::Approved, "approve"));
        r.note("r1", skipped("after_approve"));
        r.defer(
            "r1",
            &step(&[State::Approved], State::Escalated, "escalate"),
        );
        assert!(r.has_deferred("r1"));
        assert_eq!(r.get("r1").unwrap().unwrap().state, State::Requested);

        let (record, history) = r.finish("r1").await.unwrap().unwrap();
        assert_eq!(record.state, State::Escalated);
        let steps: Vec<String> = history
            .iter()
            .map(|e| match &e.event {
                HistoryEvent::Hook { hook, .. } => hook.clone(),
                HistoryEvent::Transition { from, to, .. } => format!("{from:?} -> {to}"),
            })
            .collect();
        assert_eq!(
            steps,
            [
                "None -> requested",
                "Some(Requested) -> approved",
                "after_approve",
                "Some(Approved) -> escalated"
            ]
        );
        assert!(!r.has_deferred("r1"));
        let audit = r.audit_log(10).unwrap();
        assert_eq!(
            audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
            ["request", "approve", "escalate"]
        );

        // A deferred step that no longer applies fails the write, which writes nothing.
        r.defer("r1", &step(&[State::Pending], State::Denied, "deny"));
        r.note("r1", skipped("after_deny"));
        let error = r.flush("r1").await.unwrap_err();
        assert!(error.to_string().contains("found it escalated"), "{error}");
        assert_eq!(r.history("r1").unwrap().len(), 4);
        assert_eq!(r.get("r1").unwrap().unwrap().state, State::Escalated);
    }

    #[tokio::test]
    async fn the_audit_log_refuses_updates_and_deletes() {
        let r = requests();
        r.audit("admin@x.com", "reload", None, &serde_json::json!({}))
            .unwrap();
        for sql in ["UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"] {
            let err = r.store.with(|c| c.execute(sql, [])).unwrap_err();
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        assert_eq!(r.audit_log(10).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn expiries_are_found_by_time() {
        let r = requests();
        let fields = serde_json::Map::new();
        for (id, expires) in [("a", 1_000), ("b", 5_000)] {
            r.insert(&new(id, None, &fields)).await.unwrap().unwrap();
            r.transition(
                id,
                &Transition {
                    from: &[State::Requested],
                    to: State::Escalated,
                    decision: "approve",
                    reason: None,
                    actor: "t",
                    step: "escalate",
                    expires_at: Some(expires),
                },
            )
            .await
            .unwrap();
        }
        assert_eq!(r.expired(2_000).unwrap(), ["a"]);
        assert_eq!(r.next_expiry(2_000).unwrap(), Some(5_000));
        assert_eq!(r.next_expiry(5_000).unwrap(), None);
        let counts = r.count_by_state().unwrap();
        assert!(counts.contains(&(State::Escalated, 2)));
    }
}

//! Access requests, their history and the audit log, in the same SQLite store as identities:
//! the SQL, as functions over the connection (or transaction) a caller holds, and the rows.
//!
//! Nothing here keeps state between calls. Which writes share a transaction is the caller's
//! choice (`serve::claim` gathers a request's writes; [`super::Store::write`] runs them in one
//! savepoint of a group commit); [`write`] makes each such batch all or nothing: a state
//! change, its history entry and its audit line go in together with whatever else waited
//! for the request, or nothing does.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::store::failure;

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
    /// The flow's plugin ignored it (`ignore` from `on_request`): closed, never routed to
    /// a human.
    Ignored,
}

impl State {
    pub const ALL: [State; 7] = [
        Self::Requested,
        Self::Pending,
        Self::Approved,
        Self::Denied,
        Self::Escalated,
        Self::Deescalated,
        Self::Ignored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Escalated => "escalated",
            Self::Deescalated => "deescalated",
            Self::Ignored => "ignored",
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
    /// One of the approvals a flow with `approvals_required` of 2 or more needs.
    Approval {
        approver: String,
        /// The admin who named `approver` (an admin may act for others), when it was not
        /// the approver: the approvals of one admin count once, whoever they named.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Distinct approvals so far, this one included, and how many the flow needs.
        count: u32,
        required: u32,
    },
    /// The request changed state.
    Transition {
        from: Option<State>,
        to: State,
        actor: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A notification about the request could not be delivered in its channel's
    /// `retry_for_seconds` and was given up ([`super::outbox`]).
    Notification {
        channel: String,
        /// `waiting`, `decided`, `removed` or `hook_failed`.
        event: String,
        delivery: String,
        attempts: u32,
        error: String,
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
    /// The requester as submitted (a JSON user: email, username, id, names), for the hooks
    /// after the request step; `None` for requests stored before warden kept it.
    pub requester_profile: Option<String>,
}

/// A request to store, in state `requested`. Owned: it is written on the commit thread.
pub struct NewRequest {
    pub id: String,
    pub flow: String,
    pub requester: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
    pub created_by: String,
    pub idempotency_key: Option<String>,
    pub duration: Option<Duration>,
    pub requester_profile: Option<String>,
    /// In a shared store, claimed by this claim of the replica storing it, whose request
    /// step runs next (`None`: stored unclaimed).
    pub claim: Option<crate::store::backend::ClaimId>,
}

/// What storing a new request writes, the same on both stores.
pub(crate) struct FirstWrite {
    /// As stored: requested, no decision yet.
    pub record: RequestRecord,
    pub idempotency_key: Option<String>,
    /// Its first history entry: `requested`, by its sender.
    pub entry: HistoryEntry,
    /// Its audit line's detail.
    pub detail: serde_json::Value,
}

impl NewRequest {
    /// What storing it at `now` (Unix milliseconds) writes.
    pub(crate) fn first_write(self, now: i64) -> FirstWrite {
        let record = RequestRecord {
            id: self.id,
            flow: self.flow,
            requester: self.requester,
            fields: self.fields,
            state: State::Requested,
            decision: "continue".into(),
            reason: None,
            created_by: self.created_by,
            duration: self.duration,
            expires_at: None,
            created_at: now,
            updated_at: now,
            requester_profile: self.requester_profile,
        };
        let entry = HistoryEntry {
            at: now,
            step: "request".into(),
            event: HistoryEvent::Transition {
                from: None,
                to: State::Requested,
                actor: record.created_by.clone(),
                reason: None,
            },
        };
        let detail = serde_json::json!({ "flow": record.flow, "requester": record.requester });
        FirstWrite {
            record,
            idempotency_key: self.idempotency_key,
            entry,
            detail,
        }
    }
}

/// A state change: applied only if the request is in one of `from`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: &'static [State],
    pub to: State,
    pub decision: String,
    pub reason: Option<String>,
    pub actor: String,
    pub step: &'static str,
    pub expires_at: Option<i64>,
}

impl Transition {
    /// Its reason as the history and the audit log show it: an empty one (a human who
    /// gave none, written so as to replace the reason before) is none.
    pub fn shown_reason(&self) -> Option<String> {
        self.reason.clone().filter(|r| !r.is_empty())
    }
}

/// One write of a request's batch ([`write`]), in the order the operation made it.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestWrite {
    /// A history entry (a hook's run).
    Entry(HistoryEntry),
    /// A state change, with its own history entry and audit line.
    Transition(Transition),
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

/// The request `created_by` filed under idempotency key `key`, if any.
pub fn for_key(conn: &Connection, created_by: &str, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT id FROM requests WHERE created_by = ?1 AND idempotency_key = ?2")?
        .query_row(params![created_by, key], |r| r.get(0))
        .optional()
}

/// Stores `new` in state `requested` (with its first history entry and audit line) and
/// returns it; with an idempotency key `created_by` already used, stores nothing and returns
/// the earlier request's id.
pub fn insert(
    conn: &Connection,
    new: NewRequest,
) -> rusqlite::Result<Result<RequestRecord, String>> {
    if let Some(key) = &new.idempotency_key
        && let Some(id) = for_key(conn, &new.created_by, key)?
    {
        return Ok(Err(id));
    }
    let FirstWrite {
        record,
        idempotency_key,
        entry,
        detail,
    } = new.first_write(now_ms());
    conn.prepare_cached(
        "INSERT INTO requests (id, flow, requester, fields, state, decision, created_by,
             idempotency_key, duration_seconds, created_at, updated_at, requester_profile)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)",
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
        record.created_at,
        record.requester_profile,
    ])?;
    append_history(conn, &record.id, &entry)?;
    audit(
        conn,
        &record.created_by,
        "request",
        Some(&record.id),
        &detail,
    )?;
    Ok(Ok(record))
}

/// Writes `writes` for request `id` in order, then `then` if given. Every state is checked
/// before anything is written: `Ok(false)` (nothing written) when `then` does not apply; an
/// error (nothing written) when a transition in `writes` no longer does, which the claim on
/// the request rules out. Run it inside a transaction or savepoint: a later statement that
/// fails must take the earlier ones back.
pub fn write(
    conn: &Connection,
    id: &str,
    writes: &[RequestWrite],
    then: Option<&Transition>,
) -> rusqlite::Result<bool> {
    let transitions: Vec<&Transition> = writes
        .iter()
        .filter_map(|w| match w {
            RequestWrite::Transition(t) => Some(t),
            RequestWrite::Entry(_) => None,
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
                    return Err(failure(&format!(
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
    // Every transition found its `from` above, in this order.
    let mut froms = froms.into_iter();
    for w in writes {
        match w {
            RequestWrite::Entry(entry) => {
                append_history(conn, id, entry)?;
                // An approval that does not yet approve changes no state, so no transition
                // audits it: its own line does, in the same commit.
                if let HistoryEvent::Approval {
                    approver,
                    by,
                    reason,
                    count,
                    required,
                } = &entry.event
                {
                    let mut detail = serde_json::json!({
                        "count": count, "required": required, "reason": reason,
                    });
                    if let Some(by) = by {
                        detail["by"] = by.as_str().into();
                    }
                    let actor = approval_actor(approver, by.as_deref());
                    audit(conn, &actor, "approval", Some(id), &detail)?;
                }
            }
            RequestWrite::Transition(t) => write_transition(conn, id, t, froms.next().unwrap())?,
        }
    }
    if let Some(t) = then {
        write_transition(conn, id, t, froms.next().unwrap())?;
    }
    Ok(true)
}

/// Who the audit log says approved: the approver, and the admin who named them, if one did
/// (as a decision's transition says it).
pub(crate) fn approval_actor(approver: &str, by: Option<&str>) -> String {
    match by {
        Some(admin) => format!("{approver} (named by admin {admin})"),
        None => approver.to_string(),
    }
}

fn write_transition(
    conn: &Connection,
    id: &str,
    t: &Transition,
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
            step: t.step.to_string(),
            event: HistoryEvent::Transition {
                from: Some(from),
                to: t.to,
                actor: t.actor.clone(),
                reason: t.shown_reason(),
            },
        },
    )?;
    audit(
        conn,
        &t.actor,
        t.step,
        Some(id),
        &serde_json::json!({
            "from": from.as_str(),
            "to": t.to.as_str(),
            "reason": t.shown_reason(),
        }),
    )
}

const COLUMNS: &str = "id, flow, requester, fields, state, decision, reason, created_by,
    duration_seconds, expires_at, created_at, updated_at, requester_profile";

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
        requester_profile: row.get(12)?,
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

/// Appends a line to the audit log (one statement: atomic without a transaction of its own).
pub fn audit(
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

/// Whether request `id` is stored.
pub fn exists(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM requests WHERE id = ?1")?
        .exists(params![id])
}

pub fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<RequestRecord>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM requests WHERE id = ?1"))?
        .query_row(params![id], row_to_record)
        .optional()
}

/// The request and its whole history, when it exists.
pub fn get_with_history(
    conn: &Connection,
    id: &str,
) -> rusqlite::Result<Option<(RequestRecord, Vec<HistoryEntry>)>> {
    let Some(record) = get(conn, id)? else {
        return Ok(None);
    };
    Ok(Some((record, history(conn, id)?)))
}

pub fn history(conn: &Connection, id: &str) -> rusqlite::Result<Vec<HistoryEntry>> {
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

/// Which requests a listing asks for: newest first, from `before` on (not included), at
/// most `limit`, each filter applied when set.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub state: Option<State>,
    pub requester: Option<String>,
    pub flow: Option<String>,
    /// Pending requests only of these flows, or of this requester (`None`: all of them).
    pub pending_only: Option<PendingOnly>,
    pub before: Option<Cursor>,
    pub limit: usize,
    /// Requests looked at, from `before` on, at most (0: as many as it takes): the rows the
    /// filters are tried on, so one query's cost is bounded whatever they leave out.
    pub window: usize,
}

/// What one listing query gave: the requests that passed its filters, and where the next
/// query goes on from when its window ended before the table did.
#[derive(Debug, Default)]
pub struct ListChunk {
    pub rows: Vec<RequestRecord>,
    pub window_end: Option<Cursor>,
    /// Rows the query gave, those that did not read as requests included (left out of
    /// `rows`, and logged with their ids): whether the query's limit cut it.
    pub read: usize,
    /// Where the last row the query gave stands, read or not.
    pub last_read: Option<Cursor>,
}

impl ListChunk {
    /// The chunk of `read`: each row's place, and the request it holds or why it does not
    /// read as one. A row that does not read (written by another version, or damaged) is
    /// left out, its id logged, so that it does not stop every listing that reaches it.
    pub fn of<E: std::fmt::Display>(
        read: Vec<(Cursor, Result<RequestRecord, E>)>,
        window_end: Option<Cursor>,
    ) -> Self {
        let count = read.len();
        let last_read = read.last().map(|(at, _)| at.clone());
        let rows = read
            .into_iter()
            .filter_map(|(at, rec)| {
                rec.map_err(|e| {
                    tracing::error!(request = %at.id, "a request that cannot be read is left out of a listing: {e}");
                })
                .ok()
            })
            .collect();
        Self {
            rows,
            window_end,
            read: count,
            last_read,
        }
    }
}

/// Which pending requests a listing may show: those of `flows`, and `requester`'s own.
#[derive(Debug, Clone, Default)]
pub struct PendingOnly {
    pub flows: Vec<String>,
    pub requester: String,
}

/// Where a listing goes on: the last request it gave (requests are ordered by creation
/// time, then id, newest first). Written `<created_at>-<id>` for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

impl Cursor {
    pub fn after(rec: &RequestRecord) -> Self {
        Self {
            created_at: rec.created_at,
            id: rec.id.clone(),
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.created_at, self.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || "`before` is not a cursor this listing gave (`next`)".to_string();
        let (at, id) = text.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            created_at: at.parse().map_err(|_| bad())?,
            id: id.to_string(),
        })
    }
}

/// Requests as `query` asks, newest first, among the `query.window` after its cursor.
pub fn list(conn: &Connection, query: &ListQuery) -> rusqlite::Result<ListChunk> {
    // Bounds as row values, which SQLite walks the index between; no cursor is a bound past
    // every row (a request's `created_at` is a time in milliseconds, never `i64::MAX`).
    let (before_at, before_id) = match &query.before {
        Some(cursor) => (cursor.created_at, cursor.id.as_str()),
        None => (i64::MAX, ""),
    };
    // The window's end is read first and bounds the rows: the two are separate statements
    // (the reader's snapshot is each statement's own), and a request filed between them is
    // then one more row of this window. Read the other way round, it moved the end one row
    // newer, onto a row this window gave, and the next page gave that row again.
    let window_end = match query.window {
        0 => None,
        window => conn
            .prepare_cached(
                "SELECT created_at, id FROM requests INDEXED BY requests_by_creation
                 WHERE (created_at, id) < (?1, ?2)
                 ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET ?3",
            )?
            .query_row(
                params![
                    before_at,
                    before_id,
                    i64::try_from(window - 1).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok(Cursor {
                        created_at: r.get(0)?,
                        id: r.get(1)?,
                    })
                },
            )
            .optional()?,
    };
    let (end_at, end_id) = match &window_end {
        Some(cursor) => (cursor.created_at, cursor.id.as_str()),
        None => (i64::MIN, ""),
    };
    // The window is a walk of `requests_by_creation` from the cursor to its end; the
    // filters are tried on its rows only.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM requests INDEXED BY requests_by_creation
         WHERE (created_at, id) < (?4, ?5) AND (created_at, id) >= (?9, ?10)
           AND (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR requester = ?2)
           AND (?3 IS NULL OR flow = ?3)
           AND (?7 IS NULL OR state <> 'pending' OR requester = ?8
                OR flow IN (SELECT value FROM json_each(?7)))
         ORDER BY created_at DESC, id DESC LIMIT ?6"
    ))?;
    let (pending_flows, pending_requester) = match &query.pending_only {
        Some(only) => (
            Some(serde_json::to_string(&only.flows).expect("names serialize")),
            Some(only.requester.as_str()),
        ),
        None => (None, None),
    };
    let rows = stmt
        .query_map(
            params![
                query.state.map(State::as_str),
                query.requester,
                query.flow,
                before_at,
                before_id,
                i64::try_from(query.limit).unwrap_or(i64::MAX),
                pending_flows,
                pending_requester,
                end_at,
                end_id,
            ],
            |row| {
                let at = Cursor {
                    created_at: row.get(10)?,
                    id: row.get(0)?,
                };
                Ok((at, row_to_record(row)))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ListChunk::of(rows, window_end))
}

/// An audit entry from a row of `seq, at, actor, action, request_id, detail`.
fn row_to_audit(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    let detail: String = r.get(5)?;
    Ok(AuditEntry {
        seq: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        request_id: r.get(4)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    })
}

/// The newest `limit` audit entries, oldest first.
pub fn audit_log(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare(
        "SELECT seq, at, actor, action, request_id, detail FROM
         (SELECT * FROM audit_log ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
    )?;
    stmt.query_map(params![limit as i64], row_to_audit)?
        .collect()
}

/// Up to `limit` audit entries older than `before` (a `seq`; all when `None`), newest first:
/// one page of the console's audit view.
pub fn audit_page(
    conn: &Connection,
    before: Option<i64>,
    limit: usize,
) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare(
        "SELECT seq, at, actor, action, request_id, detail FROM audit_log
         WHERE ?1 IS NULL OR seq < ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    stmt.query_map(params![before, limit as i64], row_to_audit)?
        .collect()
}

pub fn ids_in(conn: &Connection, state: State) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT id FROM requests WHERE state = ?1 ORDER BY created_at")?;
    stmt.query_map(params![state.as_str()], |r| r.get(0))?
        .collect()
}

/// Escalated requests whose access has run out by `now`.
/// The escalated requests whose access ran out by `now`, earliest first: a sweep's worth
/// at most ([`super::backend::EXPIRY_SWEEP_LIMIT`]).
pub fn expired(conn: &Connection, now: i64) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM requests WHERE state = 'escalated' AND expires_at <= ?1
         ORDER BY expires_at LIMIT ?2",
    )?;
    let limit = super::backend::EXPIRY_SWEEP_LIMIT as i64;
    stmt.query_map(params![now, limit], |r| r.get(0))?.collect()
}

/// The earliest expiry after `now`.
pub fn next_expiry(conn: &Connection, now: i64) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT MIN(expires_at) FROM requests WHERE state = 'escalated' AND expires_at > ?1",
    )?
    .query_row(params![now], |r| r.get(0))
}

/// How many requests are in each state (every state, zeros included).
pub fn count_by_state(conn: &Connection) -> rusqlite::Result<Vec<(State, u64)>> {
    let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM requests GROUP BY state")?;
    let counted: Vec<(String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
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

#[cfg(test)]
mod tests;

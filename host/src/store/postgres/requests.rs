//! Requests, their history and the audit log on PostgreSQL: the SQL of the operations
//! `postgres::backend` offers, meaning what SQLite's `store::requests` does.

use std::time::Duration;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::{Fallible, Prepared};
use crate::store::backend::{CLAIM_LEASE_MS, ClaimLost, Hold, WithHistory};
use crate::store::requests::{
    AuditEntry, FirstWrite, HistoryEntry, HistoryEvent, NewRequest, RequestRecord, RequestWrite,
    State, Transition, now_ms,
};

pub(super) const COLUMNS: &str = "id, flow, requester, fields, state, decision, reason, created_by,
    duration_seconds, expires_at, created_at, updated_at, requester_profile";

/// The request a sender (`$1`) filed under an idempotency key (`$2`).
pub(super) const FOR_KEY: &str =
    "SELECT id FROM requests WHERE created_by = $1 AND idempotency_key = $2";

/// SQLite's `requests::insert`, in one statement (atomic without a transaction, one round
/// trip): the request, its first history entry and its audit line. A retried idempotency key,
/// even one racing on another replica, meets the unique index and returns the first
/// request's id.
pub(super) async fn insert(
    client: &(impl Prepared + Sync),
    new: NewRequest,
) -> Fallible<Result<RequestRecord, String>> {
    let claim = new.claim.map(|c| c.0);
    let FirstWrite {
        record,
        idempotency_key,
        entry,
        detail,
    } = new.first_write(now_ms());
    let now = record.created_at;
    let fields = serde_json::Value::Object(record.fields.clone()).to_string();
    let duration = record.duration.map(|d| d.as_secs() as i64);
    let entry = serde_json::to_string(&entry)?;
    let detail = detail.to_string();
    // A concurrent insert with the same key waits here for the other transaction, then
    // inserts nothing (and the other's id is read below), or inserts if that one rolled back.
    // The history's foreign key is checked at the statement's end, after the request's row.
    let inserted: i64 = client
        .row(
            "WITH inserted AS (
                 INSERT INTO requests (id, flow, requester, fields, state, decision, created_by,
                     idempotency_key, duration_seconds, created_at, updated_at, requester_profile,
                     claimed_until, claim_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11,
                     CASE WHEN $15::bigint IS NULL THEN NULL ELSE $12::bigint END, $15)
                 ON CONFLICT (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL
                 DO NOTHING
                 RETURNING id),
             history AS (
                 INSERT INTO request_history (request_id, seq, entry)
                 SELECT id, 1, $13::text FROM inserted),
             audited AS (
                 INSERT INTO audit_log (at, actor, action, request_id, detail)
                 SELECT $10, $7, 'request', id, $14::text FROM inserted)
             SELECT COUNT(*) FROM inserted",
            &[
                &record.id,
                &record.flow,
                &record.requester,
                &fields,
                &record.state.as_str(),
                &record.decision,
                &record.created_by,
                &idempotency_key,
                &duration,
                &now,
                &record.requester_profile,
                // Claimed by the replica storing it, whose request step runs next.
                &(now + CLAIM_LEASE_MS),
                &entry,
                &detail,
                &claim,
            ],
        )
        .await?
        .try_get(0)?;
    if inserted == 0 {
        let row = client
            .row(FOR_KEY, &[&record.created_by, &idempotency_key])
            .await?;
        return Ok(Err(row.try_get(0)?));
    }
    Ok(Ok(record))
}

/// SQLite's `requests::write`, with the request's row locked first: an operation on another
/// replica that moved it meanwhile has committed, and its state is what is checked. Then the
/// step's writes go in one round trip: its state changes, one statement appending all its
/// history entries, one all its audit lines.
pub(super) async fn write(
    tx: &Transaction<'_>,
    id: &str,
    writes: &[RequestWrite],
    then: Option<&Transition>,
    hold: Hold,
) -> Fallible<bool> {
    // Locks the row, and renews or lets go the claim in the same statement (undone with
    // the rest when `then` is refused: the transaction rolls back), only while the claim is
    // still this one.
    let claimed = match hold {
        Hold::Keep => None,
        Hold::Renew(claim, until) => Some((claim, Some(until))),
        Hold::Release(claim) => Some((claim, None)),
    };
    let locked = match claimed {
        None => {
            tx.row_opt(
                "SELECT state FROM requests WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
        }
        Some((claim, until)) => {
            let locked = tx
                .row_opt(
                    "UPDATE requests SET claimed_until = $2,
                         claim_id = CASE WHEN $2::bigint IS NULL THEN NULL ELSE claim_id END
                     WHERE id = $1 AND claim_id = $3 RETURNING state",
                    &[&id, &until, &claim.0],
                )
                .await?;
            if locked.is_none()
                && tx
                    .row_opt("SELECT 1 FROM requests WHERE id = $1", &[&id])
                    .await?
                    .is_some()
            {
                return Err(Box::new(ClaimLost(id.to_string())));
            }
            locked
        }
    };
    let transitions: Vec<&Transition> = writes
        .iter()
        .filter_map(|w| match w {
            RequestWrite::Transition(t) => Some(t),
            RequestWrite::Entry(_) => None,
        })
        .chain(then)
        .collect();
    let Some(mut state) = locked.and_then(|r| r.get::<_, String>(0).parse::<State>().ok()) else {
        // As on SQLite: a step finds nothing to apply to; history alone cannot be written
        // for a request that does not exist (SQLite's foreign key refuses it).
        return match (transitions.is_empty(), writes.is_empty()) {
            (false, _) => Ok(false),
            (true, true) => Ok(true),
            (true, false) => Err(format!("request {id} does not exist").into()),
        };
    };
    let deferred = transitions.len() - usize::from(then.is_some());
    let mut froms = Vec::with_capacity(transitions.len());
    for (i, t) in transitions.iter().enumerate() {
        if !t.from.contains(&state) {
            if i < deferred {
                return Err(format!(
                    "request {id}: its deferred step `{}` found it {state}",
                    t.step
                )
                .into());
            }
            return Ok(false);
        }
        froms.push(state);
        state = t.to;
    }
    let mut froms = froms.into_iter();
    let mut appends = Appends::default();
    let mut moves = Vec::new();
    for w in writes {
        match w {
            RequestWrite::Entry(entry) => {
                appends.history(entry)?;
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
                    let actor = crate::store::requests::approval_actor(approver, by.as_deref());
                    appends.audit(&actor, "approval", &detail);
                }
            }
            RequestWrite::Transition(t) => moves.push(transition(
                &mut appends,
                t,
                froms.next().expect("checked above"),
            )?),
        }
    }
    if let Some(t) = then {
        moves.push(transition(
            &mut appends,
            t,
            froms.next().expect("checked above"),
        )?);
    }
    // The transitions in turn, as one `UPDATE` (one new row version, not one each): the last
    // one's state and decision, the latest reason and expiry any of them set.
    let moved = async {
        let Some((last, at)) = moves.last() else {
            return Fallible::Ok(());
        };
        let reason = moves.iter().rev().find_map(|(t, _)| t.reason.as_ref());
        let expires_at = moves.iter().rev().find_map(|(t, _)| t.expires_at);
        tx.run(
            "UPDATE requests SET state = $2, decision = $3, reason = COALESCE($4, reason),
                 expires_at = COALESCE($5, expires_at), updated_at = $6
             WHERE id = $1",
            &[
                &id,
                &last.to.as_str(),
                &last.decision,
                &reason,
                &expires_at,
                at,
            ],
        )
        .await?;
        Ok(())
    };
    futures_util::try_join!(moved, appends.write(tx, Some(id)))?;
    Ok(true)
}

/// Transition `t` from `from` now: its history entry and audit line go with `appends`; the
/// state change to make is returned, with its time.
fn transition<'t>(
    appends: &mut Appends,
    t: &'t Transition,
    from: State,
) -> Fallible<(&'t Transition, i64)> {
    let now = now_ms();
    appends.history(&HistoryEntry {
        at: now,
        step: t.step.to_string(),
        event: HistoryEvent::Transition {
            from: Some(from),
            to: t.to,
            actor: t.actor.clone(),
            reason: t.shown_reason(),
        },
    })?;
    let detail = serde_json::json!({
        "from": from.as_str(), "to": t.to.as_str(), "reason": t.shown_reason(),
    });
    appends.audit(&t.actor, t.step, &detail);
    Ok((t, now))
}

/// What one transaction appends to a request's history and to the audit log, each written
/// by one statement however many entries it holds (one round trip for both: they are sent
/// together), rather than one statement and round trip per entry.
#[derive(Default)]
pub(super) struct Appends {
    history: Vec<String>,
    actors: Vec<String>,
    actions: Vec<String>,
    details: Vec<String>,
}

impl Appends {
    pub(super) fn history(&mut self, entry: &HistoryEntry) -> Fallible<()> {
        self.history.push(serde_json::to_string(entry)?);
        Ok(())
    }

    pub(super) fn audit(&mut self, actor: &str, action: &str, detail: &serde_json::Value) {
        self.actors.push(actor.to_string());
        self.actions.push(action.to_string());
        self.details.push(detail.to_string());
    }

    /// Writes them, the history to request `id`'s (which must then be given), the audit
    /// lines about it.
    pub(super) async fn write(
        &self,
        client: &(impl Prepared + Sync),
        id: Option<&str>,
    ) -> Fallible<()> {
        let history = async {
            if self.history.is_empty() {
                return Fallible::Ok(());
            }
            let id = id.ok_or("history entries for no request")?;
            client
                .run(
                    "INSERT INTO request_history (request_id, seq, entry)
                     SELECT $1::text, last.seq + new.n, new.entry
                     FROM unnest($2::text[]) WITH ORDINALITY AS new (entry, n),
                          (SELECT COALESCE(MAX(seq), 0) AS seq FROM request_history
                           WHERE request_id = $1::text) last",
                    &[&id, &self.history],
                )
                .await?;
            Ok(())
        };
        let audit = async {
            if self.actors.is_empty() {
                return Fallible::Ok(());
            }
            client
                .run(
                    "INSERT INTO audit_log (at, actor, action, request_id, detail)
                     SELECT $1, new.actor, new.action, $2, new.detail
                     FROM unnest($3::text[], $4::text[], $5::text[])
                          WITH ORDINALITY AS new (actor, action, detail, n)
                     ORDER BY new.n",
                    &[&now_ms(), &id, &self.actors, &self.actions, &self.details],
                )
                .await?;
            Ok(())
        };
        futures_util::try_join!(history, audit)?;
        Ok(())
    }
}

pub(super) async fn with_history(tx: &Transaction<'_>, id: &str) -> Fallible<Option<WithHistory>> {
    // Both reads in one round trip.
    let sql = format!("SELECT {COLUMNS} FROM requests WHERE id = $1");
    let params: [&(dyn ToSql + Sync); 1] = [&id];
    let (row, history) = futures_util::try_join!(
        tx.row_opt(&sql, &params),
        tx.rows(
            "SELECT entry FROM request_history WHERE request_id = $1 ORDER BY seq",
            &params,
        ),
    )?;
    let Some(row) = row else { return Ok(None) };
    let record = to_record(&row)?;
    let history = history.iter().map(to_entry).collect::<Fallible<Vec<_>>>()?;
    Ok(Some((record, history)))
}

pub(super) fn to_record(row: &tokio_postgres::Row) -> Fallible<RequestRecord> {
    let fields: String = row.try_get(3)?;
    let state: String = row.try_get(4)?;
    Ok(RequestRecord {
        id: row.try_get(0)?,
        flow: row.try_get(1)?,
        requester: row.try_get(2)?,
        fields: serde_json::from_str(&fields).map_err(|e| format!("column fields: {e}"))?,
        state: state.parse().map_err(|e| format!("column state: {e}"))?,
        decision: row.try_get(5)?,
        reason: row.try_get(6)?,
        created_by: row.try_get(7)?,
        duration: row
            .try_get::<_, Option<i64>>(8)?
            .map(|s| Duration::from_secs(s as u64)),
        expires_at: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
        requester_profile: row.try_get(12)?,
    })
}

pub(super) fn to_entry(row: &tokio_postgres::Row) -> Fallible<HistoryEntry> {
    let text: String = row.try_get(0)?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("a history entry: {e}"))?)
}

pub(super) fn to_audit(row: &tokio_postgres::Row) -> Fallible<AuditEntry> {
    let detail: String = row.try_get(5)?;
    Ok(AuditEntry {
        seq: row.try_get(0)?,
        at: row.try_get(1)?,
        actor: row.try_get(2)?,
        action: row.try_get(3)?,
        request_id: row.try_get(4)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    })
}

//! Requests, their history and the audit log on PostgreSQL: [`Backend`] for [`PgStore`],
//! the same operations as SQLite's `store::requests` with the same meaning, each one
//! transaction.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::{Fallible, PgStore, Prepared};
use crate::store::backend::{
    Backend, CLAIM_LEASE_MS, ExpiryLease, Hold, Step, StoreCounts, WithHistory,
};
use crate::store::outbox::Notification;
use crate::store::requests::{
    AuditEntry, FirstWrite, HistoryEntry, HistoryEvent, NewRequest, RequestRecord, RequestWrite,
    State, Transition, now_ms,
};
use crate::store::sessions::{SessionRules, StoredSession};
use crate::store::{StoreChange, StoreError, StoredIdentity, UserRecord};

pub(super) const COLUMNS: &str = "id, flow, requester, fields, state, decision, reason, created_by,
    duration_seconds, expires_at, created_at, updated_at, requester_profile";

impl PgStore {
    pub(super) async fn query<R>(
        &self,
        operation: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        row: impl Fn(&tokio_postgres::Row) -> Fallible<R>,
    ) -> Result<Vec<R>, StoreError> {
        let client = self.client(operation).await?;
        let done: Fallible<Vec<R>> = async {
            let rows = client.rows(sql, params).await?;
            rows.iter().map(row).collect()
        }
        .await;
        done.map_err(|e| self.error(operation, e))
    }
}

#[async_trait]
impl Backend for PgStore {
    fn schema_version(&self) -> usize {
        PgStore::schema_version(self)
    }

    async fn insert_request(
        &self,
        new: NewRequest,
    ) -> Result<Result<RequestRecord, String>, StoreError> {
        let op = "store a new request";
        self.counts.wrote();
        let client = self.client(op).await?;
        let inserted = insert(&client, new).await.map_err(|e| self.error(op, e))?;
        self.counts.committed();
        Ok(inserted)
    }

    fn label(&self) -> &std::path::Path {
        &self.label
    }

    fn shared(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<(), StoreError> {
        PgStore::ping(self).await
    }

    async fn commit_step(&self, step: Step) -> Result<Option<Option<WithHistory>>, StoreError> {
        let op = format!("write request {}", step.id);
        self.counts.wrote();
        let mut client = self.client(&op).await?;
        let done: Fallible<Option<Option<WithHistory>>> = async {
            let tx = client.transaction().await?;
            let then = step.then.as_ref();
            if !write(&tx, &step.id, &step.writes, then, step.hold).await? {
                return Ok(None);
            }
            if let Some(router) = &step.notify {
                super::outbox::enqueue(&tx, &step.id, &step.writes, then, router.as_ref()).await?;
            }
            let read = if step.read_back {
                with_history(&tx, &step.id).await?
            } else {
                None
            };
            self.counts.committed();
            tx.commit().await?;
            Ok(Some(read))
        }
        .await;
        done.map_err(|e| self.error(op, e))
    }

    async fn claim_request(&self, id: &str, until: i64) -> Result<bool, StoreError> {
        self.claim(id, until).await
    }

    async fn renew_request(&self, id: &str, until: i64) -> Result<(), StoreError> {
        self.renew(id, until).await
    }

    async fn release_request(&self, id: &str) -> Result<(), StoreError> {
        self.release(id).await
    }

    async fn unclaimed_in(&self, state: State, now: i64) -> Result<Vec<String>, StoreError> {
        self.unclaimed(state, now).await
    }

    async fn lease_expired(&self, now: i64) -> Result<ExpiryLease, StoreError> {
        Ok(ExpiryLease::leased(
            PgStore::lease_expired(self, now).await?,
        ))
    }

    async fn outbox_take(
        &self,
        channel: &str,
        now: i64,
        limit: usize,
        lease_until: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        PgStore::outbox_take(self, channel, now, limit, lease_until).await
    }

    async fn outbox_next_due(&self, channel: &str) -> Result<Option<i64>, StoreError> {
        PgStore::outbox_next_due(self, channel).await
    }

    async fn outbox_delivered(&self, seq: i64) -> Result<(), StoreError> {
        PgStore::outbox_delivered(self, seq).await
    }

    async fn outbox_retry_at(&self, seq: i64, next_at: i64, error: &str) -> Result<(), StoreError> {
        PgStore::outbox_retry_at(self, seq, next_at, error).await
    }

    async fn outbox_give_up(
        &self,
        n: &Notification,
        attempts: u32,
        error: &str,
    ) -> Result<(), StoreError> {
        PgStore::outbox_give_up(self, n, attempts, error).await
    }

    async fn outbox_depth(&self) -> Result<Vec<(String, u64)>, StoreError> {
        PgStore::outbox_depth(self).await
    }

    fn counts(&self) -> StoreCounts {
        let (writes, commits) = self.counts.get();
        StoreCounts {
            writes,
            commits,
            identity_lookups_from_memory: 0,
        }
    }

    async fn request(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM requests WHERE id = $1");
        let mut found = self
            .query("read a request", &sql, &[&id], to_record)
            .await?;
        Ok(found.pop())
    }

    async fn request_with_history(&self, id: &str) -> Result<Option<WithHistory>, StoreError> {
        let op = "read a request";
        let mut client = self.client(op).await?;
        // One snapshot for both reads: the history matches the row.
        let done: Fallible<Option<WithHistory>> = async {
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let found = with_history(&tx, id).await?;
            tx.commit().await?;
            Ok(found)
        }
        .await;
        done.map_err(|e| self.error(op, e))
    }

    async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.query(
            "read a request's history",
            "SELECT entry FROM request_history WHERE request_id = $1 ORDER BY seq",
            &[&id],
            to_entry,
        )
        .await
    }

    async fn list(
        &self,
        state: Option<State>,
        requester: Option<&str>,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM requests
             WHERE ($1::text IS NULL OR state = $1)
               AND ($2::text IS NULL OR lower(requester) = lower($2))
             ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT 1000"
        );
        let state = state.map(State::as_str);
        self.query("list requests", &sql, &[&state, &requester], to_record)
            .await
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        request_id: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let op = "write the audit log";
        let client = self.client(op).await?;
        let mut appends = Appends::default();
        appends.audit(actor, action, detail);
        appends
            .write(&client, request_id)
            .await
            .map_err(|e| self.error(op, e))
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.query(
            "read the audit log",
            "SELECT seq, at, actor, action, request_id, detail FROM
             (SELECT * FROM audit_log ORDER BY seq DESC LIMIT $1) newest ORDER BY seq",
            &[&(limit as i64)],
            to_audit,
        )
        .await
    }

    async fn audit_page(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.query(
            "read the audit log",
            "SELECT seq, at, actor, action, request_id, detail FROM audit_log
             WHERE $1::bigint IS NULL OR seq < $1 ORDER BY seq DESC LIMIT $2",
            &[&before, &(limit as i64)],
            to_audit,
        )
        .await
    }

    async fn ids_in(&self, state: State) -> Result<Vec<String>, StoreError> {
        self.query(
            "list requests to resume",
            "SELECT id FROM requests WHERE state = $1 ORDER BY created_at",
            &[&state.as_str()],
            |r| Ok(r.get(0)),
        )
        .await
    }

    async fn expired(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.query(
            "read expiring requests",
            "SELECT id FROM requests WHERE state = 'escalated' AND expires_at <= $1
             ORDER BY expires_at",
            &[&now],
            |r| Ok(r.get(0)),
        )
        .await
    }

    async fn next_expiry(&self, now: i64) -> Result<Option<i64>, StoreError> {
        let mut next = self
            .query(
                "read the next expiry",
                "SELECT MIN(expires_at) FROM requests
                 WHERE state = 'escalated' AND expires_at > $1",
                &[&now],
                |r| Ok(r.get::<_, Option<i64>>(0)),
            )
            .await?;
        Ok(next.pop().flatten())
    }

    async fn count_by_state(&self) -> Result<Vec<(State, u64)>, StoreError> {
        let counted: Vec<(String, i64)> = self
            .query(
                "count requests by state",
                "SELECT state, COUNT(*) FROM requests GROUP BY state",
                &[],
                |r| Ok((r.get(0), r.get(1))),
            )
            .await?;
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

    async fn lookup_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<Option<StoredIdentity>, StoreError> {
        PgStore::lookup_identity(self, email, service, service_id).await
    }

    async fn persist_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
        user_id: &str,
    ) -> Result<StoredIdentity, StoreError> {
        PgStore::persist_identity(self, email, service, service_id, user_id).await
    }

    async fn identities_of(&self, email: &str) -> Result<Vec<StoredIdentity>, StoreError> {
        PgStore::identities_of(self, email).await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        PgStore::users(self).await
    }

    async fn user(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        PgStore::user(self, email).await
    }

    async fn delete_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<bool, StoreError> {
        PgStore::delete_identity(self, email, service, service_id).await
    }

    async fn delete_user(&self, email: &str) -> Result<bool, StoreError> {
        PgStore::delete_user(self, email).await
    }

    async fn apply(&self, changes: &[StoreChange]) -> Result<(), StoreError> {
        PgStore::apply(self, changes).await
    }

    async fn session_open(
        &self,
        id_digest: &str,
        session: &StoredSession,
        rules: &SessionRules,
    ) -> Result<bool, StoreError> {
        PgStore::session_open(self, id_digest, session, rules).await
    }

    async fn session_read(&self, id_digest: &str) -> Result<Option<StoredSession>, StoreError> {
        PgStore::session_read(self, id_digest).await
    }

    async fn session_touch(&self, id_digest: &str, now: i64) -> Result<(), StoreError> {
        PgStore::session_touch(self, id_digest, now).await
    }

    async fn session_close(&self, id_digest: &str) -> Result<(), StoreError> {
        PgStore::session_close(self, id_digest).await
    }
}

/// SQLite's `requests::insert`, in one statement (atomic without a transaction, one round
/// trip): the request, its first history entry and its audit line. A retried idempotency key,
/// even one racing on another replica, meets the unique index and returns the first
/// request's id.
async fn insert(
    client: &(impl Prepared + Sync),
    new: NewRequest,
) -> Fallible<Result<RequestRecord, String>> {
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
                     claimed_until)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12)
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
            ],
        )
        .await?
        .try_get(0)?;
    if inserted == 0 {
        let row = client
            .row(
                "SELECT id FROM requests WHERE created_by = $1 AND idempotency_key = $2",
                &[&record.created_by, &idempotency_key],
            )
            .await?;
        return Ok(Err(row.try_get(0)?));
    }
    Ok(Ok(record))
}

/// SQLite's `requests::write`, with the request's row locked first: an operation on another
/// replica that moved it meanwhile has committed, and its state is what is checked. Then the
/// step's writes go in one round trip: its state changes, one statement appending all its
/// history entries, one all its audit lines.
async fn write(
    tx: &Transaction<'_>,
    id: &str,
    writes: &[RequestWrite],
    then: Option<&Transition>,
    hold: Hold,
) -> Fallible<bool> {
    // Locks the row, and renews or lets go the claim in the same statement (undone with
    // the rest when `then` is refused: the transaction rolls back).
    let until = match hold {
        Hold::Keep => None,
        Hold::Renew(until) => Some(Some(until)),
        Hold::Release => Some(None),
    };
    let locked = match until {
        None => {
            tx.row_opt(
                "SELECT state FROM requests WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
        }
        Some(until) => {
            tx.row_opt(
                "UPDATE requests SET claimed_until = $2 WHERE id = $1 RETURNING state",
                &[&id, &until],
            )
            .await?
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
                    reason,
                    count,
                    required,
                } = &entry.event
                {
                    let detail = serde_json::json!({
                        "count": count, "required": required, "reason": reason,
                    });
                    appends.audit(approver, "approval", &detail);
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
            reason: t.reason.clone(),
        },
    })?;
    let detail = serde_json::json!({
        "from": from.as_str(), "to": t.to.as_str(), "reason": t.reason,
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

async fn with_history(tx: &Transaction<'_>, id: &str) -> Fallible<Option<WithHistory>> {
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

fn to_entry(row: &tokio_postgres::Row) -> Fallible<HistoryEntry> {
    let text: String = row.try_get(0)?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("a history entry: {e}"))?)
}

fn to_audit(row: &tokio_postgres::Row) -> Fallible<AuditEntry> {
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

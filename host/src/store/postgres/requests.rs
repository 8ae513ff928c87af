//! Requests, their history and the audit log on PostgreSQL: [`Backend`] for [`PgStore`],
//! the same operations as SQLite's `store::requests` with the same meaning, each one
//! transaction.

use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::{Fallible, PgStore};
use crate::store::backend::{
    Backend, CLAIM_LEASE_MS, ExpiryLease, Hold, Step, StoreCounts, WithHistory,
};
use crate::store::outbox::Notification;
use crate::store::requests::{
    AuditEntry, HistoryEntry, HistoryEvent, NewRequest, RequestRecord, RequestWrite, State,
    Transition, now_ms,
};
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
            let rows = client.query(sql, params).await?;
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
        let mut client = self.client(op).await?;
        let done: Fallible<Result<RequestRecord, String>> = async {
            let tx = client.transaction().await?;
            let inserted = insert(&tx, new).await?;
            self.counts.committed();
            tx.commit().await?;
            Ok(inserted)
        }
        .await;
        done.map_err(|e| self.error(op, e))
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
        let client: &tokio_postgres::Client = &client;
        audit(client, actor, action, request_id, detail)
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
}

/// SQLite's `requests::insert`: a retried idempotency key, even one racing on another
/// replica, meets the unique index and returns the first request's id.
async fn insert(tx: &Transaction<'_>, new: NewRequest) -> Fallible<Result<RequestRecord, String>> {
    let now = now_ms();
    let record = RequestRecord {
        id: new.id,
        flow: new.flow,
        requester: new.requester,
        fields: new.fields,
        state: State::Requested,
        decision: "continue".into(),
        reason: None,
        created_by: new.created_by,
        duration: new.duration,
        expires_at: None,
        created_at: now,
        updated_at: now,
        requester_profile: new.requester_profile,
    };
    let fields = serde_json::Value::Object(record.fields.clone()).to_string();
    let duration = record.duration.map(|d| d.as_secs() as i64);
    // A concurrent insert with the same key waits here for the other transaction, then
    // inserts nothing (and the other's id is read below), or inserts if that one rolled back.
    let inserted = tx
        .execute(
            "INSERT INTO requests (id, flow, requester, fields, state, decision, created_by,
                 idempotency_key, duration_seconds, created_at, updated_at, requester_profile,
                 claimed_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12)
             ON CONFLICT (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL
             DO NOTHING",
            &[
                &record.id,
                &record.flow,
                &record.requester,
                &fields,
                &record.state.as_str(),
                &record.decision,
                &record.created_by,
                &new.idempotency_key,
                &duration,
                &now,
                &record.requester_profile,
                // Claimed by the replica storing it, whose request step runs next.
                &(now + CLAIM_LEASE_MS),
            ],
        )
        .await?;
    if inserted == 0 {
        let row = tx
            .query_one(
                "SELECT id FROM requests WHERE created_by = $1 AND idempotency_key = $2",
                &[&record.created_by, &new.idempotency_key],
            )
            .await?;
        return Ok(Err(row.get(0)));
    }
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
    append_history(tx, &record.id, &entry).await?;
    let detail = serde_json::json!({ "flow": record.flow, "requester": record.requester });
    audit(tx, &record.created_by, "request", Some(&record.id), &detail).await?;
    Ok(Ok(record))
}

/// SQLite's `requests::write`, with the request's row locked first: an operation on another
/// replica that moved it meanwhile has committed, and its state is what is checked.
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
            tx.query_opt(
                "SELECT state FROM requests WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
        }
        Some(until) => {
            tx.query_opt(
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
    for w in writes {
        match w {
            RequestWrite::Entry(entry) => {
                append_history(tx, id, entry).await?;
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
                    audit(tx, approver, "approval", Some(id), &detail).await?;
                }
            }
            RequestWrite::Transition(t) => {
                write_transition(tx, id, t, froms.next().expect("checked above")).await?
            }
        }
    }
    if let Some(t) = then {
        write_transition(tx, id, t, froms.next().expect("checked above")).await?;
    }
    Ok(true)
}

async fn write_transition(
    tx: &Transaction<'_>,
    id: &str,
    t: &Transition,
    from: State,
) -> Fallible<()> {
    let now = now_ms();
    tx.execute(
        "UPDATE requests SET state = $2, decision = $3, reason = COALESCE($4, reason),
             expires_at = COALESCE($5, expires_at), updated_at = $6
         WHERE id = $1",
        &[
            &id,
            &t.to.as_str(),
            &t.decision,
            &t.reason,
            &t.expires_at,
            &now,
        ],
    )
    .await?;
    let entry = HistoryEntry {
        at: now,
        step: t.step.to_string(),
        event: HistoryEvent::Transition {
            from: Some(from),
            to: t.to,
            actor: t.actor.clone(),
            reason: t.reason.clone(),
        },
    };
    append_history(tx, id, &entry).await?;
    let detail = serde_json::json!({
        "from": from.as_str(), "to": t.to.as_str(), "reason": t.reason,
    });
    audit(tx, &t.actor, t.step, Some(id), &detail).await
}

pub(super) async fn append_history(
    tx: &Transaction<'_>,
    id: &str,
    entry: &HistoryEntry,
) -> Fallible<()> {
    let json = serde_json::to_string(entry)?;
    tx.execute(
        "INSERT INTO request_history (request_id, seq, entry)
         VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM request_history
                      WHERE request_id = $1), $2)",
        &[&id, &json],
    )
    .await?;
    Ok(())
}

pub(super) async fn audit(
    client: &(impl tokio_postgres::GenericClient + Sync),
    actor: &str,
    action: &str,
    request_id: Option<&str>,
    detail: &serde_json::Value,
) -> Fallible<()> {
    client
        .execute(
            "INSERT INTO audit_log (at, actor, action, request_id, detail)
             VALUES ($1, $2, $3, $4, $5)",
            &[&now_ms(), &actor, &action, &request_id, &detail.to_string()],
        )
        .await?;
    Ok(())
}

async fn with_history(tx: &Transaction<'_>, id: &str) -> Fallible<Option<WithHistory>> {
    let row = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM requests WHERE id = $1"),
            &[&id],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let record = to_record(&row)?;
    let history = tx
        .query(
            "SELECT entry FROM request_history WHERE request_id = $1 ORDER BY seq",
            &[&id],
        )
        .await?
        .iter()
        .map(to_entry)
        .collect::<Fallible<Vec<_>>>()?;
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

//! [`Backend`] for [`PgStore`]: each operation one transaction, with the meaning SQLite's
//! has (`store::backend`). The requests' SQL is in [`super::requests`], the outbox's in
//! [`super::outbox`], the sessions' in [`super::sessions`].

use async_trait::async_trait;
use tokio_postgres::types::ToSql;

use super::requests::{
    Appends, COLUMNS, insert, to_audit, to_entry, to_record, with_history, write,
};
use super::{Fallible, PgStore, Prepared};
use crate::store::backend::{Backend, ClaimId, ExpiryLease, Step, StoreCounts, WithHistory};
use crate::store::outbox::Notification;
use crate::store::requests::{
    AuditEntry, Cursor, HistoryEntry, ListChunk, ListQuery, NewRequest, RequestRecord, State,
};
use crate::store::sessions::{SessionRules, StoredSession};
use crate::store::{StoreChange, StoreError, StoredIdentity, UserRecord};

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

    async fn request_for_key(
        &self,
        created_by: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let ids = self
            .query(
                "look up an idempotency key",
                super::requests::FOR_KEY,
                &[&created_by, &key],
                |row| Ok(row.try_get::<_, String>(0)?),
            )
            .await?;
        Ok(ids.into_iter().next())
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

    async fn claim_request(
        &self,
        id: &str,
        claim: ClaimId,
        until: i64,
    ) -> Result<bool, StoreError> {
        self.claim(id, claim, until).await
    }

    async fn renew_request(
        &self,
        id: &str,
        claim: ClaimId,
        until: i64,
    ) -> Result<bool, StoreError> {
        self.renew(id, claim, until).await
    }

    async fn release_request(&self, id: &str, claim: ClaimId) -> Result<(), StoreError> {
        self.release(id, claim).await
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

    async fn outbox_hand_back(
        &self,
        seqs: &[i64],
        held_until: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        PgStore::outbox_hand_back(self, seqs, held_until, now).await
    }

    async fn outbox_delivered(&self, n: &Notification) -> Result<(), StoreError> {
        PgStore::outbox_delivered(self, n).await
    }

    async fn outbox_retry_at(
        &self,
        n: &Notification,
        next_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        PgStore::outbox_retry_at(self, n, next_at, error).await
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

    async fn list(&self, query: &ListQuery) -> Result<ListChunk, StoreError> {
        // Bounds as row values, which an index scan of `requests_by_creation` runs between;
        // no cursor is a bound past every row (`created_at` is never `i64::MAX`).
        let (before_at, before_id) = match &query.before {
            Some(cursor) => (cursor.created_at, cursor.id.as_str()),
            None => (i64::MAX, ""),
        };
        // The window's end is read first and bounds the rows, as on SQLite (`requests::list`):
        // a request filed between the two statements is one more row of this window, not a
        // shift of the end onto a row this window gave.
        let window_end = match query.window {
            0 => None,
            window => self
                .query(
                    "list requests",
                    "SELECT created_at, id FROM requests
                     WHERE (created_at, id COLLATE \"C\") < ($1::bigint, $2::text COLLATE \"C\")
                     ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT 1 OFFSET $3",
                    &[
                        &before_at,
                        &before_id,
                        &i64::try_from(window - 1).unwrap_or(i64::MAX),
                    ],
                    |row| {
                        Ok(Cursor {
                            created_at: row.try_get(0)?,
                            id: row.try_get(1)?,
                        })
                    },
                )
                .await?
                .into_iter()
                .next(),
        };
        let (end_at, end_id) = match &window_end {
            Some(cursor) => (cursor.created_at, cursor.id.as_str()),
            None => (i64::MIN, ""),
        };
        // The window is a walk of `requests_by_creation`; the filters are tried on its rows.
        let sql = format!(
            "SELECT {COLUMNS} FROM requests
             WHERE (created_at, id COLLATE \"C\") < ($4::bigint, $5::text COLLATE \"C\")
               AND (created_at, id COLLATE \"C\") >= ($9::bigint, $10::text COLLATE \"C\")
               AND ($1::text IS NULL OR state = $1)
               AND ($2::text IS NULL OR lower(requester) = lower($2))
               AND ($3::text IS NULL OR flow = $3)
               AND ($7::text[] IS NULL OR state <> 'pending' OR lower(requester) = lower($8)
                    OR flow = ANY($7))
             ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $6"
        );
        let state = query.state.map(State::as_str);
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let (pending_flows, pending_requester) = match &query.pending_only {
            Some(only) => (Some(only.flows.clone()), Some(only.requester.as_str())),
            None => (None, None),
        };
        let rows = self
            .query(
                "list requests",
                &sql,
                &[
                    &state,
                    &query.requester,
                    &query.flow,
                    &before_at,
                    &before_id,
                    &limit,
                    &pending_flows,
                    &pending_requester,
                    &end_at,
                    &end_id,
                ],
                |row| {
                    let at = Cursor {
                        created_at: row.try_get(10)?,
                        id: row.try_get(0)?,
                    };
                    Ok((at, to_record(row)))
                },
            )
            .await?;
        Ok(ListChunk::of(rows, window_end))
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

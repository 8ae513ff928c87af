//! Console sessions on PostgreSQL (SQLite's `store::sessions`, the same rows and rules).
//! Every replica reads and writes the one table, so a browser signed in on one replica is
//! signed in on all. Sign-ins are serialized by a transaction-scoped advisory lock: two
//! replicas opening sessions for one token at once still keep its cap and the total.

use super::{Fallible, PgStore, Prepared};
use crate::store::StoreError;
use crate::store::sessions::{SessionRules, StoredSession};

/// Migration 8 (PostgreSQL).
pub(super) const MIGRATION: &str = "CREATE TABLE console_sessions (
        id_digest    TEXT PRIMARY KEY,
        token_digest TEXT NOT NULL,
        csrf         TEXT NOT NULL,
        created_at   BIGINT NOT NULL,
        last_used    BIGINT NOT NULL
    );
    CREATE INDEX console_sessions_by_token ON console_sessions (token_digest, created_at);";

/// Any number, the same in every warden: the advisory lock sign-ins take.
const SIGN_IN_LOCK: i64 = 0x7761_7264_656f;

impl PgStore {
    pub async fn session_open(
        &self,
        id_digest: &str,
        session: &StoredSession,
        rules: &SessionRules,
    ) -> Result<bool, StoreError> {
        let op = "open a console session";
        let mut client = self.client(op).await?;
        let now = session.created_at;
        let done: Fallible<bool> = async {
            let tx = client.transaction().await?;
            tx.run("SELECT pg_advisory_xact_lock($1)", &[&SIGN_IN_LOCK])
                .await?;
            tx.run(
                "DELETE FROM console_sessions WHERE created_at <= $1 OR last_used <= $2",
                &[&rules.created_by(now), &rules.used_by(now)],
            )
            .await?;
            // The token's newest `per_token - 1` stay; the new one makes `per_token`.
            let keep = rules.per_token.saturating_sub(1) as i64;
            tx.run(
                "DELETE FROM console_sessions WHERE id_digest IN (
                     SELECT id_digest FROM console_sessions WHERE token_digest = $1
                     ORDER BY created_at DESC, id_digest OFFSET $2)",
                &[&session.token_digest, &keep],
            )
            .await?;
            let held: i64 = tx
                .row("SELECT count(*) FROM console_sessions", &[])
                .await?
                .get(0);
            if held as usize >= rules.total {
                tx.commit().await?;
                return Ok(false);
            }
            tx.run(
                "INSERT INTO console_sessions (id_digest, token_digest, csrf, created_at, last_used)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &id_digest,
                    &session.token_digest,
                    &session.csrf,
                    &session.created_at,
                    &session.last_used,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        }
        .await;
        done.map_err(|e| self.error(op, e))
    }

    pub async fn session_read(&self, id_digest: &str) -> Result<Option<StoredSession>, StoreError> {
        let op = "read a console session";
        let client = self.client(op).await?;
        let row = client
            .row_opt(
                "SELECT token_digest, csrf, created_at, last_used FROM console_sessions
                 WHERE id_digest = $1",
                &[&id_digest],
            )
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(row.map(|r| StoredSession {
            token_digest: r.get(0),
            csrf: r.get(1),
            created_at: r.get(2),
            last_used: r.get(3),
        }))
    }

    pub async fn session_touch(&self, id_digest: &str, now: i64) -> Result<(), StoreError> {
        let op = "record a console session's use";
        let client = self.client(op).await?;
        client
            .run(
                "UPDATE console_sessions SET last_used = $2 WHERE id_digest = $1",
                &[&id_digest, &now],
            )
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(())
    }

    pub async fn session_close(&self, id_digest: &str) -> Result<(), StoreError> {
        let op = "close a console session";
        let client = self.client(op).await?;
        client
            .run(
                "DELETE FROM console_sessions WHERE id_digest = $1",
                &[&id_digest],
            )
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(())
    }
}

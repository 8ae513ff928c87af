//! The notification outbox on PostgreSQL (SQLite's `store::outbox`, the same rows and
//! meaning). Replicas share it, so a channel's rows are *taken* to be delivered: rows due are
//! locked with `FOR UPDATE SKIP LOCKED` (a row another replica is taking is skipped, not
//! waited for) and moved past a lease in the same statement, so no other replica takes them
//! while this one delivers. Delivered, they are deleted; failed, they are given back with
//! their next attempt's time. A replica that dies while delivering leaves its rows to come
//! due again when the lease runs out: delivered at least once, as on SQLite after a crash.

use deadpool_postgres::Transaction;

use super::requests::{Appends, COLUMNS, to_record};
use super::{Fallible, PgStore, Prepared};
use crate::config::NotifyEvent;
use crate::store::StoreError;
use crate::store::outbox::{self, Notification, Router, Unreadable, given_up};
use crate::store::requests::{HistoryEntry, RequestWrite, Transition};

const NOTIFICATION: &str =
    "seq, delivery_id, request_id, channel, event, body, attempts, created_at, next_at";

/// SQLite's `outbox::enqueue`, in the step's transaction.
pub(super) async fn enqueue(
    tx: &Transaction<'_>,
    id: &str,
    writes: &[RequestWrite],
    then: Option<&Transition>,
    router: &dyn Router,
) -> Fallible<usize> {
    if !outbox::notable(writes, then) {
        return Ok(0);
    }
    let sql = format!("SELECT {COLUMNS} FROM requests WHERE id = $1");
    let Some(row) = tx.row_opt(&sql, &[&id]).await? else {
        return Ok(0);
    };
    let rec = to_record(&row)?;
    let rows = outbox::rows(&rec, writes, then, &|f, e| router.route(f, e));
    for row in &rows {
        tx.run(
            "INSERT INTO outbox (delivery_id, request_id, channel, event, body, next_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
            &[
                &row.delivery_id,
                &rec.id,
                &row.channel,
                &row.event.as_str(),
                &row.body,
                &row.at,
            ],
        )
        .await?;
    }
    Ok(rows.len())
}

fn to_notification(row: &tokio_postgres::Row) -> Fallible<Notification> {
    let event: String = row.try_get(4)?;
    let body: String = row.try_get(5)?;
    Ok(Notification {
        seq: row.try_get(0)?,
        delivery_id: row.try_get(1)?,
        request_id: row.try_get(2)?,
        channel: row.try_get(3)?,
        event: NotifyEvent::parse(&event).ok_or_else(|| format!("unknown event `{event}`"))?,
        body: serde_json::from_str(&body).map_err(|e| format!("column body: {e}"))?,
        attempts: u32::try_from(row.try_get::<_, i64>(6)?).unwrap_or(u32::MAX),
        created_at: row.try_get(7)?,
        held_until: row.try_get(8)?,
    })
}

impl PgStore {
    pub async fn outbox_take(
        &self,
        channel: &str,
        now: i64,
        limit: usize,
        lease_until: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        let sql = format!(
            "UPDATE outbox SET next_at = $4 WHERE seq IN (
                 SELECT seq FROM outbox WHERE channel = $1 AND next_at <= $2
                 ORDER BY next_at, seq LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING {NOTIFICATION}"
        );
        let rows = self
            .query(
                "take notifications from the outbox",
                &sql,
                &[&channel, &now, &(limit as i64), &lease_until],
                |row| {
                    Ok(to_notification(row).map_err(|e| Unreadable {
                        seq: row.try_get(0).unwrap_or_default(),
                        delivery_id: row.try_get(1).unwrap_or_default(),
                        request_id: row.try_get(2).unwrap_or_default(),
                        channel: row.try_get(3).unwrap_or_default(),
                        error: e.to_string(),
                    }))
                },
            )
            .await?;
        let (mut taken, mut unreadable) = (Vec::new(), Vec::new());
        for row in rows {
            match row {
                Ok(n) => taken.push(n),
                Err(u) => unreadable.push(u),
            }
        }
        if !unreadable.is_empty() {
            self.give_up_unreadable(&unreadable).await?;
        }
        // Oldest first, as they were queued.
        taken.sort_by_key(|n| n.seq);
        Ok(taken)
    }

    /// SQLite's `outbox::give_up_unreadable`, for rows this replica has just taken.
    async fn give_up_unreadable(&self, unreadable: &[Unreadable]) -> Result<(), StoreError> {
        let op = "give up notifications that cannot be read";
        let mut client = self.client(op).await?;
        let done: Fallible<()> = async {
            let tx = client.transaction().await?;
            for u in unreadable {
                tracing::error!(channel = %u.channel, seq = u.seq, delivery = %u.delivery_id, "notification given up: its outbox row cannot be read: {}", u.error);
                tx.run("DELETE FROM outbox WHERE seq = $1", &[&u.seq])
                    .await?;
                let mut appends = Appends::default();
                appends.audit("warden", "notify-failed", &u.detail());
                appends.write(&tx, Some(&u.request_id)).await?;
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        done.map_err(|e| self.error(op, e))
    }

    pub async fn outbox_hand_back(
        &self,
        seqs: &[i64],
        held_until: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let op = "give notifications back to the outbox";
        let client = self.client(op).await?;
        client
            .run(
                "UPDATE outbox SET next_at = $2 WHERE seq = ANY($1) AND next_at = $3",
                &[&seqs, &now, &held_until],
            )
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(())
    }

    pub async fn outbox_next_due(&self, channel: &str) -> Result<Option<i64>, StoreError> {
        let mut next = self
            .query(
                "read the outbox",
                "SELECT MIN(next_at) FROM outbox WHERE channel = $1",
                &[&channel],
                |r| Ok(r.try_get::<_, Option<i64>>(0)?),
            )
            .await?;
        Ok(next.pop().flatten())
    }

    pub async fn outbox_delivered(&self, n: &Notification) -> Result<(), StoreError> {
        let op = "record a notification delivered";
        let client = self.client(op).await?;
        client
            .run(
                "DELETE FROM outbox WHERE seq = $1 AND next_at = $2",
                &[&n.seq, &n.held_until],
            )
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(())
    }

    pub async fn outbox_retry_at(
        &self,
        n: &Notification,
        next_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let op = "record a notification attempt";
        let client = self.client(op).await?;
        client
            .run(
                "UPDATE outbox SET attempts = attempts + 1, next_at = $2, last_error = $3
                 WHERE seq = $1 AND next_at = $4",
                &[&n.seq, &next_at, &error, &n.held_until],
            )
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(())
    }

    pub async fn outbox_give_up(
        &self,
        n: &Notification,
        attempts: u32,
        error: &str,
    ) -> Result<(), StoreError> {
        let op = "record a notification given up";
        let mut client = self.client(op).await?;
        let (entry, detail): (HistoryEntry, _) = given_up(n, attempts, error);
        let done: Fallible<()> = async {
            let tx = client.transaction().await?;
            // Another replica gave it up first, or holds it now: nothing to record.
            if tx
                .run(
                    "DELETE FROM outbox WHERE seq = $1 AND next_at = $2",
                    &[&n.seq, &n.held_until],
                )
                .await?
                == 0
            {
                return Ok(());
            }
            // The request's row locked as a step's write locks it: history numbers each
            // entry one past the last, and two writers appending at once (another channel's
            // give-up, a step) would take the same number, the later failing. Not waited
            // on for long: a replica paused mid-write holds the lock as long as it is
            // paused, and this row is tried again once its hold runs out.
            tx.run("SET LOCAL lock_timeout = '5s'", &[]).await?;
            let exists = tx
                .row_opt(
                    "SELECT 1 FROM requests WHERE id = $1 FOR NO KEY UPDATE",
                    &[&n.request_id],
                )
                .await?;
            let mut appends = Appends::default();
            if exists.is_some() {
                appends.history(&entry)?;
            }
            appends.audit("warden", "notify-failed", &detail);
            appends.write(&tx, Some(&n.request_id)).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        done.map_err(|e| self.error(op, e))
    }

    pub async fn outbox_depth(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.query(
            "read the outbox",
            "SELECT channel, COUNT(*) FROM outbox GROUP BY channel ORDER BY channel COLLATE \"C\"",
            &[],
            |r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)? as u64)),
        )
        .await
    }
}

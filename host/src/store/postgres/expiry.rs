//! Expiries across replicas: each replica's sleeper finds the escalated requests whose time
//! has run out, and each must be deescalated (its hooks run, access removed) by one replica
//! only. A replica leases the ones it will handle with a session advisory lock per request,
//! on one connection it holds for the sweep, taken with `pg_try_advisory_lock` (the advisory
//! form of `FOR UPDATE SKIP LOCKED`: a request another replica holds is skipped, not waited
//! for). Row locks would not do: the sweep's hooks run for seconds, and the request's own
//! writes lock its row meanwhile.
//!
//! After taking a lease the request is read again, so one deescalated by another replica
//! between the first read and the lease is let go. A replica that dies holding leases loses
//! its connection, and with it the locks: the requests are taken over by the next sweep
//! elsewhere.

use deadpool_postgres::Object;

use super::{Fallible, PgStore, Prepared};
use crate::store::StoreError;

/// The first key of every expiry lease (the second is the request id's hash), apart from
/// the migrations' lock and anything else sharing the database.
const EXPIRY_LOCKS: i32 = 0x7764_6e31; // "wdn1"

/// How many expired requests one sweep leases at most.
const SWEEP_LIMIT: i64 = crate::store::backend::EXPIRY_SWEEP_LIMIT as i64;

/// Requests leased by one sweep; [`ExpirySweep::release`] gives them up. Dropped without
/// that, its connection is closed rather than returned to the pool, which releases them.
pub struct ExpirySweep {
    conn: Option<Object>,
    ids: Vec<String>,
    /// The store's URL, for errors.
    label: std::path::PathBuf,
}

impl PgStore {
    /// Leases escalated requests whose access ran out by `now` and no other replica holds.
    pub async fn lease_expired(&self, now: i64) -> Result<ExpirySweep, StoreError> {
        let op = "lease expired requests";
        let conn = self.client(op).await?;
        let leased: Fallible<Vec<String>> = async {
            let due = conn
                .rows(
                    "SELECT id FROM requests WHERE state = 'escalated' AND expires_at <= $1
                     ORDER BY expires_at LIMIT $2",
                    &[&now, &SWEEP_LIMIT],
                )
                .await?;
            let mut ids = Vec::new();
            for row in due {
                let id: String = row.get(0);
                let taken: bool = conn
                    .row(
                        "SELECT pg_try_advisory_lock($1, hashtext($2))",
                        &[&EXPIRY_LOCKS, &id],
                    )
                    .await?
                    .get(0);
                if !taken {
                    continue;
                }
                // Read after the lease: another replica may have finished it meanwhile.
                let still = conn
                    .row_opt(
                        "SELECT 1 FROM requests
                         WHERE id = $1 AND state = 'escalated' AND expires_at <= $2",
                        &[&id, &now],
                    )
                    .await?;
                if still.is_some() {
                    ids.push(id);
                } else {
                    conn.run(
                        "SELECT pg_advisory_unlock($1, hashtext($2))",
                        &[&EXPIRY_LOCKS, &id],
                    )
                    .await?;
                }
            }
            Ok(ids)
        }
        .await;
        match leased {
            Ok(ids) => Ok(ExpirySweep {
                conn: Some(conn),
                ids,
                label: self.label.clone(),
            }),
            Err(e) => {
                // It may hold some leases: closed, not pooled (as `Drop` does).
                drop(Object::take(conn));
                Err(self.error(op, e))
            }
        }
    }
}

impl ExpirySweep {
    /// The requests this replica now deescalates.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Gives up every lease (once the requests' deescalations are committed).
    pub async fn release(mut self) -> Result<(), StoreError> {
        let conn = self.conn.take().expect("released once");
        match conn.run("SELECT pg_advisory_unlock_all()", &[]).await {
            Ok(_) => Ok(()),
            Err(e) => {
                drop(Object::take(conn));
                let e = super::flatten(e.into());
                Err(StoreError::other(&self.label, "release expiry leases", e))
            }
        }
    }
}

impl Drop for ExpirySweep {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Out of the pool and dropped: the session ends and its locks with it.
            drop(Object::take(conn));
        }
    }
}

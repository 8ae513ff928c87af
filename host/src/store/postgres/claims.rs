//! Claims across replicas: SQLite's one process claims a request in memory
//! (`serve::claim`), but two replicas each hold their own memory, so on PostgreSQL an
//! operation also claims the request's row (`requests.claimed_until`) before any hook runs.
//! A claim taken by another replica and not run out refuses the operation (409, as a claim
//! held in the same process does); each of the operation's writes renews it, its last write
//! lets it go. Each claim has its own id (`requests.claim_id`), and every renewal and write
//! under a claim matches it: a replica whose claim ran out while it was paused finds its
//! request claimed by another, and its writes fail ([`crate::store::backend::ClaimLost`])
//! rather than change the request under the other's claim or let that claim go. A replica
//! that dies leaves its claims to run out
//! ([`crate::store::backend::CLAIM_LEASE_MS`]); then [`PgStore::unclaimed`] lists the
//! requests for another to resume.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{PgStore, Prepared};
use crate::store::StoreError;
use crate::store::backend::ClaimId;
use crate::store::requests::State;

#[derive(Default)]
pub(super) struct Counts {
    pub writes: AtomicU64,
    pub commits: AtomicU64,
}

impl Counts {
    pub fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
    pub fn committed(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> (u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.commits.load(Ordering::Relaxed),
        )
    }
}

impl PgStore {
    /// Claims `id` as `claim` until `until` unless another claim holds it past now; true
    /// when taken or when there is no such request. A row another transaction has locked is
    /// not waited for: it is held (another replica claiming it at this moment, or writing
    /// under its claim), so nothing is taken. Waiting would wait as long as that
    /// transaction stays open, which for a replica paused mid-write (SIGSTOP, a paused VM;
    /// its kernel still answers keepalives) is as long as the pause, and every replica's
    /// resumption of abandoned requests, and a starting replica, would wait with it.
    pub async fn claim(&self, id: &str, claim: ClaimId, until: i64) -> Result<bool, StoreError> {
        let op = format!("claim request {id}");
        let client = self.client(&op).await?;
        let now = crate::store::requests::now_ms();
        let row = client
            .row(
                "WITH free AS (
                     SELECT id FROM requests
                     WHERE id = $1 AND (claimed_until IS NULL OR claimed_until < $3)
                     FOR NO KEY UPDATE SKIP LOCKED),
                 taken AS (
                     UPDATE requests SET claimed_until = $2, claim_id = $4
                     WHERE id IN (SELECT id FROM free)
                     RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM taken)
                     OR NOT EXISTS (SELECT 1 FROM requests WHERE id = $1)",
                &[&id, &until, &now, &claim.0],
            )
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(row.get(0))
    }

    /// Holds `claim` on `id` until `until`; false when another claim holds it now (this
    /// one ran out and was taken over), or none does.
    pub async fn renew(&self, id: &str, claim: ClaimId, until: i64) -> Result<bool, StoreError> {
        let op = format!("renew the claim on request {id}");
        let client = self.client(&op).await?;
        let renewed = client
            .run(
                "UPDATE requests SET claimed_until = $2
                 WHERE id = $1 AND claim_id = $3 AND claimed_until IS NOT NULL",
                &[&id, &until, &claim.0],
            )
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(renewed > 0)
    }

    /// Lets `claim` on `id` go, if it still holds it.
    pub async fn release(&self, id: &str, claim: ClaimId) -> Result<(), StoreError> {
        let op = format!("release request {id}");
        let client = self.client(&op).await?;
        client
            .run(
                "UPDATE requests SET claimed_until = NULL, claim_id = NULL
                 WHERE id = $1 AND claim_id = $2",
                &[&id, &claim.0],
            )
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(())
    }

    /// Requests in `state` whose claim (if any) ran out by `now`, oldest first.
    pub async fn unclaimed(&self, state: State, now: i64) -> Result<Vec<String>, StoreError> {
        let op = "list requests to resume";
        let client = self.client(op).await?;
        let rows = client
            .rows(
                "SELECT id FROM requests
                 WHERE state = $1 AND (claimed_until IS NULL OR claimed_until < $2)
                 ORDER BY created_at",
                &[&state.as_str(), &now],
            )
            .await
            .map_err(|e| self.error(op, e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client("answer").await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| self.error("answer", e))?;
        Ok(())
    }
}

//! Requests no operation is finishing: those a stop, a crash or a failed write cut short
//! (resumed at start, and while warden runs: on one process's SQLite store, those whose
//! operation ended with a write the store refused; with replicas sharing the store, also
//! those whose replica died and whose claims ran out), and escalated access whose time ran
//! out (the expiry sleeper).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Unpoisoned;
use crate::store::backend::CLAIM_LEASE_MS;
use crate::store::requests::{State, Transition, now_ms};

use super::super::view::requester_of;
use super::{EXPIRY_POLL, Lifecycle, LifecycleError, WARDEN};

/// How soon access past its end is looked at again when its request was busy.
const BUSY_RETRY: Duration = Duration::from_millis(500);
/// Expiry sweeps running at once, at most. On PostgreSQL each holds a pooled connection
/// (its leases are session locks) until every deescalation it leased is done, hooks and
/// all; expiries arriving faster than deescalate hooks finish would otherwise take the
/// whole pool (16) and fail every other operation. Past this, expired access waits for a
/// sweep to end.
const MAX_EXPIRY_SWEEPS: usize = 4;
/// Deescalations one sweep runs at once: a sweep's 256 all at once would take as many
/// instance slots, and every API request's hook would wait behind them (and, its slot not
/// coming within its deadline, fail to a human), as would the rest of the sweep's own.
const DEESCALATIONS_PER_SWEEP: usize = 16;

/// What a sweep made of one expired request.
enum Swept {
    /// Its access removed, or not to be removed (no longer escalated), or its removal failed
    /// and was put off (`on_deescalate` failing: its end moved to the next try).
    Done,
    /// Another operation had it.
    Busy,
    /// The store failed, or the request does not read.
    Failed,
}

impl Lifecycle {
    /// After a restart: requests whose request step was cut short go to a human (their
    /// hook's answer was never recorded); approved requests that were not yet escalated are
    /// escalated. With replicas sharing the store, only requests no replica holds (their
    /// claim ran out: the replica died), and [`Lifecycle::expire_loop`] looks again now and
    /// then. Returns how many requests were touched.
    pub async fn recover(&self) -> Result<usize, LifecycleError> {
        let mut touched = 0;
        let now = now_ms();
        // Each request on its own: one that cannot be read (written by another version, or
        // damaged) is logged by its id and the others are resumed all the same.
        for id in self.store.unclaimed_in(State::Requested, now).await? {
            match self.to_a_human(&id).await {
                Ok(true) => touched += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(request = %id, "cannot resume request `{id}`: {e}"),
            }
        }
        let warden = self.warden.load_full();
        for id in self.store.unclaimed_in(State::Approved, now).await? {
            match self.escalate_approved(&warden, &id).await {
                Ok(true) => touched += 1,
                Ok(false) => {}
                Err(e) => tracing::error!(request = %id, "cannot resume request `{id}`: {e}"),
            }
        }
        Ok(touched)
    }

    /// A request whose request step was cut short, to a human; `false` when another
    /// operation has it.
    async fn to_a_human(&self, id: &str) -> Result<bool, LifecycleError> {
        let Some(mut claim) = self.claims.claim_stored(id).await? else {
            return Ok(false);
        };
        claim
                .transition(Transition {
                    from: &[State::Requested],
                    to: State::Pending,
                    decision: "continue".into(),
                    reason: Some(
                        "this request's step was cut short while its hooks ran (warden stopped, or the store refused a write); failing closed: a human decides"
                            .into(),
                    ),
                    actor: WARDEN.into(),
                    step: "request",
                    expires_at: None,
                })
                .await?;
        claim.finish().await?;
        Ok(true)
    }

    /// An approved request whose operation was cut short before it escalated, escalated;
    /// `false` when another operation has it or it moved on.
    async fn escalate_approved(
        &self,
        warden: &crate::Warden,
        id: &str,
    ) -> Result<bool, LifecycleError> {
        let Some(mut claim) = self.claims.claim_stored(id).await? else {
            return Ok(false);
        };
        let rec = self.record(id).await?;
        if rec.state != State::Approved {
            return Ok(false);
        }
        let requester = requester_of(&rec);
        self.escalate_step(warden, &mut claim, &rec, &requester)
            .await?;
        claim.finish().await?;
        Ok(true)
    }

    /// Resumes requests no operation holds in a passing state, at most once half a lease's
    /// length: with replicas sharing the store, those a dead replica left; on any store,
    /// those whose operation ended on a write the store refused (a full disk, a lock held
    /// past the busy timeout), which would otherwise wait for a restart: a request never
    /// reaching a human, or access granted by `on_escalate` with no end written.
    async fn resume_abandoned(&self) {
        let lease = Duration::from_millis(CLAIM_LEASE_MS as u64);
        {
            let mut last = self.last_resume.lock().unpoisoned();
            if last.elapsed() < lease / 2 {
                return;
            }
            *last = std::time::Instant::now();
        }
        match self.recover().await {
            Ok(0) => {}
            Ok(resumed) => tracing::info!(resumed, "resumed requests an operation left"),
            Err(e) => tracing::error!("resuming requests an operation left: {e}"),
        }
    }

    /// [`Self::resume_abandoned`] on a task of its own: what it resumes runs hooks (an
    /// approved request's `on_escalate`, one request after another), which must not hold up
    /// the expiries the sleeper runs.
    fn resume_beside(self: &Arc<Self>, tasks: &TaskTracker) {
        let lifecycle = self.clone();
        tasks.spawn(async move { lifecycle.resume_abandoned().await });
    }

    /// Deescalates requests as their access runs out, until `stop`: one sleeper over the
    /// earliest expiry in the store, so timers survive restarts (overdue ones fire at once).
    /// Replicas sharing the store lease the expired requests first, so each is deescalated
    /// by one of them (`store::postgres::expiry`).
    pub async fn expire_loop(self: Arc<Self>, tasks: TaskTracker, stop: CancellationToken) {
        let sweeps = Arc::new(tokio::sync::Semaphore::new(MAX_EXPIRY_SWEEPS));
        loop {
            let now = now_ms();
            // Every sweep busy: none leased now; the next to end wakes this loop.
            let Ok(sweep) = sweeps.clone().try_acquire_owned() else {
                self.resume_beside(&tasks);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = self.expiry_changed.notified() => {}
                    _ = tokio::time::sleep(EXPIRY_POLL) => {}
                }
                continue;
            };
            match self.store.lease_expired(now).await {
                Ok(lease) if lease.ids.is_empty() => {
                    if let Err(e) = lease.release().await {
                        tracing::error!("expiry sleeper: {e}");
                    }
                }
                Ok(lease) => {
                    let lifecycle = self.clone();
                    let stop = stop.clone();
                    tasks.spawn(async move {
                        let mut running = tokio::task::JoinSet::new();
                        let at_once =
                            Arc::new(tokio::sync::Semaphore::new(DEESCALATIONS_PER_SWEEP));
                        for id in lease.ids.clone() {
                            let lifecycle = lifecycle.clone();
                            let at_once = at_once.clone();
                            let stop = stop.clone();
                            running.spawn(async move {
                                let _turn = at_once.acquire_owned().await;
                                // A stop waits for removals begun, not for the rest of the
                                // sweep: those are made after the restart, or by another
                                // replica once the lease is given up.
                                if stop.is_cancelled() {
                                    return Swept::Busy;
                                }
                                match lifecycle.deescalate(&id).await {
                                    Ok(true) => Swept::Done,
                                    Ok(false) => Swept::Busy,
                                    Err(e) => {
                                        tracing::error!(request = %id, "deescalation failed: {e}");
                                        Swept::Failed
                                    }
                                }
                            });
                        }
                        let (mut done, mut busy) = (false, false);
                        while let Some(swept) = running.join_next().await {
                            done |= matches!(swept, Ok(Swept::Done));
                            busy |= matches!(swept, Ok(Swept::Busy));
                        }
                        if let Err(e) = lease.release().await {
                            tracing::error!("expiry sleeper: {e}");
                        }
                        drop(sweep);
                        // The loop looks again at once only after a sweep that ended some
                        // access: one whose every request failed (a row that does not read)
                        // or was busy would otherwise be swept again as fast as it fails.
                        // Access whose request another operation held is looked at again
                        // shortly; one that failed, at the next poll.
                        if done {
                            lifecycle.expiry_changed.notify_one();
                        } else if busy {
                            tokio::time::sleep(BUSY_RETRY).await;
                            lifecycle.expiry_changed.notify_one();
                        }
                    });
                }
                Err(e) => tracing::error!("expiry sleeper: {e}"),
            }
            self.resume_beside(&tasks);
            let now = now_ms();
            let wait = match self.store.next_expiry(now).await {
                Ok(Some(at)) => Duration::from_millis((at - now).max(0) as u64).min(EXPIRY_POLL),
                Ok(None) => EXPIRY_POLL,
                Err(e) => {
                    tracing::error!("expiry sleeper: {e}");
                    EXPIRY_POLL
                }
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.expiry_changed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

//! The claim: the unit of work on one request.
//!
//! Every operation on a request (submit, approve, deny, deescalate, recovery) first claims
//! it; a second claim on the same request is refused ([`Claims::claim`] gives `None`, which
//! the API answers with 409 "being processed") until the first is dropped, so one operation
//! at a time changes a request. Replicas sharing a PostgreSQL store each hold their own
//! claims in memory, so there a stored request is also claimed in the store
//! ([`Claims::claim_stored`], `store::postgres::claims`): an operation on another replica
//! is refused the same way, before any hook runs.
//!
//! The operation's writes wait in its claim: each hook's history entry ([`Claim::note`]) and
//! each state change after which nothing runs before the request's next write
//! ([`Claim::defer`]). They go into that next write, in order and all or nothing (with an
//! immediate [`Claim::transition`], before a hook that will run and so must see the state
//! committed ([`Claim::run_hook`]), or with the answer ([`Claim::finish`])), so a step costs
//! one commit rather than one per hook, and a state change, its history entry and its audit
//! line commit together. Because the claim owns them, no other operation can see, write or
//! lose them; dropping a claim writes what is left, so an operation cut short by an error
//! still records the hooks it ran. The notifications those writes call for (a request
//! waiting, decided, its access removed, a hook failed) go into the same commit, in the
//! outbox `super::notify` delivers from.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::runtime::event::EventInput;
use crate::runtime::hooks::HookName;
use crate::runtime::lease::Lease;
use crate::store::StoreError;
use crate::store::backend::{Backend, CLAIM_LEASE_MS, ClaimId, ClaimLost, Hold, Step, WithHistory};
use crate::store::outbox::{self, Router};
use crate::store::requests::{
    HistoryEntry, NewRequest, RequestRecord, RequestWrite, Transition, now_ms,
};
use crate::{HookReport, RunError, Warden};

use super::notify::Outbox;
use crate::Unpoisoned;

/// How long after the store last confirmed a claim its hooks may still act on the outside:
/// a third short of the store's lease, for replicas' clocks that disagree
/// ([`crate::runtime::lease`]).
const ACTING_MS: i64 = CLAIM_LEASE_MS * 2 / 3;

/// The requests claimed right now, in one store.
pub(super) struct Claims {
    store: Arc<dyn Backend>,
    busy: Mutex<HashSet<String>>,
    /// Notifications of what a claim's writes change go into the same commit.
    outbox: Option<Arc<Outbox>>,
}

impl Claims {
    #[cfg(test)]
    pub(super) fn new(store: Arc<dyn Backend>) -> Arc<Self> {
        Self::with_outbox(store, None)
    }

    pub(super) fn with_outbox(store: Arc<dyn Backend>, outbox: Option<Arc<Outbox>>) -> Arc<Self> {
        Arc::new(Self {
            store,
            busy: Mutex::default(),
            outbox,
        })
    }

    /// Claims request `id` in this process; `None` while another claim holds it. Enough for
    /// a request this process is about to store ([`Claim::insert`] claims it in a shared
    /// store), and for every request of a store no other process works on.
    pub(super) fn claim(self: &Arc<Self>, id: &str) -> Option<Claim> {
        let mut busy = self.busy.lock().unpoisoned();
        if !busy.insert(id.to_string()) {
            return None;
        }
        Some(Claim {
            id: id.to_string(),
            store: self.store.clone(),
            claims: self.clone(),
            waiting: Vec::new(),
            held: None,
            heartbeat: None,
            lease: None,
        })
    }

    /// Claims stored request `id` here and, when replicas share the store, in the store
    /// too (`store::postgres::claims`); `None` while another claim, here or on another
    /// replica, holds it.
    pub(super) async fn claim_stored(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<Option<Claim>, StoreError> {
        let Some(mut claim) = self.claim(id) else {
            return Ok(None);
        };
        if self.store.shared() {
            // Dropped on an error or a refusal: releases only the claim in memory.
            let stored = ClaimId::new();
            let asked = now_ms();
            if !self
                .store
                .claim_request(id, stored, asked + CLAIM_LEASE_MS)
                .await?
            {
                return Ok(None);
            }
            claim.hold(stored, asked);
        }
        Ok(Some(claim))
    }
}

/// One beat of a claim's heartbeat at `asked` (this replica's clock): renews the store's
/// claim `stored` on request `id` and extends `lease` from `asked`, so that a hook soon after
/// needs no round trip of its own ([`Claim::still_held`]); false, with the lease ended,
/// once the claim is found lost.
async fn beat(store: &dyn Backend, id: &str, stored: ClaimId, lease: &Lease, asked: i64) -> bool {
    match store
        .renew_request(id, stored, asked + CLAIM_LEASE_MS)
        .await
    {
        Ok(true) => lease.extend_to(asked + ACTING_MS),
        // The operation's next write fails the same way, writing nothing; its hook, if one
        // is running, sends nothing more.
        Ok(false) => {
            lease.end();
            tracing::warn!(request = %id, "{}", ClaimLost(id.to_string()));
            return false;
        }
        Err(e) => tracing::warn!(request = %id, "{e}"),
    }
    true
}

/// One operation's hold on one request, and the writes it has not yet made.
pub(super) struct Claim {
    id: String,
    store: Arc<dyn Backend>,
    claims: Arc<Claims>,
    /// In the order the operation made them.
    waiting: Vec<RequestWrite>,
    /// The store's claim this one holds, to renew and let go (a shared store only).
    held: Option<ClaimId>,
    /// Renews the store's claim while the operation runs (hooks may run for minutes).
    heartbeat: Option<tokio::task::AbortHandle>,
    /// How long this claim's hooks may still act on the outside (a shared store only):
    /// [`ACTING_MS`] from when the store last confirmed that `held` holds the request
    /// (claimed, stored, or renewed by a write, the heartbeat or [`Claim::still_held`]), so
    /// also the one record of that confirmation.
    lease: Option<Lease>,
}

impl Claim {
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// Stores the claimed request, new, in state `requested`; with an idempotency key its
    /// sender used before, stores nothing and returns the earlier request's id.
    pub(super) async fn insert(
        &mut self,
        mut new: NewRequest,
    ) -> Result<Result<RequestRecord, String>, StoreError> {
        debug_assert_eq!(new.id, self.id, "a claim inserts its own request");
        // A shared store claims what it inserts, for this replica.
        new.claim = self.store.shared().then(ClaimId::new);
        let stored = new.claim;
        // Before the store sets the claim's end, so this replica's reckoning of it is never
        // later than the store's.
        let asked = now_ms();
        let inserted = self.store.insert_request(new).await?;
        if inserted.is_ok()
            && let Some(stored) = stored
        {
            self.hold(stored, asked);
        }
        Ok(inserted)
    }

    /// The store holds this claim as `stored`, from a lease asked for at `asked` (taken
    /// before the store's round trip: a replica paused after the store answered must not
    /// count its lease from when it woke): renewed every third of the lease until let go,
    /// or until another claim is found holding the request.
    fn hold(&mut self, stored: ClaimId, asked: i64) {
        self.held = Some(stored);
        let lease = Lease::until(asked + ACTING_MS);
        self.lease = Some(lease.clone());
        let (store, id) = (self.store.clone(), self.id.clone());
        let every = std::time::Duration::from_millis(CLAIM_LEASE_MS as u64 / 3);
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if !beat(&*store, &id, stored, &lease, now_ms()).await {
                    return;
                }
            }
        });
        self.heartbeat = Some(heartbeat.abort_handle());
    }

    /// The store confirmed the claim at `at` (this replica's clock).
    fn confirmed(&self, at: i64) {
        if let Some(lease) = &self.lease {
            lease.extend_to(at + ACTING_MS);
        }
    }

    /// When the store last confirmed the claim (this replica's clock); `None` once it was
    /// found lost.
    fn confirmed_ms(&self) -> Option<i64> {
        self.lease.as_ref()?.end_ms().map(|end| end - ACTING_MS)
    }

    /// Adds `entry` to the request's history with its next write.
    pub(super) fn note(&mut self, entry: HistoryEntry) {
        self.waiting.push(RequestWrite::Entry(entry));
    }

    /// Applies `t` with the request's next write instead of now. Only for a step after which
    /// nothing runs before that write: whatever runs must first see the state committed
    /// ([`Claim::run_hook`] sees to that for hooks). `t.from` must be where the request
    /// stands after what waits before it: the claim rules out anything else moving it.
    pub(super) fn defer(&mut self, t: Transition) {
        self.waiting.push(RequestWrite::Transition(t));
    }

    fn has_deferred(&self) -> bool {
        self.waiting
            .iter()
            .any(|w| matches!(w, RequestWrite::Transition(_)))
    }

    /// Runs `hook` of the request's flow. A hook sees the request as stored, so deferred
    /// transitions are written first; a hook the plugin is known not to implement runs
    /// nothing, and what waits keeps waiting, to share the step's last commit.
    pub(super) async fn run_hook(
        &mut self,
        warden: &Warden,
        flow: &str,
        hook: HookName,
        input: &EventInput,
    ) -> Result<Result<HookReport, RunError>, StoreError> {
        let runs = warden
            .implemented(flow)
            .is_none_or(|hooks| hooks.contains(&hook));
        if runs && self.has_deferred() {
            // Renews the store's claim too, failing if it was taken over.
            self.flush().await?;
        } else if runs {
            self.still_held().await?;
        }
        Ok(warden
            .run_hook_leased(flow, hook, input, self.lease.as_ref())
            .await)
    }

    /// Renews the store's claim (a shared store), or fails with [`ClaimLost`] when another
    /// replica took the request over: a replica paused past its lease must not run a hook
    /// (an `on_escalate` granting access) that the other is running too.
    pub(super) async fn still_held(&mut self) -> Result<(), StoreError> {
        self.still_held_at(now_ms()).await
    }

    /// [`Claim::still_held`] at `now` by this replica's clock.
    async fn still_held_at(&mut self, now: i64) -> Result<(), StoreError> {
        let Some(stored) = self.held else {
            return Ok(());
        };
        // Confirmed within a third of the lease: no other replica can have taken it since
        // (unless the replicas' clocks are 20 s apart), so no round trip per hook.
        if self
            .confirmed_ms()
            .is_some_and(|confirmed| now - confirmed < CLAIM_LEASE_MS / 3)
        {
            return Ok(());
        }
        if self
            .store
            .renew_request(&self.id, stored, now + CLAIM_LEASE_MS)
            .await?
        {
            self.confirmed(now);
            return Ok(());
        }
        if let Some(lease) = &self.lease {
            lease.end();
        }
        Err(StoreError::lost_claim(self.store.label(), &self.id))
    }

    /// Writes what waits.
    pub(super) async fn flush(&mut self) -> Result<(), StoreError> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        self.write(None, false).await?;
        Ok(())
    }

    /// Applies `t` now if the request is in one of `t.from` (after what waits, written in
    /// the same transaction); returns whether it was. A refused transition writes nothing,
    /// and what waits keeps waiting.
    pub(super) async fn transition(&mut self, t: Transition) -> Result<bool, StoreError> {
        Ok(self.write(Some(t), false).await?.is_some())
    }

    /// Writes what waits and releases the request; returns it and its whole history as just
    /// committed (read in the same write), for the answer.
    pub(super) async fn finish(mut self) -> Result<Option<WithHistory>, StoreError> {
        let finished = self.write(None, true).await?;
        Ok(finished.flatten())
    }

    /// The notifications a write of what waits (then `then`) calls for, if any.
    fn router(&self, waiting: &[RequestWrite], then: Option<&Transition>) -> Option<Arc<Outbox>> {
        self.claims
            .outbox
            .clone()
            .filter(|o| outbox::notable(waiting, then) && o.active())
    }

    /// Writes what waits, then `then` if it applies, and with `last` reads the request back
    /// and lets the store's claim go; `None` (nothing written, what waits keeps waiting)
    /// when `then` does not apply.
    async fn write(
        &mut self,
        then: Option<Transition>,
        last: bool,
    ) -> Result<Option<Option<WithHistory>>, StoreError> {
        // Shared with the write rather than copied; taken back if it does not commit.
        let waiting = Arc::new(std::mem::take(&mut self.waiting));
        let notify = self.router(&waiting, then.as_ref());
        let asked = now_ms();
        let hold = match (self.held, last) {
            (None, _) => Hold::Keep,
            (Some(stored), true) => Hold::Release(stored),
            (Some(stored), false) => Hold::Renew(stored, asked + CLAIM_LEASE_MS),
        };
        let outcome = self
            .store
            .commit_step(Step {
                id: self.id.clone(),
                writes: waiting.clone(),
                then,
                read_back: last,
                hold,
                notify: notify.clone().map(|o| o as Arc<dyn Router>),
            })
            .await;
        // A write under the claim that was not refused for it found the claim holding.
        if matches!(hold, Hold::Renew(..)) && outcome.is_ok() {
            self.confirmed(asked);
        }
        if !matches!(outcome, Ok(Some(_))) {
            self.waiting = Arc::try_unwrap(waiting).unwrap_or_else(|shared| shared.to_vec());
        } else {
            if last {
                self.held = None;
                if let Some(beat) = self.heartbeat.take() {
                    beat.abort();
                }
            }
            if let Some(o) = notify {
                o.wake();
            }
        }
        outcome
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(beat) = self.heartbeat.take() {
            beat.abort();
        }
        // Operations write what waits before answering; this catches those that stopped
        // early on an error, so no hook run goes unrecorded.
        let waiting = std::mem::take(&mut self.waiting);
        if waiting.is_empty() && self.held.is_none() {
            self.claims.busy.lock().unpoisoned().remove(&self.id);
            return;
        }
        let notify = self.router(&waiting, None);
        let step = Step {
            id: self.id.clone(),
            writes: Arc::new(waiting),
            then: None,
            read_back: false,
            hold: self.held.map_or(Hold::Keep, Hold::Release),
            notify: notify.clone().map(|o| o as Arc<dyn Router>),
        };
        let (id, held, claims) = (self.id.clone(), self.held, self.claims.clone());
        let nothing = step.writes.is_empty();
        let done = move |written: Result<(), StoreError>| {
            match written {
                Ok(()) if !nothing => {
                    if let Some(o) = &notify {
                        o.wake();
                    }
                }
                Ok(()) => {}
                Err(e) => tracing::error!(request = %id, "cannot record hook runs: {e}"),
            }
            claims.busy.lock().unpoisoned().remove(&id);
        };
        if held.is_none()
            && let Some(written) = self.store.commit_step_now(&step)
        {
            return done(written);
        }
        // A store written through a runtime: the claim here is let go once the store's is.
        let store = self.store.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return done(Err(StoreError::stopped(store.label())));
        };
        runtime.spawn(async move {
            let written = match held {
                Some(stored) if nothing => store.release_request(&step.id, stored).await,
                _ => {
                    let id = step.id.clone();
                    let written = store.commit_step(step).await.map(|_| ());
                    // The write that was to let the store's claim go did not: let it go alone,
                    // so the request is not busy for everyone until the claim's lease runs out
                    // (a claim that ran out and was taken over lets nothing go).
                    if written.is_err()
                        && let Some(stored) = held
                        && let Err(e) = store.release_request(&id, stored).await
                    {
                        tracing::error!(request = %id, "cannot release the request: {e}");
                    }
                    written
                }
            };
            done(written)
        });
    }
}

#[cfg(test)]
mod tests;

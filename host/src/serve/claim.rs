//! The claim: the unit of work on one request.
//!
//! Every operation on a request (submit, approve, deny, deescalate, recovery) first claims
//! it; a second claim on the same request is refused ([`Claims::claim`] gives `None`, which
//! the API answers with 409 "being processed") until the first is dropped, so one operation
//! at a time changes a request.
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

use rusqlite::Connection;

use crate::runtime::event::EventInput;
use crate::runtime::hooks::HookName;
use crate::store::requests::{
    self, HistoryEntry, NewRequest, RequestRecord, RequestWrite, Transition,
};
use crate::store::{Store, StoreError, outbox};
use crate::{HookReport, RunError, Warden};

use super::notify::Outbox;
use crate::Unpoisoned;

/// What a claim's failed write names ("cannot ...").
const WRITE: &str = "record a request's step";

/// The requests claimed right now, in one store.
pub(super) struct Claims {
    store: Arc<Store>,
    busy: Mutex<HashSet<String>>,
    /// Notifications of what a claim's writes change go into the same commit.
    outbox: Option<Arc<Outbox>>,
}

impl Claims {
    #[cfg(test)]
    pub(super) fn new(store: Arc<Store>) -> Arc<Self> {
        Self::with_outbox(store, None)
    }

    pub(super) fn with_outbox(store: Arc<Store>, outbox: Option<Arc<Outbox>>) -> Arc<Self> {
        Arc::new(Self {
            store,
            busy: Mutex::default(),
            outbox,
        })
    }

    /// Claims request `id`; `None` while another claim holds it.
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
        })
    }
}

/// One operation's hold on one request, and the writes it has not yet made.
pub(super) struct Claim {
    id: String,
    store: Arc<Store>,
    claims: Arc<Claims>,
    /// In the order the operation made them.
    waiting: Vec<RequestWrite>,
}

impl Claim {
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// Stores the claimed request, new, in state `requested`; with an idempotency key its
    /// sender used before, stores nothing and returns the earlier request's id.
    pub(super) async fn insert(
        &mut self,
        new: NewRequest,
    ) -> Result<Result<RequestRecord, String>, StoreError> {
        debug_assert_eq!(new.id, self.id, "a claim inserts its own request");
        self.store
            .write("store a new request", move |c| requests::insert(c, new))
            .await
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
            self.flush().await?;
        }
        Ok(warden.run_hook(flow, hook, input).await)
    }

    /// Writes what waits.
    pub(super) async fn flush(&mut self) -> Result<(), StoreError> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        self.write(None, |_, _| Ok(())).await?;
        Ok(())
    }

    /// Applies `t` now if the request is in one of `t.from` (after what waits, written in
    /// the same transaction); returns whether it was. A refused transition writes nothing,
    /// and what waits keeps waiting.
    pub(super) async fn transition(&mut self, t: Transition) -> Result<bool, StoreError> {
        Ok(self.write(Some(t), |_, _| Ok(())).await?.is_some())
    }

    /// Writes what waits and releases the request; returns it and its whole history as just
    /// committed (read in the same write, where the pages are at hand), for the answer.
    pub(super) async fn finish(
        mut self,
    ) -> Result<Option<(RequestRecord, Vec<HistoryEntry>)>, StoreError> {
        let finished = self.write(None, requests::get_with_history).await?;
        Ok(finished.flatten())
    }

    /// Writes what waits, then `then` if it applies, then runs `read` in the same write;
    /// `None` (nothing written, what waits keeps waiting) when `then` does not apply.
    async fn write<R: Send + 'static>(
        &mut self,
        then: Option<Transition>,
        read: impl FnOnce(&Connection, &str) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<Option<R>, StoreError> {
        // Shared with the write rather than copied; taken back if it does not commit.
        let waiting = Arc::new(std::mem::take(&mut self.waiting));
        let writes = waiting.clone();
        let id = self.id.clone();
        let notify = self
            .claims
            .outbox
            .clone()
            .filter(|o| outbox::notable(&waiting, then.as_ref()) && o.active());
        let queue = notify.clone();
        let outcome = self
            .store
            .write(WRITE, move |c| {
                if !requests::write(c, &id, &writes, then.as_ref())? {
                    return Ok(None);
                }
                if let Some(o) = &queue {
                    outbox::enqueue(c, &id, &writes, then.as_ref(), &|f, e| o.route(f, e))?;
                }
                read(c, &id).map(Some)
            })
            .await;
        if !matches!(outcome, Ok(Some(_))) {
            self.waiting = Arc::try_unwrap(waiting).unwrap_or_else(|shared| shared.to_vec());
        } else if let Some(o) = notify {
            o.wake();
        }
        outcome
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Operations write what waits before answering; this catches those that stopped
        // early on an error, so no hook run goes unrecorded.
        if !self.waiting.is_empty() {
            let written = self.store.with(WRITE, |c| {
                let tx = c.transaction()?;
                requests::write(&tx, &self.id, &self.waiting, None)?;
                if let Some(o) = self.claims.outbox.as_ref().filter(|o| o.active()) {
                    outbox::enqueue(&tx, &self.id, &self.waiting, None, &|f, e| o.route(f, e))?;
                }
                tx.commit()
            });
            if let (Ok(()), Some(o)) = (&written, &self.claims.outbox) {
                o.wake();
            }
            if let Err(e) = written {
                tracing::error!(request = %self.id, "cannot record hook runs: {e}");
            }
        }
        self.claims.busy.lock().unpoisoned().remove(&self.id);
    }
}

#[cfg(test)]
mod tests;

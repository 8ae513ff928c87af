//! One store interface, two implementations: [`super::Store`] (SQLite, the embedded default:
//! one `warden serve` on one disk) and [`super::postgres::PgStore`] (PostgreSQL: the store
//! several replicas share, issue 19). Each method is one operation, all or nothing, with the
//! same meaning on both: what `serve` and `warden users` ask of a store.
//!
//! `warden serve`, hooks' identity lookups (`capabilities::identities`) and the commands
//! that open the store hold an `Arc<dyn Backend>` ([`open`]). A trait object, not an enum:
//! the cost is one indirect call and one boxed future per operation, next to a commit or a
//! database round trip per operation, and it keeps the two implementations apart (the
//! tests' in-memory SQLite stores pass as they are). The SQLite implementation runs the
//! plain SQL of [`super::requests`], [`super::outbox`] and [`super::sessions`] through the group commit; the same
//! tests hold both backends to one behaviour (`store::postgres::tests`).
//!
//! What only replicas need ([`Backend::claim_request`] and the rest of a claim's life,
//! [`Backend::lease_expired`], [`Backend::outbox_take`]'s hold) has answers on SQLite that
//! one process needs: claims are the `serve::claim` set in memory, and nothing else takes
//! an expiry or a notification.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::outbox::{self, Notification, Router};
use super::postgres::ExpirySweep;
use super::requests::{
    self, AuditEntry, HistoryEntry, ListChunk, ListQuery, NewRequest, RequestRecord, RequestWrite,
    State, Transition,
};
use super::sessions::{self, SessionRules, StoredSession};
use super::{Store, StoreChange, StoreError, StoredIdentity, UserRecord};
use crate::config::Config;

/// A request and its whole history.
pub type WithHistory = (RequestRecord, Vec<HistoryEntry>);

/// How long a replica's claim on a request ([`Backend::claim_request`]) holds unless renewed
/// (each write of the operation renews it, and so does a heartbeat while hooks run, every
/// third of it): past it, the replica is taken for dead and another resumes the request.
pub const CLAIM_LEASE_MS: i64 = 30_000;

/// Expired requests one sweep of the expiry sleeper takes at most: the sweeps running at
/// once take no more between them than a few hundred, whatever the backlog (a restart after
/// a long stop), and the rest wait for the next sweep.
pub const EXPIRY_SWEEP_LIMIT: usize = 256;

/// Which claim holds a request in a shared store: each claim's own, so that a replica whose
/// claim ran out (paused past its lease) and was taken by another can neither renew, write
/// under, nor let go the claim that replaced it: those writes find another id and change
/// nothing (PostgreSQL's `requests.claim_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimId(pub i64);

impl ClaimId {
    pub fn new() -> Self {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("the operating system's random numbers");
        Self(i64::from_le_bytes(bytes))
    }
}

impl Default for ClaimId {
    fn default() -> Self {
        Self::new()
    }
}

/// What a step's write does with its replica's claim on the request (PostgreSQL only: one
/// SQLite process claims in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Leaves it as it is (a write outside any claim).
    Keep,
    /// Holds claim `.0` until `.1` (Unix milliseconds); the write fails, writing nothing,
    /// when another claim holds the request now ([`ClaimLost`]).
    Renew(ClaimId, i64),
    /// Lets claim `.0` go: the operation is done. Fails as `Renew` does.
    Release(ClaimId),
}

/// A write under a claim that no longer holds its request: its lease ran out (the replica
/// was paused, or cut off from the database, for longer than [`CLAIM_LEASE_MS`]) and another
/// replica claimed the request to resume it. Nothing of the write was committed.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "this replica's claim on request {0} ran out and another replica took the request over; nothing was written"
)]
pub struct ClaimLost(pub String);

impl StoreError {
    /// `claim`'s request `id` was found taken over by another claim in the store at `path`.
    pub(crate) fn lost_claim(path: &Path, id: &str) -> Self {
        Self::other(
            path,
            format!("work on request {id}"),
            ClaimLost(id.to_string()),
        )
    }

    /// The request whose claim a failed write found taken over ([`ClaimLost`]), if that is
    /// why it failed: another replica is working on the request, as a claim refused at the
    /// start would have said.
    pub fn claim_lost(&self) -> Option<&str> {
        let lost = self.source.downcast_ref::<ClaimLost>()?;
        Some(&lost.0)
    }
}

/// One step's writes to one request, all or nothing ([`Backend::commit_step`]).
pub struct Step {
    pub id: String,
    /// Shared with the claim that made them, which takes them back if they do not commit.
    pub writes: Arc<Vec<RequestWrite>>,
    /// Applied after `writes` if the request is in one of its `from`.
    pub then: Option<Transition>,
    /// Answer the request and its history as just committed.
    pub read_back: bool,
    pub hold: Hold,
    /// Write the notifications the step calls for (`store::outbox`) in the same commit.
    pub notify: Option<Arc<dyn Router>>,
}

/// Escalated requests whose time ran out, for this replica alone to deescalate; released
/// once they are ([`ExpiryLease::release`]).
pub struct ExpiryLease {
    pub ids: Vec<String>,
    /// PostgreSQL's leases (SQLite's one process needs none).
    sweep: Option<ExpirySweep>,
}

impl ExpiryLease {
    pub(crate) fn leased(sweep: ExpirySweep) -> Self {
        Self {
            ids: sweep.ids().to_vec(),
            sweep: Some(sweep),
        }
    }

    pub async fn release(self) -> Result<(), StoreError> {
        match self.sweep {
            Some(sweep) => sweep.release().await,
            None => Ok(()),
        }
    }
}

/// What the store has done so far, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Steps written.
    pub writes: u64,
    /// Transactions committed or tried (on SQLite, steps waiting together share one).
    pub commits: u64,
    /// Identity lookups answered from memory.
    pub identity_lookups_from_memory: u64,
}

/// Opens the store `config` names: PostgreSQL at `[store] url`, or else the SQLite file.
pub async fn open(config: &Config) -> Result<Arc<dyn Backend>, StoreError> {
    Ok(match &config.store_url {
        Some(url) => Arc::new(super::postgres::PgStore::open(url).await?),
        None => Arc::new(Store::open(&config.store_path)?),
    })
}

#[async_trait]
pub trait Backend: Send + Sync {
    /// Numbered migrations this binary knows (all applied once the store is open).
    fn schema_version(&self) -> usize;

    /// The SQLite file or the PostgreSQL URL (which holds no password).
    fn label(&self) -> &Path;

    /// Whether other processes (replicas) work on the same requests: claims must then be
    /// taken in the store, not only in memory.
    fn shared(&self) -> bool {
        false
    }

    /// Answers when the store does: readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Writes `step`; `None` (nothing written) when `step.then` does not apply, `Some(None)`
    /// unless `step.read_back`.
    async fn commit_step(&self, step: Step) -> Result<Option<Option<WithHistory>>, StoreError>;

    /// Writes `step` before returning, when the store can without waiting on a runtime
    /// (SQLite); `None` when it cannot (the caller spawns [`Backend::commit_step`]).
    fn commit_step_now(&self, step: &Step) -> Option<Result<(), StoreError>> {
        let _ = step;
        None
    }

    /// Claims request `id` as `claim` until `until`; false when another claim holds it. A
    /// request that does not exist is claimed (there is nothing to hold).
    async fn claim_request(
        &self,
        id: &str,
        claim: ClaimId,
        until: i64,
    ) -> Result<bool, StoreError> {
        let _ = (id, claim, until);
        Ok(true)
    }

    /// Holds `claim` on `id` until `until`; false (nothing changed) when `claim` no longer
    /// holds it ([`ClaimLost`]).
    async fn renew_request(
        &self,
        id: &str,
        claim: ClaimId,
        until: i64,
    ) -> Result<bool, StoreError> {
        let _ = (id, claim, until);
        Ok(true)
    }

    /// Lets `claim` on `id` go; a claim that no longer holds it lets nothing go.
    async fn release_request(&self, id: &str, claim: ClaimId) -> Result<(), StoreError> {
        let _ = (id, claim);
        Ok(())
    }

    /// Requests in `state` that no replica holds now: cut short by a stop or a crash.
    async fn unclaimed_in(&self, state: State, now: i64) -> Result<Vec<String>, StoreError> {
        let _ = now;
        self.ids_in(state).await
    }

    /// Leases the escalated requests whose access ran out by `now` that no other replica
    /// is deescalating.
    async fn lease_expired(&self, now: i64) -> Result<ExpiryLease, StoreError> {
        Ok(ExpiryLease {
            ids: self.expired(now).await?,
            sweep: None,
        })
    }

    /// Takes up to `limit` of `channel`'s notifications due by `now` to deliver; another
    /// replica does not take them before `lease_until`, unless they are given back
    /// ([`Backend::outbox_retry_at`]) or delivered.
    async fn outbox_take(
        &self,
        channel: &str,
        now: i64,
        limit: usize,
        lease_until: i64,
    ) -> Result<Vec<Notification>, StoreError>;
    /// Gives back notifications taken under the hold `held_until` and not attempted (a stop
    /// in the middle of a batch), due again at `now`, for this replica after its restart or
    /// another now. A store whose take holds nothing (SQLite's one process) has nothing to
    /// give back.
    async fn outbox_hand_back(
        &self,
        seqs: &[i64],
        held_until: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let _ = (seqs, held_until, now);
        Ok(())
    }
    async fn outbox_next_due(&self, channel: &str) -> Result<Option<i64>, StoreError>;
    /// Deletes `n`, unless another replica has taken it since (its hold is not `n`'s).
    async fn outbox_delivered(&self, n: &Notification) -> Result<(), StoreError>;
    /// Counts a failed attempt of `n` and makes it due at `next_at`, unless another replica
    /// has taken it since.
    async fn outbox_retry_at(
        &self,
        n: &Notification,
        next_at: i64,
        error: &str,
    ) -> Result<(), StoreError>;
    /// Deletes `n`, with its request's history entry and an audit line saying why (nothing,
    /// when another replica gave it up first or has taken it since).
    async fn outbox_give_up(
        &self,
        n: &Notification,
        attempts: u32,
        error: &str,
    ) -> Result<(), StoreError>;
    /// Notifications waiting, by channel.
    async fn outbox_depth(&self) -> Result<Vec<(String, u64)>, StoreError>;

    fn counts(&self) -> StoreCounts {
        StoreCounts::default()
    }

    /// Makes the store tidy for a clean stop (SQLite folds its write-ahead log in).
    async fn checkpoint(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Stores `new` in state `requested` with its first history entry and audit line;
    /// `Err(id)` (nothing stored) when its sender already used its idempotency key.
    async fn insert_request(
        &self,
        new: NewRequest,
    ) -> Result<Result<RequestRecord, String>, StoreError>;

    /// The request `created_by` filed under idempotency key `key`, if any.
    async fn request_for_key(
        &self,
        created_by: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Writes `writes` for request `id` in order, then `then` if it applies, in one
    /// transaction; `None` (nothing written) when `then` does not apply to the request as it
    /// is now (another operation, here or on another replica, moved it first). With
    /// `read_back`, answers the request and its history as just committed.
    async fn write_request(
        &self,
        id: &str,
        writes: Vec<RequestWrite>,
        then: Option<Transition>,
        read_back: bool,
    ) -> Result<Option<Option<WithHistory>>, StoreError> {
        self.commit_step(Step {
            id: id.to_string(),
            writes: Arc::new(writes),
            then,
            read_back,
            hold: Hold::Keep,
            notify: None,
        })
        .await
    }

    async fn request(&self, id: &str) -> Result<Option<RequestRecord>, StoreError>;
    async fn request_with_history(&self, id: &str) -> Result<Option<WithHistory>, StoreError>;
    async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError>;
    /// As `query` asks, newest first, within its window.
    async fn list(&self, query: &ListQuery) -> Result<ListChunk, StoreError>;
    /// Appends one line to the append-only audit log.
    async fn audit(
        &self,
        actor: &str,
        action: &str,
        request_id: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError>;
    /// The newest `limit` audit entries, oldest first.
    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// Up to `limit` entries older than `before`, newest first.
    async fn audit_page(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;
    async fn ids_in(&self, state: State) -> Result<Vec<String>, StoreError>;
    async fn expired(&self, now: i64) -> Result<Vec<String>, StoreError>;
    async fn next_expiry(&self, now: i64) -> Result<Option<i64>, StoreError>;
    async fn count_by_state(&self) -> Result<Vec<(State, u64)>, StoreError>;

    async fn lookup_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<Option<StoredIdentity>, StoreError>;
    async fn persist_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
        user_id: &str,
    ) -> Result<StoredIdentity, StoreError>;
    async fn identities_of(&self, email: &str) -> Result<Vec<StoredIdentity>, StoreError>;
    async fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    async fn user(&self, email: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn delete_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<bool, StoreError>;
    async fn delete_user(&self, email: &str) -> Result<bool, StoreError>;
    /// Every change or, on any error, none.
    async fn apply(&self, changes: &[StoreChange]) -> Result<(), StoreError>;

    /// Opens a console session under `rules` ([`super::sessions`]): `false` when every place
    /// is held by a live session.
    async fn session_open(
        &self,
        id_digest: &str,
        session: &StoredSession,
        rules: &SessionRules,
    ) -> Result<bool, StoreError>;
    async fn session_read(&self, id_digest: &str) -> Result<Option<StoredSession>, StoreError>;
    async fn session_touch(&self, id_digest: &str, now: i64) -> Result<(), StoreError>;
    async fn session_close(&self, id_digest: &str) -> Result<(), StoreError>;

    /// The live session stored under `id_digest`, its use recorded at most every
    /// `rules.touch_every_ms`; an expired one is closed.
    async fn session(
        &self,
        id_digest: &str,
        now: i64,
        rules: &SessionRules,
    ) -> Result<Option<StoredSession>, StoreError> {
        let Some(mut session) = self.session_read(id_digest).await? else {
            return Ok(None);
        };
        if rules.expired(&session, now) {
            self.session_close(id_digest).await?;
            return Ok(None);
        }
        if now - session.last_used >= rules.touch_every_ms {
            self.session_touch(id_digest, now).await?;
            session.last_used = now;
        }
        Ok(Some(session))
    }
}

/// What a step's failed write names ("cannot ...").
const STEP: &str = "record a request's step";

#[async_trait]
impl Backend for Store {
    fn schema_version(&self) -> usize {
        Store::schema_version(self)
    }

    async fn insert_request(
        &self,
        new: NewRequest,
    ) -> Result<Result<RequestRecord, String>, StoreError> {
        self.write("store a new request", move |c| requests::insert(c, new))
            .await
    }

    async fn request_for_key(
        &self,
        created_by: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        self.read("look up an idempotency key", |c| {
            requests::for_key(c, created_by, key)
        })
    }

    fn label(&self) -> &Path {
        self.path()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read("answer", |c| c.query_row("SELECT 1", [], |_| Ok(())))
    }

    async fn commit_step(&self, step: Step) -> Result<Option<Option<WithHistory>>, StoreError> {
        let Step {
            id,
            writes,
            then,
            read_back,
            notify,
            hold: _,
        } = step;
        self.write(STEP, move |c| {
            if !requests::write(c, &id, &writes, then.as_ref())? {
                return Ok(None);
            }
            if let Some(o) = &notify {
                outbox::enqueue(c, &id, &writes, then.as_ref(), &|f, e| o.route(f, e))?;
            }
            if !read_back {
                return Ok(Some(None));
            }
            requests::get_with_history(c, &id).map(Some)
        })
        .await
    }

    fn commit_step_now(&self, step: &Step) -> Option<Result<(), StoreError>> {
        Some(self.with(STEP, |c| {
            let tx = c.transaction()?;
            if requests::write(&tx, &step.id, &step.writes, step.then.as_ref())?
                && let Some(o) = &step.notify
            {
                let then = step.then.as_ref();
                outbox::enqueue(&tx, &step.id, &step.writes, then, &|f, e| o.route(f, e))?;
            }
            tx.commit()
        }))
    }

    async fn outbox_take(
        &self,
        channel: &str,
        now: i64,
        limit: usize,
        _lease_until: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        // One process, one delivery task per channel: nobody else would take them.
        let (due, unreadable) =
            self.read("read the outbox", |c| outbox::due(c, channel, now, limit))?;
        if !unreadable.is_empty() {
            for u in &unreadable {
                tracing::error!(channel = %u.channel, seq = u.seq, delivery = %u.delivery_id, "notification given up: its outbox row cannot be read: {}", u.error);
            }
            self.write("give up notifications that cannot be read", move |c| {
                unreadable
                    .iter()
                    .try_for_each(|u| outbox::give_up_unreadable(c, u))
            })
            .await?;
        }
        Ok(due)
    }

    async fn outbox_next_due(&self, channel: &str) -> Result<Option<i64>, StoreError> {
        self.read("read the outbox", |c| outbox::next_due(c, channel))
    }

    async fn outbox_delivered(&self, n: &Notification) -> Result<(), StoreError> {
        let seq = n.seq;
        self.write("record a notification delivered", move |c| {
            outbox::delivered(c, seq)
        })
        .await
    }

    async fn outbox_retry_at(
        &self,
        n: &Notification,
        next_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let (seq, error) = (n.seq, error.to_string());
        self.write("record a notification attempt", move |c| {
            outbox::retry_at(c, seq, next_at, &error)
        })
        .await
    }

    async fn outbox_give_up(
        &self,
        n: &Notification,
        attempts: u32,
        error: &str,
    ) -> Result<(), StoreError> {
        let (n, error) = (n.clone(), error.to_string());
        self.write("record a notification given up", move |c| {
            outbox::give_up(c, &n, attempts, &error)
        })
        .await
    }

    async fn outbox_depth(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read("read the outbox", outbox::depth)
    }

    fn counts(&self) -> StoreCounts {
        let (writes, commits) = self.write_counts();
        StoreCounts {
            writes,
            commits,
            identity_lookups_from_memory: self.identity_lookups_from_memory(),
        }
    }

    async fn checkpoint(&self) -> Result<(), StoreError> {
        Store::checkpoint(self)
    }

    async fn request(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.read("read a request", |c| requests::get(c, id))
    }

    async fn request_with_history(&self, id: &str) -> Result<Option<WithHistory>, StoreError> {
        self.read("read a request", |c| requests::get_with_history(c, id))
    }

    async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.read("read a request's history", |c| requests::history(c, id))
    }

    async fn list(&self, query: &ListQuery) -> Result<ListChunk, StoreError> {
        self.read("list requests", |c| requests::list(c, query))
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        request_id: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.with("write the audit log", |c| {
            requests::audit(c, actor, action, request_id, detail)
        })
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.read("read the audit log", |c| requests::audit_log(c, limit))
    }

    async fn audit_page(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.read("read the audit log", |c| {
            requests::audit_page(c, before, limit)
        })
    }

    async fn ids_in(&self, state: State) -> Result<Vec<String>, StoreError> {
        self.read("list requests to resume", |c| requests::ids_in(c, state))
    }

    async fn expired(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.read("read expiring requests", |c| requests::expired(c, now))
    }

    async fn next_expiry(&self, now: i64) -> Result<Option<i64>, StoreError> {
        self.read("read the next expiry", |c| requests::next_expiry(c, now))
    }

    async fn count_by_state(&self) -> Result<Vec<(State, u64)>, StoreError> {
        self.read("count requests by state", requests::count_by_state)
    }

    async fn lookup_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<Option<StoredIdentity>, StoreError> {
        Store::lookup_identity(self, email, service, service_id)
    }

    async fn persist_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
        user_id: &str,
    ) -> Result<StoredIdentity, StoreError> {
        Store::persist_identity(self, email, service, service_id, user_id)
    }

    async fn identities_of(&self, email: &str) -> Result<Vec<StoredIdentity>, StoreError> {
        Store::identities_of(self, email)
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        Store::users(self)
    }

    async fn user(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        Store::user(self, email)
    }

    async fn delete_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<bool, StoreError> {
        Store::delete_identity(self, email, service, service_id)
    }

    async fn delete_user(&self, email: &str) -> Result<bool, StoreError> {
        Store::delete_user(self, email)
    }

    async fn apply(&self, changes: &[StoreChange]) -> Result<(), StoreError> {
        Store::apply(self, changes)
    }

    async fn session_open(
        &self,
        id_digest: &str,
        session: &StoredSession,
        rules: &SessionRules,
    ) -> Result<bool, StoreError> {
        let (id, session, rules) = (id_digest.to_string(), session.clone(), *rules);
        self.write("open a console session", move |c| {
            sessions::open(c, &id, &session, &rules)
        })
        .await
    }

    async fn session_read(&self, id_digest: &str) -> Result<Option<StoredSession>, StoreError> {
        self.read("read a console session", |c| sessions::get(c, id_digest))
    }

    async fn session_touch(&self, id_digest: &str, now: i64) -> Result<(), StoreError> {
        let id = id_digest.to_string();
        self.write("record a console session's use", move |c| {
            sessions::touch(c, &id, now)
        })
        .await
    }

    async fn session_close(&self, id_digest: &str) -> Result<(), StoreError> {
        let id = id_digest.to_string();
        self.write("close a console session", move |c| sessions::close(c, &id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::lifecycle::LifecycleError;

    #[test]
    fn a_write_under_a_claim_taken_over_is_told_as_the_request_being_worked_on() {
        let lost = StoreError::other(
            Path::new("postgres://db"),
            "write request r1",
            ClaimLost("r1".into()),
        );
        assert_eq!(lost.claim_lost(), Some("r1"));
        assert!(lost.to_string().contains("another replica took"), "{lost}");
        let refused = LifecycleError::from(lost);
        assert!(
            matches!(&refused, LifecycleError::Busy(id) if id == "r1"),
            "{refused}"
        );
        // Any other failure of the store is the host's.
        let failed = StoreError::stopped(Path::new("warden.db"));
        assert_eq!(failed.claim_lost(), None);
        assert!(matches!(
            LifecycleError::from(failed),
            LifecycleError::Store(_)
        ));
    }
}

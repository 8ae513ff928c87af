//! One store interface, two implementations: [`super::Store`] (SQLite, the embedded default:
//! one `warden serve` on one disk) and [`super::postgres::PgStore`] (PostgreSQL: the store
//! several replicas share, issue 19). Each method is one operation, all or nothing, with the
//! same meaning on both: what `serve` and `warden users` ask of a store.
//!
//! The SQLite implementation runs the plain SQL of [`super::requests`] through the group
//! commit as `serve` does; it exists so the same tests hold both backends to one behaviour
//! (`store::postgres::tests`).

use async_trait::async_trait;

use super::requests::{
    self, AuditEntry, HistoryEntry, NewRequest, RequestRecord, RequestWrite, State, Transition,
};
use super::{Store, StoreChange, StoreError, StoredIdentity, UserRecord};

/// A request and its whole history.
pub type WithHistory = (RequestRecord, Vec<HistoryEntry>);

#[async_trait]
pub trait Backend: Send + Sync {
    /// Numbered migrations this binary knows (all applied once the store is open).
    fn schema_version(&self) -> usize;

    /// Stores `new` in state `requested` with its first history entry and audit line;
    /// `Err(id)` (nothing stored) when its sender already used its idempotency key.
    async fn insert_request(
        &self,
        new: NewRequest,
    ) -> Result<Result<RequestRecord, String>, StoreError>;

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
    ) -> Result<Option<Option<WithHistory>>, StoreError>;

    async fn request(&self, id: &str) -> Result<Option<RequestRecord>, StoreError>;
    async fn request_with_history(&self, id: &str) -> Result<Option<WithHistory>, StoreError>;
    async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError>;
    /// Newest first, at most 1000, optionally only in `state` and of `requester`.
    async fn list(
        &self,
        state: Option<State>,
        requester: Option<&str>,
    ) -> Result<Vec<RequestRecord>, StoreError>;
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
}

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

    async fn write_request(
        &self,
        id: &str,
        writes: Vec<RequestWrite>,
        then: Option<Transition>,
        read_back: bool,
    ) -> Result<Option<Option<WithHistory>>, StoreError> {
        let id = id.to_string();
        self.write("write a request's changes", move |c| {
            if !requests::write(c, &id, &writes, then.as_ref())? {
                return Ok(None);
            }
            if !read_back {
                return Ok(Some(None));
            }
            requests::get_with_history(c, &id).map(Some)
        })
        .await
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

    async fn list(
        &self,
        state: Option<State>,
        requester: Option<&str>,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.read("list requests", |c| requests::list(c, state, requester))
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
}

//! What `warden users` asks of a store, answered before the call returns: the command is a
//! short sequence of steps, each needing the last one's answer. SQLite's store answers so
//! already; the PostgreSQL store is driven on a runtime of its own ([`BlockingPg`]).

use std::future::Future;

use super::postgres::PgStore;
use super::{Store, StoreChange, StoreError, StoredIdentity, UserRecord};
use crate::config::StoreUrl;

pub trait UserAdmin {
    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    fn user(&self, email: &str) -> Result<Option<UserRecord>, StoreError>;
    fn lookup_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<Option<StoredIdentity>, StoreError>;
    fn persist_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
        user_id: &str,
    ) -> Result<StoredIdentity, StoreError>;
    fn delete_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<bool, StoreError>;
    fn delete_user(&self, email: &str) -> Result<bool, StoreError>;
    /// Every change in one transaction, or none.
    fn apply(&self, changes: &[StoreChange]) -> Result<(), StoreError>;
}

impl UserAdmin for Store {
    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        Store::users(self)
    }
    fn user(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        Store::user(self, email)
    }
    fn lookup_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<Option<StoredIdentity>, StoreError> {
        Store::lookup_identity(self, email, service, service_id)
    }
    fn persist_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
        user_id: &str,
    ) -> Result<StoredIdentity, StoreError> {
        Store::persist_identity(self, email, service, service_id, user_id)
    }
    fn delete_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<bool, StoreError> {
        Store::delete_identity(self, email, service, service_id)
    }
    fn delete_user(&self, email: &str) -> Result<bool, StoreError> {
        Store::delete_user(self, email)
    }
    fn apply(&self, changes: &[StoreChange]) -> Result<(), StoreError> {
        Store::apply(self, changes)
    }
}

/// The PostgreSQL store with a one-thread runtime of its own, each call run to its end on a
/// thread of its own: `warden users` runs inside the binary's runtime, whose threads must
/// not block on another (tokio refuses), and the pool's connections live on this one.
pub struct BlockingPg {
    runtime: Option<tokio::runtime::Runtime>,
    store: Option<PgStore>,
}

impl BlockingPg {
    pub fn open(url: &StoreUrl) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::other(
                    std::path::Path::new(url.as_str()),
                    "start a runtime for it",
                    e,
                )
            })?;
        let mut this = Self {
            runtime: Some(runtime),
            store: None,
        };
        this.store = Some(this.block(PgStore::open(url))?);
        Ok(this)
    }

    fn block<F: Future + Send>(&self, work: F) -> F::Output
    where
        F::Output: Send,
    {
        let runtime = self.runtime.as_ref().expect("until dropped");
        std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(work))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn store(&self) -> &PgStore {
        self.store.as_ref().expect("opened")
    }
}

impl Drop for BlockingPg {
    fn drop(&mut self) {
        // The pool first, on its runtime's thread; then the runtime, off any async context.
        if let Some(store) = self.store.take() {
            self.block(async move { drop(store) });
        }
        if let Some(runtime) = self.runtime.take() {
            let _ = std::thread::spawn(move || drop(runtime)).join();
        }
    }
}

impl UserAdmin for BlockingPg {
    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.block(self.store().users())
    }
    fn user(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        self.block(self.store().user(email))
    }
    fn lookup_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<Option<StoredIdentity>, StoreError> {
        self.block(self.store().lookup_identity(email, service, service_id))
    }
    fn persist_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
        user_id: &str,
    ) -> Result<StoredIdentity, StoreError> {
        self.block(
            self.store()
                .persist_identity(email, service, service_id, user_id),
        )
    }
    fn delete_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<bool, StoreError> {
        self.block(self.store().delete_identity(email, service, service_id))
    }
    fn delete_user(&self, email: &str) -> Result<bool, StoreError> {
        self.block(self.store().delete_user(email))
    }
    fn apply(&self, changes: &[StoreChange]) -> Result<(), StoreError> {
        self.block(self.store().apply(changes))
    }
}

/// The store `warden users` works on: `[store] url` or the SQLite file.
pub fn open_for_users(
    path: &std::path::Path,
    url: Option<&StoreUrl>,
) -> Result<Box<dyn UserAdmin>, StoreError> {
    Ok(match url {
        Some(url) => Box::new(BlockingPg::open(url)?),
        None => Box::new(Store::open(path)?),
    })
}

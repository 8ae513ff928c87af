//! The PostgreSQL store: what [`super::Store`] keeps in a SQLite file, in a database several
//! `warden serve` replicas share (`[store] url`, issue 19).
//!
//! **The client: tokio-postgres with a deadpool-postgres pool**, not sqlx. warden already
//! runs on tokio and needs only PostgreSQL; tokio-postgres is the protocol client sqlx's own
//! PostgreSQL driver follows, with pipelining (statements of one connection in flight
//! together) and no compile-time database or macro layer, so the build needs no database and
//! no `DATABASE_URL`; deadpool-postgres adds a small pool that hands out connections (with
//! their cache of prepared statements) and checks a returned one before reuse, so a
//! restarted database costs failed operations, not a stuck replica. sqlx would bring a second
//! SQLite driver beside rusqlite and its own runtime glue, for nothing this store uses.
//!
//! Every operation is one transaction. Where SQLite serialises writers in one process,
//! replicas here serialise on the rows: a request's changes lock its row (`FOR UPDATE`)
//! before its state is checked, so of two approvals racing on two replicas the second finds
//! the state already moved and writes nothing; a retried `Idempotency-Key` meets the unique
//! index whichever replica it reaches. An operation claims its request in the database
//! (`claims`) before its hooks run, so a request is worked on by one replica at a time and
//! one cut short by a crash is resumed elsewhere. Identity lookups are read from the
//! database every time (no cache to go stale), so a change made by `warden users` or
//! another replica is seen by the next lookup on every replica. Notifications are taken
//! from the outbox with `FOR UPDATE SKIP LOCKED` (`outbox`), so no two replicas send one.
//! Console sessions are rows every replica reads (`sessions`), so a browser signed in
//! through one replica is signed in on all.
//!
//! The schema means what SQLite's does, with the same migration numbers; case-insensitive
//! emails (SQLite's `COLLATE NOCASE`) are unique indexes on `lower(email)`, and orderings use
//! the `"C"` collation (SQLite's binary order), not the database's locale.

mod backend;
mod claims;
mod connect;
#[cfg(test)]
mod connect_tests;
mod expiry;
mod migrations;
mod outbox;
#[cfg(test)]
mod replica_tests;
mod requests;
#[cfg(test)]
mod session_tests;
mod sessions;
#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
mod tls;
#[cfg(test)]
mod tls_tests;

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error as PgError, Row};

use super::{StoreChange, StoreError, StoredIdentity, UserRecord};
use crate::config::StoreUrl;
pub use expiry::ExpirySweep;

pub(crate) type Fallible<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Statements run through their connection's cache of prepared statements. Sent as text,
/// each statement costs two round trips (prepare, then run) and the server parses and plans
/// it every time: measured under `scripts/bench-serve-pg`, parsing and planning took most of
/// PostgreSQL's CPU. Prepared once per connection, a statement is then one round trip and no
/// parsing. Every statement here is a fixed text (values are parameters), so the cache holds
/// one entry per statement of this module at most.
#[async_trait::async_trait]
pub(crate) trait Prepared: deadpool_postgres::GenericClient {
    async fn run(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, PgError> {
        let statement = self.prepare_cached(sql).await?;
        self.execute(&statement, params).await
    }

    async fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, PgError> {
        let statement = self.prepare_cached(sql).await?;
        self.query(&statement, params).await
    }

    async fn row(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, PgError> {
        let statement = self.prepare_cached(sql).await?;
        self.query_one(&statement, params).await
    }

    async fn row_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, PgError> {
        let statement = self.prepare_cached(sql).await?;
        self.query_opt(&statement, params).await
    }
}

impl<C: deadpool_postgres::GenericClient> Prepared for C {}

/// How many connections one replica holds at most.
const POOL_SIZE: usize = 16;
/// How long an operation waits for a connection (or to connect) before failing.
const WAIT: Duration = Duration::from_secs(5);

pub struct PgStore {
    /// The URL (it holds no password), naming the store in errors.
    label: PathBuf,
    pool: Pool,
    /// Steps written and transactions tried, for `/metrics`.
    counts: claims::Counts,
}

impl PgStore {
    /// Connects to `url` (with the password its secret holds, else `PGPASSWORD`; TLS as its
    /// `sslmode` says) and applies migrations; refuses a database whose schema is newer than
    /// this warden knows.
    pub async fn open(url: &StoreUrl) -> Result<Self, StoreError> {
        let label = PathBuf::from(url.as_str());
        let tls = tls::MakeRustls::new(url.tls())
            .map_err(|e| StoreError::other(&label, "set up TLS", e))?;
        let connector = connect::Connector {
            tls,
            password: url.password_secret().cloned().map(connect::Password::new),
        };
        let manager = Manager::from_connect(
            url.client_config(),
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT))
            .create_timeout(Some(WAIT))
            .recycle_timeout(Some(WAIT))
            .build()
            .map_err(|e| StoreError::other(&label, "make its connection pool", e))?;
        let store = Self {
            label,
            pool,
            counts: Default::default(),
        };
        let mut client = store.client("connect").await?;
        migrations::apply(&mut client)
            .await
            .map_err(|e| store.error("prepare it (migrations)", e))?;
        Ok(store)
    }

    pub fn schema_version(&self) -> usize {
        migrations::MIGRATIONS.len()
    }

    fn error(
        &self,
        operation: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> StoreError {
        let source = source.into();
        // Kept as it is, so a lost claim can be told from a failing store (409, not 503).
        if source.is::<crate::store::backend::ClaimLost>() {
            return StoreError::other(&self.label, operation, source);
        }
        StoreError::other(&self.label, operation, flatten(source))
    }

    async fn client(&self, operation: &str) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| self.error(operation, e))
    }

    pub async fn lookup_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<Option<StoredIdentity>, StoreError> {
        let client = self.client("look up an identity").await?;
        let row = client
            .row_opt(
                "SELECT email, service, service_id, user_id FROM identities
                 WHERE lower(email) = lower($1) AND service = $2 AND service_id = $3",
                &[&email, &service, &service_id],
            )
            .await
            .map_err(|e| self.error("look up an identity", e))?;
        Ok(row.as_ref().map(to_identity))
    }

    pub async fn persist_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
        user_id: &str,
    ) -> Result<StoredIdentity, StoreError> {
        let op = "persist an identity";
        let mut client = self.client(op).await?;
        let done: Fallible<StoredIdentity> = async {
            let tx = client.transaction().await?;
            set_identity(&tx, email, service, service_id, user_id).await?;
            let row = tx
                .row(
                    "SELECT email, service, service_id, user_id FROM identities
                     WHERE lower(email) = lower($1) AND service = $2 AND service_id = $3",
                    &[&email, &service, &service_id],
                )
                .await?;
            tx.commit().await?;
            Ok(to_identity(&row))
        }
        .await;
        done.map_err(|e| self.error(op, e))
    }

    pub async fn identities_of(&self, email: &str) -> Result<Vec<StoredIdentity>, StoreError> {
        let client = self.client("list a user's identities").await?;
        let rows = client
            .rows(
                "SELECT email, service, service_id, user_id FROM identities
                 WHERE lower(email) = lower($1)
                 ORDER BY service COLLATE \"C\", service_id COLLATE \"C\"",
                &[&email],
            )
            .await
            .map_err(|e| self.error("list a user's identities", e))?;
        Ok(rows.iter().map(to_identity).collect())
    }

    pub async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let op = "list users";
        let client = self.client(op).await?;
        let users = client
            .rows(
                "SELECT email, created_at FROM users ORDER BY lower(email) COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(|e| self.error(op, e))?;
        let identities = client
            .rows(
                "SELECT email, service, service_id, user_id FROM identities
                 ORDER BY lower(email) COLLATE \"C\", service COLLATE \"C\",
                          service_id COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(|e| self.error(op, e))?;
        let mut next = identities.iter().map(to_identity).peekable();
        Ok(users
            .iter()
            .map(|row| {
                let email: String = row.get(0);
                let mut identities = Vec::new();
                while let Some(identity) = next.next_if(|i| i.email.eq_ignore_ascii_case(&email)) {
                    identities.push(identity);
                }
                UserRecord {
                    email,
                    created_at: row.get(1),
                    identities,
                }
            })
            .collect())
    }

    pub async fn user(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let client = self.client("look up a user").await?;
        let row = client
            .row_opt(
                "SELECT email, created_at FROM users WHERE lower(email) = lower($1)",
                &[&email],
            )
            .await
            .map_err(|e| self.error("look up a user", e))?;
        let Some(row) = row else { return Ok(None) };
        let email: String = row.get(0);
        let identities = self.identities_of(&email).await?;
        Ok(Some(UserRecord {
            email,
            created_at: row.get(1),
            identities,
        }))
    }

    pub async fn delete_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<bool, StoreError> {
        let client = self.client("delete an identity").await?;
        let n = client
            .run(
                "DELETE FROM identities
                 WHERE lower(email) = lower($1) AND service = $2 AND service_id = $3",
                &[&email, &service, &service_id],
            )
            .await
            .map_err(|e| self.error("delete an identity", e))?;
        Ok(n > 0)
    }

    /// Deletes the user and, in the same transaction, every identity of theirs (SQLite's
    /// foreign key cascades; here the identities' emails may differ in case from the user's,
    /// which a foreign key could not match).
    pub async fn delete_user(&self, email: &str) -> Result<bool, StoreError> {
        let op = "delete a user";
        let mut client = self.client(op).await?;
        let done: Fallible<bool> = async {
            let tx = client.transaction().await?;
            tx.run(
                "DELETE FROM identities WHERE lower(email) = lower($1)",
                &[&email],
            )
            .await?;
            let n = tx
                .run(
                    "DELETE FROM users WHERE lower(email) = lower($1)",
                    &[&email],
                )
                .await?;
            tx.commit().await?;
            Ok(n > 0)
        }
        .await;
        done.map_err(|e| self.error(op, e))
    }

    pub async fn apply(&self, changes: &[StoreChange]) -> Result<(), StoreError> {
        let op = "apply identity changes";
        let mut client = self.client(op).await?;
        let done: Fallible<()> = async {
            let tx = client.transaction().await?;
            for change in changes {
                match change {
                    StoreChange::EnsureUser { email } => ensure_user(&tx, email).await?,
                    StoreChange::SetIdentity(i) => {
                        set_identity(&tx, &i.email, &i.service, &i.service_id, &i.user_id).await?
                    }
                }
            }
            tx.commit().await?;
            Ok(())
        }
        .await;
        done.map_err(|e| self.error(op, e))
    }
}

async fn ensure_user(tx: &deadpool_postgres::Transaction<'_>, email: &str) -> Fallible<()> {
    tx.run(
        "INSERT INTO users (email) VALUES ($1) ON CONFLICT (lower(email)) DO NOTHING",
        &[&email],
    )
    .await?;
    Ok(())
}

async fn set_identity(
    tx: &deadpool_postgres::Transaction<'_>,
    email: &str,
    service: &str,
    service_id: &str,
    user_id: &str,
) -> Fallible<()> {
    ensure_user(tx, email).await?;
    tx.run(
        "INSERT INTO identities (email, service, service_id, user_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (lower(email), service, service_id) DO UPDATE
         SET user_id = excluded.user_id, updated_at = warden_utc_now()",
        &[&email, &service, &service_id, &user_id],
    )
    .await?;
    Ok(())
}

/// The error with its causes: tokio-postgres's own says only `db error`, and the server's
/// message (`ERROR: ...`) is its cause.
pub(crate) fn flatten(error: Box<dyn Error + Send + Sync>) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        next = cause.source();
    }
    text
}

fn to_identity(row: &tokio_postgres::Row) -> StoredIdentity {
    StoredIdentity {
        email: row.get(0),
        service: row.get(1),
        service_id: row.get(2),
        user_id: row.get(3),
    }
}

//! The SQLite store: users and their identities in other services, and `warden serve`'s
//! access requests, their history and the audit log ([`requests`]), and the notifications
//! waiting to be delivered ([`outbox`]), and the console's sessions ([`sessions`]); the same on PostgreSQL ([`postgres`]), both behind
//! the one interface `warden serve` and hooks use ([`backend`]). One connection writes
//! (its writes share commits: [`group_commit`]); a file store reads on a second one, and
//! answers repeated identity lookups from memory while the file is unchanged
//! ([`identity_cache`], [`wal_index`]).

pub mod backend;
pub mod blocking;
mod group_commit;
mod identity_cache;
pub mod outbox;
pub mod postgres;
pub mod requests;
pub mod sessions;
// Compiled always: the end-to-end tests of `warden serve` replicas (host/tests) start their
// database with it too. It starts nothing unless a test calls it.
#[doc(hidden)]
pub mod test_cluster;
mod wal_index;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::Unpoisoned;
pub(crate) use group_commit::failure;
use group_commit::{Committer, Job, copy_error, in_savepoint};
use identity_cache::IdentityCache;
use wal_index::WalIndex;

/// Whether `email` is an address as users are kept under: `local@domain`, neither part
/// empty, no whitespace or control character anywhere (so none around it either). What
/// `warden users` takes and what plugins persist are held to it alike: every stored user
/// can be named to `warden users`, and exported users imported again.
pub fn is_email_address(email: &str) -> bool {
    email.rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.is_empty()
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: users and identities.
    "CREATE TABLE users (
        email      TEXT PRIMARY KEY COLLATE NOCASE,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
    );
    CREATE TABLE identities (
        email      TEXT NOT NULL COLLATE NOCASE REFERENCES users(email) ON DELETE CASCADE,
        service    TEXT NOT NULL,
        service_id TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
        PRIMARY KEY (email, service, service_id)
    );",
    // 2: `warden serve`: access requests, their history, and an append-only audit log.
    // Times are Unix milliseconds.
    "CREATE TABLE requests (
        id               TEXT PRIMARY KEY,
        flow             TEXT NOT NULL,
        requester        TEXT NOT NULL COLLATE NOCASE,
        fields           TEXT NOT NULL,
        state            TEXT NOT NULL,
        decision         TEXT NOT NULL,
        reason           TEXT,
        created_by       TEXT NOT NULL,
        idempotency_key  TEXT,
        duration_seconds INTEGER,
        expires_at       INTEGER,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX requests_by_idempotency_key
        ON requests (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE INDEX requests_by_state ON requests (state, expires_at);
    CREATE TABLE request_history (
        request_id TEXT NOT NULL REFERENCES requests(id),
        seq        INTEGER NOT NULL,
        entry      TEXT NOT NULL,
        PRIMARY KEY (request_id, seq)
    );
    CREATE TABLE audit_log (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        at         INTEGER NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        request_id TEXT,
        detail     TEXT NOT NULL
    );
    CREATE TRIGGER audit_log_is_append_only_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_log_is_append_only_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
    // 3: history rows kept in their request's order in the table itself, with no separate
    // index to update on every insert.
    "CREATE TABLE request_history_clustered (
        request_id TEXT NOT NULL REFERENCES requests(id),
        seq        INTEGER NOT NULL,
        entry      TEXT NOT NULL,
        PRIMARY KEY (request_id, seq)
    ) WITHOUT ROWID;
    INSERT INTO request_history_clustered (request_id, seq, entry)
        SELECT request_id, seq, entry FROM request_history;
    DROP TABLE request_history;
    ALTER TABLE request_history_clustered RENAME TO request_history;",
    // 4: a count of identity changes, from any connection, so a commit can tell that it
    // left identities alone (the identity cache keeps its answers across such commits).
    "CREATE TABLE identity_changes (n INTEGER NOT NULL);
    INSERT INTO identity_changes (n) VALUES (0);
    CREATE TRIGGER identity_inserted AFTER INSERT ON identities
        BEGIN UPDATE identity_changes SET n = n + 1; END;
    CREATE TRIGGER identity_updated AFTER UPDATE ON identities
        BEGIN UPDATE identity_changes SET n = n + 1; END;
    CREATE TRIGGER identity_deleted AFTER DELETE ON identities
        BEGIN UPDATE identity_changes SET n = n + 1; END;",
    // 5: the requester as submitted (a JSON user), so hooks after the request step see the
    // whole user, not only an email.
    "ALTER TABLE requests ADD COLUMN requester_profile TEXT;",
    // 6: notifications waiting to be delivered ([`outbox`]), written in the commit of the
    // state change they tell of. Times are Unix milliseconds.
    outbox::MIGRATION,
    // 7: PostgreSQL's claims across replicas (`requests.claimed_until`); one SQLite process
    // claims its requests in memory, so nothing changes here.
    "",
    // 8: console sessions, shared by every replica and kept across restarts ([`sessions`]).
    sessions::MIGRATION,
    // 9: listings walk requests newest first a page at a time ([`requests::list`]) rather
    // than sort the whole table for each page.
    "CREATE INDEX requests_by_creation ON requests (created_at, id);",
    // 10: which claim holds a request on PostgreSQL (`requests.claim_id`); nothing here.
    "",
];

/// A failure of the store: which database (a SQLite file, or a PostgreSQL URL, which never
/// holds a password), what warden was doing, and the database's error.
#[derive(Debug, thiserror::Error)]
#[error("the store {path}: cannot {operation}: {source}")]
pub struct StoreError {
    path: PathBuf,
    /// What failed, as "cannot ..." completes it: `open it`, `write request req-1`, ...
    operation: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    /// A write asked for once the runtime that would run it has stopped.
    pub(crate) fn stopped(path: &Path) -> Self {
        Self::other(path, "write", "the runtime has stopped")
    }

    fn new(path: &Path, operation: impl Into<String>, source: rusqlite::Error) -> Self {
        Self::other(path, operation, source)
    }

    fn other(
        path: &Path,
        operation: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            operation: operation.into(),
            source: source.into(),
        }
    }
}

/// Creates a store file that is not there yet as an empty file readable and writable by its
/// owner only (0600, whatever the umask), before SQLite opens it: SQLite takes the mode of
/// its `-wal` and `-shm` files from the main file, and the store holds every request, reason
/// and identity. An existing file is left as it is; a link to none is followed and its target
/// made so, as SQLite would follow it (a FIFO at the path is not waited on).
fn create_owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map(drop)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIdentity {
    pub email: String,
    pub service: String,
    pub service_id: String,
    pub user_id: String,
}

/// How long a statement waits for another process's lock on the file (`warden users`, an
/// operator's `sqlite3`) before it fails.
pub(crate) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Store {
    path: PathBuf,
    /// Runs [`Store::write`]s, several to a commit.
    committer: Committer,
    /// The one connection that writes; the commit thread locks it for each batch.
    conn: Arc<Mutex<Connection>>,
    /// Calls of [`Store::write`] not yet answered.
    writing: AtomicUsize,
    /// Reads of a file store take their own connection, so they never wait for a commit
    /// (WAL readers see the last commit). An in-memory store has one connection only.
    reader: Option<Mutex<Connection>>,
    /// Identity lookups answered from memory while the file is unchanged; reads SQLite's
    /// mapping of the reader's WAL index, so it is declared (and dropped) after `reader`.
    identities: Option<Arc<IdentityCache>>,
}

impl Store {
    /// Opens the store at `path`, creating it and applying migrations as needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let wrap = |source| StoreError::new(path, "open it", source);
        // A path, never a URI: SQLite reads a name starting `file:` as one (`?vfs=unix-none`
        // would turn its locking off); made absolute, no path starts so.
        let absolute = std::path::absolute(path).map_err(|e| {
            StoreError::new(
                path,
                "open it",
                rusqlite::Error::InvalidPath(e.to_string().into()),
            )
        })?;
        let path = absolute.as_path();
        let existed = path.exists();
        create_owner_only(path).map_err(|source| {
            let operation = if existed {
                "open it for writing"
            } else {
                "create it (mode 0600)"
            };
            StoreError::other(path, operation, source)
        })?;
        let conn = Connection::open(path).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(wrap)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(wrap)?;
        reader.set_prepared_statement_cache_capacity(64);
        Self::prepare(path.to_path_buf(), conn, Some(reader))
    }

    pub fn open_in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory()
            .map_err(|source| StoreError::new(&path, "open it", source))?;
        Self::prepare(path, conn, None)
    }

    /// Applies migrations on `conn` and starts the commit thread; `reader`, of a file store,
    /// then serves reads.
    fn prepare(
        path: PathBuf,
        mut conn: Connection,
        reader: Option<Connection>,
    ) -> Result<Self, StoreError> {
        let wrap = |source| StoreError::new(&path, "prepare it (settings, migrations)", source);
        conn.busy_timeout(BUSY_TIMEOUT).map_err(wrap)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(wrap)?;
        // Each commit flushed to disk before its callers are answered and before the hooks
        // after it run (SECURITY.md, "Durability"): with `NORMAL` a commit in WAL mode waits
        // for the next checkpoint, and a power loss or an OS crash before it loses access
        // the hooks already granted. Group commit shares one flush among a batch's writes.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(wrap)?;
        // What a savepoint needs to roll back stays in memory (every write has one).
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(wrap)?;
        // Every statement on a request's path is prepared once and kept (`prepare_cached`).
        conn.set_prepared_statement_cache_capacity(64);
        // The version is read under the write lock, and every migration it lacks applied in
        // that one transaction: two processes opening one file (`serve` beside `users`, say)
        // would otherwise both read an old version, and the later one re-run migrations the
        // other had applied, setting the version back to where it left off.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let applied: usize = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(wrap)?;
        if applied > MIGRATIONS.len() {
            // Left as it is: an older warden must not write to a newer one's store.
            return Err(StoreError::other(
                &path,
                "use it",
                format!(
                    "its schema version {applied} is newer than this warden knows ({}); upgrade warden",
                    MIGRATIONS.len()
                ),
            ));
        }
        if applied < MIGRATIONS.len() {
            for sql in &MIGRATIONS[applied..] {
                tx.execute_batch(sql).map_err(wrap)?;
            }
            tx.pragma_update(None, "user_version", MIGRATIONS.len())
                .map_err(wrap)?;
        }
        tx.commit().map_err(wrap)?;
        let identities = match &reader {
            // The reader maps the WAL index once it has read in WAL mode.
            Some(reader) => {
                reader
                    .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                    .map_err(wrap)?;
                // SAFETY: the index is kept in `identities`, which is dropped after `reader`
                // is closed and never used then (see the field).
                unsafe { WalIndex::of(reader) }.map(|wal| Arc::new(IdentityCache::new(wal)))
            }
            None => None,
        };
        let conn = Arc::new(Mutex::new(conn));
        let committer = Committer::start(conn.clone(), identities.clone()).map_err(|e| {
            StoreError::new(&path, "start its commit thread", failure(&e.to_string()))
        })?;
        Ok(Self {
            path,
            committer,
            conn,
            writing: AtomicUsize::new(0),
            reader: reader.map(Mutex::new),
            identities,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_version(&self) -> usize {
        MIGRATIONS.len()
    }

    /// `source` as a failure to do `operation` ("cannot {operation}") in this store.
    fn error(&self, operation: impl Into<String>, source: rusqlite::Error) -> StoreError {
        StoreError::new(&self.path, operation, source)
    }

    /// Runs `f` on the write connection at once, between batches of [`Store::write`]s;
    /// `operation` names it in an error ("cannot {operation}").
    pub(crate) fn with<R>(
        &self,
        operation: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        let mut conn = self.conn.lock().unpoisoned();
        f(&mut conn).map_err(|e| self.error(operation, e))
    }

    /// Runs `f`, which only reads, on the read connection; `operation` names it in an error.
    pub(crate) fn read<R>(
        &self,
        operation: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> Result<R, StoreError> {
        match &self.reader {
            Some(reader) => {
                let conn = reader.lock().unpoisoned();
                f(&conn).map_err(|e| self.error(operation, e))
            }
            None => self.with(operation, |c| f(c)),
        }
    }

    /// Folds the write-ahead log into the database file, for a clean shutdown.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.with("checkpoint the write-ahead log", |c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .optional()
                .map(|_| ())
        })
    }

    /// Identity lookups answered from memory so far (0 for a store in memory).
    pub fn identity_lookups_from_memory(&self) -> u64 {
        self.identities.as_ref().map_or(0, |cache| cache.hits())
    }

    /// Writes run through `Store::write` so far, and the commits they took.
    pub fn write_counts(&self) -> (u64, u64) {
        self.committer.counts()
    }

    /// Runs `work` as one all-or-nothing write, committed together with the other writes
    /// waiting at that moment; returns once that commit is on disk (or has failed).
    /// `work` runs holding the write connection (on the commit thread, or on the caller's
    /// when no other write is in progress) and must not call back into the store.
    /// `operation` names it in an error ("cannot {operation}").
    pub(crate) async fn write<R: Send + 'static>(
        &self,
        operation: &str,
        work: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = in_savepoint(conn, work);
            Box::new(move |commit_failed| {
                let outcome = match (outcome, commit_failed) {
                    (Ok(_), Some(e)) => Err(copy_error(e)),
                    (outcome, _) => outcome,
                };
                let _ = answer.send(outcome);
            })
        });
        let stopped = || failure("the store's commit thread has stopped");
        // A write with no other in progress commits at once, on the caller's thread: waking
        // the commit thread would only add latency. Writes that overlap queue to share one.
        let writing = Writing::start(&self.writing);
        let queued = if writing.alone {
            self.run_if_free(job)
        } else {
            Some(job)
        };
        if let Some(job) = queued
            && self.committer.submit(job).is_err()
        {
            return Err(self.error(operation, stopped()));
        }
        match answered.await {
            Ok(outcome) => outcome.map_err(|e| self.error(operation, e)),
            Err(_) => Err(self.error(operation, stopped())),
        }
    }

    /// Runs `job` at once if the write connection is free; gives it back if not.
    fn run_if_free(&self, job: Job) -> Option<Job> {
        let conn = match self.conn.try_lock() {
            Ok(conn) => conn,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Some(job),
        };
        self.committer.run_alone(&conn, job);
        None
    }

    pub fn lookup_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<Option<StoredIdentity>, StoreError> {
        let read = || {
            self.read("look up an identity", |c| {
                c.prepare_cached(
                    "SELECT email, service, service_id, user_id FROM identities
                     WHERE email = ?1 AND service = ?2 AND service_id = ?3",
                )?
                .query_row(params![email, service, service_id], row_to_identity)
                .optional()
            })
        };
        match &self.identities {
            Some(cache) => cache.lookup(email, service, service_id, read),
            None => read(),
        }
    }

    /// Creates or updates the identity, creating the user if needed.
    pub fn persist_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
        user_id: &str,
    ) -> Result<StoredIdentity, StoreError> {
        self.with("persist an identity", |c| {
            let tx = c.transaction()?;
            tx.execute("INSERT OR IGNORE INTO users (email) VALUES (?1)", params![email])?;
            tx.execute(
                "INSERT INTO identities (email, service, service_id, user_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (email, service, service_id) DO UPDATE
                 SET user_id = excluded.user_id,
                     updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')",
                params![email, service, service_id, user_id],
            )?;
            let stored = tx.query_row(
                "SELECT email, service, service_id, user_id FROM identities
                 WHERE email = ?1 AND service = ?2 AND service_id = ?3",
                params![email, service, service_id],
                row_to_identity,
            )?;
            tx.commit()?;
            Ok(stored)
        })
    }

    /// Every identity of the user, ordered by service.
    pub fn identities_of(&self, email: &str) -> Result<Vec<StoredIdentity>, StoreError> {
        self.read("list a user's identities", |c| {
            let mut stmt = c.prepare(
                "SELECT email, service, service_id, user_id FROM identities
                 WHERE email = ?1 ORDER BY service, service_id",
            )?;
            stmt.query_map(params![email], row_to_identity)?.collect()
        })
    }

    /// Every identity in the store, ordered by email, service and service id.
    pub fn all_identities(&self) -> Result<Vec<StoredIdentity>, StoreError> {
        self.read("list identities", |c| {
            let mut stmt = c.prepare(
                "SELECT email, service, service_id, user_id FROM identities
                 ORDER BY email, service, service_id",
            )?;
            stmt.query_map([], row_to_identity)?.collect()
        })
    }

    /// Every user, ordered by email, with their identities ordered by service.
    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.read("list users", |c| {
            let mut users: Vec<UserRecord> = c
                .prepare("SELECT email, created_at FROM users ORDER BY email COLLATE NOCASE")?
                .query_map([], |row| {
                    Ok(UserRecord {
                        email: row.get(0)?,
                        created_at: row.get(1)?,
                        identities: Vec::new(),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt = c.prepare(
                "SELECT email, service, service_id, user_id FROM identities
                 ORDER BY email COLLATE NOCASE, service, service_id",
            )?;
            let identities = stmt
                .query_map([], row_to_identity)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // Both lists are in the same email order, so one pass matches them up.
            let mut next = identities.into_iter().peekable();
            for user in &mut users {
                while let Some(identity) =
                    next.next_if(|i| i.email.eq_ignore_ascii_case(&user.email))
                {
                    user.identities.push(identity);
                }
            }
            Ok(users)
        })
    }

    /// The user as stored (its email spelled as first seen), if any.
    pub fn user(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let found = self.read("look up a user", |c| {
            c.query_row(
                "SELECT email, created_at FROM users WHERE email = ?1",
                params![email],
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
            )
            .optional()
        })?;
        let Some((email, created_at)) = found else {
            return Ok(None);
        };
        let identities = self.identities_of(&email)?;
        Ok(Some(UserRecord {
            email,
            created_at,
            identities,
        }))
    }

    /// Deletes one identity; false when there was none.
    pub fn delete_identity(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
    ) -> Result<bool, StoreError> {
        self.with("delete an identity", |c| {
            c.execute(
                "DELETE FROM identities WHERE email = ?1 AND service = ?2 AND service_id = ?3",
                params![email, service, service_id],
            )
            .map(|n| n > 0)
        })
    }

    /// Deletes the user and every identity of theirs; false when there was no such user.
    pub fn delete_user(&self, email: &str) -> Result<bool, StoreError> {
        self.with("delete a user", |c| {
            c.execute("DELETE FROM users WHERE email = ?1", params![email])
                .map(|n| n > 0)
        })
    }

    /// Applies every change in one transaction: all of them or, on any error, none.
    pub fn apply(&self, changes: &[StoreChange]) -> Result<(), StoreError> {
        self.with("apply identity changes", |c| {
            let tx = c.transaction()?;
            for change in changes {
                match change {
                    StoreChange::EnsureUser { email } => {
                        tx.execute(
                            "INSERT OR IGNORE INTO users (email) VALUES (?1)",
                            params![email],
                        )?;
                    }
                    StoreChange::SetIdentity(i) => {
                        tx.execute(
                            "INSERT OR IGNORE INTO users (email) VALUES (?1)",
                            params![i.email],
                        )?;
                        tx.execute(
                            "INSERT INTO identities (email, service, service_id, user_id)
                             VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT (email, service, service_id) DO UPDATE
                             SET user_id = excluded.user_id,
                                 updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')",
                            params![i.email, i.service, i.service_id, i.user_id],
                        )?;
                    }
                }
            }
            tx.commit()
        })
    }
}

/// Counts one call of [`Store::write`] from its start until it is answered or dropped.
struct Writing<'a> {
    count: &'a AtomicUsize,
    alone: bool,
}

impl<'a> Writing<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        let before = count.fetch_add(1, Ordering::AcqRel);
        Self {
            count,
            alone: before == 0,
        }
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One change of [`Store::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    EnsureUser { email: String },
    SetIdentity(StoredIdentity),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub email: String,
    pub created_at: String,
    pub identities: Vec<StoredIdentity>,
}

fn row_to_identity(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredIdentity> {
    Ok(StoredIdentity {
        email: row.get(0)?,
        service: row.get(1)?,
        service_id: row.get(2)?,
        user_id: row.get(3)?,
    })
}

#[cfg(test)]
mod tests;

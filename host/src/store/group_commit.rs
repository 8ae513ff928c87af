//! Group commit: writes from concurrent requests share one SQLite transaction.
//!
//! Every commit writes each page it changed to the write-ahead log, and the requests that
//! `warden serve` handles at once change the same few pages (the tail of each table). So one
//! thread owns the writes: it takes every write waiting in its queue, runs each inside its
//! own savepoint of one transaction, commits once, and only then answers each caller. A write
//! that fails rolls back its savepoint alone; a failed commit fails every write in it. A write
//! that finds no other in progress skips the queue ([`Committer::run_alone`]).
//!
//! A commit that leaves identities alone tells the identity cache, so its answers outlive
//! warden's own writes ([`IdentityCache::adopt`]).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, ffi};

use super::identity_cache::IdentityCache;
use crate::Unpoisoned;

/// Told, once the batch a write ran in has committed or failed, which of the two happened.
pub(super) type Reply = Box<dyn FnOnce(Option<&rusqlite::Error>) + Send>;
/// One caller's write: runs on the commit thread and says how to answer the caller.
pub(super) type Job = Box<dyn FnOnce(&Connection) -> Reply + Send>;

/// More writes than this wait for the next commit, so no caller waits on an endless batch.
const MAX_BATCH: usize = 128;

pub(super) struct Committer {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
    identities: Option<Arc<IdentityCache>>,
}

/// How many writes have been run, and in how many transactions.
#[derive(Default)]
struct Counts {
    writes: AtomicU64,
    commits: AtomicU64,
}

impl Committer {
    pub(super) fn start(
        conn: Arc<Mutex<Connection>>,
        identities: Option<Arc<IdentityCache>>,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = channel();
        let counts = Arc::new(Counts::default());
        let thread_counts = counts.clone();
        let thread_identities = identities.clone();
        let thread = std::thread::Builder::new()
            .name("warden-store-commit".into())
            .spawn(move || {
                commit_loop(&conn, &queue, &thread_counts, thread_identities.as_deref())
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
            counts,
            identities,
        })
    }

    /// Runs `job` as its own transaction on `conn`, which the caller holds; for a write that
    /// found the connection free, so it need not wait for this thread to wake.
    pub(super) fn run_alone(&self, conn: &Connection, job: Job) {
        self.counts.writes.fetch_add(1, Ordering::Relaxed);
        self.counts.commits.fetch_add(1, Ordering::Relaxed);
        let (replies, committed) = run_batch(conn, vec![job], self.identities.as_deref());
        for reply in replies {
            reply(committed.as_ref().err());
        }
    }

    /// Writes run so far, and the transactions they took.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.counts.writes.load(Ordering::Relaxed),
            self.counts.commits.load(Ordering::Relaxed),
        )
    }

    /// Queues `job`; gives it back if the commit thread has stopped.
    pub(super) fn submit(&self, job: Job) -> Result<(), Job> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the queue ends the loop after the writes already queued; joining means the
        // connection is closed when the store is gone, so the file can be reopened at once.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn commit_loop(
    conn: &Mutex<Connection>,
    queue: &Receiver<Job>,
    counts: &Counts,
    identities: Option<&IdentityCache>,
) {
    while let Ok(first) = queue.recv() {
        // Locked before the queue is drained: writes that arrive while another user of the
        // connection holds it join this batch.
        let conn = conn.lock().unpoisoned();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        counts
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        counts.commits.fetch_add(1, Ordering::Relaxed);
        let (replies, committed) = run_batch(&conn, batch, identities);
        drop(conn);
        for reply in replies {
            reply(committed.as_ref().err());
        }
    }
}

/// Runs `batch` in one transaction on `conn` and commits it; the replies wait for the
/// caller to answer them, after it lets go of the connection.
fn run_batch(
    conn: &Connection,
    batch: Vec<Job>,
    identities: Option<&IdentityCache>,
) -> (Vec<Reply>, rusqlite::Result<()>) {
    if conn.execute_batch("BEGIN IMMEDIATE").is_err() {
        // Each write then runs as its own transaction: its savepoint is the outermost one,
        // and releasing it commits. The lock was just waited for, for the whole busy
        // timeout: each write tries it once more without waiting again, or the batch would
        // hold the connection a busy timeout per write while another process holds the file.
        let _ = conn.busy_timeout(std::time::Duration::ZERO);
        let replies = batch.into_iter().map(|job| job(conn)).collect();
        let _ = conn.busy_timeout(super::BUSY_TIMEOUT);
        return (replies, Ok(()));
    }
    // Holding the write lock from here to the commit: no other commit can land between.
    let before =
        identities.map(|cache| (cache.mark(), identity_changes(conn), conn.total_changes()));
    // A write whose error ends the whole transaction (an I/O error, a full disk, `OR
    // ROLLBACK`) takes every earlier write of the batch with it; the later ones then run in
    // a transaction of their own that is rolled back too, never committed one by one while
    // their callers are told the batch failed.
    let mut lost = None;
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        if lost.is_some() && conn.is_autocommit() && conn.execute_batch("BEGIN").is_err() {
            // Nowhere to run the rest uncommitted: dropped, their callers are told so.
            break;
        }
        replies.push(job(conn));
        if lost.is_none() && conn.is_autocommit() {
            lost = Some(failure(
                "a write's error rolled back its whole batch of writes; none of them was kept",
            ));
        }
    }
    if let Some(lost) = lost {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        return (replies, Err(lost));
    }
    // Whether this transaction wrote (so its commit writes the WAL index once) and left
    // identities alone; read before the commit, inside the transaction.
    let adoptable = before
        .as_ref()
        .is_some_and(|(_, identities_before, changes)| {
            identities_before.is_some()
                && identity_changes(conn) == *identities_before
                && conn.total_changes() > *changes
        });
    let committed = conn.execute_batch("COMMIT");
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    } else if let (Some(cache), Some((mark, _, _)), true) = (identities, before, adoptable) {
        cache.adopt(mark);
    }
    (replies, committed)
}

/// How many times identities were changed, counted by the schema's triggers (`None` on a
/// connection without them).
fn identity_changes(conn: &Connection) -> Option<i64> {
    conn.prepare_cached("SELECT n FROM identity_changes")
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
        .ok()
}

/// Runs `work` inside a savepoint: kept if it succeeds, rolled back if it fails or panics.
pub(super) fn in_savepoint<R>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    conn.execute_batch("SAVEPOINT write")?;
    let outcome = match catch_unwind(AssertUnwindSafe(|| work(conn))) {
        Ok(Ok(value)) => conn.execute_batch("RELEASE write").map(|()| value),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(failure("a store write panicked; it was rolled back")),
    };
    if outcome.is_err() {
        let _ = conn.execute_batch("ROLLBACK TO write; RELEASE write");
    }
    outcome
}

/// The same failure again, for each write of a batch whose commit failed.
pub(super) fn copy_error(error: &rusqlite::Error) -> rusqlite::Error {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => failure(&other.to_string()),
    }
}

pub(crate) fn failure(message: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        ffi::Error::new(ffi::SQLITE_ERROR),
        Some(message.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn table() -> Arc<Mutex<Connection>> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE item (id INTEGER PRIMARY KEY,
                 parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .unwrap();
        Arc::new(Mutex::new(conn))
    }

    /// A job inserting item `id` (with `parent`, if any); its outcome arrives on `outcomes`.
    fn insert(
        id: i64,
        parent: Option<i64>,
        outcomes: &mpsc::Sender<(i64, Result<(), String>)>,
    ) -> Job {
        let outcomes = outcomes.clone();
        Box::new(move |conn| {
            let outcome = in_savepoint(conn, |c| {
                if id == 13 {
                    panic!("unlucky");
                }
                if id == 66 {
                    return c
                        .execute("INSERT OR ROLLBACK INTO item (id) VALUES (1)", [])
                        .map(drop);
                }
                c.execute(
                    "INSERT INTO item (id, parent) VALUES (?1, ?2)",
                    (id, parent),
                )
                .map(drop)
            });
            Box::new(move |commit_failed| {
                let outcome = match (outcome, commit_failed) {
                    (Ok(()), Some(e)) => Err(copy_error(e)),
                    (outcome, _) => outcome,
                };
                outcomes
                    .send((id, outcome.map_err(|e| e.to_string())))
                    .unwrap();
            })
        })
    }

    fn stored(conn: &Mutex<Connection>) -> Vec<i64> {
        let conn = conn.lock().unwrap();
        let mut stmt = conn.prepare("SELECT id FROM item ORDER BY id").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Queues `jobs` while the connection is held elsewhere, so they all wait for one batch.
    fn run_together(conn: &Arc<Mutex<Connection>>, committer: &Committer, jobs: Vec<Job>) {
        let held = conn.lock().unwrap();
        for job in jobs {
            assert!(committer.submit(job).is_ok());
        }
        drop(held);
    }

    #[test]
    fn waiting_writes_share_one_commit_and_a_failing_one_rolls_back_alone() {
        let conn = table();
        let committer = Committer::start(conn.clone(), None).unwrap();
        let (outcomes, arrived) = mpsc::channel();
        let jobs = vec![
            insert(1, None, &outcomes),
            insert(2, None, &outcomes),
            insert(1, None, &outcomes),  // the same key again: refused
            insert(13, None, &outcomes), // panics
            insert(4, None, &outcomes),
        ];
        run_together(&conn, &committer, jobs);
        let mut answers: Vec<(i64, Result<(), String>)> = arrived.iter().take(5).collect();
        answers.sort_by_key(|(id, outcome)| (*id, outcome.is_err()));
        let failures: Vec<(i64, &str)> = answers
            .iter()
            .map(|(id, outcome)| match outcome {
                Ok(()) => (*id, "ok"),
                Err(e) if e.contains("UNIQUE") => (*id, "unique"),
                Err(e) if e.contains("panicked") => (*id, "panicked"),
                Err(_) => (*id, "other"),
            })
            .collect();
        assert_eq!(
            failures,
            [
                (1, "ok"),
                (1, "unique"),
                (2, "ok"),
                (4, "ok"),
                (13, "panicked")
            ]
        );
        assert_eq!(stored(&conn), [1, 2, 4]);
        assert_eq!(committer.counts(), (5, 1), "five writes, one commit");
    }

    #[test]
    fn a_write_that_rolls_back_the_whole_batch_fails_every_write_and_keeps_none() {
        let conn = table();
        let committer = Committer::start(conn.clone(), None).unwrap();
        let (outcomes, arrived) = mpsc::channel();
        // Item 66 is written `OR ROLLBACK` over item 1: SQLite ends the transaction.
        let jobs = vec![
            insert(1, None, &outcomes),
            insert(66, None, &outcomes),
            insert(3, None, &outcomes),
        ];
        run_together(&conn, &committer, jobs);
        let answers: Vec<(i64, Result<(), String>)> = arrived.iter().take(3).collect();
        for (id, outcome) in &answers {
            assert!(outcome.is_err(), "{id} was told it was kept");
        }
        assert!(stored(&conn).is_empty(), "{:?}", stored(&conn));
        // The connection is fit for the next batch.
        run_together(&conn, &committer, vec![insert(5, None, &outcomes)]);
        assert_eq!(arrived.iter().next().unwrap(), (5, Ok(())));
        assert_eq!(stored(&conn), [5]);
    }

    #[test]
    fn while_another_process_holds_the_file_a_batch_waits_once_not_once_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE item (id INTEGER PRIMARY KEY, parent INTEGER);")
            .unwrap();
        conn.busy_timeout(super::super::BUSY_TIMEOUT).unwrap();
        let conn = Arc::new(Mutex::new(conn));
        let committer = Committer::start(conn.clone(), None).unwrap();
        // An operator's `sqlite3` in the middle of a write.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (outcomes, arrived) = mpsc::channel();
        let started = std::time::Instant::now();
        let jobs = (1..=3).map(|id| insert(id, None, &outcomes)).collect();
        run_together(&conn, &committer, jobs);
        let answers: Vec<(i64, Result<(), String>)> = arrived.iter().take(3).collect();
        let waited = started.elapsed();
        for (id, outcome) in &answers {
            let error = outcome.as_ref().expect_err("the file was locked");
            assert!(error.contains("locked"), "{id}: {error}");
        }
        // One busy timeout (5 s) for the batch; a wait a write would be 20 s.
        assert!(waited < std::time::Duration::from_secs(12), "{waited:?}");
        other.execute_batch("ROLLBACK").unwrap();
        run_together(&conn, &committer, vec![insert(4, None, &outcomes)]);
        assert_eq!(arrived.iter().next().unwrap(), (4, Ok(())));
    }

    #[test]
    fn a_failed_commit_fails_every_write_in_it_and_keeps_none() {
        let conn = table();
        let committer = Committer::start(conn.clone(), None).unwrap();
        let (outcomes, arrived) = mpsc::channel();
        // Item 8's parent does not exist; a deferred foreign key is checked at commit.
        let jobs = vec![insert(7, None, &outcomes), insert(8, Some(99), &outcomes)];
        run_together(&conn, &committer, jobs);
        let answers: Vec<(i64, Result<(), String>)> = arrived.iter().take(2).collect();
        for (id, outcome) in &answers {
            let error = outcome.as_ref().expect_err("the commit failed");
            assert!(error.contains("FOREIGN KEY"), "{id}: {error}");
        }
        assert!(stored(&conn).is_empty());
        // The connection is usable again: the next write commits.
        assert!(committer.submit(insert(9, None, &outcomes)).is_ok());
        assert_eq!(arrived.recv().unwrap(), (9, Ok(())));
        assert_eq!(stored(&conn), [9]);
    }

    #[test]
    fn writes_queued_before_the_store_closes_are_still_committed() {
        let conn = table();
        let committer = Committer::start(conn.clone(), None).unwrap();
        let (outcomes, arrived) = mpsc::channel();
        run_together(
            &conn,
            &committer,
            (20..30).map(|id| insert(id, None, &outcomes)).collect(),
        );
        drop(committer);
        assert_eq!(arrived.try_iter().count(), 10);
        assert_eq!(stored(&conn), (20..30).collect::<Vec<_>>());
    }
}

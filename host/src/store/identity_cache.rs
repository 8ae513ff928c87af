//! Identities looked up since the database last changed, kept in memory.
//!
//! A plugin looks up the requester's identity on every event (the seed's `get_custom_user`),
//! and a read transaction costs more than the rest of a cached VictorOps decision. An answer
//! stays valid until something is committed — by this process or another (`warden users`,
//! the `sqlite3` shell) — which the WAL index tells without a transaction. warden's own
//! commits that leave identities alone keep the answers (see [`IdentityCache::adopt`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoredIdentity;
use super::wal_index::{Mark, WalIndex};

/// More distinct lookups than this between two changes start the cache afresh.
const MAX_ENTRIES: usize = 10_000;

type Key = (String, String, String);

pub(crate) struct IdentityCache {
    wal: WalIndex,
    answers: Mutex<Answers>,
    /// Lookups answered from memory so far.
    hits: AtomicU64,
}

/// The answers, all true as of `mark`.
#[derive(Default)]
struct Answers {
    mark: Option<Mark>,
    found: HashMap<Key, Option<StoredIdentity>>,
}

impl IdentityCache {
    pub(crate) fn new(wal: WalIndex) -> Self {
        Self {
            wal,
            answers: Mutex::default(),
            hits: AtomicU64::new(0),
        }
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The answer for (`email`, `service`, `service_id`): from memory while nothing was
    /// committed since it was read, else from `read`, then remembered.
    pub(crate) fn lookup<E>(
        &self,
        email: &str,
        service: &str,
        service_id: &str,
        read: impl FnOnce() -> Result<Option<StoredIdentity>, E>,
    ) -> Result<Option<StoredIdentity>, E> {
        // Taken before reading: a commit after this moment makes the next mark differ, so
        // an answer newer than its mark is only ever thrown away early.
        let Some(mark) = self.wal.mark() else {
            return read();
        };
        let key = (email.to_owned(), service.to_owned(), service_id.to_owned());
        {
            let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            if answers.mark == Some(mark)
                && let Some(found) = answers.found.get(&key)
            {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(found.clone());
            }
        }
        let found = read()?;
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if answers.mark != Some(mark) || answers.found.len() >= MAX_ENTRIES {
            answers.found.clear();
            answers.mark = Some(mark);
        }
        answers.found.insert(key, found.clone());
        Ok(found)
    }

    /// The WAL index now, for [`adopt`](Self::adopt); call it holding the database's write
    /// lock (inside a write transaction), so no other commit can land before ours.
    pub(crate) fn mark(&self) -> Option<Mark> {
        self.wal.mark()
    }

    /// Keeps the answers across one of this process's own commits, which left identities
    /// alone: `before` was marked holding the write lock, and `after` has exactly one more
    /// header write, that commit's. Anything else (another commit, a WAL restart) leaves
    /// the mark to differ, and the answers are read again.
    pub(crate) fn adopt(&self, before: Option<Mark>) {
        let (Some(before), Some(after)) = (before, self.wal.mark()) else {
            return;
        };
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if answers.mark == Some(before) && after.changes() == before.changes().wrapping_add(1) {
            answers.mark = Some(after);
        }
    }
}

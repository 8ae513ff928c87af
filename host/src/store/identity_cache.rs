//! Identities looked up since the database last changed, kept in memory.
//!
//! A plugin looks up the requester's identity on every event (the seed's `get_custom_user`),
//! and a read transaction costs more than the rest of a cached VictorOps decision. An answer
//! stays valid until something is committed — by this process or another (`warden users`,
//! the `sqlite3` shell) — which the WAL index tells without a transaction. warden's own
//! commits that leave identities alone keep the answers (see [`IdentityCache::adopt`]).
//!
//! The email is whatever a plugin asks for, so what is remembered is bounded in bytes, not
//! only in entries: a long lookup is never remembered, and answers past [`MAX_BYTES`] start
//! the cache afresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoredIdentity;
use super::wal_index::{Mark, WalIndex};
use crate::Unpoisoned;

/// More distinct lookups than this between two changes start the cache afresh.
const MAX_ENTRIES: usize = 10_000;

/// The longest lookup (email, service and service id together) answered from memory; a
/// longer one is read from the store each time. Stored emails and user ids are at most 320
/// bytes, so no real lookup is this long.
const MAX_KEY_BYTES: usize = 1024;

/// What remembered answers may take, keys and identities, each entry counted with
/// [`ENTRY_OVERHEAD`] more; past it the cache starts afresh.
const MAX_BYTES: usize = 4 << 20;

/// Charged per remembered answer, on top of its text: the map's slot and the allocations.
const ENTRY_OVERHEAD: usize = 128;

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
    /// What `found` takes, counted as [`entry_bytes`] does.
    bytes: usize,
}

fn entry_bytes(key: &Key, found: &Option<StoredIdentity>) -> usize {
    let identity = found.as_ref().map_or(0, |i| {
        i.email.len() + i.service.len() + i.service_id.len() + i.user_id.len()
    });
    key.0.len() + key.1.len() + key.2.len() + identity + ENTRY_OVERHEAD
}

impl Answers {
    fn clear(&mut self) {
        self.found.clear();
        self.bytes = 0;
    }

    /// Remembers an answer, starting afresh first when it would not fit.
    fn remember(&mut self, key: Key, found: Option<StoredIdentity>) {
        let bytes = entry_bytes(&key, &found);
        if self.found.len() >= MAX_ENTRIES || self.bytes + bytes > MAX_BYTES {
            self.clear();
        }
        if let Some(old) = self.found.get(&key) {
            self.bytes -= entry_bytes(&key, old);
        }
        self.bytes += bytes;
        self.found.insert(key, found);
    }
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
        if email.len() + service.len() + service_id.len() > MAX_KEY_BYTES {
            return read();
        }
        // Taken before reading: a commit after this moment makes the next mark differ, so
        // an answer newer than its mark is only ever thrown away early.
        let Some(mark) = self.wal.mark() else {
            return read();
        };
        let key = (email.to_owned(), service.to_owned(), service_id.to_owned());
        {
            let answers = self.answers.lock().unpoisoned();
            if answers.mark == Some(mark)
                && let Some(found) = answers.found.get(&key)
            {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(found.clone());
            }
        }
        let found = read()?;
        let mut answers = self.answers.lock().unpoisoned();
        if answers.mark != Some(mark) {
            answers.clear();
            answers.mark = Some(mark);
        }
        answers.remember(key, found.clone());
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
        let mut answers = self.answers.lock().unpoisoned();
        if answers.mark == Some(before) && after.changes() == before.changes().wrapping_add(1) {
            answers.mark = Some(after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(user_id: &str) -> Option<StoredIdentity> {
        Some(StoredIdentity {
            email: "a@example.com".into(),
            service: "custom".into(),
            service_id: "vo".into(),
            user_id: user_id.into(),
        })
    }

    #[test]
    fn remembered_answers_stay_within_their_bytes_whatever_the_keys() {
        let mut answers = Answers::default();
        for i in 0..20_000 {
            let email = format!("{i}{}", "e".repeat(MAX_KEY_BYTES - 20));
            answers.remember((email, "custom".into(), "vo".into()), None);
            assert!(answers.bytes <= MAX_BYTES, "{} after {i}", answers.bytes);
        }
        let counted: usize = answers.found.iter().map(|(k, v)| entry_bytes(k, v)).sum();
        assert_eq!(counted, answers.bytes);
        assert!(answers.found.len() < MAX_BYTES / MAX_KEY_BYTES);
    }

    #[test]
    fn an_answer_remembered_again_is_counted_once() {
        let mut answers = Answers::default();
        let key = || ("a@example.com".to_string(), "custom".into(), "vo".into());
        answers.remember(key(), identity("alice"));
        answers.remember(key(), identity("alice-2"));
        assert_eq!(answers.found.len(), 1);
        assert_eq!(answers.bytes, entry_bytes(&key(), &identity("alice-2")));
    }
}

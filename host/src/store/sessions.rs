//! Console sessions in the store, so every replica on one database knows every browser signed
//! in, and a restart signs no one out (the same rows on PostgreSQL: `postgres::sessions`).
//!
//! A session is stored under the SHA-256 of its id, never the id: what the store holds
//! cannot be sent back as a cookie. The API token it was opened with is kept as a digest as
//! well, so the console finds the token again in the config now serving (a rotated token
//! ends its sessions). The console's rules ([`SessionRules`]) are applied here, in the
//! write that opens a session: expired sessions go, a token's oldest go beyond its cap, and
//! beyond the total nothing new is opened.

use rusqlite::{Connection, OptionalExtension, params};

/// Migration 8 (SQLite): the sessions table. Times are Unix milliseconds.
pub(super) const MIGRATION: &str = "CREATE TABLE console_sessions (
        id_digest    TEXT PRIMARY KEY,
        token_digest TEXT NOT NULL,
        csrf         TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        last_used    INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX console_sessions_by_token ON console_sessions (token_digest, created_at);";

/// One signed-in browser, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Hex SHA-256 of the API token it was opened with.
    pub token_digest: String,
    /// The token every form of this session must carry.
    pub csrf: String,
    pub created_at: i64,
    pub last_used: i64,
}

/// How long sessions live and how many there may be: the console's, applied by the store.
#[derive(Debug, Clone, Copy)]
pub struct SessionRules {
    /// From sign-in, used or not.
    pub lifetime_ms: i64,
    /// Unused this long, a session ends sooner.
    pub idle_ms: i64,
    /// A session's use is written at most this often: a page load is a read, not a write.
    pub touch_every_ms: i64,
    /// Sessions one token may hold; signing in again beyond it ends its oldest.
    pub per_token: usize,
    /// Sessions held in all; beyond it (after dropping expired ones) nothing is opened.
    pub total: usize,
}

impl SessionRules {
    pub fn expired(&self, session: &StoredSession, now: i64) -> bool {
        now - session.created_at >= self.lifetime_ms || now - session.last_used >= self.idle_ms
    }

    /// Sessions created at or before this have outlived their lifetime.
    pub(crate) fn created_by(&self, now: i64) -> i64 {
        now - self.lifetime_ms
    }

    /// Sessions last used at or before this have been idle too long.
    pub(crate) fn used_by(&self, now: i64) -> i64 {
        now - self.idle_ms
    }
}

/// Opens session `id_digest` under `rules`: whether it was opened (`false`: every place is
/// held by a live session).
pub(super) fn open(
    c: &Connection,
    id_digest: &str,
    session: &StoredSession,
    rules: &SessionRules,
) -> rusqlite::Result<bool> {
    let now = session.created_at;
    c.prepare_cached("DELETE FROM console_sessions WHERE created_at <= ?1 OR last_used <= ?2")?
        .execute(params![rules.created_by(now), rules.used_by(now)])?;
    // The token's newest `per_token - 1` stay; the new one makes `per_token`.
    c.prepare_cached(
        "DELETE FROM console_sessions WHERE id_digest IN (
             SELECT id_digest FROM console_sessions WHERE token_digest = ?1
             ORDER BY created_at DESC, id_digest LIMIT -1 OFFSET ?2)",
    )?
    .execute(params![
        session.token_digest,
        rules.per_token.saturating_sub(1) as i64
    ])?;
    let held: i64 = c
        .prepare_cached("SELECT count(*) FROM console_sessions")?
        .query_row([], |r| r.get(0))?;
    if held as usize >= rules.total {
        return Ok(false);
    }
    c.prepare_cached(
        "INSERT INTO console_sessions (id_digest, token_digest, csrf, created_at, last_used)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id_digest,
        session.token_digest,
        session.csrf,
        session.created_at,
        session.last_used
    ])?;
    Ok(true)
}

pub(super) fn get(c: &Connection, id_digest: &str) -> rusqlite::Result<Option<StoredSession>> {
    c.prepare_cached(
        "SELECT token_digest, csrf, created_at, last_used FROM console_sessions
         WHERE id_digest = ?1",
    )?
    .query_row([id_digest], |r| {
        Ok(StoredSession {
            token_digest: r.get(0)?,
            csrf: r.get(1)?,
            created_at: r.get(2)?,
            last_used: r.get(3)?,
        })
    })
    .optional()
}

pub(super) fn touch(c: &Connection, id_digest: &str, now: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE console_sessions SET last_used = ?2 WHERE id_digest = ?1")?
        .execute(params![id_digest, now])?;
    Ok(())
}

pub(super) fn close(c: &Connection, id_digest: &str) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM console_sessions WHERE id_digest = ?1")?
        .execute([id_digest])?;
    Ok(())
}

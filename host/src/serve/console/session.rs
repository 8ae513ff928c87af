//! Console sessions: an API token exchanged at sign-in for a random session id kept in a
//! cookie, a CSRF token bound to each session, a per-address limit on sign-in attempts and a
//! per-user one on sign-ins with a right token ([`crate::serve::throttle`]).
//!
//! Sessions live in the store ([`crate::store::sessions`]), so a browser signed in on one
//! replica is signed in on every replica of one database, and a restart signs no one out;
//! the store holds a digest of each id, not the id. A session remembers a digest of the
//! token it was opened with, not who that token named: each request finds the token again
//! in the config now serving, so a token removed or rotated by a reload ends its sessions,
//! and a changed role applies at once.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::{ApiToken, TokenDigest};
use crate::serve::throttle::{PerAddress, PerUser};
use crate::store::StoreError;
use crate::store::backend::Backend;
use crate::store::sessions::{SessionRules, StoredSession};

/// How long a session lasts from sign-in, used or not.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// A session unused this long ends sooner.
pub const SESSION_IDLE: Duration = Duration::from_secs(3600);
/// A session's use is written to the store at most this often (so it may end this much
/// before a full [`SESSION_IDLE`] after its last use).
pub const SESSION_TOUCH: Duration = Duration::from_secs(60);
/// Sessions one token may hold at once; signing in again beyond it ends its oldest.
pub const MAX_SESSIONS_PER_TOKEN: usize = 16;
/// Sessions held at once in all; beyond it (after dropping expired ones) sign-in is refused.
pub const MAX_SESSIONS: usize = 10_000;
/// Sign-in attempts one client address may make per [`SIGN_IN_WINDOW`].
pub const SIGN_IN_ATTEMPTS: u32 = 10;
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(60);

/// Counts sign-in attempts, right or wrong, per client address ([`PerAddress`]).
pub fn sign_in_attempts() -> PerAddress {
    PerAddress::new(SIGN_IN_ATTEMPTS, SIGN_IN_WINDOW)
}

/// Sign-ins with a right token one user may make per [`SIGN_IN_WINDOW`], from whatever
/// addresses: each writes a row to the audit log, which is never trimmed.
pub const SIGN_INS_PER_USER: u32 = 10;

/// Counts sign-ins with a right token per user ([`PerUser`]).
pub fn sign_ins_per_user() -> PerUser {
    PerUser::new(SIGN_INS_PER_USER, SIGN_IN_WINDOW)
}

/// The limits above, as the store applies them when it opens and reads a session.
pub const RULES: SessionRules = SessionRules {
    lifetime_ms: SESSION_LIFETIME.as_millis() as i64,
    idle_ms: SESSION_IDLE.as_millis() as i64,
    touch_every_ms: SESSION_TOUCH.as_millis() as i64,
    per_token: MAX_SESSIONS_PER_TOKEN,
    total: MAX_SESSIONS,
};

/// Random bytes as lowercase hex: session ids and CSRF tokens.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random numbers");
    hex(&buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256: what the store keeps of a session id and of a token.
fn digest(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// What the console keeps for one signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    stored: StoredSession,
}

impl Session {
    /// The configured token this session was opened with, if it is still configured.
    pub fn token<'a>(&self, tokens: &'a [ApiToken]) -> Option<&'a ApiToken> {
        let opened_with = self.stored.token_digest.as_bytes();
        tokens
            .iter()
            .find(|t| super::same_secret(t.token.hex().as_bytes(), opened_with))
    }

    pub fn csrf(&self) -> &str {
        &self.stored.csrf
    }
}

/// Every session slot is taken by live sessions.
#[derive(Debug, PartialEq, Eq)]
pub struct SessionsFull;

/// Opens a session for `token` (already checked against the config) under a new random
/// id, which is returned with the session; [`SessionsFull`] when every place is held. Never reuses an
/// id a browser sent: a fresh id at every sign-in is what defeats session fixation.
pub async fn open(
    store: &dyn Backend,
    token: &str,
    now: i64,
) -> Result<Result<(String, Session), SessionsFull>, StoreError> {
    let id = random_hex(32);
    let stored = StoredSession {
        token_digest: TokenDigest::of(token).hex(),
        csrf: random_hex(32),
        created_at: now,
        last_used: now,
    };
    if !store.session_open(&digest(&id), &stored, &RULES).await? {
        return Ok(Err(SessionsFull));
    }
    Ok(Ok((id, Session { stored })))
}

/// The live session `id` names, its use recorded; an expired one is closed.
pub async fn get(store: &dyn Backend, id: &str, now: i64) -> Result<Option<Session>, StoreError> {
    let stored = store.session(&digest(id), now, &RULES).await?;
    Ok(stored.map(|stored| Session { stored }))
}

pub async fn close(store: &dyn Backend, id: &str) -> Result<(), StoreError> {
    store.session_close(&digest(id)).await
}

/// Whether `sent` (a form's hidden field) is the session's CSRF token.
pub fn csrf_matches(session: &Session, sent: Option<&str>) -> bool {
    sent.is_some_and(|sent| super::same_secret(sent.as_bytes(), session.csrf().as_bytes()))
}

/// A session cookie's name: with `Secure`, the `__Host-` prefix also makes browsers refuse
/// one set by a sibling domain or for a narrower path.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-warden_session"
    } else {
        "warden_session"
    }
}

/// `Set-Cookie` for session `id`; `None` clears the cookie.
pub fn set_cookie(id: Option<&str>, secure: bool) -> String {
    let name = cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!(
            "{name}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_LIFETIME.as_secs()
        ),
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// Session cookies looked up per request, over all its `Cookie` headers: a browser sends
/// one, or two when two paths set one. Each is a read of the store, so a client cannot make
/// one request cost hundreds.
pub const MAX_SESSION_COOKIES: usize = 2;

/// The session ids a request's `Cookie` headers carry under the name a request over TLS
/// (`secure`) or plain HTTP gets ([`cookie_name`]), well-formed ones only, at most
/// [`MAX_SESSION_COOKIES`]. Over TLS only the `__Host-` cookie counts: a plain-named one may
/// have been planted by a sibling domain or over plain HTTP, which `__Host-` rules out.
pub fn session_ids<'a>(
    cookie_headers: impl IntoIterator<Item = &'a str>,
    secure: bool,
) -> impl Iterator<Item = &'a str> {
    let wanted = cookie_name(secure);
    cookie_headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(move |pair| {
            let (name, value) = pair.trim().split_once('=')?;
            let well_formed = value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit());
            (name == wanted && well_formed).then_some(value)
        })
        .take(MAX_SESSION_COOKIES)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::config::{Role, TokenDigest};
    use crate::serve::throttle::RateLimited;
    use crate::store::Store;

    fn token(value: &str) -> ApiToken {
        ApiToken {
            name: "t".into(),
            user: "a@x.com".into(),
            role: Role::Approver,
            token: TokenDigest::of(value),
        }
    }

    fn store() -> Arc<Store> {
        Arc::new(Store::open_in_memory().unwrap())
    }

    const T0: i64 = 1_800_000_000_000;

    fn ms(d: Duration) -> i64 {
        d.as_millis() as i64
    }

    async fn open_ok(store: &Store, token: &str, now: i64) -> (String, Session) {
        open(store, token, now).await.unwrap().unwrap()
    }

    async fn live(store: &Store, id: &str, now: i64) -> bool {
        get(store, id, now).await.unwrap().is_some()
    }

    #[tokio::test]
    async fn every_sign_in_gets_a_new_random_id_and_csrf_token_and_the_store_keeps_neither_id() {
        let store = store();
        let (a, sa) = open_ok(&store, "tok", T0).await;
        let (b, sb) = open_ok(&store, "tok", T0).await;
        assert_ne!(a, b);
        assert_ne!(sa.csrf(), sb.csrf());
        assert_eq!(a.len(), 64);
        assert!(live(&store, &a, T0).await);
        assert!(!live(&store, &"f".repeat(64), T0).await);
        // What the store holds cannot be sent back as a cookie, nor shows the token.
        let rows = store
            .read("read", |c| {
                c.prepare("SELECT id_digest, token_digest FROM console_sessions")?
                    .query_map([], |r| {
                        Ok(format!(
                            "{} {}",
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap();
        assert_eq!(rows.len(), 2);
        for row in &rows {
            assert!(
                !row.contains(&a) && !row.contains(&b) && !row.contains("tok "),
                "{row}"
            );
        }
        assert!(
            !live(&store, &digest(&a), T0).await,
            "a digest is not an id"
        );
    }

    #[tokio::test]
    async fn a_session_finds_its_token_only_while_it_is_configured() {
        let store = store();
        let (id, _) = open_ok(&store, "tok", T0).await;
        let session = get(&*store, &id, T0).await.unwrap().unwrap();
        assert!(session.token(&[token("other"), token("tok")]).is_some());
        assert!(session.token(&[token("rotated")]).is_none());
    }

    #[tokio::test]
    async fn sessions_expire_by_lifetime_and_by_idleness_and_close() {
        let store = store();
        let (id, _) = open_ok(&store, "tok", T0).await;
        // Used every half hour, it lives until its lifetime runs out.
        let mut t = T0;
        while t + ms(SESSION_IDLE / 2) < T0 + ms(SESSION_LIFETIME) {
            t += ms(SESSION_IDLE / 2);
            assert!(live(&store, &id, t).await, "{}", t - T0);
        }
        assert!(!live(&store, &id, T0 + ms(SESSION_LIFETIME)).await);

        let (idle, _) = open_ok(&store, "tok", T0).await;
        assert!(!live(&store, &idle, T0 + ms(SESSION_IDLE)).await);

        // Uses closer together than SESSION_TOUCH are not written, but each one that is
        // moves the idle deadline.
        let (touched, _) = open_ok(&store, "tok", T0).await;
        assert!(live(&store, &touched, T0 + ms(SESSION_TOUCH) / 2).await);
        assert!(live(&store, &touched, T0 + ms(SESSION_IDLE) - 1).await);
        assert!(live(&store, &touched, T0 + 2 * ms(SESSION_IDLE) - 2).await);

        let (closed, _) = open_ok(&store, "tok", T0).await;
        close(&*store, &closed).await.unwrap();
        assert!(!live(&store, &closed, T0).await);
    }

    #[tokio::test]
    async fn one_token_holds_a_bounded_number_of_sessions_oldest_ending_first() {
        let store = store();
        let mut ids = Vec::new();
        for i in 0..MAX_SESSIONS_PER_TOKEN as i64 + 2 {
            ids.push(open_ok(&store, "tok", T0 + i).await.0);
        }
        let now = T0 + 1000;
        let mut alive = 0;
        for id in &ids {
            alive += usize::from(live(&store, id, now).await);
        }
        assert_eq!(alive, MAX_SESSIONS_PER_TOKEN);
        assert!(!live(&store, &ids[0], now).await);
        assert!(!live(&store, &ids[1], now).await);
        assert!(live(&store, ids.last().unwrap(), now).await);
        // Another token's sessions are untouched.
        let (other, _) = open_ok(&store, "other", now).await;
        assert!(live(&store, &other, now).await);
        assert!(live(&store, ids.last().unwrap(), now).await);
    }

    #[test]
    fn sign_in_attempts_are_limited_per_address_and_window() {
        let attempts = sign_in_attempts();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..SIGN_IN_ATTEMPTS {
            attempts.attempt(a, t0).unwrap();
        }
        assert_eq!(attempts.attempt(a, t0), Err(RateLimited));
        assert!(attempts.attempt(b, t0).is_ok(), "another address");
        assert!(attempts.attempt(a, t0 + SIGN_IN_WINDOW).is_ok());
    }

    #[tokio::test]
    async fn the_csrf_check_needs_the_sessions_own_token() {
        let store = store();
        let (_, mine) = open_ok(&store, "tok", T0).await;
        let (_, theirs) = open_ok(&store, "tok", T0).await;
        assert!(csrf_matches(&mine, Some(mine.csrf())));
        assert!(!csrf_matches(&mine, Some(theirs.csrf())));
        assert!(!csrf_matches(&mine, Some("")));
        assert!(!csrf_matches(&mine, None));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_when_asked() {
        let plain = set_cookie(Some("ab"), false);
        assert!(plain.starts_with("warden_session=ab; Path=/; HttpOnly; SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        let secure = set_cookie(Some("ab"), true);
        assert!(secure.starts_with("__Host-warden_session=ab;"));
        assert!(secure.ends_with("; Secure"));
        assert!(set_cookie(None, false).contains("Max-Age=0"));
    }

    #[test]
    fn only_well_formed_session_cookies_are_read() {
        let id = "a".repeat(64);
        let header = format!("x=1; warden_session=short; warden_session={id}; other={id}");
        assert_eq!(
            session_ids([header.as_str()], false).collect::<Vec<_>>(),
            [id.as_str()]
        );
        assert_eq!(session_ids(["warden_session=<script>"], false).count(), 0);
    }

    #[test]
    fn at_most_two_session_cookies_are_read_however_many_headers_carry_them() {
        let many = (0..100)
            .map(|i| format!("warden_session={i:064}"))
            .collect::<Vec<_>>()
            .join("; ");
        assert_eq!(
            session_ids([many.as_str()], false).count(),
            MAX_SESSION_COOKIES
        );
        let headers: Vec<String> = (0..100)
            .map(|i| format!("warden_session={i:064}"))
            .collect();
        assert_eq!(
            session_ids(headers.iter().map(String::as_str), false).count(),
            MAX_SESSION_COOKIES
        );
    }

    #[test]
    fn over_tls_only_the_host_prefixed_cookie_counts() {
        let (plain, host) = ("a".repeat(64), "b".repeat(64));
        let header = format!("warden_session={plain}; __Host-warden_session={host}");
        assert_eq!(
            session_ids([header.as_str()], true).collect::<Vec<_>>(),
            [host.as_str()]
        );
        assert_eq!(
            session_ids([header.as_str()], false).collect::<Vec<_>>(),
            [plain.as_str()]
        );
    }
}

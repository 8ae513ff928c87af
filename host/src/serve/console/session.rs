//! Console sessions: an API token exchanged at sign-in for a random session id kept in a
//! cookie, a CSRF token bound to each session, and a per-address limit on sign-in attempts.
//!
//! Sessions live in memory only: a restart signs everyone out. A session remembers a digest
//! of the token it was opened with, not who that token named: each request finds the token
//! again in the config now serving, so a token removed or rotated by a reload ends its
//! sessions, and a changed role applies at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::Unpoisoned;
use crate::config::ApiToken;

/// How long a session lasts from sign-in, used or not.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// A session unused this long ends sooner.
pub const SESSION_IDLE: Duration = Duration::from_secs(3600);
/// Sessions one token may hold at once; signing in again beyond it ends its oldest.
pub const MAX_SESSIONS_PER_TOKEN: usize = 16;
/// Sessions held at once in all; beyond it (after dropping expired ones) sign-in is refused.
pub const MAX_SESSIONS: usize = 10_000;
/// Sign-in attempts one client address may make per [`SIGN_IN_WINDOW`].
pub const SIGN_IN_ATTEMPTS: u32 = 10;
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose attempts are counted at once; beyond it, attempts are refused
/// until windows run out (failing closed rather than forgetting who was counted).
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

/// Random bytes as lowercase hex: session ids and CSRF tokens.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random numbers");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What the console keeps for one signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 of the API token signed in with; the token itself is not kept.
    token_digest: [u8; 32],
    pub csrf: String,
    created: Instant,
    last_used: Instant,
}

impl Session {
    /// The configured token this session was opened with, if it is still configured.
    pub fn token<'a>(&self, tokens: &'a [ApiToken]) -> Option<&'a ApiToken> {
        tokens
            .iter()
            .find(|t| super::same_secret(&digest(t.token.expose()), &self.token_digest))
    }

    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.created) >= SESSION_LIFETIME
            || now.duration_since(self.last_used) >= SESSION_IDLE
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SignInRefused {
    /// Too many attempts from this address; try again after the window.
    RateLimited,
    /// Every session slot is taken by live sessions.
    Full,
}

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    attempts: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Sessions {
    /// Counts one sign-in attempt from `addr`; refused beyond [`SIGN_IN_ATTEMPTS`] per window.
    pub fn attempt(&self, addr: IpAddr, now: Instant) -> Result<(), SignInRefused> {
        let mut attempts = self.attempts.lock().unpoisoned();
        if !attempts.contains_key(&addr) && attempts.len() >= MAX_TRACKED_ADDRESSES {
            attempts.retain(|_, (start, _)| now.duration_since(*start) < SIGN_IN_WINDOW);
            if attempts.len() >= MAX_TRACKED_ADDRESSES {
                return Err(SignInRefused::RateLimited);
            }
        }
        let (start, count) = attempts.entry(addr).or_insert((now, 0));
        if now.duration_since(*start) >= SIGN_IN_WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= SIGN_IN_ATTEMPTS {
            return Err(SignInRefused::RateLimited);
        }
        *count += 1;
        Ok(())
    }

    /// Opens a session for `token` (already checked against the config) under a new random
    /// id, which is returned with the session. Never reuses an id a browser sent: a fresh
    /// id at every sign-in is what defeats session fixation.
    pub fn open(&self, token: &str, now: Instant) -> Result<(String, Session), SignInRefused> {
        let mut sessions = self.by_id.lock().unpoisoned();
        let token_digest = digest(token);
        let mut own: Vec<(Instant, String)> = sessions
            .iter()
            .filter(|(_, s)| s.token_digest == token_digest)
            .map(|(id, s)| (s.created, id.clone()))
            .collect();
        if own.len() >= MAX_SESSIONS_PER_TOKEN {
            own.sort();
            for (_, id) in &own[..=own.len() - MAX_SESSIONS_PER_TOKEN] {
                sessions.remove(id);
            }
        }
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| !s.expired(now));
            if sessions.len() >= MAX_SESSIONS {
                return Err(SignInRefused::Full);
            }
        }
        let id = random_hex(32);
        let session = Session {
            token_digest,
            csrf: random_hex(32),
            created: now,
            last_used: now,
        };
        sessions.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session `id` names, marked used; an expired one is dropped.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut sessions = self.by_id.lock().unpoisoned();
        let session = sessions.get_mut(id)?;
        if session.expired(now) {
            sessions.remove(id);
            return None;
        }
        session.last_used = now;
        Some(session.clone())
    }

    pub fn close(&self, id: &str) {
        self.by_id.lock().unpoisoned().remove(id);
    }
}

/// Whether `sent` (a form's hidden field) is the session's CSRF token.
pub fn csrf_matches(session: &Session, sent: Option<&str>) -> bool {
    sent.is_some_and(|sent| super::same_secret(sent.as_bytes(), session.csrf.as_bytes()))
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

/// The session ids a `Cookie` header carries (either name), well-formed ones only.
pub fn session_ids(cookie_header: &str) -> impl Iterator<Item = &str> {
    cookie_header.split(';').filter_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        let known = name == cookie_name(true) || name == cookie_name(false);
        let well_formed = value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit());
        (known && well_formed).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;
    use crate::secrets::SecretValue;

    fn token(value: &str) -> ApiToken {
        ApiToken {
            name: "t".into(),
            user: "a@x.com".into(),
            role: Role::Approver,
            token: SecretValue::new(value.to_string()),
        }
    }

    #[test]
    fn every_sign_in_gets_a_new_random_id_and_csrf_token() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let (a, sa) = sessions.open("tok", now).unwrap();
        let (b, sb) = sessions.open("tok", now).unwrap();
        assert_ne!(a, b);
        assert_ne!(sa.csrf, sb.csrf);
        assert_eq!(a.len(), 64);
        assert!(sessions.get(&a, now).is_some());
        assert!(sessions.get("f".repeat(64).as_str(), now).is_none());
    }

    #[test]
    fn a_session_finds_its_token_only_while_it_is_configured() {
        let sessions = Sessions::default();
        let (id, _) = sessions.open("tok", Instant::now()).unwrap();
        let session = sessions.get(&id, Instant::now()).unwrap();
        assert!(session.token(&[token("other"), token("tok")]).is_some());
        assert!(session.token(&[token("rotated")]).is_none());
    }

    #[test]
    fn sessions_expire_by_lifetime_and_by_idleness_and_close() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let (id, _) = sessions.open("tok", t0).unwrap();
        // Used every half hour, it lives until its lifetime runs out.
        let mut t = t0;
        while t + SESSION_IDLE / 2 < t0 + SESSION_LIFETIME {
            t += SESSION_IDLE / 2;
            assert!(sessions.get(&id, t).is_some());
        }
        assert!(sessions.get(&id, t0 + SESSION_LIFETIME).is_none());

        let (idle, _) = sessions.open("tok", t0).unwrap();
        assert!(sessions.get(&idle, t0 + SESSION_IDLE).is_none());

        let (closed, _) = sessions.open("tok", t0).unwrap();
        sessions.close(&closed);
        assert!(sessions.get(&closed, t0).is_none());
    }

    #[test]
    fn one_token_holds_a_bounded_number_of_sessions_oldest_ending_first() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let ids: Vec<String> = (0..MAX_SESSIONS_PER_TOKEN as u64 + 2)
            .map(|i| {
                sessions
                    .open("tok", t0 + Duration::from_millis(i))
                    .unwrap()
                    .0
            })
            .collect();
        let now = t0 + Duration::from_secs(1);
        let live = ids.iter().filter(|id| sessions.get(id, now).is_some());
        assert_eq!(live.count(), MAX_SESSIONS_PER_TOKEN);
        assert!(sessions.get(&ids[0], now).is_none());
        assert!(sessions.get(&ids[1], now).is_none());
        assert!(sessions.get(ids.last().unwrap(), now).is_some());
        // Another token's sessions are untouched.
        let (other, _) = sessions.open("other", now).unwrap();
        assert!(sessions.get(&other, now).is_some());
    }

    #[test]
    fn sign_in_attempts_are_limited_per_address_and_window() {
        let sessions = Sessions::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..SIGN_IN_ATTEMPTS {
            sessions.attempt(a, t0).unwrap();
        }
        assert_eq!(sessions.attempt(a, t0), Err(SignInRefused::RateLimited));
        assert!(sessions.attempt(b, t0).is_ok(), "another address");
        assert!(sessions.attempt(a, t0 + SIGN_IN_WINDOW).is_ok());
    }

    #[test]
    fn the_csrf_check_needs_the_sessions_own_token() {
        let sessions = Sessions::default();
        let (_, mine) = sessions.open("tok", Instant::now()).unwrap();
        let (_, theirs) = sessions.open("tok", Instant::now()).unwrap();
        assert!(csrf_matches(&mine, Some(&mine.csrf)));
        assert!(!csrf_matches(&mine, Some(&theirs.csrf)));
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
        assert_eq!(session_ids(&header).collect::<Vec<_>>(), [id.as_str()]);
        assert_eq!(session_ids("warden_session=<script>").count(), 0);
    }
}

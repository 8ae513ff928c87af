//! Counting what clients try, per window: per address, the console's sign-ins and the
//! API's failed tokens, each against its own [`PerAddress`]; per user, the requests they
//! file ([`PerUser`]). A token is refused before it is compared once its address is over
//! the limit, so guessing one goes no faster than the limit, right guess or not.
//!
//! An address is what warden sees: an IPv4 address, or an IPv6 address's /64 (one host
//! commonly holds a whole /64, and would otherwise count as billions of clients). The
//! table is bounded; when every place is taken by a live window, the oldest window is
//! forgotten rather than every new address refused, so filling the table locks no one
//! out (an attacker with more /64s than places gets a fresh count per address; SECURITY.md).
//! Counted in memory, per replica.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::Unpoisoned;

/// The address a request counts against: its peer's, or, when the peer is one of
/// `trusted` (proxies in front of warden, `serve.trusted_proxies`), the last address in
/// `X-Forwarded-For` that is not one of them (each proxy appends the address it was sent
/// the request from; what comes before, a client may have written).
pub fn client_addr(headers: &axum::http::HeaderMap, peer: IpAddr, trusted: &[IpAddr]) -> IpAddr {
    // A dual-stack listener sees an IPv4 peer as `::ffff:a.b.c.d`; proxies are named and
    // write addresses either way.
    let is_trusted = |addr: &IpAddr| {
        trusted
            .iter()
            .any(|t| t.to_canonical() == addr.to_canonical())
    };
    let peer = peer.to_canonical();
    if !is_trusted(&peer) {
        return peer;
    }
    // As bytes: a client may write what is not text before the entries the proxies add,
    // and the header must not be lost for it.
    let forwarded: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .collect();
    // From the right, past the trusted proxies, to the first entry that is not one. An entry
    // that is no address ends the walk at the proxy's own: skipping it would count an
    // address the client wrote before it.
    for entry in forwarded.iter().rev() {
        match std::str::from_utf8(entry).ok().and_then(forwarded_addr) {
            Some(addr) if is_trusted(&addr) => continue,
            Some(addr) => return addr.to_canonical(),
            None => return peer,
        }
    }
    peer
}

/// An `X-Forwarded-For` entry's address: as written, or with the port some proxies add
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn forwarded_addr(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// [`client_addr`] of a request as `warden serve` received it (its peer in its extensions),
/// under the config now serving.
pub(crate) fn request_client(
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
    config: &crate::Config,
) -> IpAddr {
    use std::net::{Ipv4Addr, SocketAddr};
    let peer = extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    client_addr(headers, peer, &config.serve.trusted_proxies)
}

/// Client addresses counted at once by one [`PerAddress`].
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

/// Too many attempts from one address; try again after the window.
#[derive(Debug, PartialEq, Eq)]
pub struct RateLimited;

/// `limit` counted attempts per key per `window`, for at most [`MAX_TRACKED_ADDRESSES`]
/// keys at once.
struct Windows<K> {
    limit: u32,
    window: Duration,
    by_key: Mutex<HashMap<K, (Instant, u32)>>,
}

/// `limit` counted attempts per client address per `window`.
pub struct PerAddress(Windows<AddressKey>);

/// `limit` counted attempts per user (an email, whatever its case) per `window`.
pub struct PerUser(Windows<String>);

impl PerUser {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self(Windows::new(limit, window))
    }

    /// Counts one attempt of `user`'s; refused (and not counted) beyond the limit.
    pub fn attempt(&self, user: &str, now: Instant) -> Result<(), RateLimited> {
        self.check(user, now)?;
        self.count(user, now);
        Ok(())
    }

    /// Whether `user` may make one more attempt, counting nothing: for an attempt counted
    /// only once it has succeeded ([`PerUser::count`]).
    pub fn check(&self, user: &str, now: Instant) -> Result<(), RateLimited> {
        self.0.check(&Self::key(user), now)
    }

    pub fn count(&self, user: &str, now: Instant) {
        self.0.count(Self::key(user), now);
    }

    /// Takes back one attempt [`PerUser::attempt`] counted, which turned out to be none
    /// (nothing was made of it).
    pub fn uncount(&self, user: &str) {
        self.0.uncount(&Self::key(user));
    }

    fn key(user: &str) -> String {
        user.trim().to_ascii_lowercase()
    }
}

/// An IPv4 address, or an IPv6 address's first 64 bits (IPv4-mapped ones as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AddressKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl AddressKey {
    pub(crate) fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let octets = v6.octets();
                    let mut prefix = [0; 8];
                    prefix.copy_from_slice(&octets[..8]);
                    Self::V6Prefix(prefix)
                }
            },
        }
    }
}

impl PerAddress {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self(Windows::new(limit, window))
    }

    /// Counts one attempt from `addr`; refused (and not counted) beyond the limit.
    pub fn attempt(&self, addr: IpAddr, now: Instant) -> Result<(), RateLimited> {
        self.check(addr, now)?;
        self.count(addr, now);
        Ok(())
    }

    /// Whether `addr` may try now, without counting it.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), RateLimited> {
        self.0.check(&AddressKey::of(addr), now)
    }

    /// Counts one attempt from `addr`; true when it is the one that reached the limit.
    pub fn count(&self, addr: IpAddr, now: Instant) -> bool {
        self.0.count(AddressKey::of(addr), now)
    }
}

impl<K: std::hash::Hash + Eq + Clone> Windows<K> {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            by_key: Mutex::default(),
        }
    }

    fn check(&self, key: &K, now: Instant) -> Result<(), RateLimited> {
        let by_key = self.by_key.lock().unpoisoned();
        match by_key.get(key) {
            Some((start, count))
                if now.duration_since(*start) < self.window && *count >= self.limit =>
            {
                Err(RateLimited)
            }
            _ => Ok(()),
        }
    }

    fn count(&self, key: K, now: Instant) -> bool {
        let mut by_key = self.by_key.lock().unpoisoned();
        if !by_key.contains_key(&key) && by_key.len() >= MAX_TRACKED_ADDRESSES {
            by_key.retain(|_, (start, _)| now.duration_since(*start) < self.window);
            if by_key.len() >= MAX_TRACKED_ADDRESSES
                && let Some(oldest) = by_key
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(key, _)| key.clone())
            {
                by_key.remove(&oldest);
            }
        }
        let (start, count) = by_key.entry(key).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
        *count == self.limit
    }

    fn uncount(&self, key: &K) {
        if let Some((_, count)) = self.by_key.lock().unpoisoned().get_mut(key) {
            *count = count.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn an_address_gets_its_limit_per_window() {
        let limiter = PerAddress::new(3, WINDOW);
        let (a, b) = (
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        );
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.attempt(a, t0), Ok(()));
        }
        assert_eq!(limiter.attempt(a, t0), Err(RateLimited));
        assert_eq!(limiter.check(a, t0), Err(RateLimited));
        assert_eq!(limiter.attempt(b, t0), Ok(()), "others are not held up");
        assert_eq!(limiter.attempt(a, t0 + WINDOW), Ok(()), "a new window");
    }

    #[test]
    fn an_ipv6_64_counts_as_one_address_and_mapped_ipv4_as_ipv4() {
        let limiter = PerAddress::new(2, WINDOW);
        let t0 = Instant::now();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.attempt(one, t0).is_ok());
        assert!(limiter.attempt(same_64, t0).is_ok());
        assert_eq!(limiter.attempt(same_64, t0), Err(RateLimited));
        assert!(limiter.attempt(other_64, t0).is_ok());
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
        assert!(limiter.attempt(v4, t0).is_ok());
        assert!(limiter.attempt(mapped, t0).is_ok());
        assert_eq!(limiter.attempt(v4, t0), Err(RateLimited));
    }

    #[test]
    fn filling_the_table_locks_no_new_address_out() {
        let limiter = PerAddress::new(1, WINDOW);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_ADDRESSES as u32 {
            let addr = IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64));
            assert!(limiter.attempt(addr, t0).is_ok());
        }
        let newcomer = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5));
        assert_eq!(limiter.attempt(newcomer, t0), Ok(()));
        // ... and it is counted like any other.
        assert_eq!(limiter.attempt(newcomer, t0), Err(RateLimited));
        assert!(limiter.0.by_key.lock().unwrap().len() <= MAX_TRACKED_ADDRESSES);
    }

    #[test]
    fn a_trusted_proxys_request_counts_against_the_client_it_names_last() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let other_proxy: IpAddr = "10.0.0.6".parse().unwrap();
        let trusted = [proxy, other_proxy];
        let mut headers = axum::http::HeaderMap::new();
        headers.append("x-forwarded-for", "1.2.3.4, 198.51.100.7".parse().unwrap());
        headers.append("x-forwarded-for", "10.0.0.6".parse().unwrap());
        // The client wrote 1.2.3.4; the proxies saw 198.51.100.7.
        assert_eq!(
            client_addr(&headers, proxy, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // From anyone else the header is the client's own word: not read.
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_addr(&headers, stranger, &trusted), stranger);
        // Nothing usable: the proxy's own address.
        assert_eq!(
            client_addr(&axum::http::HeaderMap::new(), proxy, &trusted),
            proxy
        );
        // A proxy that writes the port: the address is read; anything else unreadable ends
        // the walk, never skipped to what the client wrote before it.
        let forwarded = |value: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.append("x-forwarded-for", value.parse().unwrap());
            client_addr(&headers, proxy, &trusted)
        };
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(forwarded("1.2.3.4, 203.0.113.7:5555"), ip("203.0.113.7"));
        assert_eq!(forwarded("1.2.3.4, [2001:db8::7]:5555"), ip("2001:db8::7"));
        assert_eq!(forwarded("1.2.3.4, unknown"), proxy);
        assert_eq!(forwarded("1.2.3.4, unknown, 10.0.0.6"), proxy);
        // IPv4 written as IPv6 (a dual-stack listener's peer, a proxy writing it so) is the
        // same address.
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        let mut headers = axum::http::HeaderMap::new();
        headers.append("x-forwarded-for", "1.2.3.4, 198.51.100.7".parse().unwrap());
        assert_eq!(client_addr(&headers, mapped, &trusted), ip("198.51.100.7"));
        assert_eq!(
            forwarded("1.2.3.4, 198.51.100.7, ::ffff:10.0.0.6"),
            ip("198.51.100.7")
        );
        assert_eq!(forwarded("::ffff:198.51.100.7"), ip("198.51.100.7"));
        // What the client wrote need not be text; the proxy's entry after it is read.
        let mut headers = axum::http::HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"\xff, 203.0.113.9").unwrap(),
        );
        assert_eq!(client_addr(&headers, proxy, &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn a_user_is_counted_whatever_the_case_of_their_email() {
        let limiter = PerUser::new(2, WINDOW);
        let t0 = Instant::now();
        assert!(limiter.attempt("Alice@example.com", t0).is_ok());
        assert!(limiter.attempt(" alice@EXAMPLE.com", t0).is_ok());
        assert_eq!(limiter.attempt("alice@example.com", t0), Err(RateLimited));
        assert!(limiter.attempt("bob@example.com", t0).is_ok());
        assert!(limiter.attempt("alice@example.com", t0 + WINDOW).is_ok());
    }

    #[test]
    fn a_check_counts_nothing_until_the_attempt_is_counted() {
        let limiter = PerUser::new(2, WINDOW);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.check("alice@example.com", t0).is_ok());
        }
        limiter.count("Alice@example.com", t0);
        limiter.count("alice@example.com", t0);
        assert_eq!(limiter.check("alice@example.com", t0), Err(RateLimited));
    }

    #[test]
    fn the_attempt_that_reaches_the_limit_is_told() {
        let limiter = PerAddress::new(2, WINDOW);
        let a = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t0 = Instant::now();
        assert!(!limiter.count(a, t0));
        assert!(limiter.count(a, t0));
        assert!(!limiter.count(a, t0));
    }
}

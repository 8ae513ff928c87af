//! Whether, and how long, a plugin may still act on the outside: not while it loads, and in
//! a hook only for as long as its replica holds the request.
//!
//! On a store that replicas share, an operation claims its request for a lease its replica
//! renews while the operation runs (`serve::claim`). A replica paused past its lease (a
//! virtual machine frozen, a process stopped) may find, when it wakes, that another replica
//! has taken the request over and is running the same hook. Its writes are fenced in the
//! store (the claim's id); what its hook would send out (a call granting access) is fenced
//! here: the HTTP capability sends nothing once this replica's lease, as it last confirmed
//! it, has run out by its own clock. No one is asked, so a replica that wakes with its
//! deadline long past is stopped at its first request, before any round trip.
//!
//! The lease given to a hook ends a third before the store's, so replicas' clocks may be up
//! to that far apart. What it cannot stop is a request already on its way when the replica
//! froze.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::capabilities::refusal::RefusalKind;

/// What an ended lease holds: before every time, and never extended.
const ENDED: i64 = i64::MIN;

/// Until when (Unix milliseconds, this replica's clock) a hook may act; shared by the claim
/// that renews it and the instances that read it.
#[derive(Debug, Clone)]
pub struct Lease(Arc<AtomicI64>);

impl Lease {
    /// A lease to `unix_ms`, to be extended as the claim is confirmed.
    pub fn until(unix_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(unix_ms.max(ENDED + 1))))
    }

    /// Moves the end later (never earlier: renewals may finish out of order), unless it was
    /// ended: a renewal that finishes after the claim was found lost revives nothing.
    pub fn extend_to(&self, unix_ms: i64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |until| {
                (until != ENDED && unix_ms > until).then_some(unix_ms)
            });
    }

    /// Ends it now and for good: the claim was found taken over.
    pub fn end(&self) {
        self.0.store(ENDED, Ordering::Relaxed);
    }

    /// Until when it runs (Unix milliseconds); `None` once it was ended.
    pub fn end_ms(&self) -> Option<i64> {
        let until = self.0.load(Ordering::Relaxed);
        (until != ENDED).then_some(until)
    }

    pub fn ended_at(&self, now_unix_ms: i64) -> bool {
        now_unix_ms >= self.0.load(Ordering::Relaxed)
    }

    pub fn ended(&self) -> bool {
        self.ended_at(now_unix_ms())
    }
}

/// Whether an instance's plugin may act on the outside (send a request, store an identity)
/// now. Each capability that acts holds its own copy, set when a hook begins.
#[derive(Debug, Clone, Default)]
pub enum Acting {
    /// Loading: asked which hooks it implements, or instantiated ahead of an event. What it
    /// did now would be for no request, under no claim, and recorded nowhere.
    #[default]
    Loading,
    /// Running a hook; under its request's claim when replicas share the store.
    Hook(Option<Lease>),
}

impl Acting {
    /// Why nothing may be `done` now (`"sent"`, `"stored"`), if it may not: the refusal's
    /// kind and detail.
    pub fn refusal(&self, done: &str) -> Option<(RefusalKind, String)> {
        match self {
            Self::Loading => Some((
                RefusalKind::Loading,
                format!(
                    "the plugin is loading (asked which hooks it implements, or made ready ahead of an event), not running a hook: nothing is {done}"
                ),
            )),
            Self::Hook(Some(lease)) if lease.ended() => Some((
                RefusalKind::Lease,
                format!(
                    "this replica's claim on the request ran out (it was paused past its lease, and another replica may be running this hook): nothing is {done}"
                ),
            )),
            Self::Hook(_) => None,
        }
    }
}

/// The wall clock, as the claims' ends in the store are: a monotonic clock would not count
/// the time a suspended machine was stopped, which is what a lease must see. (A clock
/// stepped forward by more than a third of the lease ends healthy leases early: their hooks'
/// requests are refused, and they fail closed.)
fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_ends_at_its_time_moves_only_later_and_ends_at_once_when_told() {
        let lease = Lease::until(1_000);
        assert!(!lease.ended_at(999));
        assert!(lease.ended_at(1_000));
        lease.extend_to(2_000);
        // A renewal that finished late does not take the end back.
        lease.extend_to(1_500);
        assert!(!lease.ended_at(1_999));
        assert!(lease.ended_at(2_000));
        let seen_by_an_instance = lease.clone();
        lease.end();
        assert!(seen_by_an_instance.ended_at(0));
        // A renewal that was under way when the claim was found lost.
        lease.extend_to(i64::MAX);
        assert!(seen_by_an_instance.ended_at(0));
        assert_eq!(lease.end_ms(), None);
        assert!(!Lease::until(i64::MAX).ended());
        assert_eq!(Lease::until(5).end_ms(), Some(5));
    }
}

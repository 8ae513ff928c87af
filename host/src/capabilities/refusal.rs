//! Grant refusals: a plugin asked for something its flow does not grant.

use std::fmt;

use serde::Serialize;

use crate::runtime::budget::{self, EventBudget, MAX_REFUSAL_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalKind {
    Integration,
    Secret,
    SealedOnly,
    Identity,
    /// An HTTP destination the flow's `allowed_hosts` does not allow, or a request over
    /// `limits.http_requests`. Shown as `host`, as the JSON output and metrics always have.
    #[serde(rename = "host")]
    Destination,
    /// An HTTP header the host sets itself or that would change where a request goes.
    Header,
    /// An HTTP request or a stored identity after the request's claim ran out on this
    /// replica ([`crate::runtime::lease`]): not the flow's grant, but as much not done.
    Lease,
    /// An HTTP request or a stored identity while the plugin loads, outside any hook.
    Loading,
}

impl RefusalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Integration => "integration",
            Self::Secret => "secret",
            Self::SealedOnly => "sealed-only",
            Self::Identity => "identity",
            Self::Destination => "host",
            Self::Header => "header",
            Self::Lease => "lease",
            Self::Loading => "loading",
        }
    }
}

/// One refusal, recorded by the capability that refused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub detail: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} refused: {}", self.kind.as_str(), self.detail)
    }
}

/// Refusals a capability keeps per event; past this they are only counted, so a plugin that
/// retries a refused call in a loop cannot grow the host's memory, the request's history or
/// the CLI's output. Each is also cut to [`MAX_REFUSAL_BYTES`] and charged to the event's
/// record budget.
pub const MAX_REFUSALS_PER_EVENT: usize = 32;

/// One capability's refusals in one event: the first [`MAX_REFUSALS_PER_EVENT`] that fit the
/// event's budget, and a count of the rest.
#[derive(Debug)]
pub struct Refusals {
    budget: EventBudget,
    kept: Vec<Refusal>,
    dropped: usize,
    last_dropped: Option<RefusalKind>,
}

impl Refusals {
    pub fn new(budget: EventBudget) -> Self {
        Self {
            budget,
            kept: Vec::new(),
            dropped: 0,
            last_dropped: None,
        }
    }

    pub fn push(&mut self, refusal: Refusal) {
        let detail = budget::cut(&refusal.detail, MAX_REFUSAL_BYTES);
        if self.kept.len() < MAX_REFUSALS_PER_EVENT
            && self.budget.refusal(budget::shown_len(&detail))
        {
            let detail = detail.into_owned();
            self.kept.push(Refusal { detail, ..refusal });
        } else {
            self.dropped += 1;
            self.last_dropped = Some(refusal.kind);
        }
    }

    pub fn len(&self) -> usize {
        self.kept.len() + self.dropped
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept refusals, and one more saying how many were not kept; none are left.
    pub fn finish(&mut self) -> Vec<Refusal> {
        let mut kept = std::mem::take(&mut self.kept);
        if let Some(kind) = self.last_dropped.take() {
            kept.push(Refusal {
                kind,
                detail: format!(
                    "{} more refusal(s) not recorded: at most {MAX_REFUSALS_PER_EVENT} are kept per capability and event, within {} KiB",
                    self.dropped,
                    budget::REFUSAL_BYTES >> 10
                ),
            });
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_past_the_cap_are_counted_not_kept() {
        let mut refusals = Refusals::new(EventBudget::new(1024));
        for i in 0..MAX_REFUSALS_PER_EVENT + 5 {
            refusals.push(Refusal {
                kind: RefusalKind::Destination,
                detail: format!("#{i}"),
            });
        }
        assert_eq!(refusals.len(), MAX_REFUSALS_PER_EVENT + 5);
        let kept = refusals.finish();
        assert_eq!(kept.len(), MAX_REFUSALS_PER_EVENT + 1);
        assert_eq!(kept[0].detail, "#0");
        assert!(
            kept.last()
                .unwrap()
                .detail
                .starts_with("5 more refusal(s) not recorded"),
            "{kept:?}"
        );
    }

    #[test]
    fn a_huge_name_makes_a_bounded_refusal_and_many_share_the_events_budget() {
        let budget = EventBudget::new(1024);
        let mut refusals = Refusals::new(budget.clone());
        let mut other = Refusals::new(budget.clone());
        let huge = "n".repeat(4 << 20);
        for _ in 0..MAX_REFUSALS_PER_EVENT {
            refusals.push(Refusal {
                kind: RefusalKind::Integration,
                detail: format!("no integration under alias `{huge}`"),
            });
            other.push(Refusal {
                kind: RefusalKind::Secret,
                detail: format!("secret `{huge}` is not attached"),
            });
        }
        let kept: Vec<Refusal> = refusals
            .finish()
            .into_iter()
            .chain(other.finish())
            .collect();
        let bytes: usize = kept.iter().map(|r| r.detail.len()).sum();
        assert!(bytes <= budget::REFUSAL_BYTES + 2 * 200, "{bytes}");
        assert!(kept.iter().all(|r| r.detail.len() <= MAX_REFUSAL_BYTES));
        assert!(
            kept[0].detail.ends_with("more bytes)"),
            "{}",
            kept[0].detail
        );
        let counted: Vec<&str> = kept
            .iter()
            .filter(|r| r.detail.contains("more refusal(s) not recorded"))
            .map(|r| r.detail.as_str())
            .collect();
        assert_eq!(counted.len(), 2, "{counted:?}");
    }
}

//! Grant refusals: a plugin asked for something its flow does not grant.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalKind {
    Integration,
    Secret,
    SealedOnly,
    Identity,
    Host,
    /// An HTTP header the host sets itself or that would change where a request goes.
    Header,
}

impl RefusalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Integration => "integration",
            Self::Secret => "secret",
            Self::SealedOnly => "sealed-only",
            Self::Identity => "identity",
            Self::Host => "host",
            Self::Header => "header",
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
/// the CLI's output.
pub const MAX_REFUSALS_PER_EVENT: usize = 32;

/// One capability's refusals in one event: the first [`MAX_REFUSALS_PER_EVENT`], and a count
/// of the rest.
#[derive(Debug, Default)]
pub struct Refusals {
    kept: Vec<Refusal>,
    dropped: usize,
    last_dropped: Option<RefusalKind>,
}

impl Refusals {
    pub fn push(&mut self, refusal: Refusal) {
        if self.kept.len() < MAX_REFUSALS_PER_EVENT {
            self.kept.push(refusal);
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

    /// The kept refusals, and one more saying how many were not kept.
    pub fn finish(self) -> Vec<Refusal> {
        let mut kept = self.kept;
        if let Some(kind) = self.last_dropped {
            kept.push(Refusal {
                kind,
                detail: format!(
                    "{} more refusal(s) not recorded: at most {MAX_REFUSALS_PER_EVENT} are kept per capability and event",
                    self.dropped
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
        let mut refusals = Refusals::default();
        for i in 0..MAX_REFUSALS_PER_EVENT + 5 {
            refusals.push(Refusal {
                kind: RefusalKind::Host,
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
}

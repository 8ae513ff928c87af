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
}

impl RefusalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Integration => "integration",
            Self::Secret => "secret",
            Self::SealedOnly => "sealed-only",
            Self::Identity => "identity",
            Self::Host => "host",
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

//! Hook names and the decisions each hook may return.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::runtime::bindings::types::{Hook, Step};

/// Declares [`HookName`] from one list: each hook's variant (the WIT `hook` case of the same
/// name, so [`HookName::from_wit`] is checked exhaustively by the compiler), the name operators
/// write, and the lifecycle step it belongs to.
macro_rules! hooks {
    ($($variant:ident = $name:literal, $step:ident;)*) => {
        /// One of the twelve hooks, named as operators write them: `on_request`,
        /// `after_approve`, ...
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum HookName {
            $($variant,)*
        }

        impl HookName {
            pub const ALL: [HookName; 12] = [$(Self::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            pub fn step(self) -> Step {
                match self {
                    $(Self::$variant => Step::$step,)*
                }
            }

            pub fn from_wit(hook: Hook) -> Self {
                match hook {
                    $(Hook::$variant => Self::$variant,)*
                }
            }
        }
    };
}

hooks! {
    OnPrompt = "on_prompt", Prompt;
    OnRequest = "on_request", Request;
    OnApprove = "on_approve", Approve;
    OnDeny = "on_deny", Deny;
    OnEscalate = "on_escalate", Escalate;
    OnDeescalate = "on_deescalate", Deescalate;
    AfterPrompt = "after_prompt", Prompt;
    AfterRequest = "after_request", Request;
    AfterApprove = "after_approve", Approve;
    AfterDeny = "after_deny", Deny;
    AfterEscalate = "after_escalate", Escalate;
    AfterDeescalate = "after_deescalate", Deescalate;
}

impl HookName {
    /// `on_` hooks run before the step and may replace its default path; `after_` hooks
    /// are recorded only.
    pub fn is_before(self) -> bool {
        self.as_str().starts_with("on_")
    }
}

impl fmt::Display for HookName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HookName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|h| h.as_str() == wanted)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|h| h.as_str()).collect();
                format!("unknown hook `{s}`; hooks are {}", names.join(", "))
            })
    }
}

pub fn step_name(step: Step) -> &'static str {
    match step {
        Step::Prompt => "prompt",
        Step::Request => "request",
        Step::Approve => "approve",
        Step::Deny => "deny",
        Step::Escalate => "escalate",
        Step::Deescalate => "deescalate",
    }
}

/// Longest reason or message kept from a plugin's decision, as JSON shows it.
pub const MAX_REASON_BYTES: usize = crate::runtime::budget::MAX_MESSAGE_BYTES;

/// A hook's decision, as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Decision {
    Continue,
    Approve {
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Deny {
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Ignore {
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

impl Decision {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Continue => "continue",
            Self::Approve { .. } => "approve",
            Self::Deny { .. } => "deny",
            Self::Ignore { .. } => "ignore",
        }
    }

    /// Whether `hook` may return this decision: decisions only move a request forward
    /// (`on_request` may approve or deny; no later `on_` hook may), and `after_` hooks'
    /// decisions are recorded, never acted on.
    pub fn allowed_for(&self, hook: HookName) -> bool {
        match self {
            Self::Continue | Self::Ignore { .. } => true,
            Self::Approve { .. } | Self::Deny { .. } => {
                !hook.is_before() || hook == HookName::OnRequest
            }
        }
    }

    pub fn map_text(self, f: impl Fn(String) -> String) -> Self {
        match self {
            Self::Continue => Self::Continue,
            Self::Approve { reason } => Self::Approve {
                reason: reason.map(&f),
            },
            Self::Deny { reason } => Self::Deny {
                reason: reason.map(&f),
            },
            Self::Ignore { message } => Self::Ignore {
                message: message.map(&f),
            },
        }
    }
}

/// Cuts `text` to at most `max` bytes (as JSON shows them) on a character boundary, with a
/// marker saying how many bytes were dropped.
pub fn truncate(text: String, max: usize) -> String {
    match crate::runtime::budget::cut(&text, max) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(cut) => cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_names_parse_both_spellings_and_reject_others() {
        assert_eq!(
            "on_request".parse::<HookName>().unwrap(),
            HookName::OnRequest
        );
        assert_eq!(
            "after-deny".parse::<HookName>().unwrap(),
            HookName::AfterDeny
        );
        let err = "on_reqest".parse::<HookName>().unwrap_err();
        assert!(err.contains("on_request"), "{err}");
    }

    #[test]
    fn decisions_serialize_as_the_cli_prints_them() {
        let json = |d: &Decision| serde_json::to_string(d).unwrap();
        assert_eq!(json(&Decision::Continue), r#"{"decision":"continue"}"#);
        assert_eq!(
            json(&Decision::Approve {
                reason: Some("ok".into())
            }),
            r#"{"decision":"approve","reason":"ok"}"#
        );
        assert_eq!(
            json(&Decision::Deny { reason: None }),
            r#"{"decision":"deny"}"#
        );
        assert_eq!(
            json(&Decision::Ignore {
                message: Some("m".into())
            }),
            r#"{"decision":"ignore","message":"m"}"#
        );
    }

    #[test]
    fn only_on_request_may_approve_or_deny_before_its_step() {
        let deny = Decision::Deny { reason: None };
        assert!(deny.allowed_for(HookName::OnRequest));
        assert!(!deny.allowed_for(HookName::OnEscalate));
        assert!(!Decision::Approve { reason: None }.allowed_for(HookName::OnApprove));
        assert!(deny.allowed_for(HookName::AfterEscalate));
        assert!(Decision::Continue.allowed_for(HookName::OnDeescalate));
    }
}

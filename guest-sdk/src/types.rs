//! Helpers on the records the host passes in: [`Event`], [`Decision`], [`FieldValue`],
//! [`User`], [`Hook`], [`Step`].

use std::time::Duration;

use crate::bindings::warden::plugin::identities;
use crate::{Decision, Event, FieldValue, Hook, Identity, Result, Step, User};

impl Decision {
    /// Approve, with a reason the requester and approvers see.
    pub fn approve(reason: impl Into<String>) -> Self {
        Decision::Approve(Some(reason.into()))
    }

    /// Deny, with a reason the requester sees.
    pub fn deny(reason: impl Into<String>) -> Self {
        Decision::Deny(Some(reason.into()))
    }

    /// Drop the event silently, with a message for the logs.
    pub fn ignore(message: impl Into<String>) -> Self {
        Decision::Ignore(Some(message.into()))
    }

    /// The reason (or message) given with the decision, if any.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Decision::Continue => None,
            Decision::Approve(r) | Decision::Deny(r) | Decision::Ignore(r) => r.as_deref(),
        }
    }
}

impl Event {
    /// The request field `name`, e.g. `event.field("duration")`.
    pub fn field(&self, name: &str) -> Option<&FieldValue> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }

    /// The text field `name`; `None` when it is absent or not text.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(FieldValue::as_text)
    }

    /// The flow variable `name` (the operator's `vars` for this flow).
    pub fn var(&self, name: &str) -> Option<&str> {
        self.flow
            .vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The flow variable `name`, or `default` when it is not set.
    pub fn var_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.var(name).unwrap_or(default)
    }
}

impl FieldValue {
    /// The text of a `text` field.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            FieldValue::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The value of an `integer` field.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            FieldValue::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The value of a `boolean` field.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// The items of a `text-list` field.
    pub fn as_text_list(&self) -> Option<&[String]> {
        match self {
            FieldValue::TextList(items) => Some(items),
            _ => None,
        }
    }

    /// The value of a `duration-seconds` field.
    pub fn as_duration(&self) -> Option<Duration> {
        match self {
            FieldValue::DurationSeconds(s) => Some(Duration::from_secs(*s)),
            _ => None,
        }
    }
}

impl User {
    /// This user's identity in another service, as stored by the host, e.g.
    /// `user.identity("custom", &integration.external_id)?`.
    pub fn identity(&self, service: &str, service_id: &str) -> Result<Option<Identity>> {
        Ok(identities::lookup(&self.email, service, service_id)?)
    }
}

impl Hook {
    /// Every hook, in WIT order.
    pub const ALL: [Hook; 12] = [
        Hook::OnPrompt,
        Hook::OnRequest,
        Hook::OnApprove,
        Hook::OnDeny,
        Hook::OnEscalate,
        Hook::OnDeescalate,
        Hook::AfterPrompt,
        Hook::AfterRequest,
        Hook::AfterApprove,
        Hook::AfterDeny,
        Hook::AfterEscalate,
        Hook::AfterDeescalate,
    ];

    /// The hook's name as a Rust function, e.g. `on_request`.
    pub fn name(self) -> &'static str {
        match self {
            Hook::OnPrompt => "on_prompt",
            Hook::OnRequest => "on_request",
            Hook::OnApprove => "on_approve",
            Hook::OnDeny => "on_deny",
            Hook::OnEscalate => "on_escalate",
            Hook::OnDeescalate => "on_deescalate",
            Hook::AfterPrompt => "after_prompt",
            Hook::AfterRequest => "after_request",
            Hook::AfterApprove => "after_approve",
            Hook::AfterDeny => "after_deny",
            Hook::AfterEscalate => "after_escalate",
            Hook::AfterDeescalate => "after_deescalate",
        }
    }
}

impl Step {
    /// The step's name, e.g. `request`.
    pub fn name(self) -> &'static str {
        match self {
            Step::Prompt => "prompt",
            Step::Request => "request",
            Step::Approve => "approve",
            Step::Deny => "deny",
            Step::Escalate => "escalate",
            Step::Deescalate => "deescalate",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Field, Flow};

    pub(crate) fn user(email: &str) -> User {
        User {
            email: email.into(),
            username: email.split('@').next().unwrap_or_default().into(),
            id: None,
            first_name: None,
            last_name: None,
        }
    }

    pub(crate) fn event(vars: &[(&str, &str)], fields: Vec<Field>) -> Event {
        Event {
            id: "evt-1".into(),
            step: Step::Request,
            flow: Flow {
                name: "prod-access".into(),
                vars: vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            user: user("jdoe@example.com"),
            requester: user("jdoe@example.com"),
            fields,
            timestamp: "2025-01-01T00:00:00Z".into(),
        }
    }

    fn field(name: &str, value: FieldValue) -> Field {
        Field {
            name: name.into(),
            value,
        }
    }

    #[test]
    fn decision_constructors() {
        assert_eq!(
            Decision::approve("ok"),
            Decision::Approve(Some("ok".into()))
        );
        assert_eq!(
            Decision::deny(String::from("no")),
            Decision::Deny(Some("no".into()))
        );
        assert_eq!(
            Decision::ignore("meh"),
            Decision::Ignore(Some("meh".into()))
        );
        assert_eq!(Decision::deny("no").reason(), Some("no"));
        assert_eq!(Decision::Continue.reason(), None);
        assert_eq!(Decision::Approve(None).reason(), None);
    }

    #[test]
    fn event_fields_and_vars() {
        let event = event(
            &[("auto_approve", "a@x.com"), ("empty", "")],
            vec![
                field("reason", FieldValue::Text("on call".into())),
                field("duration", FieldValue::DurationSeconds(3600)),
                field("urgent", FieldValue::Boolean(true)),
                field("count", FieldValue::Integer(-3)),
                field("teams", FieldValue::TextList(vec!["a".into(), "b".into()])),
            ],
        );
        assert_eq!(event.text("reason"), Some("on call"));
        assert_eq!(event.text("duration"), None);
        assert_eq!(event.text("missing"), None);
        assert_eq!(
            event.field("duration").and_then(FieldValue::as_duration),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            event.field("urgent").and_then(FieldValue::as_bool),
            Some(true)
        );
        assert_eq!(
            event.field("count").and_then(FieldValue::as_integer),
            Some(-3)
        );
        assert_eq!(
            event.field("teams").and_then(FieldValue::as_text_list),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert_eq!(event.var("auto_approve"), Some("a@x.com"));
        assert_eq!(event.var("empty"), Some(""));
        assert_eq!(event.var("nope"), None);
        assert_eq!(event.var_or("nope", "fallback"), "fallback");
        assert_eq!(event.var_or("auto_approve", "fallback"), "a@x.com");
    }

    #[test]
    fn hook_and_step_names() {
        assert_eq!(Hook::ALL.len(), 12);
        assert_eq!(Hook::OnRequest.name(), "on_request");
        assert_eq!(Hook::AfterDeescalate.name(), "after_deescalate");
        assert_eq!(Step::Escalate.name(), "escalate");
    }
}

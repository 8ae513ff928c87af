//! Events as operators and tests write them (JSON), turned into what a hook receives.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Deserialize;

use crate::config::Flow;
use crate::runtime::bindings::types::{Event, Field, FieldValue, Flow as WitFlow, User};
use crate::runtime::hooks::{HookName, step_name};

pub const MAX_FIELDS: usize = 256;
pub const MAX_FIELD_BYTES: usize = 64 << 10;
/// The longest email address a user may have (as the identity store keeps them).
pub const MAX_EMAIL_BYTES: usize = 320;

/// `{"user":{"email":..},"fields":{"reason":"fix prod"}}`, with optional `id`, `name`
/// (the step), `timestamp` (RFC 3339) and `requester` (defaults to `user`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    pub id: Option<String>,
    pub name: Option<String>,
    pub timestamp: Option<String>,
    pub user: UserInput,
    pub requester: Option<UserInput>,
    #[serde(default)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub email: String,
    pub username: Option<String>,
    pub id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event: {0}")]
pub struct EventError(pub String);

impl EventInput {
    pub fn from_json(text: &str) -> Result<Self, EventError> {
        // serde would take a list as the struct's fields in order; an event is an object.
        if text.trim_start().starts_with('[') {
            return Err(EventError(
                "an event must be a JSON object, not a list".into(),
            ));
        }
        serde_json::from_str(text).map_err(|e| EventError(e.to_string()))
    }

    /// The event `hook` of `flow` receives.
    pub fn to_wit(&self, flow: &Flow, hook: HookName) -> Result<Event, EventError> {
        let step = hook.step();
        if let Some(name) = &self.name
            && name != step_name(step)
        {
            return Err(EventError(format!(
                "`name` is `{name}` but hook {hook} runs on `{}` events",
                step_name(step)
            )));
        }
        let timestamp = match &self.timestamp {
            Some(t) => {
                humantime::parse_rfc3339_weak(t)
                    .map_err(|e| EventError(format!("`timestamp` `{t}` is not RFC 3339: {e}")))?;
                t.clone()
            }
            None => humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        if self.fields.len() > MAX_FIELDS {
            return Err(EventError(format!("more than {MAX_FIELDS} fields")));
        }
        let fields = self
            .fields
            .iter()
            .map(|(name, value)| {
                Ok(Field {
                    name: name.clone(),
                    value: field_value(name, value)?,
                })
            })
            .collect::<Result<_, EventError>>()?;
        let user = self.user.to_wit("user")?;
        let requester = match &self.requester {
            Some(r) => r.to_wit("requester")?,
            None => user.clone(),
        };
        Ok(Event {
            id: self.id.clone().unwrap_or_else(new_event_id),
            step,
            flow: WitFlow {
                name: flow.name.clone(),
                vars: flow
                    .vars
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
            user,
            requester,
            fields,
            timestamp,
        })
    }
}

impl UserInput {
    /// Refuses what hooks could not be given as `which` (e.g. `approver`): an email address
    /// that is not one (no `@`, spaces or control characters in it, over 320 bytes).
    pub fn check(&self, which: &str) -> Result<(), EventError> {
        let email = self.email.trim();
        let not_one = email.is_empty()
            || !email.contains('@')
            || email.len() > MAX_EMAIL_BYTES
            || email.chars().any(|c| c.is_whitespace() || c.is_control());
        if not_one {
            return Err(EventError(format!(
                "`{which}.email` `{}` is not an email address",
                email
                    .escape_debug()
                    .to_string()
                    .chars()
                    .take(120)
                    .collect::<String>()
            )));
        }
        Ok(())
    }

    fn to_wit(&self, which: &str) -> Result<User, EventError> {
        self.check(which)?;
        let email = self.email.trim();
        Ok(User {
            email: email.to_string(),
            username: self.username.clone().unwrap_or_else(|| email.to_string()),
            id: self.id.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
        })
    }
}

fn field_value(name: &str, value: &serde_json::Value) -> Result<FieldValue, EventError> {
    use serde_json::Value;
    let too_big = || EventError(format!("field `{name}` is over {MAX_FIELD_BYTES} bytes"));
    match value {
        Value::String(s) if s.len() > MAX_FIELD_BYTES => Err(too_big()),
        Value::String(s) => Ok(FieldValue::Text(s.clone())),
        Value::Bool(b) => Ok(FieldValue::Boolean(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(FieldValue::Integer)
            .ok_or_else(|| EventError(format!("field `{name}`: {n} is not a whole number"))),
        Value::Array(items) => {
            let texts: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect();
            let texts = texts.ok_or_else(|| {
                EventError(format!("field `{name}`: a list must hold only strings"))
            })?;
            if texts.iter().map(String::len).sum::<usize>() > MAX_FIELD_BYTES {
                return Err(too_big());
            }
            Ok(FieldValue::TextList(texts))
        }
        Value::Object(map) => match (map.len(), map.get("seconds").and_then(Value::as_u64)) {
            (1, Some(seconds)) => Ok(FieldValue::DurationSeconds(seconds)),
            _ => Err(EventError(format!(
                "field `{name}`: an object must be a duration, `{{\"seconds\": N}}`"
            ))),
        },
        Value::Null => Err(EventError(format!("field `{name}` is null"))),
    }
}

fn new_event_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("evt-{nanos:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_map_to_field_values() {
        use serde_json::json;
        let mapped = |v: serde_json::Value| format!("{:?}", field_value("f", &v).unwrap());
        assert_eq!(
            mapped(json!("x")),
            format!("{:?}", FieldValue::Text("x".into()))
        );
        assert_eq!(mapped(json!(3)), format!("{:?}", FieldValue::Integer(3)));
        assert_eq!(
            mapped(json!(true)),
            format!("{:?}", FieldValue::Boolean(true))
        );
        assert_eq!(
            mapped(json!(["a", "b"])),
            format!("{:?}", FieldValue::TextList(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            mapped(json!({"seconds": 3600})),
            format!("{:?}", FieldValue::DurationSeconds(3600))
        );
        for bad in [json!(1.5), json!([1]), json!({"x": 1}), json!(null)] {
            let err = field_value("f", &bad).unwrap_err();
            assert!(err.0.contains("field `f`"), "{err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_emails_are_named() {
        let err = EventInput::from_json(r#"{"user":{"email":"a@x.com"},"feilds":{}}"#).unwrap_err();
        assert!(err.0.contains("feilds"), "{err}");
        let input = EventInput::from_json(r#"{"user":{"email":"nobody"}}"#).unwrap();
        let err = input.user.to_wit("user").unwrap_err();
        assert!(err.0.contains("user.email"), "{err}");
        // Header and log-line smuggling, mentions with a space, and very long ones.
        let long = format!("{}@x.com", "a".repeat(MAX_EMAIL_BYTES));
        for email in [
            r"a@b.com\r\nX-Evil: 1",
            "a b@x.com",
            r"a@x.com\u0000",
            long.as_str(),
        ] {
            let text = format!(r#"{{"user":{{"email":"{email}"}}}}"#);
            let input = EventInput::from_json(&text).unwrap();
            let err = input.user.check("requester").unwrap_err();
            assert!(err.0.contains("is not an email address"), "{err}");
            assert!(!err.0.contains('\n') && err.0.len() < 300, "{err}");
        }
        let fine = EventInput::from_json(r#"{"user":{"email":" Alice@Example.com "}}"#).unwrap();
        assert!(fine.user.check("requester").is_ok());
    }
}

//! A request's fields, checked against its flow's schema as they arrive.

use std::time::Duration;

use crate::config::{DURATION_FIELD, FieldType, Flow};

use super::lifecycle::LifecycleError;

/// Longest access a request may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// `event` with its fields as `warden serve` hands a request's on to the hooks of `flow`
/// (checked against its schema, `duration` as its seconds), for `warden test` and
/// `warden hook`, so a hook is run there on what it gets in production; the error is the
/// one `warden serve` would answer (`field `NAME`: ...`).
pub fn event_as_served(
    config: &crate::config::Config,
    flow: &str,
    event: &crate::runtime::event::EventInput,
) -> Result<crate::runtime::event::EventInput, String> {
    let mut event = event.clone();
    if let Some(flow) = config.flow(flow) {
        let sent = event.fields.clone().into_iter().collect();
        let checked = validate_fields(flow, sent).map_err(|e| e.to_string())?;
        event.fields = checked.into_iter().collect();
    }
    Ok(event)
}

/// Checks `fields` against the flow's schema (when it declares one) and turns the
/// `duration` field into `{"seconds": N}`.
pub fn validate_fields(
    flow: &Flow,
    mut fields: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Map<String, serde_json::Value>, LifecycleError> {
    let invalid = |field: &str, message: String| LifecycleError::InvalidField {
        field: field.to_string(),
        message,
    };
    if !flow.fields.is_empty() {
        if let Some(name) = fields.keys().find(|k| !flow.fields.contains_key(*k)) {
            let known: Vec<&str> = flow.fields.keys().map(String::as_str).collect();
            return Err(invalid(
                name,
                format!(
                    "flow `{}` has no such field (fields: {})",
                    flow.name,
                    known.join(", ")
                ),
            ));
        }
        for (name, spec) in &flow.fields {
            let value = fields.get(name).filter(|v| !v.is_null());
            // Nothing in it: a blank string, or a list with no item.
            let blank = value.is_some_and(|v| match v {
                serde_json::Value::String(s) => s.trim().is_empty(),
                serde_json::Value::Array(items) => items.iter().all(|item| {
                    item.as_str().is_some_and(|s| {
                        s.trim_matches(|c: char| {
                            c.is_whitespace() || c.is_control() || c == '\u{200b}'
                        })
                        .is_empty()
                    })
                }),
                _ => false,
            });
            match value {
                None if spec.required => return Err(invalid(name, "is required".into())),
                Some(_) if blank && spec.required => {
                    return Err(invalid(name, "is required and must not be blank".into()));
                }
                None => {
                    fields.remove(name);
                }
                Some(v) => {
                    let checked = check_type(spec.kind, v).map_err(|m| invalid(name, m))?;
                    fields.insert(name.clone(), checked);
                }
            }
        }
    }
    if let Some(v) = fields.get(DURATION_FIELD) {
        let checked = check_type(FieldType::Duration, v).map_err(|m| invalid(DURATION_FIELD, m))?;
        fields.insert(DURATION_FIELD.to_string(), checked);
    }
    Ok(fields)
}

fn check_type(kind: FieldType, value: &serde_json::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    let ok = match kind {
        FieldType::String => value.is_string(),
        FieldType::Int => value.as_i64().is_some(),
        FieldType::Bool => value.is_boolean(),
        FieldType::List => value
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string)),
        FieldType::Duration => {
            let seconds = match value {
                Value::String(text) => {
                    let parsed = humantime::parse_duration(text.trim()).map_err(|e| {
                        format!("`{text}` is not a duration like \"30m\" or \"2h\": {e}")
                    })?;
                    // Access is granted by the second: a fraction would be cut off unseen.
                    if parsed.subsec_nanos() != 0 {
                        return Err(format!("`{text}` is not a whole number of seconds"));
                    }
                    parsed.as_secs()
                }
                Value::Object(map) if map.len() == 1 && map.contains_key("seconds") => {
                    map["seconds"]
                        .as_u64()
                        .ok_or("`seconds` must be a whole number")?
                }
                _ => {
                    return Err(
                        "must be a duration: {\"seconds\": N} or a string like \"2h\"".into(),
                    );
                }
            };
            if seconds == 0 || seconds > MAX_DURATION.as_secs() {
                return Err(format!(
                    "must be between 1 second and {} days",
                    MAX_DURATION.as_secs() / 86400
                ));
            }
            return Ok(serde_json::json!({ "seconds": seconds }));
        }
    };
    if ok {
        Ok(value.clone())
    } else {
        let article = match kind {
            FieldType::Int => "an int (a whole number)",
            FieldType::Bool => "a bool",
            FieldType::List => "a list of strings",
            _ => "a string",
        };
        Err(format!("must be {article}"))
    }
}

//! What a browser sends the console, read with bounds: form bodies, the return path after
//! sign-in, and a flow's request form turned into the fields the API takes.

use std::collections::BTreeMap;

use crate::config::{FieldSpec, FieldType};

/// Largest form body the console reads (also bounded by `serve.max_body_bytes`).
pub const MAX_FORM_BYTES: usize = 32 << 10;
/// Most name/value pairs one form may carry.
const MAX_FORM_PAIRS: usize = 200;
/// Longest return path kept through sign-in.
const MAX_RETURN_PATH: usize = 512;

/// A parsed `application/x-www-form-urlencoded` body or query.
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for (name, value) in url::form_urlencoded::parse(bytes) {
            if pairs.len() == MAX_FORM_PAIRS {
                return Err(format!("the form has more than {MAX_FORM_PAIRS} fields"));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self(pairs))
    }

    /// The first value named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `next` if it is safe to send a browser to after sign-in: a path on this server (one
/// leading `/`, not `//` or `/\`, which browsers read as another host), of visible ASCII
/// without backslashes, and not the sign-in page itself. Anything else lands on `/`.
pub fn return_path(next: Option<&str>) -> &str {
    let Some(next) = next else { return "/" };
    let safe = next.len() <= MAX_RETURN_PATH
        && next.starts_with('/')
        && !next.starts_with("//")
        && next.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        && !next.starts_with("/signin")
        && !next.starts_with("/v1/");
    if safe { next } else { "/" }
}

/// The request fields a flow's form sent, typed by the flow's declared `fields`. A flow that
/// declares none gets a single free-text `reason`. Blank optional fields are left out, so
/// the lifecycle's own checks (`validate_fields`) decide what is required and valid.
pub fn request_fields(
    declared: &BTreeMap<String, FieldSpec>,
    form: &Form,
) -> Result<serde_json::Map<String, serde_json::Value>, (String, String)> {
    use serde_json::Value;
    let mut fields = serde_json::Map::new();
    if declared.is_empty() {
        if let Some(reason) = form.get("f.reason").filter(|r| !r.trim().is_empty()) {
            fields.insert("reason".into(), Value::String(reason.to_string()));
        }
        return Ok(fields);
    }
    for (name, spec) in declared {
        let sent = form.get(&format!("f.{name}"));
        let value = match spec.kind {
            // An unticked checkbox sends nothing: that is `false`.
            FieldType::Bool => Value::Bool(sent.is_some()),
            _ => {
                let Some(text) = sent.map(str::trim).filter(|t| !t.is_empty()) else {
                    continue;
                };
                match spec.kind {
                    FieldType::Int => text
                        .parse::<i64>()
                        .map(Value::from)
                        .map_err(|_| (name.clone(), format!("`{text}` is not a whole number")))?,
                    FieldType::List => Value::Array(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(|l| Value::String(l.to_string()))
                            .collect(),
                    ),
                    _ => Value::String(text.to_string()),
                }
            }
        };
        fields.insert(name.clone(), value);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_returned_to() {
        for good in [
            "/",
            "/requests/req-1a-0",
            "/?state=pending&flow=x",
            "/audit",
        ] {
            assert_eq!(return_path(Some(good)), good);
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
            "/\\/evil.example",
            "javascript:alert(1)",
            "requests/1",
            "/requests/1\r\nSet-Cookie: x=1",
            "/a b",
            "/signin?next=/x",
            "/v1/requests",
            "",
        ] {
            assert_eq!(return_path(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(return_path(Some(&format!("/{}", "a".repeat(600)))), "/");
        assert_eq!(return_path(None), "/");
    }

    #[test]
    fn forms_are_parsed_and_bounded() {
        let form = Form::parse(b"a=1&b=x+y%3Cz&a=2").unwrap();
        assert_eq!(form.get("a"), Some("1"));
        assert_eq!(form.get("b"), Some("x y<z"));
        assert_eq!(form.get("c"), None);
        let many = "x=1&".repeat(MAX_FORM_PAIRS + 1);
        assert!(
            Form::parse(many.as_bytes())
                .unwrap_err()
                .contains("more than")
        );
    }

    fn spec(kind: FieldType, required: bool) -> FieldSpec {
        FieldSpec { kind, required }
    }

    #[test]
    fn declared_fields_are_typed_from_the_form() {
        let declared = BTreeMap::from([
            ("reason".to_string(), spec(FieldType::String, true)),
            ("count".to_string(), spec(FieldType::Int, false)),
            ("urgent".to_string(), spec(FieldType::Bool, false)),
            ("tickets".to_string(), spec(FieldType::List, false)),
            ("duration".to_string(), spec(FieldType::Duration, false)),
            ("note".to_string(), spec(FieldType::String, false)),
        ]);
        let form = Form::parse(
            b"f.reason=fix+prod&f.count=3&f.urgent=on&f.tickets=A-1%0D%0A%0D%0AB-2&f.duration=2h&f.note=&f.extra=x",
        )
        .unwrap();
        let fields = request_fields(&declared, &form).unwrap();
        assert_eq!(
            serde_json::Value::Object(fields),
            serde_json::json!({
                "reason": "fix prod", "count": 3, "urgent": true,
                "tickets": ["A-1", "B-2"], "duration": "2h"
            })
        );
        let bad = Form::parse(b"f.count=three").unwrap();
        assert_eq!(
            request_fields(&declared, &bad).unwrap_err(),
            (
                "count".to_string(),
                "`three` is not a whole number".to_string()
            )
        );
        let unticked = request_fields(&declared, &Form::default()).unwrap();
        assert_eq!(unticked["urgent"], false);
    }

    #[test]
    fn a_flow_without_declared_fields_takes_a_reason() {
        let form = Form::parse(b"f.reason=because&f.other=x").unwrap();
        let fields = request_fields(&BTreeMap::new(), &form).unwrap();
        assert_eq!(
            serde_json::Value::Object(fields),
            serde_json::json!({"reason": "because"})
        );
    }
}

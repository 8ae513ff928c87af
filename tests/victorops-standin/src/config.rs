//! The vocabulary a stand-in is started and steered with: the on-call keys' casing, the shape
//! of an error body, the start-up settings. Apart from the server so the binary's flags and the
//! tests name the same things.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::roster::Roster;

/// How the on-call answer spells two of its keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Casing {
    /// `oncallNow` and `onCalluser`: what the live API answers and working
    /// clients read.
    #[default]
    Working,
    /// `onCallNow` and `onCallUser`: what the vendor's API documentation says.
    Spec,
}

impl Casing {
    pub(crate) fn keys(self) -> (&'static str, &'static str) {
        match self {
            Casing::Working => ("oncallNow", "onCalluser"),
            Casing::Spec => ("onCallNow", "onCallUser"),
        }
    }
}

impl FromStr for Casing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "working" => Ok(Casing::Working),
            "spec" => Ok(Casing::Spec),
            other => Err(format!(
                "unknown casing {other:?} (expected `working` or `spec`)"
            )),
        }
    }
}

impl fmt::Display for Casing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Casing::Working => "working",
            Casing::Spec => "spec",
        })
    }
}

/// The body of an error answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorStyle {
    /// `{"message": "..."}`, `application/json`: what the API answers for most errors.
    JsonMessage,
    /// `{"error": "..."}`, `application/json`: what some API calls answer.
    JsonError,
    /// An nginx-style HTML page, `text/html`: what a proxy or gateway answers.
    Html,
    /// No body at all.
    Empty,
}

/// Settings to start a [`StandIn`](crate::StandIn) with. Everything but the port can be
/// changed while it runs.
#[derive(Clone, Debug)]
pub struct StandInConfig {
    /// Expected `X-VO-Api-Id`.
    pub api_id: String,
    /// Expected `X-VO-Api-Key`.
    pub api_key: String,
    pub roster: Roster,
    pub casing: Casing,
    /// Port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
}

impl StandInConfig {
    /// Working casing, any free port.
    pub fn new(api_id: impl Into<String>, api_key: impl Into<String>, roster: Roster) -> Self {
        StandInConfig {
            api_id: api_id.into(),
            api_key: api_key.into(),
            roster,
            casing: Casing::Working,
            port: None,
        }
    }
}

impl Default for StandInConfig {
    /// Credentials `test-api-id` / `test-api-key`, the sample roster.
    fn default() -> Self {
        StandInConfig::new("test-api-id", "test-api-key", Roster::sample())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casing_parses() {
        assert_eq!("working".parse::<Casing>().unwrap(), Casing::Working);
        assert_eq!("Spec".parse::<Casing>().unwrap(), Casing::Spec);
        assert!("camel".parse::<Casing>().is_err());
        assert_eq!(Casing::Spec.to_string(), "spec");
    }
}

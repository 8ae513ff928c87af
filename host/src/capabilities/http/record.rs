//! What a plugin may send, and what is recorded of each request it made: cut to the
//! event's budget (see [`crate::runtime::budget`]), for the report and the metrics.

use url::Url;

use super::{HttpInstance, error_kind};
use crate::config::origin;
use crate::runtime::bindings::warden::plugin::http::{HeaderValue, HttpError, Request, Response};
use crate::runtime::budget::{self, MAX_URL_PART_BYTES};

/// HTTP calls recorded per event (for the report and metrics); past this, or past the
/// event's budget for calls, they are counted.
pub const MAX_RECORDED_CALLS: usize = 64;

/// The longest URL a plugin may send, its query included (servers commonly refuse longer).
pub const MAX_URL_BYTES: usize = 8 << 10;

/// The most a request's header names and values may take together.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// The largest request body a plugin may send.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// One request a plugin made, for the report and metrics; its origin and path cut to
/// [`MAX_URL_PART_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HttpCall {
    pub method: String,
    pub origin: String,
    pub path: String,
    /// The `allowed_hosts` entry that URL matched, as the config writes it: the operator's,
    /// so metrics are labelled by it.
    pub rule: Option<String>,
    /// The final status, or the error kind.
    pub outcome: String,
}

impl HttpCall {
    fn shown_len(&self) -> usize {
        [&self.method, &self.origin, &self.path, &self.outcome]
            .into_iter()
            .map(|text| budget::shown_len(text))
            .sum()
    }
}

/// Why a request is too large to send, if it is: the host would otherwise copy and parse
/// whatever the plugin's memory holds.
pub(super) fn oversized(request: &Request) -> Option<String> {
    let query: usize = request
        .query
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum();
    let url = request.url.len() + query;
    let headers: usize = request
        .headers
        .iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    HeaderValue::Text(text) => text.len(),
                    HeaderValue::Sealed(_) => 0,
                }
        })
        .sum();
    let body = request.body.as_ref().map_or(0, Vec::len);
    if url > MAX_URL_BYTES {
        Some(format!(
            "the URL is {url} bytes with its query; at most {MAX_URL_BYTES} are sent"
        ))
    } else if headers > MAX_HEADER_BYTES {
        Some(format!(
            "the headers are {headers} bytes; at most {MAX_HEADER_BYTES} are sent"
        ))
    } else if body > MAX_BODY_BYTES {
        Some(format!(
            "the body is {body} bytes; at most {MAX_BODY_BYTES} are sent"
        ))
    } else {
        None
    }
}

/// The origin and path of a URL to record, each cut to [`MAX_URL_PART_BYTES`], and the
/// `allowed_hosts` entry it matched, as the config writes it (the operator's, so metrics are
/// labelled by it).
type Shown = (String, String, Option<String>);

impl HttpInstance {
    /// What to record of `url`: not the text itself, which is the plugin's, of any length,
    /// and whose origin may become a metrics label.
    pub(super) fn describe(&self, url: &str) -> Shown {
        if url.len() > MAX_URL_BYTES {
            return (
                format!("(a URL over {MAX_URL_BYTES} bytes)"),
                String::new(),
                None,
            );
        }
        match Url::parse(url) {
            Ok(u) => (
                budget::cut(&origin(&u), MAX_URL_PART_BYTES).into_owned(),
                budget::cut(u.path(), MAX_URL_PART_BYTES).into_owned(),
                self.flow
                    .grants
                    .hosts
                    .matching(&u)
                    .map(|rule| rule.entry().to_string()),
            ),
            Err(_) => ("(not a URL)".to_string(), String::new(), None),
        }
    }

    /// Records a call, within [`MAX_RECORDED_CALLS`] and the event's budget, and passes its
    /// result on.
    pub(super) fn record(
        &mut self,
        method: &str,
        (origin, path, rule): Shown,
        result: Result<Response, HttpError>,
    ) -> Result<Response, HttpError> {
        let call = HttpCall {
            method: method.to_string(),
            origin,
            path,
            rule,
            outcome: match &result {
                Ok(r) => r.status.to_string(),
                Err(e) => error_kind(e).to_string(),
            },
        };
        if self.calls.len() < MAX_RECORDED_CALLS && self.budget.call(call.shown_len()) {
            self.calls.push(call);
        } else {
            self.calls_dropped += 1;
        }
        result
    }
}

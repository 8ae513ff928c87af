//! What a plugin may send, and what is recorded of each request it made: cut to the
//! event's budget (see [`crate::runtime::budget`]), for the report and the metrics.

use url::Url;

use super::{CallError, HttpInstance};
use crate::config::origin;
use crate::runtime::bindings::warden::plugin::http::{HttpError, Response};
use crate::runtime::budget::{self, MAX_URL_PART_BYTES};

/// HTTP calls recorded per event (for the report and metrics); past this, or past the
/// event's budget for calls, they are counted.
pub const MAX_RECORDED_CALLS: usize = 64;

/// The longest URL a plugin may send, its query included (servers commonly refuse longer).
pub const MAX_URL_BYTES: usize = 8 << 10;

/// The most a request's header names and values may take together.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// The most headers a request may carry (each is host memory even when empty).
pub const MAX_HEADERS: usize = 256;

/// The most headers with sealed values a request may carry. A sealed value is the secret's
/// (up to 64 KiB), filled in by the host: it counts for nothing in [`MAX_HEADER_BYTES`],
/// which a plugin could otherwise use to learn the value's length, so this bounds what one
/// handle repeated could make the host hold and send.
pub const MAX_SEALED_HEADERS: usize = 8;

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

/// The origin and path of a URL to record, each cut to [`MAX_URL_PART_BYTES`], and the
/// `allowed_hosts` entry it matched, as the config writes it (the operator's, so metrics are
/// labelled by it).
type Shown = (String, String, Option<String>);

impl HttpInstance {
    /// What to record of `url`: not the text itself, which is the plugin's, of any length,
    /// and whose origin may become a metrics label.
    /// `url` is the plugin's URL parsed, `None` when it is over [`MAX_URL_BYTES`].
    pub(super) fn describe(&self, url: Option<&Result<Url, url::ParseError>>) -> Shown {
        let Some(url) = url else {
            return (
                format!("(a URL over {MAX_URL_BYTES} bytes)"),
                String::new(),
                None,
            );
        };
        match url {
            Ok(u) => (
                budget::cut(&origin(u), MAX_URL_PART_BYTES).into_owned(),
                budget::cut(u.path(), MAX_URL_PART_BYTES).into_owned(),
                self.flow
                    .grants
                    .hosts
                    .matching(u)
                    .map(|rule| rule.entry().to_string()),
            ),
            Err(_) => ("(not a URL)".to_string(), String::new(), None),
        }
    }

    /// Records a call, within [`MAX_RECORDED_CALLS`] and the event's budget, and passes its
    /// result on as the plugin receives it.
    pub(super) fn record(
        &mut self,
        method: &str,
        (origin, path, rule): Shown,
        result: Result<Response, CallError>,
    ) -> Result<Response, HttpError> {
        let call = HttpCall {
            method: method.to_string(),
            origin,
            path,
            rule,
            outcome: match &result {
                Ok(r) => r.status.to_string(),
                Err(e) => e.kind().to_string(),
            },
        };
        if self.calls.len() < MAX_RECORDED_CALLS && self.budget.call(call.shown_len()) {
            self.calls.push(call);
        } else {
            self.calls_dropped += 1;
        }
        result.map_err(CallError::into_wit)
    }
}

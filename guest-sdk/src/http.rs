//! Outbound HTTP, to the hosts the flow allows.
//!
//! ```no_run
//! use warden_sdk::prelude::*;
//!
//! # fn main() -> Result<()> {
//! let victorops = integration("victorops")?;
//! let response = http::get("https://api.victorops.com/api-public/v1/oncall/current")
//!     .header("Accept", "application/json")
//!     .header("X-VO-Api-Id", &victorops.external_id)
//!     .header_secret("X-VO-Api-Key", victorops.secret(0)?)
//!     .send()?;
//! if !response.ok() {
//!     bail!("VictorOps answered {}", response.status());
//! }
//! let body: serde_json::Value = response.json()?;
//! # let _ = body;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::warden::plugin::http as wit;
use crate::{Error, Result, Secret};

pub use wit::{HttpError, Method, Response};

/// A `GET` request to `url`.
pub fn get(url: impl Into<String>) -> RequestBuilder<'static> {
    request(Method::Get, url)
}

/// A `POST` request to `url`.
pub fn post(url: impl Into<String>) -> RequestBuilder<'static> {
    request(Method::Post, url)
}

/// A `PUT` request to `url`.
pub fn put(url: impl Into<String>) -> RequestBuilder<'static> {
    request(Method::Put, url)
}

/// A `PATCH` request to `url`.
pub fn patch(url: impl Into<String>) -> RequestBuilder<'static> {
    request(Method::Patch, url)
}

/// A `DELETE` request to `url`.
pub fn delete(url: impl Into<String>) -> RequestBuilder<'static> {
    request(Method::Delete, url)
}

/// A request with any method.
pub fn request(method: Method, url: impl Into<String>) -> RequestBuilder<'static> {
    RequestBuilder {
        method,
        url: url.into(),
        query: Vec::new(),
        headers: Vec::new(),
        body: None,
        timeout: None,
        error: None,
    }
}

/// A request being built; [`send`](RequestBuilder::send) it. `'a` is how long the
/// secrets of [`header_secret`](RequestBuilder::header_secret) are borrowed.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder<'a> {
    method: Method,
    url: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, wit::HeaderValue<'a>)>,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
    /// A failure while building (e.g. in `json`), reported by `send`.
    error: Option<Error>,
}

impl<'a> RequestBuilder<'a> {
    /// Add a header. warden sends the URL's host as `Host` and frames the request itself:
    /// a request setting `Host`, `Content-Length`, `Transfer-Encoding`, `Connection`,
    /// `Keep-Alive`, `Upgrade`, `TE`, `Trailer`, `Forwarded`, `X-Forwarded-*` or `Proxy-*`,
    /// or a header with a control character, is refused (`denied`), whether the value is
    /// text or sealed.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .push((name.into(), wit::HeaderValue::Text(value.into())));
        self
    }

    /// Add a header whose value is the secret's: the host fills it in, so the plugin
    /// never sees it (and it works when the flow does not reveal secrets).
    pub fn header_secret<'s>(
        self,
        name: impl Into<String>,
        secret: &'s Secret,
    ) -> RequestBuilder<'s>
    where
        'a: 's,
    {
        let mut this: RequestBuilder<'s> = self;
        this.headers
            .push((name.into(), wit::HeaderValue::Sealed(secret)));
        this
    }

    /// Add a query parameter (the host encodes it).
    pub fn query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Set the body to `value` as JSON, and `Content-Type: application/json`.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.body = Some(body);
                self.headers
                    .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
                self.headers.push((
                    "Content-Type".into(),
                    wit::HeaderValue::Text("application/json".into()),
                ));
            }
            Err(error) => self.error = Some(error.into()),
        }
        self
    }

    /// Give up after `timeout` (the host also applies its own cap). A zero timeout is an
    /// error at [`send`](Self::send), as in Python's SDK: no request could be made in it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        if timeout.is_zero() && self.error.is_none() {
            self.error = Some(Error::msg("the request's timeout must be more than zero"));
        }
        self.timeout = Some(timeout);
        self
    }

    /// Send the request. Any status is a response ([`Response::ok`] tells success); an
    /// `Err` means no response: the destination is not allowed, the connection or the
    /// timeout failed, or the body is over the flow's cap.
    pub fn send(self) -> Result<Response> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let request = wit::Request {
            method: self.method,
            url: self.url,
            query: self.query,
            headers: self.headers,
            body: self.body,
            timeout_ms: self.timeout.map(timeout_ms),
        };
        Ok(wit::send(&request)?)
    }
}

impl fmt::Debug for RequestBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("query", &self.query)
            .field("headers", &self.headers)
            .field("body", &self.body.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn timeout_ms(timeout: Duration) -> u32 {
    let ms = timeout.as_millis() + u128::from(!timeout.subsec_nanos().is_multiple_of(1_000_000));
    u32::try_from(ms).unwrap_or(u32::MAX)
}

impl Response {
    /// Whether the status is 2xx. Python's `response.ok` is wider (any status but 4xx and
    /// 5xx): a 1xx or 3xx answer is `ok` there and not here.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first header called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 is replaced with `οΏ½`).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

impl Method {
    /// The method's name, e.g. `GET`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a method name, case-insensitively.
impl FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        const ALL: [Method; 7] = [
            Method::Get,
            Method::Head,
            Method::Post,
            Method::Put,
            Method::Patch,
            Method::Delete,
            Method::Options,
        ];
        ALL.into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::msg(format!("unknown HTTP method `{s}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("x-request-id".into(), "abc".into()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn ok_is_2xx() {
        assert!(response(200, "").ok());
        assert!(response(204, "").ok());
        assert!(!response(199, "").ok());
        assert!(!response(301, "").ok());
        assert!(!response(404, "").ok());
        assert_eq!(response(503, "").status(), 503);
    }

    #[test]
    fn headers_are_case_insensitive() {
        let r = response(200, "");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("X-Request-ID"), Some("abc"));
        assert_eq!(r.header("missing"), None);
    }

    #[test]
    fn text_and_json() {
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct Body {
            message: String,
        }
        let r = response(200, r#"{"message":"hi"}"#);
        assert_eq!(r.text(), r#"{"message":"hi"}"#);
        assert_eq!(
            r.json::<Body>().unwrap(),
            Body {
                message: "hi".into()
            }
        );
        let bad = response(200, "not json");
        assert!(
            bad.json::<Body>()
                .unwrap_err()
                .to_string()
                .starts_with("json: ")
        );
        let binary = Response {
            status: 200,
            headers: vec![],
            body: vec![b'a', 0xff],
        };
        assert_eq!(binary.text(), "a\u{fffd}");
    }

    #[test]
    fn builder_collects_the_request() {
        let b = post("https://example.com/x")
            .header("Accept", "application/json")
            .header("content-type", "text/plain")
            .query("q", "1")
            .json(&serde_json::json!({"a": 1}))
            .timeout(Duration::from_millis(1500));
        assert_eq!(b.method, Method::Post);
        assert_eq!(b.url, "https://example.com/x");
        assert_eq!(b.query, vec![("q".to_string(), "1".to_string())]);
        assert_eq!(b.body.as_deref(), Some(&br#"{"a":1}"#[..]));
        let names: Vec<_> = b.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Accept", "Content-Type"]);
        assert_eq!(b.timeout.map(timeout_ms), Some(1500));
    }

    #[test]
    fn build_errors_surface_at_send() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("nope"))
            }
        }
        let error = get("https://example.com").json(&Fails).send().unwrap_err();
        assert_eq!(error.to_string(), "json: nope");
    }

    #[test]
    fn timeouts_round_up_to_a_millisecond() {
        let zero = get("https://x.example").timeout(Duration::ZERO);
        assert_eq!(
            zero.error.as_ref().map(ToString::to_string).as_deref(),
            Some("the request's timeout must be more than zero")
        );
        assert_eq!(timeout_ms(Duration::from_micros(1)), 1);
        assert_eq!(timeout_ms(Duration::from_secs(2)), 2000);
        assert_eq!(timeout_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn methods_parse() {
        assert_eq!("get".parse::<Method>().unwrap(), Method::Get);
        assert_eq!("OPTIONS".parse::<Method>().unwrap(), Method::Options);
        assert_eq!(Method::Patch.to_string(), "PATCH");
        assert_eq!(
            "FETCH".parse::<Method>().unwrap_err().to_string(),
            "unknown HTTP method `FETCH`"
        );
    }
}

//! The headers a request is sent with, and those a plugin may not put on it.
//!
//! The host sends `Host` from the checked URL and frames the request itself
//! (`Content-Length`, `Transfer-Encoding` and connection management, from the body). A plugin
//! that set them could reach another virtual host behind an allowed address, or frame a
//! second request inside its own for a proxy to pass on. Headers that proxies route by
//! (`Forwarded`, `X-Forwarded-*`, `Proxy-*`) are refused with them, as are names that are not
//! HTTP tokens and names or values holding a control character (CR and LF end a header).
//!
//! So are the names that ask a server to send its answer compressed or in pieces
//! (`Accept-Encoding`, `Range`, `If-Range`): redaction looks for a secret's bytes in the
//! answer as sent, and a value echoed back gzipped, or split across two ranges, would reach
//! the plugin unrecognised. The host asks for `Accept-Encoding: identity` itself, and
//! refuses an answer compressed regardless (`Content-Encoding`).
//!
//! A request carrying one is refused whole, before any connection, and the refusal recorded:
//! sending it without the header would send a request the plugin did not write. The check
//! runs on every header, text and sealed alike, before any [`Transport`](super::Transport)
//! sees the request, so the test harness's mocks are held to it too.

use super::{CallError, HttpView, OutgoingHeader, OutgoingValue};
use crate::runtime::bindings::warden::plugin::http::HeaderValue;

impl HttpView<'_> {
    /// The request's headers with sealed values filled in, or the refusal of the first one
    /// the plugin may not send. Names are checked before any secret is read. Names and text
    /// values are moved, not copied.
    pub(super) async fn outgoing_headers(
        &mut self,
        asked: Vec<(String, HeaderValue)>,
    ) -> wasmtime::Result<Result<Vec<OutgoingHeader>, CallError>> {
        let mut out = Vec::with_capacity(asked.len());
        for (name, value) in asked {
            if let Err(detail) = check_name(&name) {
                return Ok(Err(CallError::Http(self.instance.refuse_header(detail))));
            }
            let value = match value {
                HeaderValue::Text(text) => OutgoingValue::Text(text),
                HeaderValue::Sealed(handle) => {
                    let secret = self.table.get(&handle)?.secret().clone();
                    match self.instance.secrets.current(&secret).await {
                        Ok(value) => OutgoingValue::Sealed {
                            secret_id: secret.id.clone(),
                            value,
                        },
                        Err(cause) => {
                            self.instance.host_faults.record(format!(
                                "http: header `{name}`'s sealed secret `{}`: {cause}",
                                secret.id
                            ));
                            return Ok(Err(CallError::Secret {
                                header: name,
                                cause,
                            }));
                        }
                    }
                }
            };
            if let Err(detail) = check_value(&name, value.expose()) {
                return Ok(Err(CallError::Http(self.instance.refuse_header(detail))));
            }
            out.push(OutgoingHeader { name, value });
        }
        Ok(Ok(out))
    }
}

/// Names the host sets itself, or that frame the request or manage its connection
/// (lowercase).
const FRAMING: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// Names that would have the answer compressed or cut into pieces, out of redaction's sight
/// (lowercase).
const WHOLE_ANSWER: [&str; 3] = ["accept-encoding", "range", "if-range"];

/// Names proxies route by, with the prefixes of their families (lowercase).
const ROUTING: [&str; 1] = ["forwarded"];
const ROUTING_PREFIXES: [&str; 2] = ["proxy-", "x-forwarded-"];

/// Bytes of a name quoted in a refusal: the plugin chose it, of any length.
const SHOWN_NAME_BYTES: usize = 64;

/// Why a header called `name` may not be sent, whatever its value.
pub fn check_name(name: &str) -> Result<(), String> {
    // Quoted only when refused: an accepted header costs no allocation.
    let shown = || shown(name);
    if name.chars().any(char::is_control) {
        return Err(format!(
            "header name `{}` holds a control character",
            shown()
        ));
    }
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(format!(
            "header name `{}` is not a valid HTTP header name",
            shown()
        ));
    }
    let is = |known: &&str| name.eq_ignore_ascii_case(known);
    let starts = |prefix: &&str| {
        name.len() >= prefix.len()
            && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    if name.eq_ignore_ascii_case("host") {
        return Err(format!(
            "header `{}` is refused: warden sends the host of the request's URL",
            shown()
        ));
    }
    if FRAMING.iter().any(is) {
        return Err(format!(
            "header `{}` is refused: warden frames the request and manages its connection",
            shown()
        ));
    }
    if WHOLE_ANSWER.iter().any(is) {
        return Err(format!(
            "header `{}` is refused: warden asks for whole, uncompressed answers, so that secret values in them can be redacted",
            shown()
        ));
    }
    if ROUTING.iter().any(is) || ROUTING_PREFIXES.iter().any(starts) {
        return Err(format!(
            "header `{}` is refused: proxies route requests by it",
            shown()
        ));
    }
    Ok(())
}

/// Why `value` may not be sent in the header `name`. Never quotes the value: it may be a
/// sealed secret's.
pub fn check_value(name: &str, value: &str) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        return Err(format!(
            "header `{}` is refused: its value holds a control character",
            shown(name)
        ));
    }
    Ok(())
}

/// RFC 9110's `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `name` with control characters and quotes escaped, cut to about [`SHOWN_NAME_BYTES`]
/// with the marker that says so: redaction then also hides a secret value's start left at
/// the cut (`Redactor::redact_cut`).
fn shown(name: &str) -> String {
    let mut out = String::new();
    for (at, c) in name.char_indices() {
        if out.len() >= SHOWN_NAME_BYTES {
            return format!("{out}{}", crate::runtime::budget::marker(name.len() - at));
        }
        out.extend(c.escape_debug());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_and_framing_names_are_refused_in_any_case() {
        for name in [
            "Host",
            "HOST",
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "Keep-Alive",
            "Upgrade",
            "TE",
            "Trailer",
            "Forwarded",
            "X-Forwarded-For",
            "x-forwarded-proto",
            "Proxy-Authorization",
            "proxy-connection",
            "Accept-Encoding",
            "range",
            "If-Range",
        ] {
            assert!(check_name(name).is_err(), "{name}");
        }
        assert!(
            check_name("Accept-Encoding")
                .unwrap_err()
                .contains("whole, uncompressed answers"),
        );
        for name in [
            "Authorization",
            "X-Api-Key",
            "Content-Type",
            "Accept",
            "X-Forwarded",
        ] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_are_quoted_escaped_and_bounded_and_values_never_quoted() {
        let error = check_name("X-Note\r\nHost").unwrap_err();
        assert_eq!(
            error,
            r"header name `X-Note\r\nHost` holds a control character"
        );
        let long = format!("X-{}", "a".repeat(10_000));
        let error = check_name(&format!("{long}:")).unwrap_err();
        assert!(error.len() < 150, "{error}");
        assert!(error.contains("aaa...(9939 more bytes)`"), "{error}");
        // A revealed value cut at the name's bound: the marker says where, so redaction
        // hides its start too.
        let redactor =
            crate::secrets::redact::Redactor::new(vec![crate::secrets::SecretValue::new(
                "s3cretvalue123",
            )]);
        let error = check_name(&format!("{}s3cretvalue123:", "X".repeat(51))).unwrap_err();
        assert!(error.contains("s3cretvalue1"), "{error}");
        let shown = redactor.redact_cut(&error);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(check_name("").is_err());
        assert!(check_name("X Note").is_err());
        let error = check_value("X-Key", "secret\r\nX-Injected: 1").unwrap_err();
        assert_eq!(
            error,
            "header `X-Key` is refused: its value holds a control character"
        );
        assert!(check_value("X-Key", "tab\there").is_err());
        assert_eq!(
            check_value("X-Key", "fine, with spaces and ünïcode"),
            Ok(())
        );
    }
}

use std::fmt;

use crate::bindings::warden::plugin::http::HttpError;
use crate::bindings::warden::plugin::identities::IdentityError;
use crate::bindings::warden::plugin::secrets::SecretError;

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a plugin. A hook that returns it fails closed: the host logs the
/// message and the request goes to a human.
///
/// `?` converts the host's errors ([`HttpError`](crate::http::HttpError),
/// [`SecretError`], [`IdentityError`]) and JSON errors; for anything else use
/// [`Error::msg`] or [`bail!`](crate::bail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    kind: ErrorKind,
}

/// Where an [`Error`] came from, for plugins that treat some failures differently
/// (e.g. retry on [`HttpError::Timeout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A plugin's own error ([`Error::msg`], [`bail!`](crate::bail)).
    Message,
    /// An HTTP request failed ([`http`](crate::http)).
    Http(HttpError),
    /// A secret could not be opened or read.
    Secret(SecretError),
    /// An identity could not be looked up or stored.
    Identity(IdentityError),
    /// JSON (de)serialization failed.
    Json,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string(),
            kind: ErrorKind::Message,
        }
    }

    /// The message, as [`Display`](fmt::Display) shows it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where the error came from.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::msg(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::msg(message)
    }
}

/// Displays as `<variant>: <host's message>`, e.g. `denied: ...`, `timeout: ...`.
impl From<HttpError> for Error {
    fn from(error: HttpError) -> Self {
        let (variant, detail) = match &error {
            HttpError::Denied(m) => ("denied", m),
            HttpError::Timeout(m) => ("timeout", m),
            HttpError::Connect(m) => ("connect", m),
            HttpError::TooLarge(m) => ("too-large", m),
            HttpError::Invalid(m) => ("invalid", m),
        };
        Error {
            message: format!("{variant}: {detail}"),
            kind: ErrorKind::Http(error),
        }
    }
}

/// Displays as `<variant>: <host's message>`, e.g. `sealed-only: ...`.
impl From<SecretError> for Error {
    fn from(error: SecretError) -> Self {
        let (variant, detail) = match &error {
            SecretError::NotGranted(m) => ("not-granted", m),
            SecretError::SealedOnly(m) => ("sealed-only", m),
            SecretError::Unavailable(m) => ("unavailable", m),
        };
        Error {
            message: format!("{variant}: {detail}"),
            kind: ErrorKind::Secret(error),
        }
    }
}

/// Displays as `<variant>: <host's message>`, e.g. `not-granted: ...`.
impl From<IdentityError> for Error {
    fn from(error: IdentityError) -> Self {
        let (variant, detail) = match &error {
            IdentityError::NotGranted(m) => ("not-granted", m),
            IdentityError::Invalid(m) => ("invalid", m),
            IdentityError::Store(m) => ("store", m),
        };
        Error {
            message: format!("{variant}: {detail}"),
            kind: ErrorKind::Identity(error),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error {
            message: format!("json: {error}"),
            kind: ErrorKind::Json,
        }
    }
}

impl From<std::string::FromUtf8Error> for Error {
    fn from(error: std::string::FromUtf8Error) -> Self {
        Error::msg(error)
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(error: std::str::Utf8Error) -> Self {
        Error::msg(error)
    }
}

impl From<std::num::ParseIntError> for Error {
    fn from(error: std::num::ParseIntError) -> Self {
        Error::msg(error)
    }
}

/// Returns early with an [`Error`] built like `format!`.
///
/// ```
/// use warden_sdk::{bail, Result};
///
/// fn check(status: u16) -> Result<()> {
///     if status != 200 {
///         bail!("API failed with status {status}");
///     }
///     Ok(())
/// }
/// assert_eq!(check(500).unwrap_err().to_string(), "API failed with status 500");
/// ```
#[macro_export]
macro_rules! bail {
    ($($arg:tt)+) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)+)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errors_display_their_variant() {
        let cases: [(Error, &str); 11] = [
            (HttpError::Denied("x".into()).into(), "denied: x"),
            (HttpError::Timeout("x".into()).into(), "timeout: x"),
            (HttpError::Connect("x".into()).into(), "connect: x"),
            (HttpError::TooLarge("x".into()).into(), "too-large: x"),
            (HttpError::Invalid("x".into()).into(), "invalid: x"),
            (SecretError::NotGranted("x".into()).into(), "not-granted: x"),
            (SecretError::SealedOnly("x".into()).into(), "sealed-only: x"),
            (
                SecretError::Unavailable("x".into()).into(),
                "unavailable: x",
            ),
            (
                IdentityError::NotGranted("x".into()).into(),
                "not-granted: x",
            ),
            (IdentityError::Invalid("x".into()).into(), "invalid: x"),
            (IdentityError::Store("x".into()).into(), "store: x"),
        ];
        for (error, shown) in cases {
            assert_eq!(error.to_string(), shown);
        }
    }

    #[test]
    fn kind_keeps_the_host_error() {
        let error = Error::from(HttpError::Timeout("slow".into()));
        assert_eq!(
            error.kind(),
            &ErrorKind::Http(HttpError::Timeout("slow".into()))
        );
        assert_eq!(Error::msg("boom").kind(), &ErrorKind::Message);
    }

    #[test]
    fn json_and_messages() {
        let error: Error = serde_json::from_str::<u32>("nope").unwrap_err().into();
        assert!(error.to_string().starts_with("json: "), "{error}");
        assert_eq!(error.kind(), &ErrorKind::Json);
        assert_eq!(Error::from("plain").to_string(), "plain");
        assert_eq!(Error::msg(format_args!("{}-{}", 1, 2)).message(), "1-2");
    }

    #[test]
    fn bail_returns_early() {
        fn f(n: u32) -> Result<u32> {
            if n > 1 {
                bail!("too big: {n}");
            }
            Ok(n)
        }
        assert_eq!(f(1), Ok(1));
        assert_eq!(f(5).unwrap_err().to_string(), "too big: 5");
    }
}

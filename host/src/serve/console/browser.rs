//! What a console request says of who sends it: its headers (the session cookie, the
//! origin of a form) and the client address they came from.
//!
//! The address is what the console's guessing limits count by: a session cookie that names
//! no live session costs a read of the store (PostgreSQL's, shared by every replica), so
//! misses count against the same per-address limit as unknown API tokens
//! (`serve.unknown_tokens_per_minute`), and past it the cookie is not looked up at all.
//! Here too are the pages such a browser is answered with instead: too many misses, or
//! every `serve.max_in_flight` slot taken.

use std::net::IpAddr;
use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::pages::{self, Notice};
use super::{Console, api, html};

/// A console request's headers and client address; it reads as its headers.
pub(super) struct Browser {
    headers: HeaderMap,
    pub(super) client: IpAddr,
}

impl Deref for Browser {
    type Target = HeaderMap;

    fn deref(&self) -> &HeaderMap {
        &self.headers
    }
}

impl FromRequestParts<Console> for Browser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Self, Self::Rejection> {
        let client = crate::serve::throttle::request_client(
            &parts.headers,
            &parts.extensions,
            c.app.warden.current().config(),
        );
        Ok(Self {
            headers: parts.headers.clone(),
            client,
        })
    }
}

/// The page for an address past `serve.unknown_tokens_per_minute`: its cookies are not looked
/// up until the window ends.
pub(super) fn too_many_misses() -> Response {
    let mut page = html(
        StatusCode::TOO_MANY_REQUESTS,
        pages::layout(
            None,
            "Too many attempts",
            Some(Notice::Error(
                "Too many unknown tokens or sessions from your address; wait a minute and try again.",
            )),
            maud::html! {},
        ),
    );
    page.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(api::TOKEN_FAILURE_WINDOW.as_secs()),
    );
    page
}

/// The page for a signed-in browser when every `serve.max_in_flight` slot is taken.
pub(super) fn busy() -> Response {
    let mut page = html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::layout(
            None,
            "Busy",
            Some(Notice::Error(
                "warden is answering as many requests as it may at once; try again in a moment.",
            )),
            maud::html! { p { a href="/" { "Try again" } } },
        ),
    );
    page.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(api::RETRY_AFTER_SECONDS),
    );
    page
}

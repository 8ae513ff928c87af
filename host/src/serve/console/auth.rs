//! Signing in and out, and what every state-changing form must pass: it comes from this
//! server's own pages, it is bounded, and it carries the session's CSRF token.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::browser::Browser;
use super::forms::{self, Form};
use super::pages::{self, Notice};
use super::session::{self, SessionsFull};
use super::{Console, SignedIn, error_page, html, redirect, unavailable};
use crate::serve::api::{ApiError, Caller};
use crate::store::requests::now_ms;

/// Longest API token the sign-in form compares.
const MAX_TOKEN_BYTES: usize = 1024;

/// A state-changing request must come from a page of this server: a browser's `Origin`
/// (or `Sec-Fetch-Site`) that names another site is refused before any form is read.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = text("origin") {
        let named = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        // Behind a proxy that rewrites `Host`, the name the browser used is in
        // `X-Forwarded-Host`; a page on another site cannot set either header.
        let ours = [text("host"), text("x-forwarded-host")];
        return named.is_some_and(|o| {
            ours.iter()
                .flatten()
                .any(|h| !h.is_empty() && o.eq_ignore_ascii_case(h.trim()))
        });
    }
    !matches!(text("sec-fetch-site"), Some("cross-site" | "same-site"))
}

/// Reads a form body: bounded, and only from this server's pages.
pub(super) fn read_form(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Form, ApiError> {
    if !same_origin(headers) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this form was sent from another site; refused",
        ));
    }
    let body = body.map_err(|e| ApiError::new(e.status(), "the form could not be read"))?;
    if body.len() > forms::MAX_FORM_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the form is larger than {} KiB",
                forms::MAX_FORM_BYTES >> 10
            ),
        ));
    }
    Form::parse(&body).map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))
}

/// The form's CSRF token must be this session's.
pub(super) fn check_csrf(who: &SignedIn, form: &Form) -> Result<(), ApiError> {
    if session::csrf_matches(&who.session, form.get("csrf")) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this form's CSRF token is missing or is not this session's; reload the page and try again",
        ))
    }
}

pub(super) async fn sign_in_page(RawQuery(query): RawQuery) -> Response {
    let query = Form::parse(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let next = forms::return_path(query.get("next"));
    html(
        StatusCode::OK,
        pages::layout(None, "Sign in", None, pages::sign_in(next)),
    )
}

/// Sign-in never shows which part of a token was wrong, and counts attempts per address.
pub(super) async fn sign_in(
    State(c): State<Console>,
    headers: Browser,
    request: Request,
) -> Response {
    let addr = headers.client;
    let limit = c.app.warden.current().config().serve.max_body_bytes;
    let body = axum::body::to_bytes(request.into_body(), limit.min(forms::MAX_FORM_BYTES))
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"));
    let page = |status, next: &str, message: &str| {
        html(
            status,
            pages::layout(
                None,
                "Sign in",
                Some(Notice::Error(message)),
                pages::sign_in(next),
            ),
        )
    };
    let form = match body.and_then(|b| read_form(&headers, Ok(b))) {
        Ok(form) => form,
        Err(e) => return page(e.status(), "/", e.message()),
    };
    let next = forms::return_path(form.get("next"));
    if c.attempts.attempt(addr, Instant::now()).is_err() {
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            next,
            "Too many sign-in attempts from your address; wait a minute and try again.",
        );
    }
    // One count of guessed tokens per address, whichever door they come through: past the
    // API's limit, no token is compared here either.
    let token_failures = c.app.token_failures.as_ref();
    if token_failures.is_some_and(|limit| limit.check(addr, Instant::now()).is_err()) {
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            next,
            "Too many unknown tokens from your address; wait a minute and try again.",
        );
    }
    let token = form.get("token").map(str::trim).unwrap_or_default();
    let caller = (!token.is_empty() && token.len() <= MAX_TOKEN_BYTES)
        .then(|| Caller::for_token(&c.app, token))
        .flatten();
    let Some(caller) = caller else {
        tracing::info!(%addr, "console sign-in refused");
        if let Some(limit) = token_failures {
            limit.count(addr, Instant::now());
        }
        return page(StatusCode::UNAUTHORIZED, next, "That token is not valid.");
    };
    // Counted once the session is open: a sign-in the store then fails took nothing.
    if c.sign_ins.check(&caller.user, Instant::now()).is_err() {
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            next,
            "Too many sign-ins for this user in the last minute; wait a minute and try again.",
        );
    }
    let store = c.app.lifecycle.store();
    // Whatever session this browser had ends: a sign-in always gets a new id.
    match c.signed_in(&headers).await {
        Ok(Some(old)) => {
            if let Err(e) = session::close(&**store, &old.id).await {
                return unavailable(e);
            }
        }
        Ok(None) => {}
        Err(page) => return page,
    }
    let (id, _) = match session::open(&**store, token, now_ms()).await {
        Ok(Ok(opened)) => opened,
        Err(e) => return unavailable(e),
        Ok(Err(SessionsFull)) => {
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                next,
                "warden holds as many console sessions as it may; try again later.",
            );
        }
    };
    tracing::info!(user = %caller.user, role = %caller.role, "console sign-in");
    c.sign_ins.count(&caller.user, Instant::now());
    c.audit(&caller.user, "console-sign-in").await;
    let mut response = redirect(next);
    set_cookie(&mut response, Some(&id), c.secure(&headers));
    response
}

fn set_cookie(response: &mut Response, id: Option<&str>, secure: bool) {
    if let Ok(value) = HeaderValue::from_str(&session::set_cookie(id, secure)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

pub(super) async fn logout(
    State(c): State<Console>,
    headers: Browser,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let who = match c.signed_in(&headers).await {
        Ok(Some(who)) => who,
        Ok(None) => return redirect("/signin"),
        Err(page) => return page,
    };
    if let Err(e) = read_form(&headers, body).and_then(|form| check_csrf(&who, &form)) {
        return error_page(&who, &e);
    }
    if let Err(e) = session::close(&**c.app.lifecycle.store(), &who.id).await {
        return unavailable(e);
    }
    tracing::info!(user = %who.caller.user, "console sign-out");
    c.audit(&who.caller.user, "console-sign-out").await;
    let mut response = redirect("/signin");
    set_cookie(&mut response, None, c.secure(&headers));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn only_forms_from_this_servers_own_pages_are_read() {
        let host = ("host", "warden.test:8080");
        for ok in [
            vec![host, ("origin", "http://warden.test:8080")],
            vec![host, ("origin", "https://WARDEN.test:8080")],
            // A proxy that rewrites Host names the browser's host here.
            vec![
                ("host", "127.0.0.1:8080"),
                ("x-forwarded-host", "warden.example.com"),
                ("origin", "https://warden.example.com"),
            ],
            // Not a browser: the CSRF token alone decides.
            vec![host],
            vec![host, ("sec-fetch-site", "same-origin")],
        ] {
            assert!(same_origin(&headers(&ok)), "{ok:?}");
        }
        for refused in [
            vec![host, ("origin", "http://evil.example")],
            vec![host, ("origin", "http://warden.test:8080.evil.example")],
            vec![host, ("origin", "null")],
            vec![("origin", "http://warden.test:8080")],
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("sec-fetch-site", "same-site")],
        ] {
            assert!(!same_origin(&headers(&refused)), "{refused:?}");
        }
    }
}

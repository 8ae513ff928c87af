//! Who calls the API: the bearer token each request carries, looked up by its digest in the
//! config now serving (every token compared, in constant time), with unknown tokens counted
//! per client address so guessing is bounded (`serve.unknown_tokens_per_minute`); and what
//! each caller may do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use crate::config::{Role, TokenDigest};
use crate::runtime::event::UserInput;

use super::api::{ApiError, App};
use super::lifecycle::Submitted;
use super::throttle::PerAddress;

/// Past `serve.unknown_tokens_per_minute` unknown tokens from one client address within
/// this window, every request from there gets `429` until it ends, its token not compared:
/// guessing goes no faster, right guess or not.
pub const TOKEN_FAILURE_WINDOW: Duration = Duration::from_secs(60);

pub(crate) fn token_failures(per_minute: u32) -> Option<PerAddress> {
    (per_minute > 0).then(|| PerAddress::new(per_minute, TOKEN_FAILURE_WINDOW))
}

/// Who is calling, from their bearer token.
#[derive(Clone)]
pub(crate) struct Caller {
    pub(crate) user: String,
    pub(crate) role: Role,
}

impl Caller {
    /// The caller whose API token `token` is, in the config now serving.
    pub(crate) fn for_token(app: &App, token: &str) -> Option<Self> {
        let warden = app.warden.current();
        let sent = TokenDigest::of(token);
        // Every token compared, the match not ending the look: how long it takes tells
        // nothing of which configured token (or how many before it) a guess was near.
        let found = warden.config().serve.tokens.iter().fold(None, |found, t| {
            if t.token.matches(&sent) {
                Some(t)
            } else {
                found
            }
        })?;
        Some(Caller {
            user: found.user.clone(),
            role: found.role,
        })
    }

    /// Requesters see only their own requests; approvers and admins see all.
    pub(crate) fn may_see(&self, requester: &str) -> Result<(), ApiError> {
        if self.role == Role::Requester && !requester.eq_ignore_ascii_case(&self.user) {
            return Err(ApiError::forbidden(format!(
                "{} may see only their own requests",
                self.user
            )));
        }
        Ok(())
    }

    /// Whose requests a listing shows: `None` for all.
    pub(crate) fn list_scope(&self) -> Option<&str> {
        (self.role == Role::Requester).then_some(self.user.as_str())
    }

    pub(crate) fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "{} has role {}; this needs {role}",
                self.user, self.role
            )))
        }
    }

    /// Whether the caller may file another request now: each is rows in the store and
    /// notifications, so one user's are bounded in time (`serve.new_requests_per_minute`;
    /// admins are not counted). The API and the console both ask.
    pub(crate) fn may_file(&self, app: &App) -> Result<(), ApiError> {
        if self.role < Role::Admin
            && let Some(limit) = &app.new_requests
            && limit.attempt(&self.user, Instant::now()).is_err()
        {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{} filed serve.new_requests_per_minute requests in the last minute; wait {} seconds",
                    self.user,
                    TOKEN_FAILURE_WINDOW.as_secs()
                ),
            ));
        }
        Ok(())
    }

    /// Takes back the filing [`Caller::may_file`] counted when `outcome` made none: a replay
    /// of an Idempotency-Key (it files nothing), or a refusal (an unknown flow, a bad field).
    pub(crate) fn settle_filing(&self, app: &App, outcome: Result<&Submitted, &ApiError>) {
        let filed_nothing = match outcome {
            Ok(submitted) => submitted.replayed,
            Err(refused) => refused.status().is_client_error(),
        };
        if filed_nothing
            && self.role < Role::Admin
            && let Some(limit) = &app.new_requests
        {
            limit.uncount(&self.user);
        }
    }

    /// `named` (who the body says acts) must be the caller, unless the caller is an admin.
    pub(crate) fn acting_as(
        &self,
        named: Option<UserInput>,
        what: &str,
    ) -> Result<UserInput, ApiError> {
        let named = named.unwrap_or_else(|| UserInput {
            email: self.user.clone(),
            username: None,
            id: None,
            first_name: None,
            last_name: None,
        });
        if self.role >= Role::Admin {
            return Ok(named);
        }
        if !named.email.trim().eq_ignore_ascii_case(&self.user) {
            return Err(ApiError::forbidden(format!(
                "{} may not act as {what} {}; only admins act for others",
                self.user,
                named.email.trim()
            )));
        }
        // Hooks trust the whole user (a plugin may grant access to `username`), and warden
        // knows a caller only by the email of their token: the rest is an admin's to say.
        let claimed = [
            ("username", named.username.is_some()),
            ("id", named.id.is_some()),
            ("first_name", named.first_name.is_some()),
            ("last_name", named.last_name.is_some()),
        ];
        if let Some((field, _)) = claimed.iter().find(|(_, set)| *set) {
            return Err(ApiError::forbidden(format!(
                "{} may not set the {what}'s `{field}`: warden knows them by their token's \
                 email; only admins name a user's username, id or names",
                self.user
            )));
        }
        Ok(named)
    }
}

/// Compares in time independent of where the first difference is.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        // Found, or refused, before the body was read (`api::caller_first`), for the API's
        // routes.
        if let Some(found) = parts.extensions.remove::<Caller>() {
            return Ok(found);
        }
        if let Some(super::api::Refused(refused)) = parts.extensions.remove() {
            return Err(refused);
        }
        by_token(parts, app, |token| Caller::for_token(app, token))
    }
}

/// The token of an `Authorization: Bearer <token>` header, if the request has one.
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Whoever may read `/metrics`: anyone, unless the config sets `serve.metrics_token_env` or
/// `metrics_token_file`; then only a scraper sending that token (Prometheus'
/// `authorization: { credentials_file: ... }`), counted against guessing as API tokens are.
pub(crate) struct MetricsReader;

impl FromRequestParts<Arc<App>> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let warden = app.warden.current();
        let Some(expected) = &warden.config().serve.metrics_token else {
            return Ok(MetricsReader);
        };
        by_token(parts, app, |token| {
            expected
                .matches(&TokenDigest::of(token))
                .then_some(MetricsReader)
        })
    }
}

/// Who the request's bearer token says it is, as `known` finds it; an address that sent
/// too many unknown tokens is refused before its token is looked at.
fn by_token<T>(
    parts: &Parts,
    app: &App,
    known: impl FnOnce(&str) -> Option<T>,
) -> Result<T, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    if !parts.headers.contains_key(header::AUTHORIZATION) {
        return Err(unauthorized("missing `Authorization: Bearer <token>`"));
    }
    let token = bearer_token(&parts.headers)
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
    let addr = super::throttle::request_client(
        &parts.headers,
        &parts.extensions,
        app.warden.current().config(),
    );
    let now = Instant::now();
    let limit = app.token_failures.as_ref();
    if limit.is_some_and(|limit| limit.check(addr, now).is_err()) {
        return Err(ApiError::too_many_token_failures());
    }
    if let Some(found) = known(token) {
        return Ok(found);
    }
    app.metrics.observe_token_failure();
    if limit.is_some_and(|limit| limit.count(addr, now)) {
        tracing::warn!(
            %addr,
            "serve.unknown_tokens_per_minute unknown API tokens from one address within {}s: its requests get 429 until then",
            TOKEN_FAILURE_WINDOW.as_secs()
        );
    } else {
        tracing::debug!(%addr, "unknown API token");
    }
    Err(unauthorized("unknown token"))
}

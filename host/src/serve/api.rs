//! The HTTP API: JSON in and out, bearer tokens, a body size cap, and a bound on requests
//! in flight (503 with `Retry-After` beyond it, rather than a queue).

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Role;
use crate::runtime::event::UserInput;

use super::CurrentWarden;
use super::caller::MetricsReader;
pub(crate) use super::caller::{Caller, TOKEN_FAILURE_WINDOW, same_secret, token_failures};
use super::coalesce::Coalesced;
use super::lifecycle::{Lifecycle, LifecycleError, Submission};
use super::metrics::{self, Metrics};
use super::throttle::{PerAddress, PerUser};
use crate::store::requests::{Cursor, ListQuery as StoreListQuery, State as RequestState};

/// Seconds a client is told to wait when warden is at `max_in_flight`.
pub(crate) const RETRY_AFTER_SECONDS: &str = "1";
/// Seconds a client is told to wait when the store failed (a database restarting).
pub(crate) const STORE_RETRY_AFTER_SECONDS: &str = "2";
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;

pub(crate) struct App {
    pub lifecycle: Arc<Lifecycle>,
    pub warden: Arc<CurrentWarden>,
    pub metrics: Arc<Metrics>,
    pub tasks: TaskTracker,
    pub in_flight: Arc<Semaphore>,
    pub max_in_flight: usize,
    /// `/metrics`' counts from the store, one query at a time.
    pub store_counts: Coalesced<StoreCountsNow>,
    /// `/readyz`'s ping of the store, one at a time.
    pub readiness: Coalesced<Result<(), String>>,
    /// Unknown bearer tokens per client address (`serve.unknown_tokens_per_minute`).
    pub token_failures: Option<PerAddress>,
    /// New requests per user (`serve.new_requests_per_minute`; admins are not counted).
    pub new_requests: Option<PerUser>,
    /// Large answers not yet handed to their connections, per caller.
    pub unsent_answers: Arc<super::answers::Unsent>,
    /// Cancelled when warden begins to stop.
    pub stop: CancellationToken,
}

/// What `/metrics` reads from the store: requests by state, and each channel's outbox.
pub(crate) type StoreCountsNow = (Vec<(RequestState, u64)>, Vec<(String, u64)>);

pub(crate) fn router(app: Arc<App>, settings: &crate::config::ServeSettings) -> Router {
    let (max_body_bytes, client_timeout) = (settings.max_body_bytes, settings.client_timeout);
    let bodies = super::bodies::Bodies::new(settings);
    let v1 = Router::new()
        .route("/v1/flows/{flow}/requests", post(submit))
        .route("/v1/requests", get(list))
        .route("/v1/requests/{id}", get(show))
        .route("/v1/requests/{id}/approve", post(approve))
        .route("/v1/requests/{id}/deny", post(deny))
        .route("/v1/requests/{id}/revoke", post(revoke))
        .route("/v1/admin/reload", post(reload))
        .route("/v1/admin/audit", get(audit))
        .layer(middleware::from_fn_with_state(app.clone(), limit_in_flight))
        .layer(middleware::from_fn_with_state(app.clone(), caller_again))
        .layer(middleware::from_fn_with_state(
            bodies,
            super::bodies::body_first,
        ))
        .layer(middleware::from_fn_with_state(app.clone(), caller_first));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .merge(v1)
        .merge(super::console::router(app.clone(), max_body_bytes))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(
            client_timeout,
            super::connections::body_in_time,
        ))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            super::answers::answer_in_pieces,
        ))
        .layer(middleware::from_fn_with_state(app.clone(), count_responses))
        .with_state(app)
}

/// A path's variable part (a request's id, a flow's name). One that is not UTF-8 once
/// decoded is refused `400` in the API's own JSON, as every other bad input is, not in
/// axum's plain text.
pub(crate) struct Segment(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(segment)) => Ok(Self(segment)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the path is not valid: {}", rejection.body_text()),
            )),
        }
    }
}

/// An error response: `{"error": "...", "field": "..."}`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
        }
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(field) = self.field {
            body["field"] = field.into();
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(STORE_RETRY_AFTER_SECONDS),
            );
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(TOKEN_FAILURE_WINDOW.as_secs()),
            );
        }
        response
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        let status = match &e {
            LifecycleError::UnknownFlow { .. } | LifecycleError::NotFound(_) => {
                StatusCode::NOT_FOUND
            }
            LifecycleError::InvalidField { .. }
            | LifecycleError::Invalid(_)
            | LifecycleError::KeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            LifecycleError::WrongState { .. }
            | LifecycleError::Busy(_)
            | LifecycleError::AlreadyApproved { .. }
            | LifecycleError::FlowRemoved { .. }
            | LifecycleError::NotRevocable { .. } => StatusCode::CONFLICT,
            LifecycleError::SelfApproval { .. } | LifecycleError::NotApprover(_) => {
                StatusCode::FORBIDDEN
            }
            LifecycleError::NotAReplay => StatusCode::TOO_MANY_REQUESTS,
            // What removes the access (the plugin, its provider) failed.
            LifecycleError::NotRemoved { .. } => StatusCode::BAD_GATEWAY,
            LifecycleError::Unreadable(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // The store did not answer or did not commit (a database restarting, a full
            // disk): nothing the client was told is lost, and trying again may work.
            LifecycleError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status.is_server_error() {
            tracing::error!("{e}");
        }
        let field = match &e {
            LifecycleError::InvalidField { field, .. } => Some(field.clone()),
            _ => None,
        };
        // What the store said names it (a PostgreSQL URL, a file) and its internals: logged
        // above for the operator, not told to whoever holds a token.
        let message = match &e {
            LifecycleError::Store(_) => {
                "the store is unavailable or refused a change; what was written before it stands, and warden finishes a step it cut short; retry with the same Idempotency-Key"
                    .to_string()
            }
            _ => e.to_string(),
        };
        Self {
            status,
            message,
            field,
        }
    }
}

impl ApiError {
    pub(crate) fn too_many_token_failures() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many unknown tokens from your address; wait {} seconds",
                TOKEN_FAILURE_WINDOW.as_secs()
            ),
        )
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than serve.max_body_bytes".to_string()
        } else {
            e.body_text()
        };
        Self::new(status, message)
    }
}

/// Finds the caller of an API request from its token before its body is read (an unknown token is
/// counted as a guess then): a body is read into the budget every caller shares
/// ([`super::bodies::Bodies`]) only for a caller warden knows. A request without one goes on with
/// its refusal and no body, to be answered `401` by its handler (or `405` by a route that does not
/// take its method). A known caller's answer is counted as theirs while it is sent
/// ([`super::answers`]).
async fn caller_first(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match Caller::from_request_parts(&mut parts, &app).await {
        Ok(caller) => {
            let user = super::answers::AnsweredFor(caller.user.clone());
            parts.extensions.insert(caller);
            let mut response = next.run(Request::from_parts(parts, body)).await;
            response.extensions_mut().insert(user);
            response
        }
        Err(refused) => {
            parts.extensions.insert(Refused(refused));
            next.run(Request::from_parts(parts, Body::empty())).await
        }
    }
}

/// Looks the caller [`caller_first`] found up again once the body is in: it may have taken up
/// to `client_timeout_ms` to arrive, and a reload meanwhile may have removed the token or
/// changed its role. The request acts as the config serving now says.
async fn caller_again(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    if request.extensions().get::<Caller>().is_some() {
        let now = super::caller::bearer_token(request.headers())
            .and_then(|token| Caller::for_token(&app, token));
        match now {
            Some(caller) => {
                request.extensions_mut().insert(caller);
            }
            None => {
                return ApiError::new(StatusCode::UNAUTHORIZED, "unknown token").into_response();
            }
        }
    }
    next.run(request).await
}

/// Why [`caller_first`] found no caller, for the handler's [`Caller`] to answer.
#[derive(Clone)]
pub(crate) struct Refused(pub(crate) ApiError);

/// `503` with `Retry-After`: warden is at one of its bounds.
pub(crate) fn busy(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    response
}

/// Holds one of `max_in_flight` slots while a known caller's request is answered. A request
/// [`caller_first`] already refused takes none: it is answered at once from what it carries,
/// so clients without a token cannot turn callers away with `503` (nor one another: two at
/// once under `max_in_flight = 1` once did).
pub(crate) async fn limit_in_flight(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    if request.extensions().get::<Refused>().is_some() {
        return next.run(request).await;
    }
    let Ok(_permit) = app.in_flight.clone().try_acquire_owned() else {
        return busy("warden is at serve.max_in_flight requests; retry shortly");
    };
    next.run(request).await
}

async fn count_responses(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    // While more than one request (API, console, probe or scrape) is being answered, plugins'
    // requests sleep for their answers rather than take the CPU polling for them.
    let _serving = crate::capabilities::http::spin::serving();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    app.metrics.observe_response(status.as_u16());
    tracing::debug!(%method, %path, status = status.as_u16(), "api");
    response
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    parse_body(body).map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))
}

/// A request body as the API reads it (an empty body is `{}`); the error is what the
/// client is told with a 422. Public for the fuzz targets.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return serde_json::from_slice(b"{}").map_err(|e| format!("invalid body: {e}")),
        // serde would take a list as a struct's fields in order; a body is an object.
        Some(b'[') => return Err("invalid JSON body: it must be an object, not a list".into()),
        Some(_) => {}
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

/// Runs a lifecycle operation as its own task, so a client that hangs up does not cut a
/// request's hooks short, and shutdown can wait for it.
pub(crate) async fn detached<T: Send + 'static>(
    app: &App,
    work: impl Future<Output = Result<T, LifecycleError>> + Send + 'static,
) -> Result<T, ApiError> {
    app.tasks
        .spawn(work)
        .await
        .map_err(|e| {
            tracing::error!("a lifecycle task failed: {e}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "warden failed while handling this request (a host problem); see its log",
            )
        })?
        .map_err(ApiError::from)
}

/// The body of `POST /v1/flows/{flow}/requests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRequestBody {
    pub requester: Option<UserInput>,
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

async fn submit(
    State(app): State<Arc<App>>,
    caller: Caller,
    Segment(flow): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Requester)?;
    let body: NewRequestBody = parse(&body?)?;
    let requester = caller.acting_as(body.requester, "requester")?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v.to_str().ok().filter(|k| {
                // `to_str` lets a tab through; a key is shown and compared as typed.
                let visible = k.bytes().all(|b| b.is_ascii_graphic());
                !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_BYTES && visible
            });
            Some(
                key.ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!(
                            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"
                        ),
                    )
                })?
                .to_string(),
            )
        }
    };
    // Past the limit, a retry of a request filed before is still answered (its replay
    // files nothing); anything else is refused.
    let over_limit = match caller.may_file(&app) {
        Ok(()) => None,
        Err(refused) if idempotency_key.is_some() => Some(refused),
        Err(refused) => return Err(refused),
    };
    let counted = over_limit.is_none();
    let lifecycle = app.lifecycle.clone();
    let submission = Submission {
        flow,
        requester,
        fields: body.fields,
        created_by: caller.user.clone(),
        idempotency_key,
        replay_only: !counted,
    };
    let submitted = detached(&app, async move { lifecycle.submit(submission).await }).await;
    if counted {
        caller.settle_filing(&app, submitted.as_ref());
    }
    let submitted = submitted.map_err(|e| match over_limit {
        Some(refused) if e.status() == StatusCode::TOO_MANY_REQUESTS => refused,
        _ => e,
    })?;
    let status = if submitted.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, axum::Json(&submitted.request)).into_response();
    if submitted.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The body of `POST /v1/requests/{id}/approve` and `.../deny`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    pub approver: Option<UserInput>,
    pub reason: Option<String>,
}

async fn approve(
    State(app): State<Arc<App>>,
    caller: Caller,
    Segment(id): Segment,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    decide(app, caller, id, body, true).await
}

async fn deny(
    State(app): State<Arc<App>>,
    caller: Caller,
    Segment(id): Segment,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    decide(app, caller, id, body, false).await
}

async fn decide(
    app: Arc<App>,
    caller: Caller,
    id: String,
    body: Result<Bytes, BytesRejection>,
    approve: bool,
) -> Result<Response, ApiError> {
    caller.require(Role::Approver)?;
    let body: DecisionBody = parse(&body?)?;
    let approver = caller.acting_as(body.approver, "approver")?;
    let admin = (caller.role >= Role::Admin).then(|| caller.user.clone());
    let lifecycle = app.lifecycle.clone();
    let view = detached(&app, async move {
        if approve {
            lifecycle.approve(&id, approver, body.reason, admin).await
        } else {
            lifecycle.deny(&id, approver, body.reason, admin).await
        }
    })
    .await?;
    Ok(axum::Json(view).into_response())
}

/// The body of `POST /v1/requests/{id}/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    reason: Option<String>,
}

async fn revoke(
    State(app): State<Arc<App>>,
    caller: Caller,
    Segment(id): Segment,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: RevokeBody = parse(&body?)?;
    let reason = body
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let view = app.lifecycle.view(&id).await?;
    caller.may_see(&view.requester)?;
    caller.may_revoke(app.warden.current().config(), &view)?;
    let revoker = caller.acting_as(None, "revoker")?;
    let lifecycle = app.lifecycle.clone();
    let view = detached(
        &app,
        async move { lifecycle.revoke(&id, revoker, reason).await },
    )
    .await?;
    Ok(axum::Json(view).into_response())
}

async fn show(
    State(app): State<Arc<App>>,
    caller: Caller,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    let view = app.lifecycle.view(&id).await?;
    caller.may_see_request(app.warden.current().config(), &view)?;
    Ok(axum::Json(view).into_response())
}

/// Requests a listing gives by default, and at most.
pub const LIST_LIMIT: usize = 50;
pub const MAX_LIST_LIMIT: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    state: Option<String>,
    flow: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

async fn list(
    State(app): State<Arc<App>>,
    caller: Caller,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    let state = params
        .state
        .map(|s| s.parse::<RequestState>())
        .transpose()
        .map_err(bad)?;
    let limit = params.limit.unwrap_or(LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(bad(format!(
            "`limit` must be between 1 and {MAX_LIST_LIMIT}, not {limit}"
        )));
    }
    let before = params
        .before
        .map(|b| b.parse::<Cursor>())
        .transpose()
        .map_err(bad)?;
    let config = app.warden.current();
    let query = StoreListQuery {
        state,
        requester: caller.list_scope().map(str::to_string),
        flow: params.flow.filter(|f| !f.is_empty()),
        pending_only: caller.pending_scope(config.config()),
        before,
        limit,
        window: 0,
    };
    let page = app
        .lifecycle
        .list(query, |view| {
            caller.may_see_request(config.config(), view).is_ok()
        })
        .await?;
    let next = page.next.map(|cursor| cursor.to_string());
    Ok(axum::Json(serde_json::json!({ "requests": page.requests, "next": next })).into_response())
}

async fn reload(State(app): State<Arc<App>>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    // A task of its own, as a SIGHUP's is: a client that goes away cannot cut it short
    // between the swap and its audit; a stop abandons it while it compiles (up to
    // `[compile] timeout_seconds`) rather than the drain waiting it out.
    let (warden, actor, stop) = (app.warden.clone(), caller.user.clone(), app.stop.clone());
    // On the lifecycle's tracker: a stop waits for a reload past its swap to be audited.
    let reloading = app
        .tasks
        .spawn(async move { warden.reload_unless(&actor, &stop).await });
    let reloaded = reloading.await.map_err(|e| {
        tracing::error!("a reload failed: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "warden failed while reloading (a host problem); see its log",
        )
    })?;
    let Some(reloaded) = reloaded else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "warden is stopping: the reload was abandoned and the config serving kept",
        ));
    };
    match reloaded {
        Ok(summary) => Ok(axum::Json(summary).into_response()),
        Err(errors) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the new config was refused; the old one keeps serving:\n{errors}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
    /// Entries older than this `seq` (the first entry of the page before).
    before: Option<i64>,
}

async fn audit(
    State(app): State<Arc<App>>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = query.limit.unwrap_or(100).min(10_000);
    let store = app.lifecycle.store();
    let entries = match query.before {
        None => store.audit_log(limit).await,
        // Oldest first, as a page without `before` is.
        Some(before) => store.audit_page(Some(before), limit).await.map(|mut page| {
            page.reverse();
            page
        }),
    }
    .map_err(LifecycleError::from)?;
    Ok(axum::Json(serde_json::json!({ "entries": entries })).into_response())
}

/// Readiness: 200 while the store answers, 503 (with `Retry-After`) while it does not, so a
/// load balancer sends requests to replicas that can serve them. `/healthz` is liveness:
/// the process answers, whatever the store.
async fn ready(State(app): State<Arc<App>>) -> Response {
    let store = app.lifecycle.store();
    let ping = || async move { store.ping().await.map_err(|e| e.to_string()) };
    match app.readiness.get(ping).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        // Why goes to the log only: anyone may ask, and the error names the database.
        Err(e) => {
            tracing::warn!("not ready: {e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the store does not answer",
            )
            .into_response()
        }
    }
}

async fn metrics(State(app): State<Arc<App>>, _reader: MetricsReader) -> Response {
    let store = app.lifecycle.store();
    // A store that does not answer shows no counts: the scrape itself still answers.
    let read = || async {
        let states = store.count_by_state().await.unwrap_or_default();
        let depth = store.outbox_depth().await.unwrap_or_default();
        (states, depth)
    };
    let (states, depth) = app.store_counts.get(read).await;
    // `/metrics` is outside the in-flight limit, so this scrape holds no permit itself.
    let in_flight = app
        .max_in_flight
        .saturating_sub(app.in_flight.available_permits());
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        app.metrics
            .render(&states, in_flight, store.counts(), &depth),
    )
        .into_response()
}

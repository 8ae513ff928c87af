//! The approvers' console: server-rendered pages at `/` beside the JSON API under `/v1`.
//!
//! Every action is a plain form. Signing in exchanges an API token of `[serve.tokens.*]`
//! for a session cookie ([`session`], [`auth`]); each state-changing form carries the
//! session's CSRF token and must come from this server's own pages. [`pages`] holds the
//! templates, [`forms`] what is read from a browser. Listing, submitting and deciding call
//! the same [`Caller`] checks (the roles, and the flows' approval policies) and lifecycle
//! functions as the API's handlers, so the console adds no way around the API's rules, and
//! what it does is audited the same way.

mod auth;
mod browser;
mod filing;
mod forms;
mod pages;
mod session;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::Markup;

use crate::config::Role;

use super::answers::AnsweredFor;
use super::api::{self, ApiError, App, Caller, detached};
use super::lifecycle::RequestView;
use crate::store::StoreError;
use crate::store::requests::{ListQuery, State as RequestState, now_ms};
use auth::{check_csrf, read_form};
use browser::Browser;
use forms::Form;
use pages::{Decide, Notice, Who};
use session::Session;

pub(crate) use api::same_secret;

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";
const STYLESHEET: &str = include_str!("console.css");
/// Audit entries per page.
const AUDIT_PAGE: usize = 50;
/// Requests on one page of the list; **Older requests** goes on from its last.
const PAGE_LENGTH: usize = 50;

#[derive(Clone)]
struct Console {
    app: Arc<App>,
    attempts: Arc<crate::serve::throttle::PerAddress>,
    /// Sign-ins with a right token, per user: each opens a session and writes an audit row.
    sign_ins: Arc<crate::serve::throttle::PerUser>,
}

/// The console's routes, with the API's in-flight bound and the pages' security headers.
///
/// A page takes one of `serve.max_in_flight` slots once its session is found, for as long as
/// it is answered (held by [`SignedIn`]): the sign-in form, the stylesheet and a browser
/// with no live session take none, so strangers cannot turn callers away with `503`.
pub(crate) fn router(app: Arc<App>, max_body_bytes: usize) -> Router<Arc<App>> {
    // A form is read whole before its session is known; each is small, and none takes from
    // the budget the API's callers share (`bodies::Bodies`).
    let bodies = super::bodies::Bodies::each_within(max_body_bytes.min(forms::MAX_FORM_BYTES));
    let console = Console {
        app: app.clone(),
        attempts: Arc::new(session::sign_in_attempts()),
        sign_ins: Arc::new(session::sign_ins_per_user()),
    };
    Router::new()
        .route("/", get(list))
        .route("/console.css", get(stylesheet))
        .route("/signin", get(auth::sign_in_page).post(auth::sign_in))
        .route("/logout", post(auth::logout))
        .route("/requests/{id}", get(show))
        .route("/requests/{id}/decide", post(decide))
        .route("/requests/{id}/revoke", post(revoke))
        .route("/new", get(filing::new_index))
        .route("/new/{flow}", get(filing::new_form).post(filing::submit))
        .route("/audit", get(audit))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(
            bodies,
            super::bodies::body_first,
        ))
        .with_state(console)
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: with it a browser sends `Origin: null` on the console's own forms,
    // which `same_origin` refuses. Request ids still never reach another site.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// A signed-in browser: its session and who its token names in the config now serving,
/// holding one of `serve.max_in_flight` slots while its page is answered.
struct SignedIn {
    id: String,
    session: Session,
    caller: Caller,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl SignedIn {
    fn who(&self) -> Who<'_> {
        Who {
            user: &self.caller.user,
            role: self.caller.role,
            csrf: self.session.csrf(),
        }
    }
}

impl Console {
    /// The signed-in user and the form they posted, its size and CSRF token checked; else the
    /// page to answer with (sign-in, or the error page).
    async fn posted_form(
        &self,
        headers: &Browser,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<(SignedIn, Form), Response> {
        let Some(who) = self.signed_in(headers).await? else {
            return Err(redirect("/signin"));
        };
        match read_form(headers, body).and_then(|f| check_csrf(&who, &f).map(|()| f)) {
            Ok(form) => Ok((who, form)),
            Err(e) => Err(error_page(&who, &e)),
        }
    }

    /// Who is signed in to view a page; if no one, the sign-in page, coming back to the path
    /// `back` gives (and `query`) afterwards; the page to answer with if the store cannot say.
    async fn viewer(
        &self,
        headers: &Browser,
        back: impl FnOnce() -> String,
        query: Option<&str>,
    ) -> Result<SignedIn, Response> {
        match self.signed_in(headers).await? {
            Some(who) => Ok(who),
            None => Err(to_sign_in(&back(), query)),
        }
    }

    /// Who the request's session cookie signs in, if anyone; the page to answer with if the
    /// store cannot say, the address has sent too many cookies naming no session, or every
    /// `max_in_flight` slot is taken.
    async fn signed_in(&self, headers: &Browser) -> Result<Option<SignedIn>, Response> {
        let now = now_ms();
        let warden = self.app.warden.current();
        let tokens = &warden.config().serve.tokens;
        let store = self.app.lifecycle.store();
        let cookies = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        // Collected (two at most) so no borrowing iterator is held across the reads below.
        let ids: Vec<&str> = session::session_ids(cookies, self.secure(headers)).collect();
        if ids.is_empty() {
            return Ok(None);
        }
        // Cookies naming no session count as unknown tokens do: each cost a read of the store.
        let misses = self.app.token_failures.as_ref();
        if misses.is_some_and(|limit| limit.check(headers.client, Instant::now()).is_err()) {
            return Err(browser::too_many_misses());
        }
        for id in ids {
            let Some(session) = session::get(&**store, id, now).await.map_err(unavailable)? else {
                continue;
            };
            let Some(token) = session.token(tokens) else {
                // Its token was removed or rotated by a reload: signed out.
                session::close(&**store, id).await.map_err(unavailable)?;
                continue;
            };
            let caller = Caller {
                user: token.user.clone(),
                role: token.role,
            };
            let Ok(slot) = self.app.in_flight.clone().try_acquire_owned() else {
                return Err(browser::busy());
            };
            return Ok(Some(SignedIn {
                id: id.to_string(),
                session,
                caller,
                _slot: slot,
            }));
        }
        if misses.is_some_and(|limit| limit.count(headers.client, Instant::now())) {
            tracing::warn!(
                addr = %headers.client,
                "serve.unknown_tokens_per_minute unknown tokens or session cookies from one address within {}s: its session cookies are not looked up until then",
                api::TOKEN_FAILURE_WINDOW.as_secs()
            );
        }
        Ok(None)
    }

    /// Records a sign-in or sign-out in the audit log (refused sign-ins are only logged: they
    /// would let anyone grow the append-only log).
    async fn audit(&self, user: &str, action: &str) {
        let store = self.app.lifecycle.store();
        let audited = store
            .audit(user, action, None, &serde_json::json!({}))
            .await;
        if let Err(e) = audited {
            tracing::error!("cannot write the audit log: {e}");
        }
    }

    /// `Secure` cookies: the operator says warden is behind TLS, or the proxy says this
    /// request came over it. (A client that lies gets a cookie its own browser won't send
    /// back over plain HTTP: no harm to anyone else.)
    fn secure(&self, headers: &HeaderMap) -> bool {
        let forwarded_https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        self.app.warden.current().config().serve.behind_tls || forwarded_https
    }
}

fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// A page for a signed-in user: what it holds while it is sent counts as theirs
/// ([`crate::serve::answers`]), whichever address asks for it.
fn page_for(who: &SignedIn, status: StatusCode, markup: Markup) -> Response {
    let mut response = html(status, markup);
    response
        .extensions_mut()
        .insert(AnsweredFor(who.caller.user.clone()));
    // The store failed (the session was read, a later call was not answered): when to try
    // again, as the API says it.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(api::STORE_RETRY_AFTER_SECONDS),
        );
    }
    response
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The page for a store that cannot answer: the console can neither tell who is signed in
/// nor show anything, so the browser is told to try again (the error itself is logged).
fn unavailable(error: StoreError) -> Response {
    tracing::error!("console: {error}");
    let mut page = html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::layout(
            None,
            "Unavailable",
            Some(Notice::Error(
                "warden cannot reach its store just now; try again in a moment.",
            )),
            maud::html! { p { a href="/" { "Try again" } } },
        ),
    );
    page.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    page
}

/// An error shown as a page of its own, for the signed-in user.
fn error_page(who: &SignedIn, error: &ApiError) -> Response {
    let title = match error.status() {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        _ => "Cannot do that",
    };
    page_for(
        who,
        error.status(),
        pages::layout(
            Some(&who.who()),
            title,
            Some(Notice::Error(error.message())),
            maud::html! { p { a href="/" { "Back to the requests" } } },
        ),
    )
}

/// `segment` escaped to stand as one segment of a path: all but letters, digits and `*-._`,
/// as a form value is.
fn path_segment(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// To the sign-in page, coming back to `path` afterwards.
fn to_sign_in(path: &str, query: Option<&str>) -> Response {
    let mut back = path.to_string();
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        back = format!("{back}?{q}");
    }
    let next: String = url::form_urlencoded::byte_serialize(back.as_bytes()).collect();
    redirect(&format!("/signin?next={next}"))
}

async fn list(State(c): State<Console>, headers: Browser, RawQuery(query): RawQuery) -> Response {
    let who = match c.viewer(&headers, || "/".into(), query.as_deref()).await {
        Ok(who) => who,
        Err(page) => return page,
    };
    let query = match Form::parse(query.unwrap_or_default().as_bytes()) {
        Ok(q) => q,
        Err(e) => return error_page(&who, &ApiError::new(StatusCode::BAD_REQUEST, e)),
    };
    let state = match query.get("state").filter(|s| !s.is_empty()).map(str::parse) {
        None => None,
        Some(Ok(state)) => Some(state),
        Some(Err(e)) => return error_page(&who, &ApiError::new(StatusCode::BAD_REQUEST, e)),
    };
    let flow = query.get("flow").filter(|f| !f.is_empty());
    let before = match query
        .get("before")
        .filter(|b| !b.is_empty())
        .map(str::parse)
    {
        None => None,
        Some(Ok(cursor)) => Some(cursor),
        Some(Err(e)) => return error_page(&who, &ApiError::new(StatusCode::BAD_REQUEST, e)),
    };
    let current = c.app.warden.current();
    let listing = ListQuery {
        state,
        requester: who.caller.list_scope().map(str::to_string),
        flow: flow.map(str::to_string),
        pending_only: who.caller.pending_scope(current.config()),
        before,
        limit: PAGE_LENGTH,
        window: 0,
    };
    let visible = |view: &RequestView| who.caller.may_see_request(current.config(), view).is_ok();
    let page = match c.app.lifecycle.list(listing, visible).await {
        Ok(page) => page,
        Err(e) => return error_page(&who, &e.into()),
    };
    let mut requests = page.requests;
    // Pending first; otherwise newest first, as listed.
    requests.sort_by_key(|r| r.state != RequestState::Pending);
    let flows: Vec<String> = c
        .app
        .warden
        .current()
        .config()
        .flows
        .keys()
        .cloned()
        .collect();
    let title = if who.caller.role == Role::Requester {
        "Your requests"
    } else {
        "Requests"
    };
    page_for(
        &who,
        StatusCode::OK,
        pages::layout(
            Some(&who.who()),
            title,
            None,
            pages::list(&requests, &flows, state, flow, page.next.as_ref()),
        ),
    )
}

/// A request's page, with `error` at the top when an action on it was refused.
async fn request_page(
    c: &Console,
    who: &SignedIn,
    id: &str,
    error: Option<&ApiError>,
    filed: bool,
) -> Response {
    let view = match c.app.lifecycle.view(id).await {
        Ok(view) => view,
        Err(e) => return error_page(who, &e.into()),
    };
    let warden = c.app.warden.current();
    let config = warden.config();
    if let Err(e) = who.caller.may_see_request(config, &view) {
        return error_page(who, &e);
    }
    let decide = decide_on(config, who, &view);
    let revoke = match view.state {
        RequestState::Escalated => who.caller.may_revoke(config, &view).is_ok(),
        _ => false,
    };
    let status = error.map_or(StatusCode::OK, ApiError::status);
    // Just filed: say at once whether the flow's plugin decided it. The query is the
    // browser's to send (a link, a form sent again after a person decided): the plugin is
    // said to have decided only when the history says it did.
    let by_plugin = pages::decided_by(&view).is_some_and(|(_, fast_track)| fast_track);
    let news = filed
        .then_some(match view.state {
            RequestState::Pending | RequestState::Requested => {
                Some("Filed: it waits for an approver.")
            }
            RequestState::Ignored => {
                Some("Filed: the flow's plugin ignored it; no one is asked to decide.")
            }
            _ if !by_plugin => None,
            RequestState::Denied => Some("Filed: the flow's plugin denied it at once."),
            _ => Some("Filed and fast-tracked: the flow's plugin approved it at once."),
        })
        .flatten();
    let notice = match (error, news) {
        (Some(e), _) => Some(Notice::Error(e.message())),
        (None, Some(news)) => Some(Notice::Info(news)),
        (None, None) => None,
    };
    page_for(
        who,
        status,
        pages::layout(
            Some(&who.who()),
            &format!("Request {}", view.id),
            notice,
            pages::request(&view, &who.who(), &decide, revoke),
        ),
    )
}

/// Whether the signed-in user may approve or deny `view`, and if not, why: the page says so
/// in place of the buttons.
fn decide_on(config: &crate::config::Config, who: &SignedIn, view: &RequestView) -> Decide {
    if who.caller.role < Role::Approver {
        return Decide::Missing(format!(
            "You are a {}: only approvers and admins approve or deny requests.",
            who.caller.role
        ));
    }
    // A flow a reload removed: only an admin may clear its requests (by denying them).
    let admin_clears_removed_flow =
        who.caller.role >= Role::Admin && config.flow(&view.flow).is_none();
    if let Err(e) = who.caller.may_decide(config, &view.flow)
        && !admin_clears_removed_flow
    {
        return Decide::Missing(format!("{}. Ask one of them to decide.", e.message()));
    }
    let self_approval_allowed = config
        .flow(&view.flow)
        .is_some_and(|f| f.allow_self_approval);
    if let Some(how) = super::policy::party(&view.requester, &view.created_by, &who.caller.user)
        && !self_approval_allowed
    {
        return Decide::Missing(format!(
            "You {how} this, and flow `{}` does not allow self-approval: another approver decides.",
            view.flow
        ));
    }
    let approvals = pages::approvals(view);
    let required = super::policy::policy_of(config, &view.flow).approvals_required;
    // Approvals a reload made enough are completed by any who gave them (the lifecycle's
    // count, which leaves out approvers no longer the flow's, has the last word).
    if approvals
        .iter()
        .any(|a| a.counted.eq_ignore_ascii_case(&who.caller.user))
        && approvals.len() < required as usize
    {
        return Decide::Missing(format!(
            "You approved this already; it needs {required} approvals from different people ({} so far): another approver decides.",
            approvals.len()
        ));
    }
    Decide::Allowed
}

async fn show(
    State(c): State<Console>,
    headers: Browser,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let back = || format!("/requests/{}", path_segment(&id));
    let who = match c.viewer(&headers, back, None).await {
        Ok(who) => who,
        Err(page) => return page,
    };
    request_page(&c, &who, &id, None, query.as_deref() == Some("filed")).await
}

async fn decide(
    State(c): State<Console>,
    headers: Browser,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (who, form) = match c.posted_form(&headers, body).await {
        Ok(posted) => posted,
        Err(page) => return page,
    };
    let decided = async {
        who.caller.require(Role::Approver)?;
        let approver = who.caller.acting_as(None, "approver")?;
        let approve = match form.get("verdict") {
            Some("approve") => true,
            Some("deny") => false,
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "choose Approve or Deny",
                ));
            }
        };
        let reason = form
            .get("reason")
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        let admin = (who.caller.role >= Role::Admin).then(|| who.caller.user.clone());
        let lifecycle = c.app.lifecycle.clone();
        let id = id.clone();
        detached(&c.app, async move {
            if approve {
                lifecycle.approve(&id, approver, reason, admin).await
            } else {
                lifecycle.deny(&id, approver, reason, admin).await
            }
        })
        .await
    }
    .await;
    match decided {
        Ok(_) => redirect(&format!("/requests/{id}")),
        Err(e) => request_page(&c, &who, &id, Some(&e), false).await,
    }
}

async fn revoke(
    State(c): State<Console>,
    headers: Browser,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (who, form) = match c.posted_form(&headers, body).await {
        Ok(posted) => posted,
        Err(page) => return page,
    };
    let revoked = async {
        let view = c.app.lifecycle.view(&id).await?;
        who.caller.may_see(&view.requester)?;
        who.caller
            .may_revoke(c.app.warden.current().config(), &view)?;
        let revoker = who.caller.acting_as(None, "revoker")?;
        let reason = form
            .get("reason")
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        let lifecycle = c.app.lifecycle.clone();
        let id = id.clone();
        detached(&c.app, async move {
            lifecycle.revoke(&id, revoker, reason).await
        })
        .await
    }
    .await;
    match revoked {
        Ok(_) => redirect(&format!("/requests/{id}")),
        Err(e) => request_page(&c, &who, &id, Some(&e), false).await,
    }
}

async fn audit(State(c): State<Console>, headers: Browser, RawQuery(query): RawQuery) -> Response {
    let who = match c
        .viewer(&headers, || "/audit".into(), query.as_deref())
        .await
    {
        Ok(who) => who,
        Err(page) => return page,
    };
    if let Err(e) = who.caller.require(Role::Admin) {
        return error_page(&who, &e);
    }
    let query = Form::parse(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let before = match query.get("before").map(str::parse::<i64>) {
        None => None,
        Some(Ok(seq)) => Some(seq),
        Some(Err(_)) => {
            let e = ApiError::new(StatusCode::BAD_REQUEST, "`before` must be a whole number");
            return error_page(&who, &e);
        }
    };
    let entries = match c.app.lifecycle.store().audit_page(before, AUDIT_PAGE).await {
        Ok(entries) => entries,
        Err(e) => return error_page(&who, &super::lifecycle::LifecycleError::from(e).into()),
    };
    let older = (entries.len() == AUDIT_PAGE)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    page_for(
        &who,
        StatusCode::OK,
        pages::layout(
            Some(&who.who()),
            "Audit log",
            None,
            pages::audit(&entries, older),
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::store::Store;
    use crate::store::requests;

    #[test]
    fn the_audit_log_pages_newest_first_without_gaps_or_repeats() {
        let store = Arc::new(Store::open_in_memory().unwrap());
        for i in 0..(2 * super::AUDIT_PAGE + 7) {
            let detail = serde_json::json!({ "i": i });
            store
                .with("audit", |c| {
                    requests::audit(c, "a@x.com", "reload", None, &detail)
                })
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .read("audit page", |c| {
                    requests::audit_page(c, before, super::AUDIT_PAGE)
                })
                .unwrap();
            seen.extend(page.iter().map(|e| e.detail["i"].as_u64().unwrap()));
            if page.len() < super::AUDIT_PAGE {
                break;
            }
            before = page.last().map(|e| e.seq);
        }
        let expected: Vec<u64> = (0..(2 * super::AUDIT_PAGE as u64 + 7)).rev().collect();
        assert_eq!(seen, expected);
    }
}

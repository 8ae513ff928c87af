//! Filing a request from the console: the flows a user may file for, each flow's form (its
//! declared fields), and the form's submission through the same lifecycle call as the API's
//! `POST /v1/flows/{flow}/requests`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::browser::Browser;
use super::forms::{self, Form};
use super::pages::{self, Notice};
use super::{Console, SignedIn, error_page, page_for, path_segment, redirect, session};
use crate::config::Role;
use crate::serve::api::{ApiError, detached};
use crate::serve::lifecycle::{LifecycleError, Submission};

pub(super) async fn new_index(State(c): State<Console>, headers: Browser) -> Response {
    let who = match c.viewer(&headers, || "/new".into(), None).await {
        Ok(who) => who,
        Err(page) => return page,
    };
    let flows: Vec<String> = c
        .app
        .warden
        .current()
        .config()
        .flows
        .keys()
        .cloned()
        .collect();
    page_for(
        &who,
        StatusCode::OK,
        pages::layout(
            Some(&who.who()),
            "New request",
            None,
            pages::new_index(&flows),
        ),
    )
}

/// A flow's form; after a refused submission, with the error and what was sent.
fn new_form_page(
    c: &Console,
    who: &SignedIn,
    flow: &str,
    refused: Option<(&ApiError, &Form)>,
    key: Option<&str>,
) -> Response {
    let error = refused.map(|(e, _)| e);
    let warden = c.app.warden.current();
    let Some(spec) = warden.config().flow(flow) else {
        let e = ApiError::new(StatusCode::NOT_FOUND, format!("no flow `{flow}`"));
        return error_page(who, &e);
    };
    let declared: Vec<_> = spec.fields.iter().collect();
    let key = key.map_or_else(
        || format!("console-{}", session::random_hex(16)),
        str::to_string,
    );
    page_for(
        who,
        error.map_or(StatusCode::OK, ApiError::status),
        pages::layout(
            Some(&who.who()),
            &format!("New request: {flow}"),
            error.map(|e| Notice::Error(e.message())),
            pages::new_form(flow, &declared, &who.who(), &key, refused.map(|(_, f)| f)),
        ),
    )
}

pub(super) async fn new_form(
    State(c): State<Console>,
    headers: Browser,
    Path(flow): Path<String>,
) -> Response {
    let back = || format!("/new/{}", path_segment(&flow));
    let who = match c.viewer(&headers, back, None).await {
        Ok(who) => who,
        Err(page) => return page,
    };
    new_form_page(&c, &who, &flow, None, None)
}

pub(super) async fn submit(
    State(c): State<Console>,
    headers: Browser,
    Path(flow): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (who, form) = match c.posted_form(&headers, body).await {
        Ok(posted) => posted,
        Err(page) => return page,
    };
    // A random key from the form: sending it twice (a reload) files one request.
    let idempotency_key = form
        .get("idem")
        .filter(|k| k.len() <= 100 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string);
    // Whether the key was refused for naming another request; else a refused form keeps
    // it, so sending the form again files at most one request (the store may have kept
    // this one before failing).
    let mut key_spent = false;
    let mut counted = false;
    let submitted = async {
        who.caller.require(Role::Requester)?;
        let requester = who.caller.acting_as(None, "requester")?;
        who.caller.may_file(&c.app)?;
        counted = true;
        let warden = c.app.warden.current();
        let declared = warden
            .config()
            .flow(&flow)
            .map(|f| f.fields.clone())
            .unwrap_or_default();
        let fields = forms::request_fields(&declared, &form).map_err(|(field, message)| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("field `{field}`: {message}"),
            )
        })?;
        let lifecycle = c.app.lifecycle.clone();
        let submission = Submission {
            flow: flow.clone(),
            requester,
            fields,
            created_by: who.caller.user.clone(),
            idempotency_key: idempotency_key.clone(),
            replay_only: false,
        };
        let submitted = detached(
            &c.app,
            async move { Ok(lifecycle.submit(submission).await) },
        );
        submitted.await?.map_err(|e| {
            key_spent = matches!(e, LifecycleError::KeyReused { .. });
            ApiError::from(e)
        })
    }
    .await;
    if counted {
        who.caller.settle_filing(&c.app, submitted.as_ref());
    }
    match submitted {
        Ok(submitted) => redirect(&format!("/requests/{}?filed", submitted.request.id)),
        Err(e) => {
            let key = idempotency_key.as_deref().filter(|_| !key_spent);
            new_form_page(&c, &who, &flow, Some((&e, &form)), key)
        }
    }
}

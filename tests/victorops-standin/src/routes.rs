//! The HTTP side: every request is recorded, may be delayed or failed on purpose, then is
//! authenticated, rate limited and answered from the roster in the vendor's wire format.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::config::{Casing, ErrorStyle};
use crate::controls::Controls;
use crate::query::{percent_decode, query_param};
use crate::roster::{Roster, User};
use crate::{ONCALL_CURRENT_PATH, TEAMS_PATH, USERS_V2_PATH};

pub(crate) async fn handle(
    State(controls): State<Controls>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let seq = controls.record(&method, &uri, &headers);
    let (latency, injected) = {
        let mut inner = controls.lock();
        let path = uri.path();
        let injected = inner
            .injections
            .iter_mut()
            .find(|i| i.remaining > 0 && path.starts_with(&i.path_prefix))
            .map(|i| {
                i.remaining -= 1;
                (i.status, i.style)
            });
        inner.injections.retain(|i| i.remaining > 0);
        (inner.latency, injected)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = match injected {
        Some((status, style)) => error_response(status, style, "Injected failure"),
        None => answer(&controls, &method, &uri, &headers),
    };
    controls.finish(seq, response.status(), &method, &uri);
    response
}

fn answer(controls: &Controls, method: &Method, uri: &Uri, headers: &HeaderMap) -> Response {
    let mut inner = controls.lock();

    let id = headers.get("x-vo-api-id");
    let key = headers.get("x-vo-api-key");
    let (Some(id), Some(key)) = (id, key) else {
        return error_response(
            StatusCode::UNAUTHORIZED,
            ErrorStyle::JsonMessage,
            "Missing X-VO-Api-Id or X-VO-Api-Key header",
        );
    };
    if id.as_bytes() != inner.api_id.as_bytes() || key.as_bytes() != inner.api_key.as_bytes() {
        return error_response(
            StatusCode::FORBIDDEN,
            ErrorStyle::JsonMessage,
            "Invalid API credentials",
        );
    }

    if let Some(limit) = inner.rate_limit {
        inner.rate_limited_calls += 1;
        if inner.rate_limited_calls > limit {
            return error_response(
                StatusCode::FORBIDDEN,
                ErrorStyle::JsonMessage,
                "API rate limit exceeded",
            );
        }
    }

    let path = uri.path();
    if ![ONCALL_CURRENT_PATH, USERS_V2_PATH, TEAMS_PATH].contains(&path) {
        return error_response(StatusCode::NOT_FOUND, ErrorStyle::JsonMessage, "Not Found");
    }
    if method != Method::GET {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorStyle::JsonMessage,
            "Method Not Allowed",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return response;
    }

    let body = match path {
        ONCALL_CURRENT_PATH => oncall_current(&inner.roster, inner.casing),
        USERS_V2_PATH => users_v2(&inner.roster, uri.query(), inner.strict_email),
        _ => teams(&inner.roster),
    };
    json_response(StatusCode::OK, &body)
}

/// `GET /api-public/v1/oncall/current`. Shape as read by working clients
/// (e.g. `team["oncallNow"]`, `user["onCalluser"]["username"]`) and, in spec
/// casing, as documented by the vendor.
fn oncall_current(roster: &Roster, casing: Casing) -> Value {
    let (now_key, user_key) = casing.keys();
    let teams: Vec<Value> = roster
        .teams
        .iter()
        .map(|team| {
            let policies: Vec<Value> = team
                .policies
                .iter()
                .map(|policy| {
                    let users: Vec<Value> = policy
                        .on_call
                        .iter()
                        .map(|username| json!({ user_key: { "username": username } }))
                        .collect();
                    json!({
                        "escalationPolicy": { "name": policy.name, "slug": policy.slug },
                        "users": users,
                    })
                })
                .collect();
            json!({
                "team": { "name": team.name, "slug": team.slug },
                now_key: policies,
            })
        })
        .collect();
    json!({ "teamsOnCall": teams })
}

/// `GET /api-public/v2/user[?email=...]`.
fn users_v2(roster: &Roster, query: Option<&str>, strict_email: bool) -> Value {
    let email = query.and_then(|q| query_param(q, "email"));
    let users: Vec<Value> = match email {
        None => roster.users.iter().map(user_json).collect(),
        Some(raw) if strict_email && raw.to_ascii_lowercase().contains("%40") => Vec::new(),
        Some(raw) => {
            let wanted = percent_decode(&raw).to_lowercase();
            roster
                .users
                .iter()
                .filter(|u| u.email.to_lowercase() == wanted)
                .map(user_json)
                .collect()
        }
    };
    json!({ "users": users, "_selfUrl": USERS_V2_PATH })
}

fn user_json(user: &User) -> Value {
    json!({
        "firstName": user.first_name,
        "lastName": user.last_name,
        "displayName": format!("{} {}", user.first_name, user.last_name),
        "username": user.username,
        "email": user.email,
        "createdAt": user.created_at,
        "passwordLastUpdated": user.password_last_updated,
        "verified": user.verified,
        "_selfUrl": format!("/api-public/v1/user/{}", user.username),
    })
}

/// `GET /api-public/v1/team`: a bare JSON array.
fn teams(roster: &Roster) -> Value {
    let teams: Vec<Value> = roster
        .teams
        .iter()
        .map(|team| {
            let mut value = json!({
                "_selfUrl": format!("/api-public/v1/team/{}", team.slug),
                "_membersUrl": format!("/api-public/v1/team/{}/members", team.slug),
                "_policiesUrl": format!("/api-public/v1/team/{}/policies", team.slug),
                "_adminsUrl": format!("/api-public/v1/team/{}/admins", team.slug),
                "name": team.name,
                "slug": team.slug,
                "memberCount": team.members.len(),
                "version": team.version,
                "isDefaultTeam": team.is_default_team,
            });
            if let Some(description) = &team.description {
                value["description"] = json!(description);
            }
            value
        })
        .collect();
    Value::Array(teams)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error_response(status: StatusCode, style: ErrorStyle, message: &str) -> Response {
    match style {
        ErrorStyle::JsonMessage => json_response(status, &json!({ "message": message })),
        ErrorStyle::JsonError => json_response(status, &json!({ "error": message })),
        ErrorStyle::Html => {
            let title = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error")
            );
            let page = format!(
                "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
                 <center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n\
                 </body>\r\n</html>\r\n"
            );
            (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                page,
            )
                .into_response()
        }
        ErrorStyle::Empty => (status, Body::empty()).into_response(),
    }
}

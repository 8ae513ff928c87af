//! Request bodies, read whole before their request counts against `max_in_flight`, and
//! bounded in bytes: each by `max_body_bytes`, and those the API's callers send at once by a
//! budget they share, of which one caller may hold a quarter (the console's forms each by
//! themselves).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::{ApiError, busy};
use crate::Unpoisoned;

/// What [`body_first`] may hold: each body at most `max_body_bytes`, and the API's bodies
/// being read or answered at once at most `max_in_flight` of them in bytes, counted as they
/// arrive (what the handlers held before they were read first), so `max_connections`
/// clients sending bodies cannot make warden hold more. Only a caller with a known token
/// (`api::caller_first`) reads into that shared budget, so a client without one cannot fill it
/// and turn everyone else's requests away. The console's forms are small, and each is only
/// bounded by itself: all of them at once are at most `max_connections` forms. One caller
/// (the user a token names) may hold a quarter of the budget, or one whole body if that is
/// more, so a caller sending bodies on many connections and finishing none cannot turn
/// every other caller's away (`429` for them, as answers are bounded per caller).
#[derive(Clone)]
pub(crate) struct Bodies {
    max_body_bytes: usize,
    /// `None`: no budget shared between bodies (the console's forms).
    bytes: Option<Arc<tokio::sync::Semaphore>>,
    per_caller: Arc<PerCaller>,
}

/// Bytes of bodies each caller holds now.
struct PerCaller {
    most: usize,
    held: Mutex<HashMap<String, usize>>,
}

impl PerCaller {
    /// Takes `n` more bytes for `who`, unless that would hold more than `most`.
    fn take(&self, who: &str, n: usize) -> bool {
        let mut held = self.held.lock().unpoisoned();
        let now = held.get(who).copied().unwrap_or(0);
        if now + n > self.most {
            return false;
        }
        held.insert(who.to_string(), now + n);
        true
    }

    fn give_back(&self, who: &str, n: usize) {
        let mut held = self.held.lock().unpoisoned();
        if let Some(now) = held.get_mut(who) {
            *now = now.saturating_sub(n);
            if *now == 0 {
                held.remove(who);
            }
        }
    }
}

/// What one body holds of its caller's share, given back when the request is answered.
struct CallersBytes {
    of: Arc<PerCaller>,
    who: String,
    n: usize,
}

impl Drop for CallersBytes {
    fn drop(&mut self) {
        self.of.give_back(&self.who, self.n);
    }
}

impl Bodies {
    pub(crate) fn new(settings: &crate::config::ServeSettings) -> Self {
        let total = settings
            .max_in_flight
            .saturating_mul(settings.max_body_bytes);
        Self {
            max_body_bytes: settings.max_body_bytes,
            bytes: Some(Arc::new(tokio::sync::Semaphore::new(
                total.min(tokio::sync::Semaphore::MAX_PERMITS),
            ))),
            per_caller: Arc::new(PerCaller {
                most: (total / 4).max(settings.max_body_bytes),
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Bodies sharing no budget, each read to at most one byte past `max_body_bytes` (the
    /// handler refuses it).
    pub(crate) fn each_within(max_body_bytes: usize) -> Self {
        Self {
            max_body_bytes,
            bytes: None,
            per_caller: Arc::new(PerCaller {
                most: usize::MAX,
                held: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// Reads a request's whole body (within `client_timeout_ms`: the layer outside) before
/// [`super::api::limit_in_flight`] counts it: a client slow to send a body, or sending none after
/// its head, then holds its own connection for that long, not one of the `max_in_flight` slots
/// every user's requests share (64 such connections held them all). The bytes read are counted
/// against [`Bodies`] until the request is answered.
pub(crate) async fn body_first(
    State(bodies): State<Bodies>,
    request: Request,
    next: Next,
) -> Response {
    use http_body_util::BodyExt;
    let (parts, mut body) = request.into_parts();
    // Announced too long: refused before any of it is read (nor a `100 Continue` sent).
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|n| n.to_str().ok()?.trim().parse::<u64>().ok());
    if bodies.bytes.is_some() && announced.is_some_and(|n| n > bodies.max_body_bytes as u64) {
        return too_large();
    }
    let mut bytes = Vec::new();
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    // Whose share the body counts against: the caller `caller_first` found (a request
    // without one has no body to read by now).
    let mut callers = CallersBytes {
        of: bodies.per_caller.clone(),
        who: parts
            .extensions
            .get::<super::caller::Caller>()
            .map(|c| c.user.to_ascii_lowercase())
            .unwrap_or_default(),
        n: 0,
    };
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            // A body cut short; one that came too late is answered 408 by `body_in_time`.
            Err(error) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {error}"),
                )
                .into_response();
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let Some(shared) = &bodies.bytes else {
            // A form: one byte past its bound is enough for the page to refuse it in its
            // own words, after its own checks (a form from another site is refused as one).
            let room = bodies.max_body_bytes + 1 - bytes.len();
            bytes.extend_from_slice(&data[..data.len().min(room)]);
            if bytes.len() > bodies.max_body_bytes {
                break;
            }
            continue;
        };
        if bytes.len() + data.len() > bodies.max_body_bytes {
            return too_large();
        }
        let more = u32::try_from(data.len()).unwrap_or(u32::MAX);
        match shared.clone().try_acquire_many_owned(more) {
            Ok(permit) => match &mut held {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            },
            Err(_) => {
                return busy("warden is reading as many request bodies as it may; retry shortly");
            }
        }
        if !callers.of.take(&callers.who, data.len()) {
            let mut refused = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "this caller is sending as many request bodies at once as one caller may; finish or close those first",
            )
            .into_response();
            refused.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            return refused;
        }
        callers.n += data.len();
        bytes.extend_from_slice(&data);
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    drop(held);
    drop(callers);
    response
}

fn too_large() -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "the request body is larger than serve.max_body_bytes",
    )
    .into_response()
}

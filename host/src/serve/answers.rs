//! Answers on their way out, bounded per caller. A caller may ask for answers of up to a
//! listing page's megabyte on every connection it may open and then read them a few bytes a
//! second: each write makes progress, so no stall limit ends the connection, and warden
//! would hold every answer whole until it was read (about 1 MiB a connection, a gigabyte at
//! the default `max_connections`).
//!
//! So an answer larger than [`PIECE_BYTES`] leaves in pieces of that size, each a copy, and
//! counts against its caller's [`PER_CALLER_BYTES`] (and every caller's [`ALL_CALLERS_BYTES`])
//! until its last piece has been handed to the connection: past either, the caller's next
//! large reading (`GET`) is refused (`429` for one caller, `503` for all) until it reads what
//! it asked for. The answer to a change is counted but never refused: the change is made.
//! What a connection then holds of an answer is its own write queue (hyper's, at most
//! `max_buf_size` and a piece: about 80 KiB, never counted) and the socket's send buffer,
//! which the listener keeps small ([`super::connections`]). A caller is the user an API token or a console session
//! names; anything else is counted by the client's address as the throttles count it
//! (through `trusted_proxies`, an IPv6 /64 as one).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use super::api::{ApiError, App};
use super::throttle::{AddressKey, request_client};

/// Answers up to this size leave whole and are not counted; larger ones leave in pieces of
/// it (a copy each, so the whole answer is freed with its last piece, not its last write).
pub const PIECE_BYTES: usize = 16 << 10;
/// What one caller's answers may hold unsent at once: four listing pages.
pub const PER_CALLER_BYTES: usize = 4 << 20;
/// What every caller's answers may hold unsent at once.
pub const ALL_CALLERS_BYTES: usize = 64 << 20;

/// Who an answer is for, as the layer that found its caller tells [`answer_in_pieces`]
/// (through the response's extensions: the request's are gone by then).
#[derive(Debug, Clone)]
pub(crate) struct AnsweredFor(pub(crate) String);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Reader {
    User(String),
    /// The client's address as the throttles count it: through `trusted_proxies`, an
    /// IPv6 /64 as one.
    Address(AddressKey),
}

/// The bytes of answers handed out in pieces and not yet wholly handed to their connection,
/// per caller and in all.
#[derive(Debug)]
pub(crate) struct Unsent {
    per_caller: usize,
    all: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    all: usize,
    /// Only readers with bytes held: an entry goes with its last answer.
    by_reader: HashMap<Reader, usize>,
}

/// Why an answer could not be counted.
#[derive(Debug, PartialEq, Eq)]
enum Full {
    Caller,
    All,
}

impl Unsent {
    pub(crate) fn new() -> Arc<Self> {
        Self::within(PER_CALLER_BYTES, ALL_CALLERS_BYTES)
    }

    fn within(per_caller: usize, all: usize) -> Arc<Self> {
        Arc::new(Self {
            per_caller,
            all,
            held: Mutex::new(Held::default()),
        })
    }

    /// Counts `bytes` for `reader`; past a bound refused, unless `refusable` is false (the
    /// answer to a change already made, which must reach its client).
    fn count(
        self: &Arc<Self>,
        reader: Reader,
        bytes: usize,
        refusable: bool,
    ) -> Result<Counted, Full> {
        let mut held = self.held.lock().expect("no panics while held");
        let mine = held.by_reader.get(&reader).copied().unwrap_or(0);
        // A caller holding nothing may always have one answer, however large: a page is
        // bounded by itself, and refusing it would refuse it for ever.
        if refusable && mine > 0 && mine + bytes > self.per_caller {
            return Err(Full::Caller);
        }
        if refusable && held.all > 0 && held.all + bytes > self.all {
            return Err(Full::All);
        }
        held.all += bytes;
        held.by_reader.insert(reader.clone(), mine + bytes);
        Ok(Counted {
            unsent: self.clone(),
            reader,
            bytes,
        })
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let held = self.held.lock().unwrap();
        (held.all, held.by_reader.len())
    }
}

/// One answer's bytes, counted until dropped.
#[derive(Debug)]
struct Counted {
    unsent: Arc<Unsent>,
    reader: Reader,
    bytes: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut held = self.unsent.held.lock().expect("no panics while held");
        held.all -= self.bytes;
        if let Some(mine) = held.by_reader.get_mut(&self.reader) {
            *mine -= self.bytes;
            if *mine == 0 {
                held.by_reader.remove(&self.reader);
            }
        }
    }
}

/// Router layer: an answer larger than [`PIECE_BYTES`] leaves in pieces, counted against its
/// caller until its last piece is handed on; one past the caller's bound is refused `429`,
/// past every caller's `503`, each with `Retry-After`.
pub(crate) async fn answer_in_pieces(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    // Only a reading is refused: a change (a request filed, a decision) has been made by
    // the time its answer is, and a client told to retry it would make it twice.
    let refusable = matches!(*request.method(), Method::GET | Method::HEAD);
    let address = AddressKey::of(request_client(
        request.headers(),
        request.extensions(),
        app.warden.current().config(),
    ));
    let response = next.run(request).await;
    let Some(length) = hyper::body::Body::size_hint(response.body()).exact() else {
        // Nothing here streams; a body of unknown length is left as it is.
        return response;
    };
    if length <= PIECE_BYTES as u64 {
        return response;
    }
    let reader = match response.extensions().get::<AnsweredFor>() {
        Some(AnsweredFor(user)) => Reader::User(user.clone()),
        None => Reader::Address(address),
    };
    let unsent = &app.unsent_answers;
    let bytes = usize::try_from(length).unwrap_or(usize::MAX);
    let counted = match unsent.count(reader, bytes, refusable) {
        Ok(counted) => counted,
        Err(full) => {
            let page = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/html"));
            return refused(full, page);
        }
    };
    let (parts, body) = response.into_parts();
    // The body is whole already (its length is exact and it was made in memory): this takes
    // it out of its wrapper, and copies it into an allocation of its length (a page rendered
    // into a growing string may hold twice that).
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => Bytes::copy_from_slice(&bytes),
        Err(error) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot make the answer: {error}"),
            )
            .into_response();
        }
    };
    Response::from_parts(
        parts,
        Body::new(InPieces {
            bytes,
            at: 0,
            counted: Some(counted),
        }),
    )
}

/// The refusal, as JSON for the API, or as a page for a browser that asked for one (the
/// console's own pages are not to be had while it is refused).
fn refused(full: Full, page: bool) -> Response {
    let (status, message) = match full {
        Full::Caller => (
            StatusCode::TOO_MANY_REQUESTS,
            "your earlier answers are still being sent: read them, then retry",
        ),
        Full::All => (
            StatusCode::SERVICE_UNAVAILABLE,
            "warden is sending as many large answers as it may; retry shortly",
        ),
    };
    let mut response = if page {
        let html = format!(
            "<!doctype html><meta charset=utf-8><title>Try again shortly</title><p>{message}.</p>"
        );
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response()
    } else {
        ApiError::new(status, message).into_response()
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// An answer handed out a copied piece at a time; its count is let go with its last piece.
struct InPieces {
    bytes: Bytes,
    at: usize,
    counted: Option<Counted>,
}

impl hyper::body::Body for InPieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.at >= this.bytes.len() {
            return Poll::Ready(None);
        }
        let end = this.bytes.len().min(this.at + PIECE_BYTES);
        let piece = Bytes::copy_from_slice(&this.bytes[this.at..end]);
        this.at = end;
        if end == this.bytes.len() {
            this.bytes = Bytes::new();
            this.at = 0;
            this.counted = None;
        }
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.bytes.len() - self.at) as u64)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use hyper::body::Body as _;

    use super::*;

    fn user(name: &str) -> Reader {
        Reader::User(name.to_string())
    }

    #[test]
    fn a_caller_past_its_bound_is_refused_until_it_reads_and_others_are_not() {
        let unsent = Unsent::within(100, 250);
        let first = unsent.count(user("alice"), 60, true).unwrap();
        let second = unsent.count(user("alice"), 40, true).unwrap();
        assert_eq!(
            unsent.count(user("alice"), 1, true).unwrap_err(),
            Full::Caller
        );
        let bob = unsent.count(user("bob"), 100, true).unwrap();
        assert_eq!(unsent.held(), (200, 2));
        // Every caller's bound: carol holds nothing, but all together would pass 250.
        assert_eq!(
            unsent.count(user("carol"), 60, true).unwrap_err(),
            Full::All
        );
        drop(first);
        assert!(unsent.count(user("alice"), 60, true).is_ok());
        drop((second, bob));
        // Nothing is remembered of a caller holding nothing.
        assert_eq!(unsent.held(), (0, 0));
    }

    #[test]
    fn the_answer_to_a_change_is_counted_past_the_bounds_but_not_refused() {
        let unsent = Unsent::within(100, 250);
        let _page = unsent.count(user("alice"), 100, true).unwrap();
        let filed = unsent.count(user("alice"), 200, false).unwrap();
        assert_eq!(unsent.held(), (300, 1));
        assert_eq!(
            unsent.count(user("alice"), 1, true).unwrap_err(),
            Full::Caller
        );
        drop(filed);
        assert_eq!(unsent.held(), (100, 1));
    }

    #[test]
    fn one_answer_larger_than_a_bound_is_let_through_when_nothing_else_is_held() {
        let unsent = Unsent::within(100, 250);
        let big = unsent.count(user("alice"), 1_000, true).unwrap();
        assert_eq!(
            unsent.count(user("alice"), 1, true).unwrap_err(),
            Full::Caller
        );
        assert_eq!(unsent.count(user("bob"), 1, true).unwrap_err(), Full::All);
        drop(big);
        let address = Reader::Address(AddressKey::of([10, 0, 0, 1].into()));
        assert!(unsent.count(address, 1_000, true).is_ok());
    }

    #[tokio::test]
    async fn an_answer_leaves_in_copied_pieces_and_its_count_goes_with_the_last() {
        let unsent = Unsent::within(1 << 20, 1 << 20);
        let whole: Vec<u8> = (0..(2 * PIECE_BYTES + 5)).map(|i| i as u8).collect();
        let counted = unsent.count(user("alice"), whole.len(), true).unwrap();
        let mut body = InPieces {
            bytes: Bytes::from(whole.clone()),
            at: 0,
            counted: Some(counted),
        };
        assert_eq!(body.size_hint().exact(), Some(whole.len() as u64));
        let mut pieces = Vec::new();
        while let Some(frame) = body.frame().await {
            let piece = frame.unwrap().into_data().unwrap();
            assert!(piece.len() <= PIECE_BYTES);
            pieces.push(piece);
            let left = whole.len() - pieces.iter().map(Bytes::len).sum::<usize>();
            // Counted until the last piece is handed out, not until the body is dropped.
            let expected = if left == 0 { 0 } else { whole.len() };
            assert_eq!(unsent.held().0, expected, "{left} bytes left");
        }
        assert!(body.is_end_stream());
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces.concat(), whole);
    }
}

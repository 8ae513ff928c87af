//! Listing requests a page at a time: newest first, filtered in the store (by state, flow,
//! requester, and which pending requests the caller may see), checked again here against
//! who may see each, with a cursor to go on from. The store walks an index in listing
//! order, so a page costs the rows it reads, not the table. A page is bounded three ways,
//! so no caller can make one answer hold the whole table: by its length, by the bytes of
//! what it shows, and by the rows read to fill it (then it ends early, with its cursor).

use serde_json::Value;

use crate::store::requests::{Cursor, ListQuery};

use super::{Lifecycle, LifecycleError, RequestView};

/// Rows read for one page at most, shown or not (the store leaves out what the caller may
/// not see already; this bounds what it could not tell).
pub const MAX_ROWS_READ: usize = 1000;
/// Rows asked of the store at a time, however short the page.
const READ_CHUNK: usize = 100;
/// What a page's requests may show, about (their fields and reasons); the first request
/// is always given.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// One page of a listing; `next` is where the following page starts, if there may be one.
pub struct Page {
    pub requests: Vec<RequestView>,
    pub next: Option<Cursor>,
}

impl Lifecycle {
    /// Up to `query.limit` requests that `visible` keeps, as `query` asks.
    pub async fn list(
        &self,
        mut query: ListQuery,
        visible: impl Fn(&RequestView) -> bool,
    ) -> Result<Page, LifecycleError> {
        let wanted = query.limit.max(1);
        query.limit = wanted.max(READ_CHUNK);
        let (mut requests, mut read, mut bytes) = (Vec::new(), 0, 0);
        // The cursor after the last request given.
        let mut given: Option<Cursor> = None;
        loop {
            let rows = self.store.list(&query).await?;
            let more = rows.len() == query.limit;
            read += rows.len();
            let mut last = None;
            for rec in rows {
                let cursor = Cursor::after(&rec);
                let view = RequestView::new(rec, None);
                last = Some(cursor.clone());
                if !visible(&view) {
                    continue;
                }
                bytes += shown_bytes(&view);
                if !requests.is_empty() && bytes > MAX_PAGE_BYTES {
                    // This one starts the next page.
                    return Ok(Page {
                        requests,
                        next: given,
                    });
                }
                requests.push(view);
                given = Some(cursor);
                if requests.len() == wanted {
                    return Ok(Page {
                        requests,
                        next: given,
                    });
                }
            }
            if !more {
                return Ok(Page {
                    requests,
                    next: None,
                });
            }
            if read >= MAX_ROWS_READ {
                return Ok(Page {
                    requests,
                    next: last,
                });
            }
            query.before = last;
        }
    }
}

/// About what a request shows in a listing: its fields' and reason's text.
fn shown_bytes(view: &RequestView) -> usize {
    fn of(value: &Value) -> usize {
        match value {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(of).sum(),
            Value::Object(map) => map.iter().map(|(k, v)| k.len() + of(v)).sum(),
            _ => 8,
        }
    }
    let fields: usize = view.fields.iter().map(|(k, v)| k.len() + of(v)).sum();
    256 + fields + view.reason.as_ref().map_or(0, String::len)
}

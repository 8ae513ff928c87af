//! Listing requests a page at a time: newest first, filtered in the store (by state, flow,
//! requester, and which pending requests the caller may see), checked again here against
//! who may see each, with a cursor to go on from. Each store query looks at a window of
//! requests in listing order (an index walk) and tries its filters on those only, so a
//! page costs the rows it looks at, never the table, however many the filters leave out.
//! A page is bounded three ways, so no caller can make one answer hold the whole table or
//! cost a scan of it: by its length, by the bytes of what it shows, and by the requests
//! looked at to fill it (then it ends early, with its cursor).

use serde_json::Value;

use crate::store::requests::{Cursor, ListQuery};

use super::{Lifecycle, LifecycleError, RequestView};

/// Requests looked at for one page at most, shown or not: past them the page ends, with
/// its cursor, however few it holds.
pub const MAX_ROWS_READ: usize = 1000;
/// Requests one store query looks at (its filters are tried on these only).
const WINDOW: usize = 250;
/// Requests one store query gives at most: each is read whole (fields of up to
/// `max_body_bytes`) before the page's byte bound can cut, so a page is filled a part at a
/// time (a listing of 200 large requests read them all, 12 MiB, to show 1). Four queries
/// (`MAX_ROWS_READ` / `WINDOW`) still fill a page of 200.
const ROWS_PER_QUERY: usize = 64;
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
        // No flow name or request id holds a NUL (PostgreSQL's text cannot even be asked
        // about one): nothing to list.
        let nul = |text: Option<&str>| text.is_some_and(|t| t.contains('\0'));
        if nul(query.flow.as_deref()) || nul(query.before.as_ref().map(|c| c.id.as_str())) {
            return Ok(Page {
                requests: Vec::new(),
                next: None,
            });
        }
        let wanted = query.limit.max(1);
        query.window = WINDOW;
        let (mut requests, mut read, mut bytes) = (Vec::new(), 0, 0);
        // The cursor after the last request given.
        let mut given: Option<Cursor> = None;
        loop {
            query.limit = (wanted - requests.len()).min(ROWS_PER_QUERY);
            let chunk = self.store.list(&query).await?;
            let cut_by_limit = chunk.read == query.limit;
            let last_row = chunk.last_read.clone();
            for rec in chunk.rows {
                let cursor = Cursor::after(&rec);
                let view = RequestView::new(rec, None);
                // The store left out what the caller may not see; checked again all the same.
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
            // Rows past the query's limit in its window were not given: go on after the last
            // row it gave; else after its window, unless the table ended there.
            let next = if cut_by_limit {
                last_row
            } else {
                chunk.window_end
            };
            read += WINDOW;
            match next {
                None => {
                    return Ok(Page {
                        requests,
                        next: None,
                    });
                }
                Some(next) if read >= MAX_ROWS_READ => {
                    return Ok(Page {
                        requests,
                        next: Some(next),
                    });
                }
                next => query.before = next,
            }
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

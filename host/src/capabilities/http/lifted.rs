//! A request as the plugin passes it, read in its memory: measured there, and copied only
//! once it is known to be within [`MAX_URL_BYTES`], [`MAX_HEADERS`], [`MAX_HEADER_BYTES`],
//! [`MAX_SEALED_HEADERS`] and [`MAX_BODY_BYTES`] (see [`crate::runtime::lift`]).

use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Lift, Resource, WasmList, WasmStr};

use super::record::{
    MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_HEADERS, MAX_SEALED_HEADERS, MAX_URL_BYTES,
};
use crate::capabilities::secrets::SecretHandle;
use crate::runtime::bindings::warden::plugin::http::{HeaderValue, Method, Request};
use crate::runtime::instance::InstanceState;
use crate::runtime::lift::Passed;

/// `request`, as the plugin's memory holds it.
#[derive(ComponentType, Lift)]
#[component(record)]
pub struct RequestView {
    method: Method,
    url: WasmStr,
    query: WasmList<(WasmStr, WasmStr)>,
    headers: WasmList<(WasmStr, HeaderView)>,
    body: Option<WasmList<u8>>,
    #[component(name = "timeout-ms")]
    timeout_ms: Option<u32>,
}

/// `header-value`, as the plugin's memory holds it.
#[derive(ComponentType, Lift)]
#[component(variant)]
pub enum HeaderView {
    #[component(name = "text")]
    Text(WasmStr),
    #[component(name = "sealed")]
    Sealed(Resource<SecretHandle>),
}

/// What the host takes of a request: its method and URL (to record), and the request
/// itself, or why it is too large to send.
pub struct Asked {
    pub method: Method,
    pub url: Passed,
    pub request: Result<Request, String>,
}

type Store<'a> = StoreContextMut<'a, InstanceState>;

/// Reads `view` where the plugin holds it; copies it only when it may be sent. Every string
/// in it is validated, as lifting it whole would, up to the first that takes the URL or the
/// headers over their bound (the request is then refused for its size).
pub fn take(store: &mut Store<'_>, view: RequestView) -> wasmtime::Result<Asked> {
    let url = Passed::read(&*store, &view.url, MAX_URL_BYTES + 1)?;
    let asked = |request| Asked {
        method: view.method,
        url: url.clone(),
        request,
    };
    // Each pair is at least `&`, `=`: a longer list cannot fit, whatever it holds.
    let pairs = view.query.len();
    if pairs > MAX_URL_BYTES / 2 {
        let least = url.len().saturating_add(2 * pairs);
        return Ok(asked(Err(format!(
            "the URL is at least {least} bytes with its query; at most {MAX_URL_BYTES} are sent"
        ))));
    }
    let count = view.headers.len();
    if count > MAX_HEADERS {
        return Ok(asked(Err(format!(
            "the request has {count} headers; at most {MAX_HEADERS} are sent"
        ))));
    }
    let query: Vec<(WasmStr, WasmStr)> = view.query.iter(&mut *store)?.collect::<Result<_, _>>()?;
    let headers: Vec<(WasmStr, HeaderView)> =
        view.headers.iter(&mut *store)?.collect::<Result<_, _>>()?;
    // Summed until over the bound, not on: every entry may point at one long string, each
    // read (and checked to be UTF-8) whole, so the host's work is that string's once. The
    // strings read are kept as the plugin's memory holds them, to be copied from if all fit.
    let memory = &*store;
    let mut url_bytes = url.len();
    let mut query_text = Vec::with_capacity(query.len());
    for (k, v) in &query {
        if url_bytes > MAX_URL_BYTES {
            break;
        }
        let (k, v) = (k.to_str(memory)?, v.to_str(memory)?);
        url_bytes += k.len() + v.len() + 2;
        query_text.push((k, v));
    }
    let mut header_bytes = 0;
    let mut sealed = 0;
    let mut header_text = Vec::with_capacity(headers.len());
    for (name, value) in &headers {
        if header_bytes > MAX_HEADER_BYTES {
            break;
        }
        let name = name.to_str(memory)?;
        header_bytes += name.len();
        let value = match value {
            HeaderView::Text(text) => Some(text.to_str(memory)?),
            HeaderView::Sealed(_) => {
                sealed += 1;
                None
            }
        };
        header_bytes += value.as_ref().map_or(0, |text| text.len());
        header_text.push((name, value));
    }
    let body = view.body.as_ref().map_or(0, WasmList::len);
    if url_bytes > MAX_URL_BYTES {
        return Ok(asked(Err(format!(
            "the URL is at least {url_bytes} bytes with its query; at most {MAX_URL_BYTES} are sent"
        ))));
    } else if header_bytes > MAX_HEADER_BYTES {
        return Ok(asked(Err(format!(
            "the headers are at least {header_bytes} bytes; at most {MAX_HEADER_BYTES} are sent"
        ))));
    } else if sealed > MAX_SEALED_HEADERS {
        return Ok(asked(Err(format!(
            "the request has {sealed} headers with sealed values; at most {MAX_SEALED_HEADERS} are sent"
        ))));
    } else if body > MAX_BODY_BYTES {
        return Ok(asked(Err(format!(
            "the body is {body} bytes; at most {MAX_BODY_BYTES} are sent"
        ))));
    }
    // Everything fits, so every string was read above: copy them.
    let query = query_text
        .into_iter()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let copied = headers
        .into_iter()
        .zip(header_text)
        .map(|((_, view), (name, text))| {
            let value = match view {
                HeaderView::Sealed(handle) => HeaderValue::Sealed(handle),
                HeaderView::Text(_) => HeaderValue::Text(text.unwrap_or_default().into_owned()),
            };
            (name.into_owned(), value)
        })
        .collect();
    let body = view.body.map(|b| b.as_le_slice(memory).to_vec());
    let request = Request {
        method: view.method,
        url: url.whole().unwrap_or_default().to_string(),
        query,
        headers: copied,
        body,
        timeout_ms: view.timeout_ms,
    };
    Ok(asked(Ok(request)))
}

//! What one hook run may make the host keep.
//!
//! A plugin's memory is bounded by `memory_mib`, but whatever it hands the host and the host
//! keeps beyond the call — log lines, captured stdout/stderr, refusals quoting the names it
//! asked for, recorded HTTP calls, an error it returns, a decision's reason — lives in the
//! host's memory, the request's history, the API's answers and the CLI's output. Every such
//! path goes through this module:
//!
//! - each item is cut to its own bound by [`cut`], with a marker saying how many bytes were
//!   dropped; a name quoted back in a message is cut by [`quote`];
//! - everything an event keeps is charged to its [`EventBudget`]: log lines (the log
//!   interface, stdout and stderr together) to `limits.log_max_bytes`, each line counted as
//!   its bytes plus [`LINE_OVERHEAD`], so empty lines are not free; refusals to
//!   [`REFUSAL_BYTES`] and HTTP calls to [`CALL_BYTES`], each counted as its text plus
//!   [`RECORD_OVERHEAD`]. What does not fit is counted, not kept;
//! - a reason and a failure message are cut to [`MAX_MESSAGE_BYTES`] each;
//! - an instance holds at most [`MAX_HANDLES`] resources.
//!
//! So one event keeps at most [`ceiling`]`(log_max_bytes)`, and one hook run adds at most
//! [`HOOK_ENTRY_BYTES`] to a request's history ([`HOOK_RUN_BYTES`] with the transition and
//! audit line it causes).
//!
//! Lengths that end up in JSON (the history, the API, `warden hook`'s answer) are measured
//! as JSON shows them ([`shown_len`]): a control character costs its six-byte escape, so the
//! bounds hold for the stored and served text, not only for the raw bytes.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Charged for every log line kept, on top of its bytes: what the host spends on a line
/// beyond its text (its place in a list, its level and source, the allocation).
pub const LINE_OVERHEAD: usize = 64;

/// Charged for every refusal or HTTP call kept, on top of its text.
pub const RECORD_OVERHEAD: usize = 64;

/// The longest name (an alias, a secret id, a service id, a URL, a header name) quoted back
/// in a refusal or an error.
pub const MAX_NAME_BYTES: usize = 256;

/// The longest refusal detail kept.
pub const MAX_REFUSAL_BYTES: usize = 768;

/// The longest origin or path kept for a recorded HTTP call.
pub const MAX_URL_PART_BYTES: usize = 256;

/// The longest decision reason, and the longest message of a failed hook (the plugin's
/// error, a trap with its panic message, a host error).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Refusals one event keeps, all capabilities together (each also at most
/// [`crate::capabilities::refusal::MAX_REFUSALS_PER_EVENT`] per capability).
pub const REFUSAL_BYTES: usize = 8 << 10;

/// HTTP calls one event records (also at most [`crate::capabilities::http::MAX_RECORDED_CALLS`]).
pub const CALL_BYTES: usize = 16 << 10;

/// The most one hook run's entry in a request's history takes as JSON: its refusals, a
/// reason or an error, and fixed fields.
pub const HOOK_ENTRY_BYTES: usize = 16 << 10;

/// The most one hook run adds to the store and to `GET /v1/requests/{id}`: its entry, the
/// transition it causes (its reason quoting the hook's reason or error) and the audit line.
pub const HOOK_RUN_BYTES: usize = 24 << 10;

/// The most one event of a flow with `log_max_bytes` keeps: its log lines, refusals, HTTP
/// calls, a reason and a failure message, overheads included.
pub fn ceiling(log_max_bytes: usize) -> usize {
    log_max_bytes + REFUSAL_BYTES + CALL_BYTES + 2 * MAX_MESSAGE_BYTES
}

/// Resources (secret handles, WASI streams and pollables) one instance may hold at once,
/// in the host's table and in the guest's: each is host memory.
pub const MAX_HANDLES: usize = 4096;

/// The marker put where text was cut: `...(N more bytes)`.
const MARKER_START: &str = "...(";
const MARKER_END: &str = " more bytes)";

pub(crate) fn marker(dropped: usize) -> String {
    format!("{MARKER_START}{dropped}{MARKER_END}")
}

fn shown_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The length of `text` inside a JSON string: its UTF-8 bytes, with quotes, backslashes and
/// control characters counted as their escapes.
pub fn shown_len(text: &str) -> usize {
    text.chars().map(shown_char_len).sum()
}

/// `text` without a cut marker at its end, and the bytes that marker says were dropped.
pub fn split_marker(text: &str) -> Option<(&str, usize)> {
    let digits = text.strip_suffix(MARKER_END)?;
    let body = digits.trim_end_matches(|c: char| c.is_ascii_digit());
    let dropped = digits[body.len()..].parse().ok()?;
    Some((body.strip_suffix(MARKER_START)?, dropped))
}

/// A cut marker in a text: where it is, and the bytes it says were dropped before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutMarker {
    pub start: usize,
    pub end: usize,
    pub dropped: usize,
}

/// Every well-formed cut marker in `text`, in order. Some may be text a plugin wrote: the
/// host cannot tell its own from a copy once they are in one string.
pub fn cut_markers(text: &str) -> Vec<CutMarker> {
    text.match_indices(MARKER_START)
        .filter_map(|(start, _)| {
            let rest = &text[start + MARKER_START.len()..];
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 || !rest[digits..].starts_with(MARKER_END) {
                return None;
            }
            Some(CutMarker {
                start,
                end: start + MARKER_START.len() + digits + MARKER_END.len(),
                // A count past `usize` is a plugin's: it saturates, as `cut` does.
                dropped: rest[..digits].parse().unwrap_or(usize::MAX),
            })
        })
        .collect()
}

/// `text` if it shows in at most `max` bytes; else its start and a marker saying how many
/// bytes were dropped, `max` bytes in all. Text already ending in a marker keeps one marker,
/// counting both cuts. `max` must leave room for a marker (at most 36 bytes).
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max && shown_len(text) <= max {
        return Cow::Borrowed(text);
    }
    // A marker already there may be the plugin's own, counting anything: saturate.
    let (body, before) = split_marker(text).unwrap_or((text, 0));
    // The count is at most this, so the marker is at most this long.
    let room = max.saturating_sub(marker(text.len().saturating_add(before)).len());
    let mut shown = 0;
    let mut end = 0;
    for (at, c) in body.char_indices() {
        shown += shown_char_len(c);
        if shown > room {
            break;
        }
        end = at + c.len_utf8();
    }
    let dropped = before.saturating_add(body.len() - end);
    Cow::Owned(format!("{}{}", &body[..end], marker(dropped)))
}

/// [`cut`] of a text of which only `start` was copied (its first `max` bytes or more, or all
/// of it), `len` being the whole text's length: the same start and marker, without the host
/// ever holding the rest.
pub fn cut_start(start: &str, len: usize, max: usize) -> Cow<'_, str> {
    if start.len() >= len {
        return cut(start, max);
    }
    let room = max.saturating_sub(marker(len).len());
    let mut shown = 0;
    let mut end = 0;
    for (at, c) in start.char_indices() {
        shown += shown_char_len(c);
        if shown > room {
            break;
        }
        end = at + c.len_utf8();
    }
    Cow::Owned(format!("{}{}", &start[..end], marker(len - end)))
}

/// A name the plugin passed, as a message quotes it: at most [`MAX_NAME_BYTES`].
pub fn quote(name: &str) -> Cow<'_, str> {
    cut(name, MAX_NAME_BYTES)
}

/// One event's accounts: what its log lines and its records may still take. Shared by the
/// capabilities of one instance (and its stdout and stderr pipes).
#[derive(Debug, Clone)]
pub struct EventBudget {
    accounts: Arc<Accounts>,
}

#[derive(Debug)]
struct Accounts {
    logs: Account,
    refusals: Account,
    calls: Account,
}

#[derive(Debug)]
struct Account {
    capacity: usize,
    left: AtomicUsize,
}

impl Account {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            left: AtomicUsize::new(capacity),
        }
    }

    fn take(&self, bytes: usize) -> bool {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }

    fn left(&self) -> usize {
        self.left.load(Ordering::Acquire)
    }

    fn used(&self) -> usize {
        self.capacity - self.left()
    }
}

impl EventBudget {
    /// Accounts for an event whose flow keeps `log_bytes` of log lines.
    pub fn new(log_bytes: usize) -> Self {
        Self {
            accounts: Arc::new(Accounts {
                logs: Account::new(log_bytes),
                refusals: Account::new(REFUSAL_BYTES),
                calls: Account::new(CALL_BYTES),
            }),
        }
    }

    /// Takes a log line of `bytes` bytes if it fits. One that does not leaves the rest for
    /// shorter lines after it: a panic's message on stderr, say, after a huge log line.
    pub fn log_line(&self, bytes: usize) -> bool {
        self.accounts.logs.take(bytes.saturating_add(LINE_OVERHEAD))
    }

    /// Takes the longest start of `bytes` that fits, each line in it charged
    /// [`LINE_OVERHEAD`] more; returns how many bytes that is. Once anything is left out,
    /// nothing more is taken.
    pub fn log_bytes(&self, bytes: &[u8]) -> usize {
        let cost = |b: &[u8]| b.len() + LINE_OVERHEAD * b.iter().filter(|&&c| c == b'\n').count();
        if self.accounts.logs.take(cost(bytes)) {
            return bytes.len();
        }
        let left = self.accounts.logs.left.swap(0, Ordering::AcqRel);
        let mut spent = 0;
        let mut kept = 0;
        for &b in bytes {
            let c = if b == b'\n' { 1 + LINE_OVERHEAD } else { 1 };
            if spent + c > left {
                break;
            }
            spent += c;
            kept += 1;
        }
        kept
    }

    /// Takes a refusal whose detail shows as `bytes`, if it fits.
    pub fn refusal(&self, bytes: usize) -> bool {
        self.accounts
            .refusals
            .take(bytes.saturating_add(RECORD_OVERHEAD))
    }

    /// Takes an HTTP call whose text shows as `bytes`, if it fits.
    pub fn call(&self, bytes: usize) -> bool {
        self.accounts
            .calls
            .take(bytes.saturating_add(RECORD_OVERHEAD))
    }

    /// Everything charged so far, overheads included.
    pub fn kept(&self) -> usize {
        let a = &self.accounts;
        a.logs.used() + a.refusals.used() + a.calls.used()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_text_keeps_its_start_and_says_how_much_was_dropped() {
        assert_eq!(cut("short", 64), "short");
        let long = "a".repeat(1000);
        let kept = cut(&long, 100);
        assert!(kept.len() <= 100 && kept.len() > 90, "{kept}");
        let (body, dropped) = split_marker(&kept).unwrap();
        assert_eq!(body.len() + dropped, 1000);
        assert!(kept.ends_with("a...(920 more bytes)"), "{kept}");
        // Cutting again keeps one marker that counts both cuts.
        let again = cut(&kept, 50);
        let (body, dropped) = split_marker(&again).unwrap();
        assert_eq!(body.len() + dropped, 1000, "{again}");
        assert_eq!(again.matches(MARKER_START).count(), 1);
        // A marker the plugin wrote itself, counting the most there is, is no overflow.
        let forged = format!("{long}...({} more bytes)", usize::MAX);
        assert!(cut(&forged, 100).len() <= 100);
    }

    #[test]
    fn cuts_are_measured_as_json_shows_them_and_fall_on_char_boundaries() {
        let controls = "\u{1}".repeat(1000);
        let kept = cut(&controls, 100);
        assert!(shown_len(&kept) <= 100, "{}", shown_len(&kept));
        let json = serde_json::to_string(kept.as_ref()).unwrap();
        assert!(json.len() <= 102, "{json}");
        let wide = "é".repeat(1000);
        let kept = cut(&wide, 101);
        assert!(kept.len() <= 101);
        assert!(split_marker(&kept).is_some());
        assert_eq!(
            shown_len("a\"\\\n\u{1}é"),
            1 + 2 + 2 + 2 + 6 + 2,
            "each as JSON escapes it"
        );
    }

    #[test]
    fn cut_markers_are_every_well_formed_marker_with_its_count() {
        let name = cut(&"n".repeat(500), MAX_NAME_BYTES).into_owned();
        let text = format!("alias `{name}` and more");
        let start = 7 + name.find("...(").unwrap();
        let dropped = 500 - (name.find("...(").unwrap());
        assert_eq!(
            cut_markers(&text),
            vec![CutMarker {
                start,
                end: 7 + name.len(),
                dropped
            }]
        );
        assert_eq!(cut_markers("a ...(x more bytes) ...( more bytes)"), vec![]);
        assert_eq!(
            cut_markers("...(99999999999999999999999 more bytes)")[0].dropped,
            usize::MAX
        );
    }

    #[test]
    fn empty_log_lines_are_not_free() {
        let budget = EventBudget::new(64 << 10);
        let kept = (0..1_000_000).take_while(|_| budget.log_line(0)).count();
        assert_eq!(kept, (64 << 10) / LINE_OVERHEAD);
        assert!(!budget.log_line(0), "a full account stays full");
        assert!(budget.kept() <= ceiling(64 << 10));
    }

    #[test]
    fn captured_bytes_pay_for_each_line_and_stop_at_the_first_that_does_not_fit() {
        let budget = EventBudget::new(1024);
        let newlines = vec![b'\n'; 100];
        assert_eq!(budget.log_bytes(&newlines), 1024 / (LINE_OVERHEAD + 1));
        assert_eq!(budget.log_bytes(b"x"), 0, "nothing after a cut");
        let budget = EventBudget::new(1024);
        assert_eq!(budget.log_bytes(&[b'x'; 1000]), 1000);
        assert_eq!(budget.log_bytes(&[b'x'; 100]), 24);
    }

    #[test]
    fn refusals_and_calls_have_an_account_each_per_event() {
        let budget = EventBudget::new(1024);
        let kept = (0..10_000)
            .take_while(|_| budget.refusal(MAX_REFUSAL_BYTES))
            .count();
        assert_eq!(kept, REFUSAL_BYTES / (MAX_REFUSAL_BYTES + RECORD_OVERHEAD));
        assert!(budget.refusal(0), "a smaller one may still fit");
        assert!(
            budget.call(100) && budget.log_line(10),
            "others have their own"
        );
        while budget.call(2 * MAX_URL_PART_BYTES) {}
        assert!(budget.kept() <= ceiling(1024));
    }
}

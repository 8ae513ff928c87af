//! Strings and lists crossing from the plugin into the host without being copied whole.
//!
//! The canonical ABI's ordinary lifting (a `String` or `Vec` in bindgen's signatures) copies
//! whatever length the plugin passes before warden sees it: one 48 MiB log line from a plugin
//! limited to 64 MiB grew the host by 130 MiB, however little of it the event's budget then
//! kept (`host/tests/hostile_rss.rs`). So no capability takes a `String` or a list from the
//! plugin: its linker functions take [`WasmStr`] and [`WasmList`], views of the plugin's
//! memory, measure and check them there, and copy only what they keep: [`Passed::new`] keeps
//! the start a bound allows, with the whole length, so a message quoting it can say how much
//! was dropped ([`Passed::cut`]).
//!
//! What a plugin's export returns is lifted after the call and before the plugin's
//! post-return function frees it, with no view left open in between, so it is read while
//! lifting: a hook's reason or error as [`Returned`] (at most `MAX` bytes copied, inside
//! [`Answer`]), the hooks it implements as [`Implemented`]. These implement [`Lift`] through
//! the interface wasmtime's own `#[derive(Lift)]` expands to (`__internal`), of the wasmtime
//! version the workspace pins.
//!
//! Validation is unchanged: a string that is not valid in its encoding is refused whole,
//! wherever the invalid byte is, with the error the ordinary lifting gives (blamed on the
//! plugin by `fault`). Strings are read in place in UTF-8, the canonical ABI's default; a
//! plugin declaring UTF-16 has what it passes to host calls transcoded by wasmtime first.

use std::borrow::Cow;

use wasmtime::AsContext;
use wasmtime::component::__internal::wasmtime_environ::component::StringEncoding;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Lift, WasmList, WasmStr};

use crate::runtime::bindings::types::Hook;
use crate::runtime::budget;
use crate::runtime::hooks::{Decision, HookName};
use crate::runtime::hot_pages::MemoryRange;

/// A string the plugin passed, as the host keeps it: at most its first bytes, and its whole
/// length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    start: String,
    len: usize,
    blank: bool,
}

impl Passed {
    /// Keeps the start of `text` that fits in `max` bytes (ending on a character boundary).
    pub fn new(text: &str, max: usize) -> Self {
        let start = start(text, max);
        Self {
            // Looked for in what is kept only: a text of all spaces as large as the plugin's
            // memory would otherwise cost a scan of it all, in a host call no deadline cuts.
            blank: start.len() == text.len() && start.trim().is_empty(),
            start: start.to_owned(),
            len: text.len(),
        }
    }

    /// Reads `text` in the plugin's memory and keeps at most `max` bytes of it.
    pub fn read(store: impl AsContext, text: &WasmStr, max: usize) -> wasmtime::Result<Self> {
        Ok(Self::new(&text.to_str(store.as_context())?, max))
    }

    /// The whole text's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the whole text is empty or white space, when all of it was kept (a longer
    /// text counts as not blank: no caller takes one that long).
    pub fn is_blank(&self) -> bool {
        self.blank
    }

    /// The text, when all of it was kept.
    pub fn whole(&self) -> Option<&str> {
        (self.start.len() == self.len).then_some(self.start.as_str())
    }

    /// What was kept of the text.
    pub fn kept(&self) -> &str {
        &self.start
    }

    /// The text as [`budget::cut`] shows it in at most `max` bytes, with the marker counting
    /// what was never copied too. Exact when at least `max` bytes were kept.
    pub fn cut(&self, max: usize) -> Cow<'_, str> {
        budget::cut_start(&self.start, self.len, max)
    }

    /// The text quoted as a name in a message ([`budget::quote`]).
    pub fn quote(&self) -> Cow<'_, str> {
        self.cut(budget::MAX_NAME_BYTES)
    }
}

impl From<&str> for Passed {
    /// All of `text`.
    fn from(text: &str) -> Self {
        Self::new(text, text.len())
    }
}

/// The start of `text` in at most `max` bytes, ending on a character boundary.
pub fn start(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
}

/// How long `text` is, read in place in the plugin's memory (validating it, copying
/// nothing for UTF-8).
pub fn len(store: impl AsContext, text: &WasmStr) -> wasmtime::Result<usize> {
    Ok(text.to_str(store.as_context())?.len())
}

/// A string a hook returns, of which lifting copies at most the first `MAX` bytes (see the
/// module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Returned<const MAX: usize>(pub Passed);

// SAFETY: the same flat and memory representation as `string` (a pointer and a length),
// delegated to `WasmStr`, which checks the type and the bounds.
unsafe impl<const MAX: usize> ComponentType for Returned<MAX> {
    type Lower = <WasmStr as ComponentType>::Lower;

    const ABI: CanonicalAbiInfo = <WasmStr as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <WasmStr as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: lifting reads the same representation `WasmStr` reads, after `WasmStr` has checked
// that the pointer and length are in bounds of the plugin's memory.
unsafe impl<const MAX: usize> Lift for Returned<MAX> {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        WasmStr::linear_lift_from_flat(cx, ty, src)?;
        let (ptr, len) = (src[0].get_u32(), src[1].get_u32());
        read(cx, ptr as usize, len as usize, MAX).map(Self)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        WasmStr::linear_lift_from_memory(cx, ty, bytes)?;
        let word = |at: usize| -> usize {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
        };
        read(cx, word(0), word(4), MAX).map(Self)
    }
}

/// The tag a compact UTF-16 string's length carries when it is UTF-16 rather than Latin-1.
const UTF16_TAG: usize = 1 << 31;

fn read(cx: &LiftContext<'_>, ptr: usize, len: usize, max: usize) -> wasmtime::Result<Passed> {
    let memory = cx.memory();
    let bytes = |n: usize| {
        ptr.checked_add(n)
            .and_then(|end| memory.get(ptr..end))
            .ok_or_else(|| wasmtime::format_err!("string pointer/length out of bounds of memory"))
    };
    match cx.options().string_encoding {
        StringEncoding::Utf8 => Ok(Passed::new(std::str::from_utf8(bytes(len)?)?, max)),
        StringEncoding::Utf16 => utf16(bytes(len * 2)?, max),
        StringEncoding::CompactUtf16 if len & UTF16_TAG == 0 => Ok(latin1(bytes(len)?, max)),
        StringEncoding::CompactUtf16 => utf16(bytes((len ^ UTF16_TAG) * 2)?, max),
    }
}

fn keep(chars: impl Iterator<Item = char>, max: usize) -> Passed {
    let mut start = String::new();
    let mut len = 0;
    let mut blank = true;
    for c in chars {
        len += c.len_utf8();
        blank &= c.is_whitespace();
        if len <= max {
            start.push(c);
        }
    }
    Passed { start, len, blank }
}

fn latin1(bytes: &[u8], max: usize) -> Passed {
    keep(bytes.iter().map(|&b| char::from(b)), max)
}

fn utf16(bytes: &[u8], max: usize) -> wasmtime::Result<Passed> {
    let units = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]));
    // Validated whole first, as wasmtime does, so a bad unit anywhere refuses the string.
    if let Some(bad) = char::decode_utf16(units.clone()).find_map(Result::err) {
        return Err(bad.into());
    }
    Ok(keep(char::decode_utf16(units).map(Result::unwrap), max))
}

/// A hook's reason, or the error it returns: no more is ever kept.
pub type Message = Returned<{ budget::MAX_MESSAGE_BYTES }>;

/// A hook's `decision`, lifted with its reason cut to [`budget::MAX_MESSAGE_BYTES`].
#[derive(ComponentType, Lift)]
#[component(variant)]
pub enum Answer {
    #[component(name = "continue")]
    Continue,
    #[component(name = "approve")]
    Approve(Option<Message>),
    #[component(name = "deny")]
    Deny(Option<Message>),
    #[component(name = "ignore")]
    Ignore(Option<Message>),
}

impl Answer {
    pub fn into_decision(self) -> Decision {
        let shown = |text: Option<Message>| text.map(|t| message(&t));
        match self {
            Self::Continue => Decision::Continue,
            Self::Approve(reason) => Decision::Approve {
                reason: shown(reason),
            },
            Self::Deny(reason) => Decision::Deny {
                reason: shown(reason),
            },
            Self::Ignore(text) => Decision::Ignore {
                message: shown(text),
            },
        }
    }
}

/// A reason or an error as the report keeps it: cut to [`budget::MAX_MESSAGE_BYTES`], a NUL
/// shown as U+FFFD ([`without_nul`]).
pub fn message(text: &Message) -> String {
    without_nul(text.0.cut(budget::MAX_MESSAGE_BYTES).into_owned())
}

/// `text` with each NUL shown as U+FFFD: what the report keeps of a plugin's text is stored
/// as text (a reason, a failure in the request's history), and PostgreSQL's text cannot hold
/// a NUL: writing one would fail the request's step, fail-closed path and all.
pub fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    }
}

/// The hooks a plugin says it implements (`list<hook>`), read in place while lifting: each
/// entry is one byte, checked there, and repeats collapse, so a list of any length costs the
/// host twelve entries. Lifting it also sees where the instance's memory is (`hot_pages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Implemented {
    pub hooks: std::collections::BTreeSet<HookName>,
    pub memory: MemoryRange,
}

// SAFETY: the representation of `list<hook>`, delegated to `WasmList<Hook>`, which checks the
// type, the bounds and the alignment.
unsafe impl ComponentType for Implemented {
    type Lower = <WasmList<Hook> as ComponentType>::Lower;

    const ABI: CanonicalAbiInfo = <WasmList<Hook> as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <WasmList<Hook> as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: reads the bytes `WasmList<Hook>` checked are in bounds; `hook` has twelve cases, so
// each entry is one byte.
unsafe impl Lift for Implemented {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        WasmList::<Hook>::linear_lift_from_flat(cx, ty, src)?;
        let (ptr, len) = (src[0].get_u32(), src[1].get_u32());
        hooks(cx.memory(), ptr as usize, len as usize)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        WasmList::<Hook>::linear_lift_from_memory(cx, ty, bytes)?;
        let word = |at: usize| -> usize {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize
        };
        hooks(cx.memory(), word(0), word(4))
    }
}

/// The most entries `implemented` may list: there are twelve hooks, and each entry costs a
/// step of the host's, in a lift no deadline or CPU meter can cut.
const MAX_IMPLEMENTED_ENTRIES: usize = 1024;

fn hooks(memory: &[u8], ptr: usize, len: usize) -> wasmtime::Result<Implemented> {
    if len > MAX_IMPLEMENTED_ENTRIES {
        wasmtime::bail!(
            "`implemented` listed {len} hooks; there are twelve (at most {MAX_IMPLEMENTED_ENTRIES} entries are read)"
        );
    }
    let entries = ptr
        .checked_add(len)
        .and_then(|end| memory.get(ptr..end))
        .ok_or_else(|| wasmtime::format_err!("list pointer/length out of bounds of memory"))?;
    let mut found = std::collections::BTreeSet::new();
    for &case in entries {
        // `HookName::ALL` is in the WIT enum's order (tested below).
        let hook = HookName::ALL
            .get(usize::from(case))
            .ok_or_else(|| wasmtime::format_err!("unexpected discriminant: {case}"))?;
        found.insert(*hook);
    }
    Ok(Implemented {
        hooks: found,
        memory: MemoryRange {
            base: memory.as_ptr() as usize,
            len: memory.len(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passed_string_keeps_its_start_and_its_length() {
        let text = "é".repeat(1000);
        let passed = Passed::new(&text, 101);
        assert_eq!(passed.len(), 2000);
        assert_eq!(passed.kept(), "é".repeat(50));
        assert_eq!(passed.whole(), None);
        assert_eq!(Passed::new("short", 64).whole(), Some("short"));
    }

    #[test]
    fn only_a_kept_text_is_looked_at_for_being_blank() {
        assert!(Passed::new("  \t ", 64).is_blank());
        assert!(!Passed::new(" x ", 64).is_blank());
        // Longer than what is kept: not scanned, counted as not blank.
        assert!(!Passed::new(&" ".repeat(100_000), 64).is_blank());
    }

    #[test]
    fn cutting_a_passed_string_shows_what_cutting_the_whole_would() {
        for text in ["a".repeat(5000), "\u{1}".repeat(5000), "é".repeat(3000)] {
            for max in [64, 256, 4096] {
                assert_eq!(
                    Passed::new(&text, max).cut(max),
                    budget::cut(&text, max),
                    "{max}"
                );
            }
        }
    }

    #[test]
    fn latin1_and_utf16_keep_their_start_too() {
        let passed = latin1(&[b'a', 0xe9, b'b'], 3);
        assert_eq!((passed.kept(), passed.len()), ("aé", 4));
        let units: Vec<u8> = "hé".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let passed = utf16(&units, 2).unwrap();
        assert_eq!((passed.kept(), passed.len()), ("h", 3));
        // A lone surrogate anywhere refuses the string.
        let mut bad = units.clone();
        bad.extend(0xd800u16.to_le_bytes());
        assert!(utf16(&bad, 1).is_err());
    }

    #[test]
    fn hook_names_are_in_the_wit_enums_order() {
        let wit = [
            Hook::OnPrompt,
            Hook::OnRequest,
            Hook::OnApprove,
            Hook::OnDeny,
            Hook::OnEscalate,
            Hook::OnDeescalate,
            Hook::AfterPrompt,
            Hook::AfterRequest,
            Hook::AfterApprove,
            Hook::AfterDeny,
            Hook::AfterEscalate,
            Hook::AfterDeescalate,
        ];
        let named: Vec<HookName> = wit.into_iter().map(HookName::from_wit).collect();
        assert_eq!(named, HookName::ALL);
    }

    #[test]
    fn a_list_of_hooks_collapses_and_refuses_a_case_past_the_last() {
        let memory = [1, 1, 0, 7, 1, 11, 12];
        let found = hooks(&memory, 0, 6).unwrap();
        assert_eq!(
            found.hooks.into_iter().collect::<Vec<_>>(),
            [
                HookName::OnPrompt,
                HookName::OnRequest,
                HookName::AfterRequest,
                HookName::AfterDeescalate
            ]
        );
        // A list longer than any plugin needs is refused unread.
        let many = vec![0u8; MAX_IMPLEMENTED_ENTRIES + 1];
        assert!(hooks(&many, 0, MAX_IMPLEMENTED_ENTRIES).is_ok());
        let error = hooks(&many, 0, many.len()).unwrap_err();
        assert!(error.to_string().contains("there are twelve"), "{error}");
        let error = hooks(&memory, 0, 7).unwrap_err();
        assert!(
            error.to_string().contains("unexpected discriminant: 12"),
            "{error}"
        );
        assert!(hooks(&memory, 5, 3).is_err(), "out of bounds");
    }
}

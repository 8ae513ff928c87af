//! A plugin for warden's tests written against the WIT with `wit-bindgen` alone, no
//! warden-sdk: it misuses the canonical ABI in ways the SDK never would, as a hostile plugin
//! can. The flow var `action` (`verb` or `verb:argument`) picks what `on_request` does:
//!
//! - `continue`: takes the default path; `approve:<reason>` approves.
//! - `use-after-drop:<secret id>`: opens the secret, drops the handle, then uses it.
//! - `forged-handle`: uses a secret handle the host never gave out.
//! - `invalid-utf8`, `bad-level`, `bad-pointer`: call `log.write` through a hand-written
//!   import with a string that is not UTF-8, a level past the enum's cases, or a string
//!   pointer outside linear memory.
//! - `return-bad-result`, `return-bad-decision`, `return-bad-utf8`, `return-bad-pointer`:
//!   return `approve` with its bytes then corrupted: a `result` discriminant past `err`, a
//!   `decision` discriminant past `ignore`, a reason that is not UTF-8, a reason pointer
//!   outside linear memory.
//! - `random:<len>`: asks `wasi:random` for `len` bytes in one call (imported by hand: the
//!   standard library asks for a few) and approves with how many came.
//! - `poll:<n>`: asks `wasi:io/poll.poll` (imported by hand) to wait on one pollable, a
//!   zero-length clock subscription, repeated `n` times in one list, and approves with how
//!   many indexes came back.
//! - `forge:<text>`: puts `text` everywhere a plugin's text reaches the host's output: a log
//!   line, stdout, stderr, a secret id and an integration alias (both refused), a query
//!   value, header and body sent to `https://api.example.com/forge`, and the error it
//!   returns.
//!
//! The hooks' exports are written by hand (around the generated lifting and lowering) so a
//! hook's return value can be corrupted after it is lowered.

use std::sync::atomic::{AtomicU8, Ordering};

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

use exports::warden::plugin::hooks::Guest;
use warden::plugin::types::{Decision, Event, Hook};
use warden::plugin::{http, integrations, log, secrets};

struct Raw;

/// How the current hook's lowered return value is to be corrupted (one of the `CORRUPT_*`).
static CORRUPT: AtomicU8 = AtomicU8::new(CORRUPT_NOTHING);
const CORRUPT_NOTHING: u8 = 0;
const CORRUPT_RESULT: u8 = 1;
const CORRUPT_DECISION: u8 = 2;
const CORRUPT_UTF8: u8 = 3;
const CORRUPT_POINTER: u8 = 4;

impl Guest for Raw {
    fn implemented() -> Vec<Hook> {
        vec![Hook::OnRequest]
    }

    fn on_request(event: Event) -> Result<Decision, String> {
        let action = event
            .flow
            .vars
            .iter()
            .find(|(name, _)| name == "action")
            .map_or("continue", |(_, value)| value.as_str());
        let (verb, arg) = action.split_once(':').unwrap_or((action, ""));
        let corrupt = |how| {
            CORRUPT.store(how, Ordering::SeqCst);
            Ok(Decision::Approve(Some("a reason to corrupt".into())))
        };
        match verb {
            "continue" => Ok(Decision::Continue),
            "approve" => Ok(Decision::Approve(Some(arg.into()))),
            "use-after-drop" => {
                let secret = secrets::open(arg).map_err(|e| format!("{e:?}"))?;
                let handle = secret.handle();
                drop(secret);
                // SAFETY: none; the handle was given back to the host by the drop above.
                let stale = unsafe { secrets::Secret::from_handle(handle) };
                Ok(Decision::Approve(Some(stale.id())))
            }
            "forged-handle" => {
                // SAFETY: none; the host never handed out this handle.
                let forged = unsafe { secrets::Secret::from_handle(0x7777) };
                Ok(Decision::Approve(Some(forged.id())))
            }
            "invalid-utf8" => {
                let bytes = [b'o', b'k', 0xff, 0xfe];
                raw::log_write(2, bytes.as_ptr() as usize, bytes.len());
                Ok(Decision::Continue)
            }
            "bad-level" => {
                let text = "a level past the last case";
                raw::log_write(9, text.as_ptr() as usize, text.len());
                Ok(Decision::Continue)
            }
            "bad-pointer" => {
                raw::log_write(2, 0xffff_0000, 64);
                Ok(Decision::Continue)
            }
            "return-bad-result" => corrupt(CORRUPT_RESULT),
            "return-bad-decision" => corrupt(CORRUPT_DECISION),
            "return-bad-utf8" => corrupt(CORRUPT_UTF8),
            "return-bad-pointer" => corrupt(CORRUPT_POINTER),
            "forge" => {
                log::write(log::Level::Info, arg);
                println!("{arg}");
                eprintln!("{arg}");
                let _ = secrets::open(arg);
                let _ = integrations::get(arg);
                let _ = http::send(&http::Request {
                    method: http::Method::Post,
                    url: "https://api.example.com/forge".into(),
                    query: vec![("q".into(), arg.into())],
                    headers: vec![("x-forged".into(), http::HeaderValue::Text(arg.into()))],
                    body: Some(arg.as_bytes().to_vec()),
                    timeout_ms: None,
                });
                Err(arg.to_string())
            }
            "poll" => {
                let n: usize = arg
                    .parse()
                    .map_err(|_| format!("poll: not a count: {arg}"))?;
                Ok(Decision::Approve(Some(format!(
                    "{} ready",
                    raw::poll_repeated(n)
                ))))
            }
            "random" => {
                let len: u64 = arg
                    .parse()
                    .map_err(|_| format!("random: not a length: {arg}"))?;
                Ok(Decision::Approve(Some(format!(
                    "{} random bytes",
                    raw::random_bytes(len)
                ))))
            }
            other => Err(format!("raw: unknown action `{other}`")),
        }
    }

    fn on_prompt(_: Event) -> Result<Decision, String> {
        Ok(Decision::Continue)
    }
    fn on_approve(_: Event) -> Result<Decision, String> {
        Ok(Decision::Continue)
    }
    fn on_deny(_: Event) -> Result<Decision, String> {
        Ok(Decision::Continue)
    }
    fn on_escalate(_: Event) -> Result<Decision, String> {
        Ok(Decision::Continue)
    }
    fn on_deescalate(_: Event) -> Result<Decision, String> {
        Ok(Decision::Continue)
    }
    fn after_prompt(_: Event) -> Result<Decision, String> {
        Ok(Decision::Continue)
    }
    fn after_request(_: Event) -> Result<Decision, String> {
        Ok(Decision::Continue)
    }
    fn after_approve(_: Event) -> Result<Decision, String> {
        Ok(Decision::Continue)
    }
    fn after_deny(_: Event) -> Result<Decision, String> {
        Ok(Decision::Continue)
    }
    fn after_escalate(_: Event) -> Result<Decision, String> {
        Ok(Decision::Continue)
    }
    fn after_deescalate(_: Event) -> Result<Decision, String> {
        Ok(Decision::Continue)
    }
}

/// The hooks' exports, as `export!` would write them, but corrupting what `on_request`
/// returns when asked to. No post-return functions: an instance serves one event.
#[cfg(target_arch = "wasm32")]
mod exports_by_hand {
    use super::{CORRUPT, CORRUPT_DECISION, CORRUPT_NOTHING, CORRUPT_RESULT, CORRUPT_UTF8, Raw};
    use crate::exports::warden::plugin::hooks;
    use std::sync::atomic::Ordering;

    /// Corrupts a lowered `result<decision, string>` holding `ok(approve(some(reason)))`. Its
    /// layout (wasm32): the result's discriminant at 0, the decision's at 4, the option's at 8,
    /// the reason's pointer at 12 and length at 16.
    ///
    /// # Safety
    /// `ret` is the return area the generated lowering just filled.
    unsafe fn corrupt(ret: *mut u8) {
        let how = CORRUPT.swap(CORRUPT_NOTHING, Ordering::SeqCst);
        if how == CORRUPT_NOTHING {
            return;
        }
        unsafe {
            assert!(
                *ret == 0 && *ret.add(4) == 1 && *ret.add(8) == 1,
                "raw: the return area is not laid out as expected"
            );
            match how {
                CORRUPT_RESULT => *ret = 7,
                CORRUPT_DECISION => *ret.add(4) = 9,
                CORRUPT_UTF8 => {
                    let reason = *(ret.add(12) as *const usize) as *mut u8;
                    *reason = 0xff;
                    *reason.add(1) = 0xfe;
                }
                _ => *(ret.add(12) as *mut usize) = 0xffff_0000,
            }
        }
    }

    #[unsafe(export_name = "warden:plugin/hooks@0.1.0#implemented")]
    unsafe extern "C" fn implemented() -> *mut u8 {
        unsafe { hooks::_export_implemented_cabi::<Raw>() }
    }

    #[unsafe(export_name = "warden:plugin/hooks@0.1.0#on-request")]
    unsafe extern "C" fn on_request(event: *mut u8) -> *mut u8 {
        unsafe {
            let ret = hooks::_export_on_request_cabi::<Raw>(event);
            corrupt(ret);
            ret
        }
    }

    macro_rules! hook {
        ($($name:literal => $cabi:ident),* $(,)?) => {$(
            const _: () = {
                #[unsafe(export_name = concat!("warden:plugin/hooks@0.1.0#", $name))]
                unsafe extern "C" fn export(event: *mut u8) -> *mut u8 {
                    unsafe { hooks::$cabi::<Raw>(event) }
                }
            };
        )*};
    }

    hook! {
        "on-prompt" => _export_on_prompt_cabi,
        "on-approve" => _export_on_approve_cabi,
        "on-deny" => _export_on_deny_cabi,
        "on-escalate" => _export_on_escalate_cabi,
        "on-deescalate" => _export_on_deescalate_cabi,
        "after-prompt" => _export_after_prompt_cabi,
        "after-request" => _export_after_request_cabi,
        "after-approve" => _export_after_approve_cabi,
        "after-deny" => _export_after_deny_cabi,
        "after-escalate" => _export_after_escalate_cabi,
        "after-deescalate" => _export_after_deescalate_cabi,
    }
}

/// `log.write` imported by hand, so its arguments can be any words at all: the level's
/// discriminant, the message's pointer and length.
mod raw {
    #[cfg(target_arch = "wasm32")]
    #[link(wasm_import_module = "warden:plugin/log@0.1.0")]
    unsafe extern "C" {
        #[link_name = "write"]
        fn raw_log_write(level: i32, ptr: usize, len: usize);
    }

    #[cfg(target_arch = "wasm32")]
    #[link(wasm_import_module = "wasi:random/random@0.2.6")]
    unsafe extern "C" {
        #[link_name = "get-random-bytes"]
        fn raw_get_random_bytes(len: i64, list: *mut usize);
    }

    #[cfg(target_arch = "wasm32")]
    #[link(wasm_import_module = "wasi:clocks/monotonic-clock@0.2.6")]
    unsafe extern "C" {
        #[link_name = "subscribe-duration"]
        fn raw_subscribe_duration(nanoseconds: i64) -> i32;
    }

    #[cfg(target_arch = "wasm32")]
    #[link(wasm_import_module = "wasi:io/poll@0.2.6")]
    unsafe extern "C" {
        #[link_name = "poll"]
        fn raw_poll(handles: *const i32, len: usize, list: *mut usize);
    }

    /// How many indexes one `poll` of a single pollable repeated `n` times gave.
    pub fn poll_repeated(n: usize) -> usize {
        #[cfg(target_arch = "wasm32")]
        {
            // SAFETY: the host returns a pollable's handle; it reads `n` handles at the
            // vector's pointer and writes the answer's pointer and length into `list`.
            unsafe {
                let pollable = raw_subscribe_duration(0);
                let handles = vec![pollable; n];
                let mut list = [0usize; 2];
                raw_poll(handles.as_ptr(), n, list.as_mut_ptr());
                list[1]
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        panic!("raw: no host to call ({n})")
    }

    /// How many bytes one `get-random-bytes(len)` call gave (the list is leaked: the
    /// instance is thrown away after the event).
    pub fn random_bytes(len: u64) -> usize {
        #[cfg(target_arch = "wasm32")]
        {
            let mut list = [0usize; 2];
            // SAFETY: the host writes the list's pointer and length into `list`.
            unsafe { raw_get_random_bytes(len as i64, list.as_mut_ptr()) };
            list[1]
        }
        #[cfg(not(target_arch = "wasm32"))]
        panic!("raw: no host to call ({len})")
    }

    pub fn log_write(level: i32, ptr: usize, len: usize) {
        #[cfg(target_arch = "wasm32")]
        // SAFETY: the host reads `len` bytes at `ptr` or refuses the call; nothing of ours
        // is written.
        unsafe {
            raw_log_write(level, ptr, len)
        }
        #[cfg(not(target_arch = "wasm32"))]
        panic!("raw: no host to call ({level}, {ptr}, {len})")
    }
}

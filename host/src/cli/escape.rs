//! Plugin text made fit for one line of human-readable output.
//!
//! A plugin chooses the text of its log lines, its stdout and stderr, its errors and panics,
//! and the names it asks for that refusals quote back. Printed as it is, a newline in it
//! starts a line that looks like the host's own (a forged log entry), and an escape sequence
//! rewrites the operator's terminal. Wherever such text enters a line of human-format output
//! (`warden serve --log-format human`, `warden hook`'s log on stderr, `warden test`'s report,
//! the identities plugins persisted in `warden users`' tables) it goes through
//! [`escape_control`]; so do the names of a config or an event quoted in `warden check`'s
//! summary and in errors (a file warden reads is not trusted to be kind to a terminal). JSON
//! output (`warden hook`'s decision, `warden serve --log-format json`) goes through
//! [`json_for_terminal`]: serde escapes the C0 controls but writes DEL, the C1 controls and
//! the line separators raw, and a terminal acts on C1's CSI as it does on ESC `[`.

use std::borrow::Cow;
use std::fmt::Write as _;

/// [`escape_control`] for each line of `text`, its line breaks kept: for the host's own
/// multi-line messages (a TOML error with its caret) that quote a line of a file warden does
/// not trust.
pub fn escape_control_by_line(text: &str) -> String {
    text.split('\n')
        .map(escape_control)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` with every control character written out as an escape: `\n`, `\r` and `\t` as
/// such, the other C0 controls and DEL as `\x1b`-style hex, C1 controls and the Unicode line
/// and paragraph separators as `\u{85}`-style. Everything else (printable ASCII, other
/// Unicode, backslashes) is kept as it is; text with nothing to escape is not copied.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `json` with DEL, the C1 controls and the Unicode line and paragraph separators written
/// as `\u` escapes: the same JSON, read back to the same text. (They can only be inside its
/// strings: JSON's own syntax is ASCII.) JSON that holds none is not copied.
pub fn json_for_terminal(json: &str) -> Cow<'_, str> {
    let raw = |c: char| needs_escape(c) && !c.is_ascii_control() || c == '\u{7f}';
    if !json.chars().any(raw) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if raw(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A writer of JSON records that passes each through [`json_for_terminal`] (the JSON log:
/// tracing writes each record whole, in one write).
pub struct JsonForTerminal<W>(pub W);

impl<W: std::io::Write> std::io::Write for JsonForTerminal<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => self.0.write_all(json_for_terminal(text).as_bytes())?,
            Err(_) => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// C0 controls, DEL, C1 controls (`char::is_control`), and the separators some viewers
/// break lines at.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// Field formatting for the human log format of `warden serve`: like tracing-subscriber's
/// default (the message bare, other fields `name=value`, separated by spaces), with every
/// value escaped, so no event, whatever text it carries, spans more than one line.
pub fn human_log_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        let text = escape_control(&text);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_no_character_a_terminal_acts_on_and_reads_back_the_same() {
        let text = "ok\u{9b}2J\u{9b}H \u{7f} \u{2028} \u{85} caf\u{e9} \u{1b}[31m";
        let json = serde_json::json!({ "error": text }).to_string();
        assert!(json.contains('\u{9b}'), "serde leaves C1 raw: {json:?}");
        let shown = json_for_terminal(&json);
        assert!(
            !shown.chars().any(|c| c.is_control() || c == '\u{2028}'),
            "{shown:?}"
        );
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back["error"], text);
        assert!(matches!(
            json_for_terminal("{\"a\":\"caf\u{e9}\"}"),
            Cow::Borrowed(_)
        ));
        let mut written = Vec::new();
        std::io::Write::write_all(&mut JsonForTerminal(&mut written), json.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), shown);
    }

    #[test]
    fn line_breaks_and_terminal_escapes_are_written_out() {
        assert_eq!(
            escape_control("line1\n2026-01-01 INFO forged\x1b[31m red\r\tend\x07\x7f"),
            "line1\\n2026-01-01 INFO forged\\x1b[31m red\\r\\tend\\x07\\x7f"
        );
        assert_eq!(
            escape_control("c1\u{85}\u{9b}31m sep\u{2028}\u{2029}"),
            "c1\\u{85}\\u{9b}31m sep\\u{2028}\\u{2029}"
        );
        assert_eq!(escape_control("\0"), "\\x00");
    }

    #[test]
    fn ordinary_text_is_kept_and_not_copied() {
        let text = "approved: ünïcødé ✓ 日本語 C:\\path \"quoted\"";
        assert!(matches!(escape_control(text), Cow::Borrowed(t) if t == text));
    }
}

//! Replacing secret values with `[REDACTED]` in whatever leaves the host.

use crate::budget;
use crate::config::SecretValue;

pub const REDACTED: &str = "[REDACTED]";

/// The shortest start of a value [`Redactor::redact_cut`] redacts at the end of cut text;
/// shorter ones are too likely to be ordinary words.
const MIN_CUT_PREFIX: usize = 6;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is replaced whole.
    values: Vec<SecretValue>,
}

impl Redactor {
    pub fn new(mut values: Vec<SecretValue>) -> Self {
        values.retain(|v| !v.expose().is_empty());
        values.sort_by_key(|v| std::cmp::Reverse(v.expose().len()));
        values.dedup();
        Self { values }
    }

    /// Replaces each value, matched ignoring ASCII case: a value put into a host name comes
    /// back lowercased in URLs and errors.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        let mut lowered = out.to_ascii_lowercase();
        for v in &self.values {
            let needle = v.expose().to_ascii_lowercase();
            if !lowered.contains(&needle) {
                continue;
            }
            let mut replaced = String::with_capacity(out.len());
            let mut rest = 0;
            while let Some(at) = lowered[rest..].find(&needle) {
                replaced.push_str(&out[rest..rest + at]);
                replaced.push_str(REDACTED);
                rest += at + needle.len();
            }
            replaced.push_str(&out[rest..]);
            out = replaced;
            lowered = out.to_ascii_lowercase();
        }
        out
    }

    /// [`Self::redact`] for text that may have been cut short to a bound (a reason, captured
    /// stdout, a name quoted in a refusal): the first bytes of a value left where the text
    /// was cut — before each cut marker, and at its end — are redacted too.
    pub fn redact_cut(&self, text: &str) -> String {
        let mut out = self.redact(text);
        let lowered = out.to_ascii_lowercase();
        // From the last cut to the first, so replacing one leaves earlier offsets valid.
        let mut floor = out.len();
        for end in budget::cut_points(&out).into_iter().rev() {
            if end > floor {
                continue;
            }
            for v in &self.values {
                let needle = v.expose().to_ascii_lowercase();
                let tail = (MIN_CUT_PREFIX..needle.len())
                    .rev()
                    .filter(|len| needle.is_char_boundary(*len) && *len <= end)
                    .find(|len| lowered[..end].ends_with(&needle[..*len]));
                if let Some(len) = tail {
                    out.replace_range(end - len..end, REDACTED);
                    floor = end - len;
                    break;
                }
            }
        }
        out
    }

    /// [`Self::redact_cut`], then cut again to `max` (as JSON shows it) if `[REDACTED]` made
    /// the text longer than a value it replaced.
    pub fn redact_within(&self, text: &str, max: usize) -> String {
        let mut out = self.redact_cut(text);
        let mut room = max;
        while budget::shown_len(&out) > max && room > 0 {
            out = self.redact_cut(&budget::cut(&out, room));
            room = room.saturating_sub(budget::shown_len(&out).saturating_sub(max));
        }
        out
    }

    pub fn redact_bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        let mut out = bytes;
        for v in &self.values {
            let needle = v.expose().as_bytes();
            if out.windows(needle.len()).any(|w| w == needle) {
                out = replace_bytes(&out, needle, REDACTED.as_bytes());
            }
        }
        out
    }
}

fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_occurrence_longest_first() {
        let r = Redactor::new(vec![SecretValue::new("abc"), SecretValue::new("abcdef")]);
        assert_eq!(r.redact("x abcdef y abc"), "x [REDACTED] y [REDACTED]");
        assert_eq!(
            r.redact_bytes(b"abcdefabc!".to_vec()),
            b"[REDACTED][REDACTED]!".to_vec()
        );
        assert_eq!(r.redact("nothing here"), "nothing here");
        let mixed = Redactor::new(vec![SecretValue::new("s3cr3t-VALUE")]);
        assert_eq!(
            mixed.redact("http://s3cr3t-value.example/ and S3CR3T-VALUE"),
            "http://[REDACTED].example/ and [REDACTED]"
        );
        assert_eq!(
            mixed.redact_cut("rrr s3cr3t-VA...(3 more bytes)"),
            "rrr [REDACTED]...(3 more bytes)"
        );
        assert_eq!(mixed.redact_cut("xx s3cr3t"), "xx [REDACTED]");
        assert_eq!(
            mixed.redact_cut("short s3cr"),
            "short s3cr",
            "too short to tell"
        );
    }

    #[test]
    fn a_start_left_at_any_cut_is_redacted() {
        let r = Redactor::new(vec![SecretValue::new("s3cr3t-VALUE")]);
        // The name is cut eight bytes into the value.
        // (A marker for a four-digit count takes 20 bytes.)
        let pad = budget::MAX_NAME_BYTES - 20 - 8;
        let name = format!("{}s3cr3t-VALUE{}", "a".repeat(pad), "z".repeat(1000));
        let alias = budget::quote(&name).into_owned();
        assert!(alias.contains("as3cr3t-V..."), "{alias}");
        let detail = format!("no integration under alias `{alias}` in `main`");
        let shown = r.redact_cut(&detail);
        assert!(!shown.to_ascii_lowercase().contains("s3cr3t"), "{shown}");
        assert!(shown.contains("a[REDACTED]...("), "{shown}");
        assert!(shown.ends_with("` in `main`"), "{shown}");
    }

    #[test]
    fn redaction_longer_than_a_short_value_is_cut_back_to_the_bound() {
        let r = Redactor::new(vec![SecretValue::new("ab")]);
        let text = "ab".repeat(2000);
        let shown = r.redact_within(&text, 1000);
        assert!(budget::shown_len(&shown) <= 1000, "{}", shown.len());
        assert!(!shown.contains("ab"), "{shown}");
        assert!(budget::split_marker(&shown).is_some(), "{shown}");
    }
}

//! Replacing secret values with `[REDACTED]` in whatever leaves the host.
//!
//! Values are matched ignoring ASCII case (a value put into a host name comes back
//! lowercased; a server may upper-case what it echoes), all of them in one pass over the
//! text (an Aho-Corasick automaton: linear in the text, however many values), so a 1 MiB
//! response costs one scan. Every byte that belongs to an occurrence of any value is
//! covered: occurrences that overlap (of one value, or of two) become one `[REDACTED]`, so
//! no part of either is left showing. The output is not scanned again.

use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::runtime::budget;
use crate::secrets::SecretValue;

pub const REDACTED: &str = "[REDACTED]";

/// The shortest start of a value [`Redactor::redact_cut`] redacts at the end of cut text;
/// shorter ones are too likely to be ordinary words.
const MIN_CUT_PREFIX: usize = 6;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so the longest start left at a cut is found first.
    values: Vec<SecretValue>,
    /// Every value, ASCII case ignored; `None` when there is none.
    matcher: Option<AhoCorasick>,
}

impl Redactor {
    pub fn new(mut values: Vec<SecretValue>) -> Self {
        values.retain(|v| !v.expose().is_empty());
        values.sort_by(|a, b| (b.expose().len(), a.expose()).cmp(&(a.expose().len(), b.expose())));
        values.dedup();
        let matcher = (!values.is_empty()).then(|| {
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                // Overlapping search, so every occurrence is seen, not just the leftmost.
                .match_kind(MatchKind::Standard)
                .build(values.iter().map(|v| v.expose()))
                // Its limits are billions of states; a config's secrets are a few hundred
                // bytes each.
                .expect("secret values fit an Aho-Corasick automaton")
        });
        Self { values, matcher }
    }

    /// The byte ranges of `haystack` covered by occurrences of any value, in order, merged
    /// where they overlap (adjacent occurrences stay apart).
    fn spans(&self, haystack: &[u8]) -> Vec<Range<usize>> {
        let Some(matcher) = &self.matcher else {
            return Vec::new();
        };
        let mut spans: Vec<Range<usize>> = Vec::new();
        // Overlapping matches come in order of their end: a new one can only reach back over
        // the last spans kept.
        for found in matcher.find_overlapping_iter(haystack) {
            let mut start = found.start();
            while let Some(last) = spans.last()
                && last.end > start
            {
                start = start.min(last.start);
                spans.pop();
            }
            spans.push(start..found.end());
        }
        spans
    }

    /// Replaces each value, matched ignoring ASCII case.
    pub fn redact(&self, text: &str) -> String {
        let spans = self.spans(text.as_bytes());
        if spans.is_empty() {
            return text.to_string();
        }
        // A value is whole characters and ASCII case folding leaves other bytes alone, so an
        // occurrence starts and ends on character boundaries: the result is still UTF-8.
        match String::from_utf8(splice(text.as_bytes(), &spans)) {
            Ok(out) => out,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// [`Self::redact_cut`], except where `text` quotes one of `kept` (text its reader wrote
    /// itself): those stretches are left as they are and the rest redacted around them, so
    /// that whether a text the reader chose is a value cannot be learned from its
    /// redaction. The rest is the host's own text, which may quote what a server sent
    /// (a redirect's target) cut short: the start of a value left at a cut goes too.
    pub fn redact_around(&self, text: &str, kept: &[&str]) -> String {
        let kept: Vec<&str> = kept.iter().copied().filter(|k| !k.is_empty()).collect();
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        loop {
            // The earliest quote of any kept text; the longest where two start together.
            let next = kept
                .iter()
                .filter_map(|k| rest.find(k).map(|at| (at, std::cmp::Reverse(k.len()))))
                .min();
            let Some((at, std::cmp::Reverse(len))) = next else {
                out.push_str(&self.redact_cut(rest));
                return out;
            };
            out.push_str(&self.redact_cut(&rest[..at]));
            out.push_str(&rest[at..at + len]);
            rest = &rest[at + len..];
        }
    }

    /// [`Self::redact`] for text the caller owns: given back as it came (no copy) when no
    /// value is in it.
    pub fn redact_owned(&self, text: String) -> String {
        if self.spans(text.as_bytes()).is_empty() {
            return text;
        }
        self.redact(&text)
    }

    /// [`Self::redact`] for text that may have been cut short to a bound (a reason, captured
    /// stdout, a name quoted in a refusal): the first bytes of a value left where the text
    /// was cut — before each cut marker, and at its end — are redacted too.
    pub fn redact_cut(&self, text: &str) -> String {
        self.redact_before_cuts(text, budget::cut_points)
    }

    /// [`Self::redact`] for text the host cut short at its end and nowhere else (a line of
    /// captured stdout): markers inside it are the plugin's text, not cuts, so none costs a
    /// look for a value's start.
    pub fn redact_cut_at_end(&self, text: &str) -> String {
        self.redact_before_cuts(text, |out| vec![out.len()])
    }

    /// [`Self::redact`], then the start of a value left before each of `cuts(text)` (offsets
    /// in the redacted text, in order) redacted too.
    fn redact_before_cuts(&self, text: &str, cuts: impl Fn(&str) -> Vec<usize>) -> String {
        let mut out = self.redact(text);
        if self.values.is_empty() {
            return out;
        }
        // From the last cut to the first, so replacing one leaves earlier offsets valid: the
        // text before `floor` is as it came, compared in place (no lowered copies).
        let mut floor = out.len();
        for end in cuts(&out).into_iter().rev() {
            if end > floor {
                continue;
            }
            for v in &self.values {
                let needle = v.expose();
                let tail = (MIN_CUT_PREFIX..needle.len())
                    .rev()
                    .filter(|len| needle.is_char_boundary(*len) && *len <= end)
                    .find(|len| {
                        out.as_bytes()[end - len..end]
                            .eq_ignore_ascii_case(&needle.as_bytes()[..*len])
                    });
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

    /// [`Self::redact`] for bytes that need not be text (a response body).
    pub fn redact_bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        let spans = self.spans(&bytes);
        if spans.is_empty() {
            return bytes;
        }
        splice(&bytes, &spans)
    }
}

/// `bytes` with each of `spans` (in order, apart) replaced by [`REDACTED`].
fn splice(bytes: &[u8], spans: &[Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + spans.len() * REDACTED.len());
    let mut rest = 0;
    for span in spans {
        out.extend_from_slice(&bytes[rest..span.start]);
        out.extend_from_slice(REDACTED.as_bytes());
        rest = span.end;
    }
    out.extend_from_slice(&bytes[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_the_reader_wrote_is_kept_and_the_rest_redacted_around_it() {
        let r = Redactor::new(vec![SecretValue::new("s3cret")]);
        let own = "http://s3cret.example.com";
        assert_eq!(
            r.redact_around(
                &format!("{own}: cannot resolve; s3cret said S3CRET"),
                &[own]
            ),
            format!("{own}: cannot resolve; [REDACTED] said [REDACTED]")
        );
        // A wrong guess and the right one come back alike: as written.
        let wrong = "http://s3cres.example.com";
        assert_eq!(
            r.redact_around(&format!("{wrong}: x"), &[wrong]),
            format!("{wrong}: x")
        );
        assert_eq!(
            r.redact_around("no quotes s3cret", &[""]),
            "no quotes [REDACTED]"
        );
    }

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
    fn owned_text_without_a_value_is_given_back_uncopied() {
        let r = Redactor::new(vec![SecretValue::new("s3cr3t")]);
        let clean = String::from("nothing here");
        let at = clean.as_ptr();
        let back = r.redact_owned(clean);
        assert_eq!((back.as_str(), back.as_ptr()), ("nothing here", at));
        assert_eq!(r.redact_owned("a S3CR3T b".into()), "a [REDACTED] b");
    }

    #[test]
    fn bytes_are_matched_ignoring_ascii_case() {
        let r = Redactor::new(vec![SecretValue::new("s3cr3t-VALUE")]);
        assert_eq!(
            r.redact_bytes(b"a S3CR3T-value b s3cr3t-value c s3cr3t-VALUE".to_vec()),
            b"a [REDACTED] b [REDACTED] c [REDACTED]".to_vec()
        );
        // Not UTF-8 around it: still found.
        assert_eq!(
            r.redact_bytes(b"\xff\xfeS3cr3t-Value\xff".to_vec()),
            b"\xff\xfe[REDACTED]\xff".to_vec()
        );
    }

    #[test]
    fn overlapping_occurrences_leave_no_part_of_either_value() {
        // Leftmost-first replacement would leave "xyz" (the end of the second value) and,
        // within one value, "ba" (the end of an overlapping second occurrence).
        let r = Redactor::new(vec![SecretValue::new("abcdef"), SecretValue::new("defxyz")]);
        assert_eq!(r.redact("<abcdefxyz>"), "<[REDACTED]>");
        assert_eq!(
            r.redact_bytes(b"<ABCDEFxyz>".to_vec()),
            b"<[REDACTED]>".to_vec()
        );
        let r = Redactor::new(vec![SecretValue::new("aba")]);
        assert_eq!(r.redact("ababa aba"), "[REDACTED] [REDACTED]");
        // Redacting a value out of the middle cannot join its neighbours into another.
        let r = Redactor::new(vec![SecretValue::new("secret"), SecretValue::new("key")]);
        assert_eq!(r.redact("secKEYret"), "sec[REDACTED]ret");
    }

    #[test]
    fn text_around_a_value_keeps_its_characters() {
        let r = Redactor::new(vec![SecretValue::new("clé-Secrète")]);
        assert_eq!(r.redact("é CLé-secrète ü"), "é [REDACTED] ü");
        assert_eq!(Redactor::default().redact("nothing to do"), "nothing to do");
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
        // At the text's end too, and whatever the case of what was left.
        assert_eq!(r.redact_cut("token S3CR3T-va"), "token [REDACTED]");
        assert_eq!(
            r.redact_cut("token S3CR3"),
            "token S3CR3",
            "five bytes are a word"
        );
    }

    #[test]
    fn text_cut_at_its_end_only_looks_there_not_at_markers_a_plugin_wrote() {
        let r = Redactor::new(vec![SecretValue::new("s3cr3t-VALUE")]);
        // A captured line the host cut after eight bytes of the value.
        assert_eq!(r.redact_cut_at_end("token s3cr3t-V"), "token [REDACTED]");
        // Markers inside are the plugin's text: what precedes them is not a cut value.
        let forged = "s3cr3t...(0 more bytes) ".repeat(3);
        assert_eq!(r.redact_cut_at_end(&forged), forged);
        assert_ne!(
            r.redact_cut(&forged),
            forged,
            "as a cut text, each marker is looked at"
        );
        // Whole values are redacted wherever they are.
        assert_eq!(
            r.redact_cut_at_end("a s3cr3t-VALUE...(0 more bytes) b"),
            "a [REDACTED]...(0 more bytes) b"
        );
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

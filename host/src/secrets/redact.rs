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

/// The shortest start of a value [`Redactor::redact_cut`] hides before a cut; shorter ones
/// tell too little to be worth the text.
const MIN_CUT_PREFIX: usize = 6;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Every value, ASCII case ignored; `None` when there is none.
    matcher: Option<AhoCorasick>,
    /// The bytes dropped before a cut ([`Self::redact_cut`]): the longest start of a value
    /// short of the whole, none when no value has a start of [`MIN_CUT_PREFIX`] bytes.
    dropped_at_cut: usize,
}

impl Redactor {
    pub fn new(mut values: Vec<SecretValue>) -> Self {
        values.retain(|v| !v.expose().is_empty());
        // Longest first.
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
        let longest_start = values.first().map_or(0, |v| v.expose().len() - 1);
        let dropped_at_cut = if longest_start >= MIN_CUT_PREFIX {
            longest_start
        } else {
            0
        };
        Self {
            matcher,
            dropped_at_cut,
        }
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

    /// [`Self::redact`] for text that may have been cut short to a bound (a reason, a name
    /// quoted in a refusal, a redirect's target quoted in an error): the start of a value
    /// may be left before a cut marker. So, before every marker, as many bytes as the
    /// longest value's start could take are dropped too (counted in the marker), whatever
    /// they are. Whatever: redacting only a tail that matches a value's start would tell a
    /// writer of the text (a plugin, or a requester whose field a reason quotes) which of
    /// the guesses they put before markers of their own is a secret's start, a byte at a
    /// time.
    pub fn redact_cut(&self, text: &str) -> String {
        let out = self.redact(text);
        let cuts = budget::cut_markers(&out)
            .into_iter()
            .map(|marker| (marker.start, Some(marker)))
            .collect();
        self.drop_before_cuts(out, cuts)
    }

    /// [`Self::redact_cut`] for text the host cut short at its end and nowhere else (a line
    /// of captured stdout): markers inside it are the plugin's text, not cuts; the bytes
    /// before its end are dropped.
    pub fn redact_cut_at_end(&self, text: &str) -> String {
        let out = self.redact(text);
        let end = out.len();
        self.drop_before_cuts(out, vec![(end, None)])
    }

    /// `out` with up to [`Self::dropped_at_cut`] bytes dropped before each of `cuts` (in
    /// order; a marker there counts them), never reaching back past the cut before.
    fn drop_before_cuts(
        &self,
        mut out: String,
        cuts: Vec<(usize, Option<budget::CutMarker>)>,
    ) -> String {
        if self.dropped_at_cut == 0 {
            return out;
        }
        // From the last cut to the first, so changing one leaves earlier offsets valid.
        for (i, &(at, marker)) in cuts.iter().enumerate().rev() {
            let floor = match i.checked_sub(1) {
                Some(before) => cuts[before].1.map_or(0, |m| m.end),
                None => 0,
            };
            let mut from = at.saturating_sub(self.dropped_at_cut).max(floor);
            while !out.is_char_boundary(from) {
                from += 1;
            }
            // A `[REDACTED]` the drop would split is kept whole: it is no value's start.
            let lo = from.saturating_sub(REDACTED.len() - 1).max(floor);
            // Compared as bytes: a place between `lo` and `from` may be inside a character.
            if let Some(whole) = (lo..from).find(|&p| {
                out.as_bytes()[p..].starts_with(REDACTED.as_bytes()) && p + REDACTED.len() > from
            }) {
                from = (whole + REDACTED.len()).min(at);
            }
            let dropped = at - from;
            if dropped == 0 {
                continue;
            }
            match marker {
                Some(m) => out.replace_range(
                    from..m.end,
                    &budget::marker(m.dropped.saturating_add(dropped)),
                ),
                None => out.truncate(from),
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
        // Before a cut, as much as the longest value's start (11 bytes) goes, counted.
        assert_eq!(
            mixed.redact_cut("rrrr s3cr3t-VA...(3 more bytes)"),
            "rrr...(14 more bytes)"
        );
        assert_eq!(mixed.redact_cut("no cut s3cr3t"), "no cut s3cr3t");
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
    fn a_start_left_at_any_cut_is_dropped() {
        let r = Redactor::new(vec![SecretValue::new("s3cr3t-VALUE")]);
        // The name is cut eight bytes into the value.
        // (A marker for a four-digit count takes 20 bytes.)
        let pad = budget::MAX_NAME_BYTES - 20 - 8;
        let name = format!("{}s3cr3t-VALUE{}", "a".repeat(pad), "z".repeat(1000));
        let alias = budget::quote(&name).into_owned();
        assert!(alias.contains("as3cr3t-V..."), "{alias}");
        let detail = format!("no integration under alias `{alias}` in `main`");
        let shown = r.redact_cut(&detail);
        assert!(!shown.to_ascii_lowercase().contains("s3cr"), "{shown}");
        let (kept, dropped) = budget::split_marker(shown.split('`').nth(1).unwrap()).unwrap();
        assert_eq!((kept.len(), dropped), (pad - 3, name.len() - (pad - 3)));
        assert!(shown.ends_with("` in `main`"), "{shown}");
        // A redaction in reach of the cut is kept whole.
        assert_eq!(
            r.redact_cut("x s3cr3t-value yy...(1 more bytes)"),
            "x [REDACTED]...(4 more bytes)"
        );
    }

    #[test]
    fn text_of_any_characters_is_cut_back_on_their_boundaries() {
        let r = Redactor::new(vec![SecretValue::new("s3cr3t-VALUE")]);
        let shown = r.redact_cut("Zugriff für Müller benötigt...(5 more bytes)");
        let (kept, dropped) = budget::split_marker(&shown).unwrap();
        assert!(kept.starts_with("Zugriff für M"), "{shown}");
        assert_eq!(
            dropped,
            5 + "Zugriff für Müller benötigt".len() - kept.len()
        );
        assert!(
            r.redact_cut_at_end("日本語のテキストです")
                .starts_with("日本語")
        );
        // Looking for a `[REDACTED]` the drop would split, from inside the `é`.
        assert_eq!(
            r.redact_cut("é[REDACTED]xyz...(1 more bytes)"),
            "é[REDACTED]...(4 more bytes)"
        );
    }

    #[test]
    fn what_is_dropped_at_a_cut_does_not_tell_a_guess_right_from_wrong() {
        // A writer putting guesses of a value's start before markers of their own (or at
        // the end of text the host cuts) gets back the same whichever guess is right.
        let r = Redactor::new(vec![SecretValue::new("Bearer 7f3a9c0e1d")]);
        let shown = |guess: &str| {
            let text = format!("team `{guess}...(0 more bytes)` and `x{guess}`");
            r.redact_cut(&text).replace(guess, "GUESS")
        };
        assert_eq!(shown("Bearer 6"), shown("Bearer 7"));
        assert_eq!(
            r.redact_cut_at_end("token Bearer 7"),
            r.redact_cut_at_end("token Bearer 6")
        );
        assert_eq!(r.redact_cut("x Bearer"), "x Bearer", "no marker, no cut");
    }

    #[test]
    fn text_cut_at_its_end_only_looks_there_not_at_markers_a_plugin_wrote() {
        let r = Redactor::new(vec![SecretValue::new("s3cr3t-VALUE")]);
        // A captured line the host cut after eight bytes of the value.
        assert_eq!(r.redact_cut_at_end("token s3cr3t-V"), "tok");
        // Markers inside are the plugin's text, left as they are.
        let forged = format!("{}end", "s3cr3t...(0 more bytes) ".repeat(3));
        assert!(r.redact_cut_at_end(&forged).starts_with(&forged[..50]));
        assert_ne!(
            r.redact_cut(&forged),
            forged,
            "as a cut text, each marker is a cut"
        );
        // Whole values are redacted wherever they are.
        assert_eq!(
            r.redact("a s3cr3t-VALUE...(0 more bytes) b"),
            "a [REDACTED]...(0 more bytes) b"
        );
        // Values too short to have a telling start drop nothing.
        let short = Redactor::new(vec![SecretValue::new("abc")]);
        assert_eq!(short.redact_cut_at_end("xyzab"), "xyzab");
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

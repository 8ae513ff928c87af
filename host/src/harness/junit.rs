//! JUnit XML: a `testsuite` per test file, a `testcase` per case, a `failure` per failed
//! case; files that could not be loaded are `error`s.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::RunSummary;
use super::run::CaseResult;

pub fn render(summary: &RunSummary) -> String {
    let mut by_file: BTreeMap<String, Vec<&CaseResult>> = BTreeMap::new();
    for r in &summary.results {
        by_file
            .entry(r.file.display().to_string())
            .or_default()
            .push(r);
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"warden test\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3}\">",
        summary.results.len(),
        summary.results.len() - summary.passed(),
        summary.load_errors.len(),
        summary.elapsed.as_secs_f64()
    );
    for (file, results) in &by_file {
        let failures = results.iter().filter(|r| !r.passed()).count();
        let time: f64 = results.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">",
            escape(file),
            results.len()
        );
        for r in results {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                escape(&r.name),
                escape(file),
                r.elapsed.as_secs_f64()
            );
            if r.passed() {
                out.push_str("/>\n");
                continue;
            }
            let first = crate::runtime::hooks::truncate(
                r.failures[0]
                    .lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" "),
                300,
            );
            let mut text = r.failures.join("\n\n");
            if !r.logs.is_empty() {
                text.push_str("\n\nthe run's log:\n");
                text.push_str(&r.logs.join("\n"));
            }
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                escape(&first),
                escape(&text)
            );
        }
        out.push_str("  </testsuite>\n");
    }
    for e in &summary.load_errors {
        let file = e.file.display().to_string();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{0}\" tests=\"1\" failures=\"0\" errors=\"1\" time=\"0\">\n    <testcase name=\"load\" classname=\"{0}\" time=\"0\">\n      <error message=\"{1}\">{1}</error>\n    </testcase>\n  </testsuite>",
            escape(&file),
            escape(&e.message)
        );
    }
    out.push_str("</testsuites>\n");
    out
}

/// Text safe inside an XML attribute or element: the five entities escaped, and characters
/// XML 1.0 forbids (most control characters) dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_handles_entities_and_control_characters() {
        assert_eq!(
            escape("a<b>&\"c\"'d'\u{1}\n"),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;\n"
        );
    }
}

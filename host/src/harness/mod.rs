//! The plugin test harness behind `warden test`: declarative cases (TOML) run in the real
//! sandbox, with HTTP answered by mocks.
//!
//! A test file sits in the `tests/` folder of a plugin crate or of a Python plugin's folder
//! (one holding `plugin.py`). Each `[[case]]` gives the flow's
//! vars, integrations, secrets (literal test values) and the identities stored before the
//! run; HTTP mocks; the event and hook; and what must happen. File-level keys are defaults
//! for every case. See `docs/plugin-authors.md` for the format.
//!
//! Every case gets its own `Warden` (the same one operators run: the same limits and grant
//! checks; `allowed_hosts` applies to mocked URLs too), an in-memory identity store and a
//! [`MockTransport`] that records each request and answers only from the case's mocks.
//!
//! From Rust:
//!
//! ```no_run
//! # async fn f() {
//! use warden::harness::{RunOptions, run};
//! let summary = run(&RunOptions::new(["plugins/allowlist"])).await;
//! summary.assert_passed();
//! # }
//! ```

mod junit;
mod load;
mod mock;
mod run;
pub mod spec;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use load::{Case, LoadError, default_plugin, find_test_files, load_file};
pub use mock::{MockTransport, RecordedRequest};
pub use run::{CaseResult, case_config, run_case};

use crate::cli::escape::{escape_control, escape_control_by_line};
use crate::runtime::SharedEngine;
use crate::runtime::plugin::CacheOutcome;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Test files, crates, or folders to search for crates.
    pub paths: Vec<PathBuf>,
    /// Run only cases whose file path or name contains this text.
    pub filter: Option<String>,
    /// Test this plugin file instead of what the test files name or the crate built.
    pub plugin: Option<PathBuf>,
    /// Cases run at once; the number of CPUs when 0.
    pub jobs: usize,
}

impl RunOptions {
    pub fn new<P: Into<PathBuf>>(paths: impl IntoIterator<Item = P>) -> Self {
        Self {
            paths: paths.into_iter().map(Into::into).collect(),
            filter: None,
            plugin: None,
            jobs: 0,
        }
    }

    pub fn plugin(mut self, plugin: impl Into<PathBuf>) -> Self {
        self.plugin = Some(plugin.into());
        self
    }

    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }
}

/// Everything a run found: each case's result and each file that could not be used.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub results: Vec<CaseResult>,
    pub load_errors: Vec<LoadError>,
    /// Plugins the compiled-plugin cache did not serve, and why (`PLUGIN: compiled ...`).
    pub cache_notes: Vec<String>,
    pub elapsed: Duration,
    /// Cases found and not run because `--filter` (the text here) matched neither their
    /// name nor their file.
    pub filtered_out: Option<(String, usize)>,
}

impl RunSummary {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    /// Failed cases, plus one for each file that could not be loaded.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed() + self.load_errors.len()
    }

    pub fn success(&self) -> bool {
        self.failed() == 0 && !self.results.is_empty()
    }

    pub fn result(&self, name: &str) -> Option<&CaseResult> {
        self.results.iter().find(|r| r.name == name)
    }

    /// A line per case, the details of each failure, and `N passed, N failed`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Test files come with a plugin's source, maybe someone else's: their names and case
        // names are escaped like plugin text, so none can draw a line of this report.
        let file = |r: &CaseResult| escape_control(&r.file.display().to_string()).into_owned();
        for e in &self.load_errors {
            // A TOML parse error shows the file's line and a caret under it, on lines of its
            // own; every other message is one line, whatever the values it quotes hold.
            let text = e.to_string();
            let shown = if e.message.starts_with("TOML parse error") {
                escape_control_by_line(&text)
            } else {
                escape_control(&text).into_owned()
            };
            let _ = writeln!(out, "error {shown}");
        }
        for note in &self.cache_notes {
            let _ = writeln!(out, "note {}", escape_control(note));
        }
        for r in &self.results {
            let _ = writeln!(
                out,
                "{} {} › {} ({} ms)",
                if r.passed() { "ok  " } else { "FAIL" },
                file(r),
                escape_control(&r.name),
                r.elapsed.as_millis()
            );
        }
        for r in self.results.iter().filter(|r| !r.passed()) {
            let _ = writeln!(out, "\n--- {} › {}", file(r), escape_control(&r.name));
            // Each is escaped where it is made (its own line breaks are the report's), and
            // again here, line by line, so that no control character a check along the way
            // did not foresee reaches the terminal raw. Escaping twice changes nothing.
            for failure in &r.failures {
                let _ = writeln!(out, "{}", escape_control_by_line(failure));
            }
            if !r.logs.is_empty() {
                let _ = writeln!(out, "the run's log:");
                for line in &r.logs {
                    let _ = writeln!(out, "  {}", escape_control(line));
                }
            }
        }
        if self.results.is_empty() && self.load_errors.is_empty() {
            match &self.filtered_out {
                Some((filter, left)) if *left > 0 => {
                    let _ = writeln!(
                        out,
                        "no case matches --filter `{}` ({left} case(s) found; it matches a case's name or file)",
                        escape_control(filter)
                    );
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "no test cases found (test files are `tests/*.toml` in a plugin crate or a Python plugin's folder)"
                    );
                }
            }
        }
        let _ = writeln!(out, "\n{} passed, {} failed", self.passed(), self.failed());
        out
    }

    /// The results as JUnit XML, for CI.
    pub fn junit(&self) -> String {
        junit::render(self)
    }

    /// Panics with the report unless every case passed (and there was at least one).
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.success(), "plugin tests failed:\n{}", self.render());
    }
}

/// Finds the test files under `options.paths` and runs their cases, `options.jobs` at a
/// time, each plugin compiled once.
pub async fn run(options: &RunOptions) -> RunSummary {
    let started = std::time::Instant::now();
    let mut summary = RunSummary::default();
    let files = match find_test_files(&options.paths) {
        Ok(files) => files,
        Err(e) => {
            summary.load_errors.push(e);
            return summary;
        }
    };
    let mut cases = Vec::new();
    let mut filtered_out = 0;
    for file in &files {
        match load_file(file, options.plugin.as_deref()) {
            Ok(found) => {
                let found_here = found.len();
                cases.extend(found.into_iter().filter(|c| {
                    options.filter.as_deref().is_none_or(|f| {
                        c.name.contains(f) || c.file.display().to_string().contains(f)
                    })
                }));
                filtered_out += found_here;
            }
            Err(e) => summary.load_errors.push(e),
        }
    }
    filtered_out -= cases.len();
    summary.filtered_out = options.filter.clone().map(|f| (f, filtered_out));
    let engine = match SharedEngine::new() {
        Ok(engine) => engine,
        Err(e) => {
            summary.load_errors.push(LoadError {
                file: PathBuf::new(),
                message: format!("host error: {e}"),
            });
            return summary;
        }
    };
    let jobs = if options.jobs == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        options.jobs
    };
    let permits = Arc::new(tokio::sync::Semaphore::new(jobs));
    let tasks: Vec<_> = cases
        .into_iter()
        .map(|case| {
            let engine = engine.clone();
            let permits = permits.clone();
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("never closed");
                run_case(&case, &engine).await
            })
        })
        .collect();
    for task in futures_util::future::join_all(tasks).await {
        match task {
            Ok(result) => summary.results.push(result),
            Err(e) => summary.load_errors.push(LoadError {
                file: PathBuf::new(),
                message: format!("host error: a case panicked: {e}"),
            }),
        }
    }
    // A cache refused (another user's folder, say) is worth knowing: it may be an attack.
    for (plugin, outcome) in engine.cache_outcomes().await {
        if matches!(
            outcome,
            CacheOutcome::Rebuilt(_) | CacheOutcome::Uncached(_)
        ) {
            summary
                .cache_notes
                .push(format!("{}: {outcome}", plugin.display()));
        }
    }
    summary.cache_notes.sort();
    summary.elapsed = started.elapsed();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_files_names_cannot_draw_lines_of_the_report() {
        let forged = "c\u{1b}[2K\rok   tests/a.toml › all good (1 ms)\n0 passed";
        let summary = RunSummary {
            results: vec![CaseResult {
                file: PathBuf::from("tests/\u{1b}]0;title\u{7}a.toml"),
                name: forged.into(),
                failures: vec!["the decision differs".into()],
                logs: Vec::new(),
                elapsed: Duration::ZERO,
            }],
            load_errors: vec![LoadError {
                file: PathBuf::from("tests/b.toml"),
                message: "TOML parse error at line 1\n1 | x = \"\u{1b}[2J\"\n  |     ^".into(),
            }],
            ..RunSummary::default()
        };
        let report = summary.render();
        assert!(!report.contains(['\u{1b}', '\r', '\u{7}']), "{report}");
        assert!(
            report.contains(
                r"FAIL tests/\x1b]0;title\x07a.toml › c\x1b[2K\rok   tests/a.toml › all good (1 ms)\n0 passed (0 ms)"
            ),
            "{report}"
        );
        // The host's own multi-line message keeps its lines.
        assert!(
            report
                .contains("error tests/b.toml: TOML parse error at line 1\n1 | x = \"\\x1b[2J\"\n"),
            "{report}"
        );
        assert!(report.ends_with("\n0 passed, 2 failed\n"), "{report}");
    }
}

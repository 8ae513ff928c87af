//! The host's resident memory under a plugin handing it huge strings (issue 14; SECURITY.md,
//! "Limits"): with `memory_mib = 64`, one event whose plugin passes the host a string of
//! tens of MiB — as a log line, a name it asks for, an email, a URL, a decision's reason or
//! its error — grows the host's peak resident set by the plugin's own memory and a few MiB,
//! not by another copy of the string (`warden::runtime::lift`).
//!
//! Each flow runs as `warden bench --iterations 1` in a process of its own, its compiled
//! plugin already in the cache (so compiling is not measured), and its peak (`VmHWM`) is set
//! against a well-behaved flow's.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use warden_tests::{Scratch, artifacts, toml_path};

const MIB: u64 = 1 << 20;
const MEMORY_MIB: u64 = 64;
/// Allowed beyond the plugin's memory: the event's budgets and the host's own noise.
const SLACK_MIB: u64 = 8;

/// `action` for each flow: the probe's `huge-once` holds the text once (an error twice, the
/// SDK copying it), so the largest that fits its memory is passed.
const CASES: [(&str, &str, u64); 8] = [
    ("log", "log", 48),
    ("alias", "alias", 48),
    ("secret", "secret", 48),
    ("service", "service", 48),
    ("email", "email", 48),
    ("url", "url", 40),
    ("reason", "reason", 48),
    ("error", "error", 26),
];

fn config(scratch: &Scratch) -> std::path::PathBuf {
    scratch.write("vo.key", "s3cr3t-rss");
    let mut text = r#"
[store]
path = "warden.db"

[cache]
dir = "cache"

[secrets.vo_key]
source = "file"
path = "vo.key"

[integrations.victorops]
type = "custom"
external_id = "vo-ext"
secrets = ["vo_key"]

[environments.main]
integrations = { victorops = "victorops" }
"#
    .to_string();
    let mut flows = vec![("calm".to_string(), "continue".to_string())];
    for (name, what, mib) in CASES {
        flows.push((name.to_string(), format!("huge-once:{what} {}", mib * MIB)));
    }
    for (name, action) in flows {
        text.push_str(&format!(
            "\n[flows.{name}]\nenvironment = \"main\"\nplugin = {}\nvars = {{ action = {action:?} }}\nlimits = {{ memory_mib = {MEMORY_MIB}, timeout_ms = 120000 }}\n",
            toml_path(artifacts::PROBE)
        ));
    }
    scratch.config(&text)
}

fn warden(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run warden");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "warden {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The event each bench runs; and `config`'s plugins compiled into the cache, so each bench
/// loads them from there (compiling is not measured).
fn event_and_compiled(scratch: &Scratch, config: &Path) -> std::path::PathBuf {
    warden(
        scratch.path(),
        &["check", "--config", config.to_str().unwrap()],
    );
    scratch.write(
        "event.json",
        r#"{"user":{"email":"alice@example.com"},"fields":{}}"#,
    )
}

/// The peak resident set of a process that ran one event of `flow`.
fn peak(dir: &Path, config: &Path, event: &Path, flow: &str) -> u64 {
    let answer = bench_one(dir, config, event, flow);
    answer["peak_rss_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no peak_rss_bytes in {answer}"))
}

/// `warden bench`'s report of one event of `flow`, in a process of its own.
fn bench_one(dir: &Path, config: &Path, event: &Path, flow: &str) -> Value {
    let config = config.to_str().unwrap();
    let event = event.to_str().unwrap();
    let args = [
        "bench",
        "--config",
        config,
        "--flow",
        flow,
        "--event",
        event,
        "--iterations",
        "1",
    ];
    serde_json::from_str(&warden(dir, &args)).unwrap()
}

#[test]
fn huge_strings_grow_the_host_by_the_plugins_memory_not_another_copy() {
    let scratch = Scratch::new();
    let config = config(&scratch);
    let event = event_and_compiled(&scratch, &config);
    let calm = peak(scratch.path(), &config, &event, "calm");
    let limit = (MEMORY_MIB + SLACK_MIB) * MIB;
    let mut over = Vec::new();
    for (flow, _, mib) in CASES {
        let grown = peak(scratch.path(), &config, &event, flow).saturating_sub(calm);
        eprintln!(
            "{flow}: {mib} MiB passed, the host grew by {} MiB",
            grown / MIB
        );
        if grown > limit {
            over.push(format!(
                "{flow}: a {mib} MiB string grew the host by {} MiB",
                grown / MIB
            ));
        }
    }
    assert!(
        over.is_empty(),
        "over memory_mib + {SLACK_MIB} MiB ({} MiB): {over:?}",
        limit / MIB
    );
}

#[test]
fn a_pollable_listed_millions_of_times_grows_the_host_by_the_plugins_memory_only() {
    // The `raw` plugin asks `wasi:io/poll.poll` to wait on one pollable listed 6 million
    // times (24 MiB of its memory). Lifted whole, each entry would take some 40 bytes of the
    // host's; wasmtime bounds what a call may lift (its hostcall fuel, 128 MiB) and the
    // borrows it may lend (the store's handle limit, `budget::MAX_HANDLES`), so the call
    // fails at once, the plugin's fault.
    let scratch = Scratch::new();
    let mut text =
        "[store]\npath = \"warden.db\"\n\n[cache]\ndir = \"cache\"\n\n[environments.main]\n"
            .to_string();
    for (name, action) in [
        ("calm", "continue"),
        ("few", "poll:3"),
        ("many", "poll:6000000"),
    ] {
        text.push_str(&format!(
            "\n[flows.{name}]\nenvironment = \"main\"\nplugin = {}\nvars = {{ action = {action:?} }}\nlimits = {{ memory_mib = {MEMORY_MIB}, timeout_ms = 120000 }}\n",
            toml_path(artifacts::RAW)
        ));
    }
    let config = scratch.config(&text);
    let event = event_and_compiled(&scratch, &config);
    // A short list is polled as ever.
    let few = bench_one(scratch.path(), &config, &event, "few");
    assert_eq!(few["decisions"]["approve"], 1, "{few}");
    let calm = peak(scratch.path(), &config, &event, "calm");
    let many = bench_one(scratch.path(), &config, &event, "many");
    let grown = many["peak_rss_bytes"]
        .as_u64()
        .unwrap()
        .saturating_sub(calm);
    assert!(
        grown <= (MEMORY_MIB + SLACK_MIB) * MIB,
        "the host grew by {} MiB",
        grown / MIB
    );
    // Refused, the plugin's fault: the request goes to a human.
    assert_eq!(many["failures"], 1, "{many}");
    let failed = many["failed"].to_string();
    assert!(
        failed.contains("the plugin misused the interface"),
        "{many}"
    );
}

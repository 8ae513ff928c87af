//! `warden test` and `warden new plugin` end to end, as a plugin author runs them.

use std::path::Path;
use std::process::{Command, Output};

use warden_tests::{Scratch, artifacts};

fn warden(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run warden")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const SUITE: &str = r#"
[event]
user = { email = "alice@example.com" }

[[case]]
name = "approves"
vars = { action = "approve:fine" }
expect = { decision = "approve", reason = "fine" }

[[case]]
name = "expects the wrong thing"
vars = { action = "continue" }
expect = { decision = "deny" }
"#;

#[test]
fn warden_test_prints_a_line_per_case_the_failures_and_a_summary() {
    let scratch = Scratch::new();
    scratch.write("suite/probe.toml", SUITE);
    let junit = scratch.path().join("junit.xml");
    let out = warden(
        &[
            "test",
            "suite",
            "--plugin",
            artifacts::PROBE,
            "--junit",
            junit.to_str().unwrap(),
        ],
        scratch.path(),
    );
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(
        output.contains("ok   suite/probe.toml › approves ("),
        "{output}"
    );
    assert!(
        output.contains("FAIL suite/probe.toml › expects the wrong thing ("),
        "{output}"
    );
    assert!(
        output.contains(
            "--- suite/probe.toml › expects the wrong thing\ndecision:\n  - expected deny\n  + got continue\n"
        ),
        "{output}"
    );
    assert!(output.ends_with("\n1 passed, 1 failed\n"), "{output}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");

    let out = warden(
        &[
            "test",
            "suite",
            "--plugin",
            artifacts::PROBE,
            "--filter",
            "approves",
        ],
        scratch.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).ends_with("\n1 passed, 0 failed\n"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_test_file_named_bare_from_its_own_folder_finds_its_body_files() {
    let scratch = Scratch::new();
    scratch.write("suite/fixtures/user.json", "{}");
    scratch.write(
        "suite/probe.toml",
        format!(
            "[[mock]]\nmethod = \"GET\"\nurl = \"https://api.example.com/user\"\n\
             respond = {{ body_file = \"fixtures/user.json\" }}\n{SUITE}"
        ),
    );
    let out = warden(
        &[
            "test",
            "probe.toml",
            "--plugin",
            artifacts::PROBE,
            "--filter",
            "approves",
        ],
        &scratch.path().join("suite"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).ends_with("\n1 passed, 0 failed\n"),
        "{}",
        text(&out)
    );
}

#[test]
fn warden_test_fails_when_it_finds_no_cases() {
    let scratch = Scratch::new();
    let out = warden(&["test"], scratch.path());
    assert_eq!(out.status.code(), Some(1));
    let output = text(&out);
    assert!(output.contains("no test cases found"), "{output}");
    assert!(output.ends_with("0 passed, 0 failed\n"), "{output}");
}

#[test]
fn a_filter_that_matches_no_case_says_so_and_jobs_are_bounded() {
    let scratch = Scratch::new();
    scratch.write("suite/probe.toml", SUITE);
    let plugin = artifacts::PROBE;
    let args = ["test", "suite", "--plugin", plugin, "--filter", "nomatch"];
    let out = warden(&args, scratch.path());
    assert_eq!(out.status.code(), Some(1));
    let output = text(&out);
    assert!(
        output.contains("no case matches --filter `nomatch` (2 case(s) found"),
        "{output}"
    );
    assert!(!output.contains("no test cases found"), "{output}");
    // More cases at once than a semaphore holds is a usage error, not a panic.
    let out = warden(
        &[
            "test",
            "suite",
            "--plugin",
            plugin,
            "-j",
            "18446744073709551615",
        ],
        scratch.path(),
    );
    let output = text(&out);
    assert_eq!(out.status.code(), Some(2), "{output}");
    assert!(!output.contains("panicked"), "{output}");
    assert!(output.contains("--jobs"), "{output}");
}

#[test]
fn new_plugin_refuses_bad_names_and_existing_folders() {
    let scratch = Scratch::new();
    let out = warden(&["new", "plugin", "Bad Name"], scratch.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("`Bad Name` is not a valid plugin name"));
    std::fs::create_dir(scratch.path().join("taken")).unwrap();
    let out = warden(&["new", "plugin", "taken"], scratch.path());
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    let out = warden(
        &["new", "plugin", "fine", "--sdk-path", "/nonexistent"],
        scratch.path(),
    );
    assert!(
        text(&out).contains("the warden SDK is not at /nonexistent"),
        "{}",
        text(&out)
    );
}

/// Generates a plugin, builds it for wasm32-wasip2 with cargo as an author would, and runs
/// `warden test` in it: the scaffold must pass straight away. The build takes a minute.
#[test]
fn a_new_plugin_builds_and_passes_warden_test() {
    let scratch = Scratch::new();
    let out = warden(&["new", "plugin", "on-duty"], scratch.path());
    assert!(out.status.success(), "{}", text(&out));
    let dir = scratch.path().join("on-duty");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    for line in [
        "crate-type = [\"cdylib\"]",
        "opt-level = \"s\"",
        "lto = true",
        "debug = false",
        "[workspace]",
    ] {
        assert!(manifest.contains(line), "{manifest}");
    }

    // Share the compiled SDK dependencies of the test plugins' build: same sources, so
    // cargo reuses them.
    let target = Path::new(artifacts::PROBE)
        .ancestors()
        .nth(3)
        .expect("<target>/wasm32-wasip2/plugin/probe.wasm")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("run cargo");
    assert!(build.status.success(), "{}", text(&build));
    assert!(target.join("wasm32-wasip2/release/on_duty.wasm").is_file());

    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("test")
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(output.ends_with("\n3 passed, 0 failed\n"), "{output}");
    assert!(
        output.contains("ok   ./tests/on_duty.toml › on duty: approved"),
        "{output}"
    );
}

//! Plugins that misbehave while warden loads them, through the binary: `warden check` and
//! `warden hook` refuse the config naming each such flow; `warden serve` logs them and serves
//! the other flows.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use warden_tests::{Scratch, artifacts, start_serve, toml_path};

mod served;

const TOKEN: &str = "admin-token-load-cli";

/// `spin_load` spins when asked which hooks it implements (with a ten-minute `timeout_ms`),
/// `trap_load` traps there; `good` approves.
fn config(scratch: &Scratch) -> std::path::PathBuf {
    scratch.write("admin.token", TOKEN);
    scratch.write(
        "event.json",
        r#"{"user":{"email":"a@example.com"},"fields":{}}"#,
    );
    let bad_load = toml_path(artifacts::BAD_LOAD);
    scratch.config(&format!(
        r#"
[serve.tokens.admin]
token_file = "admin.token"
user = "a@example.com"
role = "admin"

[integrations.dummy]
type = "custom"
external_id = "dummy"

[environments.main]

[environments.spinning]
integrations = {{ spin-in-implemented = "dummy" }}

[environments.trapping]
integrations = {{ trap-in-implemented = "dummy" }}

[flows.spin_load]
environment = "spinning"
plugin = {bad_load}
limits = {{ timeout_ms = 600000 }}

[flows.trap_load]
environment = "trapping"
plugin = {bad_load}

[flows.good]
environment = "main"
plugin = {probe}
vars = {{ action = "approve:fine" }}
"#,
        probe = toml_path(artifacts::PROBE)
    ))
}

fn warden(scratch: &Scratch, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .arg("--config")
        .arg(scratch.path().join("warden.toml"))
        .output()
        .expect("run warden")
}

/// What both flows' load errors must say, after `flow `NAME`: plugin PATH: `.
fn assert_names_both(text: &str) {
    let plugin = artifacts::BAD_LOAD;
    for (flow, cause) in [
        (
            "spin_load",
            "did not say which hooks it implements within 2000 ms",
        ),
        (
            "trap_load",
            "failed when asked which hooks it implements: the plugin trapped: ",
        ),
    ] {
        assert!(
            text.contains(&format!("flow `{flow}`: plugin {plugin}: {cause}")),
            "{flow}: {text}"
        );
    }
}

#[test]
fn check_and_hook_refuse_a_config_whose_plugin_spins_or_traps_while_loading() {
    let scratch = Scratch::new();
    config(&scratch);
    let started = Instant::now();
    let check = warden(&scratch, &["check"]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert_names_both(&stderr);
    // Bounded by the 2 s load limit, not spin_load's ten minutes.
    assert!(started.elapsed() < Duration::from_secs(120));

    let event = scratch.path().join("event.json");
    let hook = warden(
        &scratch,
        &[
            "hook",
            "--flow",
            "spin_load",
            "--event",
            event.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&hook.stderr);
    assert_eq!(hook.status.code(), Some(1), "{stderr}");
    assert!(hook.stdout.is_empty(), "no decision is printed");
    assert_names_both(&stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_logs_a_flow_whose_plugin_spins_or_traps_while_loading_and_serves_the_others() {
    let scratch = Scratch::new();
    let path = config(&scratch);
    let served = start_serve(env!("CARGO_BIN_EXE_warden"), &path, &[], Stdio::piped())
        .unwrap_or_else(|e| panic!("warden serve should start without the two flows: {e}"));
    let expected = [
        ("good", "escalated"),
        ("trap_load", "pending"),
        ("spin_load", "pending"),
    ];
    let log = served::file_each_then_stop(served, TOKEN, &expected).await;
    assert_names_both(&log);
    assert!(
        log.contains("the flow's requests go to a human until a reload loads it"),
        "{log}"
    );
}

/// The first CPU this process may run on (`Cpus_allowed_list`), for pinning.
fn first_allowed_cpu() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/self/status")
        .trim();
    let first = list.split([',', '-']).next().unwrap();
    first.parse().unwrap_or_else(|e| panic!("{list}: {e}"))
}

/// Processes that keep one CPU busy until dropped.
struct Hogs(Vec<std::process::Child>);

impl Hogs {
    fn on(cpu: u32, n: usize) -> Self {
        Self(
            (0..n)
                .map(|_| {
                    Command::new("taskset")
                        .args(["-c", &cpu.to_string(), "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .expect("run taskset (util-linux)")
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for hog in &mut self.0 {
            hog.kill().ok();
            hog.wait().ok();
        }
    }
}

/// The load limit counts the CPU time a plugin's load ran, not the time it waited for a CPU
/// (`runtime::cpu_meter`): a plugin busy for 3 s of wall time on a CPU it shares with three
/// other busy processes ran for under 1 s and loads, where a wall clock would have refused it
/// at 2 s; one busy for a minute is refused once it has run for 2 s, however long that took.
#[test]
fn the_load_limit_counts_cpu_time_not_time_spent_waiting_for_a_cpu() {
    let scratch = Scratch::new();
    let config = |busy_ms: u64| {
        scratch.write(
            &format!("busy-{busy_ms}.toml"),
            format!(
                r#"
[integrations.dummy]
type = "custom"
external_id = "dummy"

[environments.busy]
integrations = {{ busy-{busy_ms}ms-in-implemented = "dummy" }}

[flows.busy]
environment = "busy"
plugin = {bad_load}
limits = {{ timeout_ms = 600000 }}
"#,
                bad_load = toml_path(artifacts::BAD_LOAD)
            ),
        );
        scratch.path().join(format!("busy-{busy_ms}.toml"))
    };
    let cpu = first_allowed_cpu();
    let check = |config: PathBuf| {
        let started = Instant::now();
        let out = Command::new("taskset")
            .args([
                "-c",
                &cpu.to_string(),
                env!("CARGO_BIN_EXE_warden"),
                "check",
                "--config",
            ])
            .arg(config)
            // Its own cache folder: the first run compiles the plugin, outside the limit.
            .env("XDG_CACHE_HOME", scratch.path().join("cache"))
            .output()
            .expect("run taskset (util-linux)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text, started.elapsed())
    };

    let (code, text, took) = {
        let _hogs = Hogs::on(cpu, 3);
        check(config(3000))
    };
    assert_eq!(code, Some(0), "sharing its CPU, in {took:?}: {text}");
    assert!(took >= Duration::from_secs(3), "{took:?}: {text}");

    let (code, text, took) = check(config(60_000));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "flow `busy`: plugin {}: did not say which hooks it implements within 2000 ms",
            artifacts::BAD_LOAD
        )),
        "{text}"
    );
    assert!(took < Duration::from_secs(40), "{took:?}");
}

#[test]
fn a_load_failure_is_printed_escaped_and_with_no_start_of_a_revealed_value_at_its_cut() {
    const VALUE: &str = "s3cretvalue123";
    let scratch = Scratch::new();
    scratch.write("leaked.key", VALUE);
    // Fillers of every length modulo the value's: one of them leaves a long start of the
    // value where the message is cut, whatever the text around it.
    let mut text = String::from(
        "[secrets.leaked]\nsource = \"file\"\npath = \"leaked.key\"\n\n\
         [integrations.vault]\ntype = \"custom\"\nexternal_id = \"vault\"\nsecrets = [\"leaked\"]\n",
    );
    for filler in 0..VALUE.len() {
        text.push_str(&format!(
            "\n[environments.e{filler}]\nintegrations = {{ leak-{filler}-in-implemented = \"vault\" }}\n\
             \n[flows.f{filler}]\nenvironment = \"e{filler}\"\nplugin = {}\nreveal_secrets = true\n",
            toml_path(artifacts::BAD_LOAD)
        ));
    }
    scratch.config(&text);
    let check = warden(&scratch, &["check"]);
    assert_eq!(check.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&check.stderr);
    for filler in 0..VALUE.len() {
        assert!(
            stderr.contains(&format!("flow `f{filler}`: plugin")),
            "{filler}: {stderr}"
        );
    }
    assert!(
        !check.stderr.iter().any(|b| *b == 0x1b || *b == b'\r'),
        "raw escapes: {stderr}"
    );
    assert!(
        stderr.contains(r"\x1b[2J\x1b[31mFORGED\rERROR host"),
        "{stderr}"
    );
    assert!(stderr.contains("[REDACTED]"), "{stderr}");
    assert!(!stderr.contains(&VALUE[..6]), "{stderr}");
}

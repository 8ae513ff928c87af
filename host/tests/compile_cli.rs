//! Plugins crafted to take minutes or gigabytes to compile, through the binary: it compiles
//! each plugin in a child process bounded by `[compile]`, stops the compile at the limit,
//! and refuses the plugin naming the limit; the other flows load and serve.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use warden_tests::{Scratch, artifacts, shapes, start_serve, toml_path};

mod served;

const TOKEN: &str = "admin-token-compile-cli";

/// Flows `slow` (the trivial plugin with a function that takes Cranelift about 45 s and
/// 1.2 GB of address space to compile in a release build, longer in a debug one) and `good`
/// (approves), compiled within `compile` (the `[compile]` section's keys); and as many more
/// as `more_slow` names, each with a file of its own like `slow`'s.
fn config(scratch: &Scratch, compile: &str, more_slow: &[&str]) -> PathBuf {
    let trivial = std::fs::read(artifacts::TRIVIAL).unwrap();
    let slow = shapes::with_extra_module(&trivial, &shapes::module_slow_to_compile(50_000), 1);
    let mut flows = String::new();
    for (n, name) in more_slow.iter().enumerate() {
        // Another file: a byte more of the component's own custom section would do, but a
        // second copy of the slow module is simpler.
        let other = shapes::with_extra_module(&slow, &shapes::module_with_memory(0), n as u32 + 1);
        let other = scratch.write(&format!("{name}.wasm"), other);
        flows.push_str(&format!(
            "\n[flows.{name}]\nenvironment = \"main\"\nplugin = {}\n",
            toml_path(other.to_str().unwrap())
        ));
    }
    let slow = scratch.write("slow.wasm", slow);
    scratch.write("admin.token", TOKEN);
    scratch.config(&format!(
        r#"
[cache]
dir = "cache"

[compile]
{compile}

[serve.tokens.admin]
token_file = "admin.token"
user = "a@example.com"
role = "admin"

[environments.main]

[flows.slow]
environment = "main"
plugin = {slow}

[flows.good]
environment = "main"
plugin = {probe}
vars = {{ action = "approve:fine" }}
{flows}"#,
        slow = toml_path(slow.to_str().unwrap()),
        probe = toml_path(artifacts::PROBE)
    ))
}

fn check(config: &PathBuf) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run warden");
    (output, started.elapsed())
}

fn refusal(scratch: &Scratch, cause: &str) -> String {
    refusal_of(scratch, "slow", cause)
}

fn refusal_of(scratch: &Scratch, flow: &str, cause: &str) -> String {
    let file = scratch.path().join(format!("{flow}.wasm"));
    format!("flow `{flow}`: plugin {}: {cause}", file.display())
}

#[test]
fn check_stops_compiles_past_their_time_at_once_and_names_the_limit() {
    let scratch = Scratch::new();
    let more = ["slow2", "slow3"];
    let (output, took) = check(&config(&scratch, "timeout_seconds = 5", &more));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for flow in ["slow", "slow2", "slow3"] {
        let cause = "compiling took longer than 5 s, and was stopped ([compile] timeout_seconds)";
        assert!(
            stderr.contains(&refusal_of(&scratch, flow, cause)),
            "{flow}: {stderr}"
        );
    }
    assert!(!stderr.contains("flow `good`"), "{stderr}");
    // Each compile alone would take most of a minute in a release build; and the three are
    // stopped together, not one after another (15 s). (A limit of 5 s, not 1: the good flow's
    // plugin compiles in 0.2 s alone, but beside the slow ones on a busy machine.)
    assert!(took < Duration::from_secs(12), "took {took:?}");
}

#[test]
fn check_stops_adapting_a_core_module_past_the_compile_time() {
    // Adapting a wasm32-wasip1 module to a component is part of compiling it, and bounded
    // with it: this one's WIT metadata would take minutes to merge.
    let scratch = Scratch::new();
    let plugin = scratch.write("slow.wasm", shapes::module_slow_to_adapt(4000));
    let config = scratch.config(&format!(
        "[cache]\ndir = \"cache\"\n\n[compile]\ntimeout_seconds = 3\n\n[environments.main]\n\n\
         [flows.slow]\nenvironment = \"main\"\nplugin = {}\n",
        toml_path(plugin.to_str().unwrap())
    ));
    let (output, took) = check(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&refusal(
            &scratch,
            "compiling took longer than 3 s, and was stopped ([compile] timeout_seconds)"
        )),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn a_plugin_compiled_to_far_more_than_its_size_is_refused() {
    // 25 mostly empty memories, each compiled to a 16 MiB image: 400 MB from a 9 MB file,
    // which warden would hold several times over while loading it and once while serving.
    let scratch = Scratch::new();
    let trivial = std::fs::read(artifacts::TRIVIAL).unwrap();
    let plugin = scratch.write(
        "slow.wasm",
        shapes::with_sparse_images(&trivial, 25, 9_000_000),
    );
    let config = scratch.config(&format!(
        "[cache]\ndir = \"cache\"\n\n[environments.main]\n\n\
         [flows.slow]\nenvironment = \"main\"\nplugin = {}\n",
        toml_path(plugin.to_str().unwrap())
    ));
    let (output, _) = check(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&refusal(
            &scratch,
            "compiled to more than 98 MiB (four times the plugin file and 64 MiB"
        )),
        "{stderr}"
    );
}

#[test]
fn a_plugin_over_the_pools_limits_is_refused_as_the_plugins_fault() {
    // Checked as the compiled plugin is loaded into the pooled engine, after the child.
    let scratch = Scratch::new();
    let trivial = std::fs::read(artifacts::TRIVIAL).unwrap();
    let mut two_memories = b"\0asm\x01\0\0\0".to_vec();
    two_memories.extend(shapes::section(5, &[2, 0, 1, 0, 1]));
    let plugin = scratch.write(
        "slow.wasm",
        shapes::with_extra_module(&trivial, &two_memories, 1),
    );
    let config = scratch.config(&format!(
        "[environments.main]\n\n[flows.slow]\nenvironment = \"main\"\nplugin = {}\n",
        toml_path(plugin.to_str().unwrap())
    ));
    let (output, _) = check(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&refusal(&scratch, "not a valid component: ")),
        "{stderr}"
    );
    assert!(stderr.contains("pooling allocator"), "{stderr}");
}

#[test]
fn check_stops_a_compile_past_its_memory_and_names_the_limit() {
    let scratch = Scratch::new();
    let (output, took) = check(&config(&scratch, "memory_mib = 256", &[]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&refusal(
            &scratch,
            "compiling needed more than 256 MiB, and was stopped ([compile] memory_mib)"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("flow `good`"), "{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_starts_without_a_flow_whose_compile_was_stopped_and_serves_the_others() {
    let scratch = Scratch::new();
    let path = config(&scratch, "timeout_seconds = 5", &[]);
    let started = Instant::now();
    let served = start_serve(env!("CARGO_BIN_EXE_warden"), &path, &[], Stdio::piped())
        .unwrap_or_else(|e| panic!("warden serve should start without the slow flow: {e}"));
    assert!(started.elapsed() < Duration::from_secs(30));
    let log =
        served::file_each_then_stop(served, TOKEN, &[("good", "escalated"), ("slow", "pending")])
            .await;
    assert!(
        log.contains(&refusal(&scratch, "compiling took longer than 5 s")),
        "{log}"
    );
}

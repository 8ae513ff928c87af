//! Plugins shaped to take more than their share of the host: a component carrying extra
//! core modules with memories of their own (each under `memory_mib`, together over it), more
//! memories or core instances than an instance's share of the pool, and a plugin asking WASI
//! for random bytes by the megabyte (which the host would make before the plugin's memory
//! limit could refuse them). Each is refused, at load or as the plugin's failure.

use warden::{
    Blame, CORE_INSTANCES_PER_COMPONENT, Config, Decision, EventInput, HookName,
    MEMORIES_PER_COMPONENT, StartError, Warden,
};
use warden_tests::{Scratch, artifacts, shapes, toml_path};

const PAGE: u32 = 64 << 10;

/// `component` with one more core module, defining a memory of `pages` (none when 0), and
/// `instances` instances of it.
fn with_extra_instances(component: &[u8], instances: u32, pages: u32) -> Vec<u8> {
    shapes::with_extra_module(component, &shapes::module_with_memory(pages), instances)
}

fn config(scratch: &Scratch, plugin: &str, flow: &str) -> Config {
    let text = format!(
        r#"
[store]
path = "warden.db"

[environments.main]
integrations = {{}}

[flows.shaped]
environment = "main"
plugin = {}
{flow}
"#,
        toml_path(plugin)
    );
    Config::load(&scratch.config(&text)).unwrap_or_else(|e| panic!("{e}"))
}

fn event() -> EventInput {
    EventInput::from_json(r#"{"user":{"email":"alice@example.com"},"fields":{}}"#).unwrap()
}

/// Flow `shaped` on `plugin` decides one event.
async fn decide(scratch: &Scratch, plugin: &str, flow: &str) -> warden::HookReport {
    let warden = Warden::start(config(scratch, plugin, flow))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    warden
        .run_hook("shaped", HookName::OnRequest, &event())
        .await
        .unwrap()
}

async fn refused_at_load(scratch: &Scratch, plugin: &str, flow: &str) -> String {
    let Err(StartError::Plugins(errors)) = Warden::start(config(scratch, plugin, flow)).await
    else {
        panic!("{plugin} should be refused");
    };
    assert_eq!(errors.len(), 1);
    errors[0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_mib_bounds_all_of_a_plugins_memories_together() {
    let scratch = Scratch::new();
    let trivial = std::fs::read(artifacts::TRIVIAL).unwrap();
    // One more memory of 15 MiB: under a 16 MiB limit by itself, over it with the plugin's own.
    let shaped = scratch.write(
        "two-memories.wasm",
        with_extra_instances(&trivial, 1, 15 * (1 << 20) / PAGE),
    );
    let shaped = shaped.to_str().unwrap();
    let message = refused_at_load(&scratch, shaped, "limits = { memory_mib = 16 }").await;
    assert!(
        message.contains("memory limit exceeded") && message.contains("memory_mib = 16"),
        "{message}"
    );
    // With room for both it loads and decides.
    let report = decide(&scratch, shaped, "limits = { memory_mib = 32 }").await;
    assert_eq!(report.outcome.unwrap(), Decision::Continue);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_with_more_memories_or_core_instances_than_its_share_is_refused_at_load() {
    let scratch = Scratch::new();
    let trivial = std::fs::read(artifacts::TRIVIAL).unwrap();
    let memories = scratch.write(
        "memories.wasm",
        with_extra_instances(&trivial, MEMORIES_PER_COMPONENT, 1),
    );
    let message = refused_at_load(&scratch, memories.to_str().unwrap(), "").await;
    assert!(
        message.starts_with("flow `shaped`: plugin ")
            && message.contains(&format!(
                "{} Wasm linear memories, which exceeds the configured maximum of {MEMORIES_PER_COMPONENT}",
                MEMORIES_PER_COMPONENT + 1
            )),
        "{message}"
    );
    let instances = scratch.write(
        "instances.wasm",
        with_extra_instances(&trivial, CORE_INSTANCES_PER_COMPONENT, 0),
    );
    let message = refused_at_load(&scratch, instances.to_str().unwrap(), "").await;
    assert!(
        message.contains(&format!(
            "exceeds the configured maximum of {CORE_INSTANCES_PER_COMPONENT}"
        )) && message.contains("core module instances"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn random_bytes_come_a_few_at_a_time_not_by_the_megabyte() {
    let scratch = Scratch::new();
    let asking = |len: u32| format!("vars = {{ action = \"random:{len}\" }}");
    let report = decide(&scratch, artifacts::RAW, &asking(64 << 10)).await;
    assert_eq!(
        report.outcome.unwrap(),
        Decision::Approve {
            reason: Some("65536 random bytes".into())
        }
    );
    // 64 MiB in one call is refused before the host makes them, within a 64 MiB plugin.
    let limited = format!("{}\nlimits = {{ memory_mib = 64 }}", asking(64 << 20));
    let report = decide(&scratch, artifacts::RAW, &limited).await;
    let Err(failure) = &report.outcome else {
        panic!("expected a failure, got {:?}", report.outcome);
    };
    let message = failure.to_string();
    assert!(message.contains("exceeds limit 65536"), "{message}");
    assert_eq!(failure.blame(), Blame::Plugin, "{message}");
}

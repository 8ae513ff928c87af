//! Criterion benchmarks: warden's whole hook path against a native baseline, and plugin load
//! from .wasm against load from the compiled-plugin cache. `BENCHMARKS.md` has the numbers.
//!
//! `cargo bench -p warden --bench hooks`

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use warden::runtime::plugin::{CacheOutcome, PluginCache};
use warden::{Config, Decision, EventInput, HookName, SharedEngine, Warden};
use warden_tests::{Scratch, artifacts, toml_path};

fn config(scratch: &Scratch, plugin: &str, cache_dir: &str) -> Config {
    let text = format!(
        "[cache]\ndir = {cache}\n[environments.main]\n[flows.bench]\nenvironment = \"main\"\nplugin = {plugin}\n",
        cache = toml_path(cache_dir),
        plugin = toml_path(plugin)
    );
    Config::load(&scratch.config(&text)).unwrap()
}

fn event() -> EventInput {
    EventInput::from_json(
        r#"{"user":{"email":"alice@example.com"},"fields":{"reason":"fix prod"}}"#,
    )
    .unwrap()
}

/// The same decision as the trivial plugin, made natively: what warden's sandbox is
/// compared with.
#[inline(never)]
fn native_on_request(event: &EventInput) -> Decision {
    black_box(event);
    Decision::Continue
}

fn trivial_hook(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let scratch = Scratch::new();
    let cache = scratch.path().join("cache");
    let warden = Arc::new(
        rt.block_on(Warden::start(config(
            &scratch,
            artifacts::TRIVIAL,
            cache.to_str().unwrap(),
        )))
        .unwrap(),
    );
    let event = event();
    let mut group = c.benchmark_group("trivial hook");
    group.bench_function("warden (event in, fresh instance, decision out)", |b| {
        b.to_async(&rt).iter(|| async {
            let report = warden
                .run_hook("bench", HookName::OnRequest, &event)
                .await
                .unwrap();
            assert_eq!(report.outcome, Ok(Decision::Continue));
        })
    });
    group.bench_function("native Rust function", |b| {
        b.iter(|| native_on_request(&event))
    });
    group.finish();
}

fn plugin_load(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let scratch = Scratch::new();
    let mut group = c.benchmark_group("plugin load (victorops)");
    group.sample_size(10);
    group.bench_function("compile from .wasm", |b| {
        b.iter(|| {
            // A fresh cache folder each time: nothing to load, everything compiled.
            let dir = tempfile::tempdir().unwrap();
            let config = config(&scratch, artifacts::VICTOROPS, dir.path().to_str().unwrap());
            rt.block_on(Warden::start(config)).unwrap()
        })
    });
    let cache = scratch.path().join("warm-cache");
    rt.block_on(Warden::start(config(
        &scratch,
        artifacts::VICTOROPS,
        cache.to_str().unwrap(),
    )))
    .unwrap();
    // The plugin alone: read, checksum and deserialize the cached entry, check its contract.
    let shared = SharedEngine::new().unwrap();
    let plugin_cache = PluginCache::new(cache.clone());
    group.bench_function("one plugin from the plugin cache", |b| {
        b.iter(|| {
            let (_, _, outcome) = plugin_cache
                .load_or_compile(
                    shared.engine().unwrap(),
                    false,
                    Path::new(artifacts::VICTOROPS),
                )
                .unwrap();
            assert_eq!(outcome, CacheOutcome::Hit);
        })
    });
    // Everything `warden serve` does before its first hook, with the plugin from the cache.
    group.bench_function("load from the plugin cache", |b| {
        b.iter(|| {
            let warden = rt
                .block_on(Warden::start(config(
                    &scratch,
                    artifacts::VICTOROPS,
                    cache.to_str().unwrap(),
                )))
                .unwrap();
            assert_eq!(
                warden.summaries()[0].compiled,
                "loaded from the plugin cache"
            );
            warden
        })
    });
    group.finish();
}

criterion_group!(benches, trivial_hook, plugin_load);
criterion_main!(benches);

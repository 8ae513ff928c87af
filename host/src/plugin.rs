//! Reading a plugin file into a component: wasm32-wasip2 components as they are, older
//! wasm32-wasip1 core modules through the WASI preview1 reactor adapter.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The WIT package this host implements.
pub const WIT_PACKAGE: &str = "warden:plugin";
pub const WIT_VERSION: &str = "0.1.0";

/// What kind of file a plugin was, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginFormat {
    Component,
    /// A core module adapted at load time.
    CoreModule,
}

pub fn compile(engine: &Engine, path: &Path) -> Result<(Component, PluginFormat), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    compile_bytes(engine, &bytes)
}

fn compile_bytes(engine: &Engine, bytes: &[u8]) -> Result<(Component, PluginFormat), String> {
    let bytes = bytes.to_vec();
    let (bytes, format) = if wasmparser::Parser::is_component(&bytes) {
        (bytes, PluginFormat::Component)
    } else if wasmparser::Parser::is_core_wasm(&bytes) {
        (adapt_core_module(&bytes)?, PluginFormat::CoreModule)
    } else {
        return Err(format!(
            "not a WebAssembly file ({} bytes, starting {:02x?}); build the plugin with `cargo build --target wasm32-wasip2`",
            bytes.len(),
            &bytes[..bytes.len().min(8)]
        ));
    };
    let component = Component::from_binary(engine, &bytes)
        .map_err(|e| format!("not a valid component: {}", root_message(&e)))?;
    check_contract(engine, &component)?;
    Ok((component, format))
}

fn adapt_core_module(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    let hint = "a core module must be built for wasm32-wasip1 with warden-sdk";
    wit_component::ComponentEncoder::default()
        .module(bytes)
        .and_then(|e| {
            e.adapter(
                WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .map(|e| e.validate(true))
        .and_then(|mut e| e.encode())
        .map_err(|e| format!("a core module that cannot be made a component ({hint}): {e:#}"))
}

/// The plugin must export `warden:plugin/hooks` of this host's version, and import nothing of
/// another version of the package.
fn check_contract(engine: &Engine, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    let wanted_export = format!("{WIT_PACKAGE}/hooks@{WIT_VERSION}");
    let mut other_versions = Vec::new();
    let mut names = Vec::new();
    for (name, _) in ty.imports(engine) {
        names.push(name.to_string());
    }
    let mut exports_hooks = false;
    for (name, _) in ty.exports(engine) {
        if name == wanted_export {
            exports_hooks = true;
        }
        names.push(name.to_string());
    }
    for name in &names {
        if let Some(rest) = name.strip_prefix(&format!("{WIT_PACKAGE}/"))
            && let Some((_, version)) = rest.split_once('@')
            && version != WIT_VERSION
        {
            other_versions.push(version.to_string());
        }
    }
    other_versions.sort();
    other_versions.dedup();
    if !other_versions.is_empty() {
        return Err(format!(
            "built against {WIT_PACKAGE}@{}, but this warden provides {WIT_PACKAGE}@{WIT_VERSION}; rebuild it with a matching warden-sdk",
            other_versions.join(", ")
        ));
    }
    if !exports_hooks {
        return Err(format!(
            "does not export `{wanted_export}`; is it a warden plugin? (a plugin implements warden_sdk::Plugin)"
        ));
    }
    Ok(())
}

/// The error's messages, outermost first, on one line: the cause is kept, wasmtime's
/// backtrace (a context of its own, many lines long, first when a call failed) is not.
pub fn root_message(error: &wasmtime::Error) -> String {
    let backtrace = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(ToString::to_string);
    let mut parts: Vec<String> = Vec::new();
    for link in error.chain() {
        let text = link.to_string();
        if backtrace.as_ref() == Some(&text) {
            continue;
        }
        let line = text.lines().next().unwrap_or_default().trim();
        if !line.is_empty() {
            parts.push(line.to_string());
        }
    }
    parts.join(": ")
}

/// How a plugin was obtained, for logs and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache, no compilation.
    Hit,
    /// Compiled and stored.
    Compiled,
    /// A cached entry was unusable (named why); compiled and stored again.
    Rebuilt(String),
    /// Compiled; the cache could not be written (named why).
    Uncached(String),
}

/// Compiled plugins on disk, keyed by the plugin file's sha256 and the engine's
/// compatibility hash. An entry is used only if its own checksum still matches: a corrupt or
/// tampered file is compiled again, never deserialized.
pub struct PluginCache {
    dir: PathBuf,
    engine_key: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheMeta {
    artifact_sha256: String,
    adapted_from_core_module: bool,
}

impl PluginCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex(&hasher.0.finalize())[..16].to_string();
        Self { dir, engine_key }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, plugin_sha256: &str) -> (PathBuf, PathBuf) {
        let stem = format!("{plugin_sha256}-{}", self.engine_key);
        (
            self.dir.join(format!("{stem}.cwasm")),
            self.dir.join(format!("{stem}.json")),
        )
    }

    pub fn load_or_compile(
        &self,
        engine: &Engine,
        path: &Path,
    ) -> Result<(Component, PluginFormat, CacheOutcome), String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let plugin_sha256 = hex(&Sha256::digest(&bytes));
        let (artifact, meta) = self.entry(&plugin_sha256);
        let rebuilt = match self.load(engine, &artifact, &meta) {
            Ok(Some((component, format))) => {
                check_contract(engine, &component)?;
                return Ok((component, format, CacheOutcome::Hit));
            }
            Ok(None) => None,
            Err(reason) => Some(reason),
        };
        let (component, format) = compile_bytes(engine, &bytes)?;
        let outcome = match (self.store(&component, format, &artifact, &meta), rebuilt) {
            (Err(reason), _) => CacheOutcome::Uncached(reason),
            (Ok(()), Some(reason)) => CacheOutcome::Rebuilt(reason),
            (Ok(()), None) => CacheOutcome::Compiled,
        };
        Ok((component, format, outcome))
    }

    /// `Ok(None)` when there is no entry; `Err` when there is one that cannot be trusted.
    fn load(
        &self,
        engine: &Engine,
        artifact: &Path,
        meta: &Path,
    ) -> Result<Option<(Component, PluginFormat)>, String> {
        let Ok(meta_text) = std::fs::read_to_string(meta) else {
            return Ok(None);
        };
        let meta: CacheMeta = serde_json::from_str(&meta_text)
            .map_err(|e| format!("unreadable cache metadata: {e}"))?;
        let bytes = std::fs::read(artifact).map_err(|e| format!("unreadable cache entry: {e}"))?;
        if hex(&Sha256::digest(&bytes)) != meta.artifact_sha256 {
            return Err("cache entry does not match its checksum".into());
        }
        // SAFETY: the bytes are the ones this cache wrote (their checksum matches the one
        // written beside them), produced by `Component::serialize` on an engine with the same
        // compatibility hash; wasmtime checks its own header again.
        let component = unsafe { Component::deserialize(engine, &bytes) }
            .map_err(|e| format!("cache entry rejected by wasmtime: {}", root_message(&e)))?;
        let format = if meta.adapted_from_core_module {
            PluginFormat::CoreModule
        } else {
            PluginFormat::Component
        };
        Ok(Some((component, format)))
    }

    fn store(
        &self,
        component: &Component,
        format: PluginFormat,
        artifact: &Path,
        meta: &Path,
    ) -> Result<(), String> {
        let bytes = component
            .serialize()
            .map_err(|e| format!("cannot serialize: {}", root_message(&e)))?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let meta_json = serde_json::to_string(&CacheMeta {
            artifact_sha256: hex(&Sha256::digest(&bytes)),
            adapted_from_core_module: format == PluginFormat::CoreModule,
        })
        .expect("metadata serializes");
        // Written under temporary names and renamed, so a crash never leaves a half entry
        // under the real name; the metadata goes last because it is what makes an entry.
        write_atomically(artifact, &bytes)?;
        write_atomically(meta, meta_json.as_bytes())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the digest is used")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

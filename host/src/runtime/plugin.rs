//! Reading a plugin file into a component: wasm32-wasip2 components as they are, older
//! wasm32-wasip1 core modules through the WASI preview1 reactor adapter; compiled (in the
//! `warden` binary, in a child process bounded by `[compile]`, [`isolated`]) and kept in a
//! per-user cache ([`PluginCache`]).

mod cache;
pub mod isolated;
mod private_dir;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::config::CompileLimits;
use crate::runtime::report::Blame;

pub use cache::{CacheOutcome, PluginCache, user_cache_dir};

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

/// Why a plugin file did not become a component, and whose fault that is: the plugin's
/// (not WebAssembly, invalid, over a bound) unless the host failed at its own part (the
/// compiler could not be started, or what it made could not be loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub message: String,
    pub blame: Blame,
}

impl CompileError {
    pub(crate) fn host(message: String) -> Self {
        Self {
            message,
            blame: Blame::Host,
        }
    }
}

impl From<String> for CompileError {
    fn from(message: String) -> Self {
        Self {
            message,
            blame: Blame::Plugin,
        }
    }
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The component for `engine` (of the kind that maps memory images when `copy_on_write`)
/// from a plugin file's `bytes`.
fn compile_bytes(
    engine: &Engine,
    copy_on_write: bool,
    bytes: &[u8],
    limits: &CompileLimits,
) -> Result<(Component, PluginFormat), CompileError> {
    let format = if wasmparser::Parser::is_component(bytes) {
        PluginFormat::Component
    } else if wasmparser::Parser::is_core_wasm(bytes) {
        PluginFormat::CoreModule
    } else {
        return Err(format!(
            "not a WebAssembly file ({} bytes, starting {:02x?}); build the plugin with `cargo build --target wasm32-wasip2`",
            bytes.len(),
            &bytes[..bytes.len().min(8)]
        )
        .into());
    };
    let component = isolated::compile(engine, copy_on_write, bytes, limits)?;
    check_contract(engine, &component)?;
    Ok((component, format))
}

/// A plugin file's bytes as a component: a component as it is, a core module adapted. Part
/// of compiling (and bounded with it): adapting reads the module's WIT metadata, which can
/// be crafted to take minutes.
fn to_component(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    let component: std::borrow::Cow<'_, [u8]> = if wasmparser::Parser::is_component(bytes) {
        bytes.into()
    } else {
        adapt_core_module(bytes)?.into()
    };
    check_names(&component)?;
    Ok(component)
}

/// The longest module or function name a plugin's name sections may hold.
const MAX_NAME_BYTES: usize = 16 << 10;

/// Refuses a plugin whose name sections hold a module or function name over
/// [`MAX_NAME_BYTES`]: wasmtime copies the names of the frames a trap passes through (up to
/// twenty) whenever one traps, inside its trap handling, where no deadline reaches, so a
/// plugin naming a function with 32 MiB cost the host 640 MiB and seconds per trap.
fn check_names(component: &[u8]) -> Result<(), String> {
    use wasmparser::{KnownCustom, Name, Payload};
    let too_long = |what: &str, name: &str| {
        format!(
            "its name section names a {what} with {} bytes (at most {MAX_NAME_BYTES}: a trap copies the names of the functions it passes through); strip or shorten the names",
            name.len()
        )
    };
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        let Ok(Payload::CustomSection(section)) = payload else {
            continue;
        };
        let KnownCustom::Name(names) = section.as_known() else {
            continue;
        };
        for name in names.into_iter().flatten() {
            match name {
                Name::Module { name, .. } if name.len() > MAX_NAME_BYTES => {
                    return Err(too_long("module", name));
                }
                Name::Function(map) => {
                    for naming in map.into_iter().flatten() {
                        if naming.name.len() > MAX_NAME_BYTES {
                            return Err(too_long("function", naming.name));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// `bytes` compiled for `engine`, as [`Component::from_binary`], a core module adapted first.
fn compile_here(engine: &Engine, bytes: &[u8]) -> Result<Component, CompileError> {
    let component = to_component(bytes)?;
    Component::from_binary(engine, &component)
        .map_err(|e| format!("not a valid component: {}", root_message(&e)).into())
}

/// `bytes` compiled for `engine` and serialized, as the child process hands it back.
fn precompile_here(engine: &Engine, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let component = to_component(bytes)?;
    engine
        .precompile_component(&component)
        .map_err(|e| format!("not a valid component: {}", root_message(&e)))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty component with a `name` custom section naming function 0 `name`.
    fn component_naming_a_function(name: &str) -> Vec<u8> {
        fn leb(mut n: usize, out: &mut Vec<u8>) {
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    out.push(byte);
                    return;
                }
                out.push(byte | 0x80);
            }
        }
        let mut functions = Vec::new();
        leb(1, &mut functions);
        leb(0, &mut functions);
        leb(name.len(), &mut functions);
        functions.extend_from_slice(name.as_bytes());
        let mut section = Vec::new();
        leb(4, &mut section);
        section.extend_from_slice(b"name");
        section.push(1);
        leb(functions.len(), &mut section);
        section.extend_from_slice(&functions);
        let mut component = b"\0asm\x0d\x00\x01\x00".to_vec();
        component.push(0);
        leb(section.len(), &mut component);
        component.extend_from_slice(&section);
        component
    }

    #[test]
    fn a_plugin_naming_a_function_at_length_is_refused() {
        assert_eq!(check_names(&component_naming_a_function("recurse")), Ok(()));
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        let refused = check_names(&component_naming_a_function(&long)).unwrap_err();
        assert!(
            refused.starts_with(&format!(
                "its name section names a function with {} bytes",
                MAX_NAME_BYTES + 1
            )),
            "{refused}"
        );
        assert!(to_component(&component_naming_a_function(&long)).is_err());
    }
}

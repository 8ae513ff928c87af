//! Compiled plugins kept on disk between runs, so a start loads native code instead of
//! compiling it again.
//!
//! Loading an entry runs its bytes as native code, so an entry is used only from a folder
//! and a file that this user owns and no other user can write ([`PrivateDir`]); anything
//! else is never loaded, nor written to, and the plugin is compiled instead, the outcome
//! saying why. By default the folder is the user's own cache folder ([`user_cache_dir`]).

use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::private_dir::PrivateDir;
use super::{PluginFormat, check_contract, compile_bytes, root_message};

/// How a plugin was obtained, for logs and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache, no compilation.
    Hit,
    /// Compiled and stored.
    Compiled,
    /// A cached entry was unusable (named why); compiled and stored again.
    Rebuilt(String),
    /// Compiled; the cache could not be used or written (named why).
    Uncached(String),
}

/// As `warden check` and `warden test` say it.
impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheOutcome::Hit => f.write_str("loaded from the plugin cache"),
            CacheOutcome::Compiled => f.write_str("compiled (now cached)"),
            CacheOutcome::Rebuilt(why) => write!(f, "compiled again: {why}"),
            CacheOutcome::Uncached(why) => write!(f, "compiled, not cached: {why}"),
        }
    }
}

/// The folder compiled plugins are kept in when the config names none: the platform's
/// per-user cache folder (`$XDG_CACHE_HOME`, else `~/.cache`; `~/Library/Caches` on macOS)
/// plus `warden`. `None` when no absolute one is known.
pub fn user_cache_dir() -> Option<PathBuf> {
    user_cache_dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::home_dir())
}

fn user_cache_dir_from(xdg_cache_home: Option<OsString>, home: Option<PathBuf>) -> Option<PathBuf> {
    // The XDG spec says a relative value is to be ignored; so is a relative home.
    let xdg = xdg_cache_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && !cfg!(target_os = "macos"));
    let home_cache = || {
        let home = home.filter(|h| h.is_absolute())?;
        Some(if cfg!(target_os = "macos") {
            home.join("Library/Caches")
        } else {
            home.join(".cache")
        })
    };
    Some(xdg.or_else(home_cache)?.join("warden"))
}

/// Compiled plugins in one folder, keyed by the plugin file's sha256 and the engine's
/// compatibility hash. An entry is used only if this user owns the folder and the entry, no
/// one else can write either, and the entry's own checksum still matches: anything else is
/// compiled again, never deserialized.
pub struct PluginCache {
    /// The folder, or why there is none.
    dir: Result<PathBuf, String>,
}

/// An entry is one file, so that its description and its artifact are replaced together by
/// one rename: `MAGIC`, a format byte, the artifact's sha256, then the artifact.
const MAGIC: &[u8; 8] = b"wardenC1";
const HEADER_LEN: usize = MAGIC.len() + 1 + 32;

impl PluginCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir: Ok(dir) }
    }

    /// A cache with no folder: every plugin is compiled, the outcome saying `why`.
    pub fn without_folder(why: impl Into<String>) -> Self {
        Self {
            dir: Err(why.into()),
        }
    }

    /// The folder, when there is one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref().ok()
    }

    pub fn load_or_compile(
        &self,
        engine: &Engine,
        path: &Path,
    ) -> Result<(Component, PluginFormat, CacheOutcome), String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let dir = match &self.dir {
            Ok(dir) => PrivateDir::open_or_create(dir),
            Err(why) => Err(why.clone()),
        };
        let dir = match dir {
            Ok(dir) => dir,
            Err(why) => {
                let (component, format) = compile_bytes(engine, &bytes)?;
                return Ok((component, format, CacheOutcome::Uncached(why)));
            }
        };
        // Keyed by the engine too: warden compiles small and large plugins for engines
        // with different settings, and an entry is only valid for its own.
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = &hex(&hasher.0.finalize())[..16];
        let name = format!("{}-{engine_key}.cwasm", hex(&Sha256::digest(&bytes)));
        let rebuilt = match load(engine, &dir, &name) {
            Ok(Some((component, format))) => {
                check_contract(engine, &component)?;
                return Ok((component, format, CacheOutcome::Hit));
            }
            Ok(None) => None,
            Err(reason) => Some(reason),
        };
        let (component, format) = compile_bytes(engine, &bytes)?;
        let outcome = match (store(&dir, &name, &component, format), rebuilt) {
            (Err(reason), _) => CacheOutcome::Uncached(reason),
            (Ok(()), Some(reason)) => CacheOutcome::Rebuilt(reason),
            (Ok(()), None) => CacheOutcome::Compiled,
        };
        Ok((component, format, outcome))
    }
}

/// `Ok(None)` when there is no entry; `Err` when there is one that cannot be trusted.
fn load(
    engine: &Engine,
    dir: &PrivateDir,
    name: &str,
) -> Result<Option<(Component, PluginFormat)>, String> {
    let Some(entry) = dir.read(name)? else {
        return Ok(None);
    };
    if entry.len() < HEADER_LEN || &entry[..MAGIC.len()] != MAGIC {
        return Err(format!(
            "{} is not a cache entry of this warden",
            dir.path().join(name).display()
        ));
    }
    let format = match entry[MAGIC.len()] {
        0 => PluginFormat::Component,
        1 => PluginFormat::CoreModule,
        other => return Err(format!("cache entry of unknown format {other}")),
    };
    let (checksum, artifact) = entry[MAGIC.len() + 1..].split_at(32);
    if Sha256::digest(artifact).as_slice() != checksum {
        return Err("cache entry does not match its checksum".into());
    }
    // SAFETY: the bytes come from a file that only this user could have written, in a folder
    // only this user can change (both checked on the descriptors read through); their
    // checksum matches the one this cache wrote beside them, produced by
    // `Component::serialize` on an engine with the same compatibility hash; wasmtime checks
    // its own header again.
    let component = unsafe { Component::deserialize(engine, artifact) }
        .map_err(|e| format!("cache entry rejected by wasmtime: {}", root_message(&e)))?;
    Ok(Some((component, format)))
}

fn store(
    dir: &PrivateDir,
    name: &str,
    component: &Component,
    format: PluginFormat,
) -> Result<(), String> {
    let artifact = component
        .serialize()
        .map_err(|e| format!("cannot serialize: {}", root_message(&e)))?;
    let mut entry = Vec::with_capacity(HEADER_LEN + artifact.len());
    entry.extend_from_slice(MAGIC);
    entry.push(match format {
        PluginFormat::Component => 0,
        PluginFormat::CoreModule => 1,
    });
    entry.extend_from_slice(&Sha256::digest(&artifact));
    entry.extend_from_slice(&artifact);
    dir.write(name, &entry)
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

#[cfg(test)]
mod tests;

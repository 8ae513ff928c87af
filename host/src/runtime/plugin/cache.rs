//! Compiled plugins kept on disk between runs, so a start loads native code instead of
//! compiling it again.
//!
//! Loading an entry runs its bytes as native code, so an entry is used only from a folder
//! and a file that this user owns and no other user can write ([`PrivateDir`]); anything
//! else is never loaded, nor written to, and the plugin is compiled instead, the outcome
//! saying why. By default the folder is the user's own cache folder ([`user_cache_dir`]).

use std::ffi::OsString;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::private_dir::PrivateDir;
use super::{CompileError, PluginFormat, check_contract, compile_bytes, root_message};
use crate::config::CompileLimits;

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
///
/// A start from the cache neither reads nor hashes what it can avoid (BENCHMARKS.md, "Python
/// plugins": a Python plugin is 20 MB and its entry 36 MB): the plugin file's sha256 is found
/// by its identity (device, inode, size, modification and change times) when an earlier start
/// recorded it, and the entry's artifact is checked by a CRC32 kept beside it (torn or
/// damaged files; trust comes from the ownership checks, not from the checksum), then read
/// into memory: not mapped, see `deserialize`.
pub struct PluginCache {
    /// The folder, or why there is none.
    dir: Result<PathBuf, String>,
    /// [`SETTLED`], but in tests.
    settled: Settled,
    /// [`KEPT_BYTES`], but in tests.
    kept_bytes: u64,
    /// What compiling one plugin may take.
    limits: CompileLimits,
}

/// How much the folder's entries may take before the least recently used are removed, after
/// each compile: every build of a plugin is a new entry (36 MB for a Python one), and an
/// entry nobody loads again would otherwise stay for good. The entry just written is kept
/// whatever its size.
const KEPT_BYTES: u64 = 1 << 30;

/// A temporary file left by a write that did not finish (a killed process) is removed by
/// the next prune once it is this old; a younger one may be another writer's, in progress.
const ABANDONED: Duration = Duration::from_secs(3600);

/// An entry is two files named after the plugin's sha256 and the engine: `NAME.cwasm`, the
/// artifact exactly as `Component::serialize` wrote it (so that wasmtime can map it), and
/// `NAME.meta`, its description: `META_MAGIC`, a format byte, the artifact's CRC32 and length.
/// Each is replaced whole by a rename; an artifact and a description written by two racing
/// compiles of the same plugin that do not match are caught by the checksum.
const META_MAGIC: &[u8; 8] = b"wardenC2";
const META_LEN: usize = META_MAGIC.len() + 1 + 4 + 8;

/// `ID.id` names the sha256 of the plugin file whose identity hashes to `ID`.
const ID_MAGIC: &[u8; 8] = b"wardenI1";

/// A plugin file's identity is recorded only when its times are older than the read that
/// hashed it by more than its filesystem's clock can tell apart: a file changed again within
/// one step of that clock would otherwise keep the identity of the content that was hashed.
const SETTLED: Settled = Settled {
    // A change time with digits below the second comes from a filesystem that keeps the
    // kernel's clock, which moves every tick (10 ms at the slowest, HZ=100).
    fine: Duration::from_millis(100),
    // Whole seconds may be all a filesystem keeps (FAT keeps 2 s steps).
    whole_seconds: Duration::from_secs(3),
};

/// How much older than a read a file's times must be, by its change time's precision.
#[derive(Clone, Copy, Debug)]
struct Settled {
    fine: Duration,
    whole_seconds: Duration,
}

#[cfg(test)]
impl Settled {
    /// The same margin whatever the file's clock.
    fn always(margin: Duration) -> Self {
        Self {
            fine: margin,
            whole_seconds: margin,
        }
    }
}

impl PluginCache {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir: Ok(dir),
            settled: SETTLED,
            kept_bytes: KEPT_BYTES,
            limits: CompileLimits::default(),
        }
    }

    /// This cache, compiling what it does not hold within `limits`.
    pub fn compiling_within(self, limits: CompileLimits) -> Self {
        Self { limits, ..self }
    }

    /// A cache with no folder: every plugin is compiled, the outcome saying `why`.
    pub fn without_folder(why: impl Into<String>) -> Self {
        Self {
            dir: Err(why.into()),
            settled: SETTLED,
            kept_bytes: KEPT_BYTES,
            limits: CompileLimits::default(),
        }
    }

    /// The folder, when there is one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref().ok()
    }

    /// The plugin at `path` for `engine`, which maps memory images when `copy_on_write`.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        copy_on_write: bool,
        path: &Path,
    ) -> Result<(Component, PluginFormat, CacheOutcome), CompileError> {
        let compile = |bytes: &[u8]| compile_bytes(engine, copy_on_write, bytes, &self.limits);
        let dir = match &self.dir {
            Ok(dir) => PrivateDir::open_or_create(dir),
            Err(why) => Err(why.clone()),
        };
        let dir = match dir {
            Ok(dir) => dir,
            Err(why) => {
                let (component, format) = compile(&read_plugin(path)?)?;
                return Ok((component, format, CacheOutcome::Uncached(why)));
            }
        };
        // Keyed by the engine too: warden compiles small and large plugins for engines
        // with different settings, and an entry is only valid for its own.
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = &hex(&hasher.0.finalize())[..16];
        let identity = FileIdentity::of(path);
        let id_name = identity
            .as_ref()
            .map(|identity| format!("{}-{engine_key}.id", identity.key()));
        let recorded = id_name
            .as_deref()
            .and_then(|id_name| recorded_content(&dir, id_name));
        if let Some(content) = &recorded {
            // The hash recorded for this very file: an entry found under it is used without
            // reading the plugin at all.
            let name = format!("{content}-{engine_key}");
            if let Ok(Some((component, format))) = load(engine, &dir, &name) {
                check_contract(engine, &component)?;
                used(&dir, &name);
                return Ok((component, format, CacheOutcome::Hit));
            }
        }
        let read_at = SystemTime::now();
        let bytes = read_plugin(path)?;
        let content = hex(&Sha256::digest(&bytes));
        let name = format!("{content}-{engine_key}");
        // Recorded once the entry exists, for a file that did not change while it was read.
        let record = |dir: &PrivateDir| {
            if let (Some(identity), Some(id_name)) = (&identity, &id_name)
                && recorded.as_deref() != Some(content.as_str())
                && identity.settled_before(read_at, self.settled)
                && FileIdentity::of(path).as_ref() == Some(identity)
            {
                let mut record = ID_MAGIC.to_vec();
                record.extend_from_slice(content.as_bytes());
                // A record that cannot be written costs the next start a hash, nothing more.
                let _ = dir.write(id_name, &record);
            }
        };
        let rebuilt = match load(engine, &dir, &name) {
            Ok(Some((component, format))) => {
                check_contract(engine, &component)?;
                record(&dir);
                used(&dir, &name);
                return Ok((component, format, CacheOutcome::Hit));
            }
            Ok(None) => None,
            Err(reason) => Some(reason),
        };
        let (component, format) = compile(&bytes)?;
        let outcome = match (store(&dir, &name, &component, format), rebuilt) {
            (Err(reason), _) => CacheOutcome::Uncached(reason),
            (Ok(()), Some(reason)) => CacheOutcome::Rebuilt(reason),
            (Ok(()), None) => CacheOutcome::Compiled,
        };
        if !matches!(outcome, CacheOutcome::Uncached(_)) {
            record(&dir);
            // The plugin is compiled and loaded whatever happens here: a folder that cannot
            // be pruned only keeps what it had.
            let _ = prune(&dir, &name, self.kept_bytes);
        }
        Ok((component, format, outcome))
    }
}

/// Marks the entry `name` as just used, for [`prune`]: its description's modification time.
fn used(dir: &PrivateDir, name: &str) {
    // Failing costs only the order in which entries are pruned.
    let _ = dir.touch(&format!("{name}.meta"));
}

/// Removes the least recently used entries (by their description's modification time, which
/// a load refreshes) until the folder's entries take at most `kept_bytes`, never `keep`, the
/// entry just written; then the identity records of entries no longer there, and temporary
/// files [`ABANDONED`] by writers that did not finish.
fn prune(dir: &PrivateDir, keep: &str, kept_bytes: u64) -> Result<(), String> {
    use std::collections::HashMap;
    let files = dir.files()?;
    // An entry's files by its name: the artifact, the description, their sizes, last use.
    let mut entries: HashMap<&str, (u64, SystemTime)> = HashMap::new();
    for file in &files {
        let Some(name) = file
            .name
            .strip_suffix(".cwasm")
            .or_else(|| file.name.strip_suffix(".meta"))
            .filter(|name| is_entry_name(name))
        else {
            continue;
        };
        let entry = entries.entry(name).or_insert((0, file.modified));
        entry.0 += file.size;
        if file.name.ends_with(".meta") {
            entry.1 = file.modified;
        }
    }
    let mut total: u64 = entries.values().map(|(size, _)| size).sum();
    let mut oldest_first: Vec<_> = entries
        .iter()
        .filter(|(name, _)| **name != keep)
        .map(|(name, (size, used))| (*used, *name, *size))
        .collect();
    oldest_first.sort();
    let mut removed = Vec::new();
    for (_, name, size) in oldest_first {
        if total <= kept_bytes {
            break;
        }
        dir.remove(&format!("{name}.meta"))?;
        dir.remove(&format!("{name}.cwasm"))?;
        total -= size;
        removed.push(name);
    }
    let now = SystemTime::now();
    for file in &files {
        if let Some(engine_key) = file
            .name
            .strip_suffix(".id")
            .filter(|stem| is_id_stem(stem))
            .and_then(|stem| stem.rsplit_once('-'))
            .map(|(_, engine_key)| engine_key)
        {
            // A record is 8 magic bytes and a sha256: cheap to read, and only after a compile.
            let points_to =
                recorded_content(dir, &file.name).map(|content| format!("{content}-{engine_key}"));
            let gone = points_to.is_none_or(|entry| {
                removed.contains(&entry.as_str()) || !entries.contains_key(entry.as_str())
            });
            if gone {
                dir.remove(&file.name)?;
            }
        } else if is_temporary_name(&file.name)
            && now
                .duration_since(file.modified)
                .is_ok_and(|age| age > ABANDONED)
        {
            dir.remove(&file.name)?;
        }
    }
    Ok(())
}

/// Whether `name` is an entry's, as [`PluginCache`] names them: the plugin's sha256 and the
/// engine's key, in lowercase hex. Pruning removes nothing else, so a cache folder that is
/// (or is made to be) some other folder loses no file warden did not write.
fn is_entry_name(name: &str) -> bool {
    name.split_once('-')
        .is_some_and(|(content, engine)| is_hex(content, 64) && is_hex(engine, 16))
}

/// Whether `stem` is an identity record's name without `.id` ([`FileIdentity::key`]).
fn is_id_stem(stem: &str) -> bool {
    stem.strip_prefix("id-")
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(identity, engine)| is_hex(identity, 32) && is_hex(engine, 16))
}

/// Whether `name` is a temporary file a writer of this cache makes (`PrivateDir::write`):
/// `.` an entry's, a description's or a record's name, `.` 24 hex digits, `.tmp`.
fn is_temporary_name(name: &str) -> bool {
    let Some((file, random)) = name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .and_then(|rest| rest.rsplit_once('.'))
    else {
        return false;
    };
    let kept = file
        .strip_suffix(".cwasm")
        .or_else(|| file.strip_suffix(".meta"))
        .is_some_and(is_entry_name)
        || file.strip_suffix(".id").is_some_and(is_id_stem);
    kept && is_hex(random, 24)
}

fn is_hex(text: &str, digits: usize) -> bool {
    text.len() == digits && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The most a plugin file may hold: a Python plugin, the interpreter inside, is about 20 MB.
pub const MAX_PLUGIN_BYTES: u64 = 128 << 20;

fn read_plugin(path: &Path) -> Result<Vec<u8>, String> {
    crate::config::read_bounded(path, MAX_PLUGIN_BYTES).map_err(|e| format!("cannot read: {e}"))
}

/// What tells one version of a plugin file from another without reading it: the change time
/// moves on every write, rename into place and `touch`, and no one but root can set it.
#[derive(Debug, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileIdentity {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }

    fn key(&self) -> String {
        let mut hasher = Sha256::new();
        for n in [self.dev, self.ino, self.size] {
            hasher.update(n.to_le_bytes());
        }
        for (secs, nanos) in [self.mtime, self.ctime] {
            hasher.update(secs.to_le_bytes());
            hasher.update(nanos.to_le_bytes());
        }
        format!("id-{}", &hex(&hasher.finalize())[..32])
    }

    /// Whether both its times are `settled` before `read_at`: by `settled.fine` when its
    /// change time (which nobody but root can set) has digits below the second.
    fn settled_before(&self, read_at: SystemTime, settled: Settled) -> bool {
        let settled = if self.ctime.1 != 0 {
            settled.fine
        } else {
            settled.whole_seconds
        };
        let Some(limit) = read_at
            .checked_sub(settled)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        else {
            return false;
        };
        let time = |(secs, nanos): (i64, i64)| {
            Duration::new(u64::try_from(secs).unwrap_or(u64::MAX), nanos as u32)
        };
        time(self.mtime) < limit && time(self.ctime) < limit
    }
}

/// The plugin sha256 recorded for a file identity, if there is a trusted record.
fn recorded_content(dir: &PrivateDir, id_name: &str) -> Option<String> {
    let record = dir.read(id_name).ok()??;
    let content = record.strip_prefix(ID_MAGIC.as_slice())?;
    (content.len() == 64 && content.iter().all(u8::is_ascii_hexdigit))
        .then(|| String::from_utf8_lossy(content).into_owned())
}

/// `Ok(None)` when there is no entry; `Err` when there is one that cannot be trusted.
fn load(
    engine: &Engine,
    dir: &PrivateDir,
    name: &str,
) -> Result<Option<(Component, PluginFormat)>, String> {
    let meta_name = format!("{name}.meta");
    let Some(meta) = dir.read(&meta_name)? else {
        return Ok(None);
    };
    if meta.len() != META_LEN || &meta[..META_MAGIC.len()] != META_MAGIC {
        return Err(format!(
            "{} is not a cache entry of this warden",
            dir.path().join(&meta_name).display()
        ));
    }
    let format = match meta[META_MAGIC.len()] {
        0 => PluginFormat::Component,
        1 => PluginFormat::CoreModule,
        other => return Err(format!("cache entry of unknown format {other}")),
    };
    let rest = &meta[META_MAGIC.len() + 1..];
    let crc = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
    let len = u64::from_le_bytes(rest[4..].try_into().expect("8 bytes"));
    let artifact_name = format!("{name}.cwasm");
    let Some(mut artifact) = dir.open(&artifact_name)? else {
        return Err(format!(
            "the cache entry {} is missing",
            dir.path().join(&artifact_name).display()
        ));
    };
    let mismatch = || "cache entry does not match its checksum".to_string();
    let read = |e: std::io::Error| {
        format!(
            "cannot read the cache entry {}: {e}",
            dir.path().join(&artifact_name).display()
        )
    };
    if artifact.metadata().map_err(read)?.len() != len {
        return Err(mismatch());
    }
    // Checked and loaded from a sealed copy where there is one, so what was checked is what
    // wasmtime maps, and nobody can change it meanwhile.
    let (artifact, seen, sum) = match sealed_copy(&artifact, len).map_err(read)? {
        Some(SealedCopy { file, len, crc }) => (file, len, crc),
        None => {
            let (seen, sum) = checksum_read(&mut artifact).map_err(read)?;
            (artifact, seen, sum)
        }
    };
    if seen != len || sum != crc {
        return Err(mismatch());
    }
    // SAFETY: the artifact is a file that only this user could have written, in a folder
    // only this user can change (both checked on the descriptors read through), and is only
    // ever replaced by a rename (never written in place); its CRC32 and length match the
    // description this cache wrote beside it, from `Component::serialize` on an engine with
    // the same compatibility hash; wasmtime checks its own header again.
    let component = unsafe { deserialize(engine, &artifact) }
        .map_err(|e| format!("cache entry rejected by wasmtime: {}", root_message(&e)))?;
    Ok(Some((component, format)))
}

/// The length and CRC32 of a file read in pieces: the page cache is read, no 36 MB of fresh
/// memory is zeroed for it.
fn checksum_read(mut artifact: impl Read + Seek) -> std::io::Result<(u64, u32)> {
    artifact.seek(std::io::SeekFrom::Start(0))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 256 << 10];
    let mut seen = 0u64;
    loop {
        match artifact.read(&mut buffer)? {
            0 => break,
            n => {
                hasher.update(&buffer[..n]);
                seen += n as u64;
            }
        }
    }
    Ok((seen, hasher.finalize()))
}

/// A sealed copy of a cache entry's artifact, with what it holds: its length and CRC32.
struct SealedCopy {
    file: File,
    len: u64,
    crc: u32,
}

/// The most threads one artifact is copied with: writes to the memory file take turns (the
/// kernel locks it per write), so more threads only help while one reads and sums its next
/// piece as another writes.
#[cfg(target_os = "linux")]
const COPY_THREADS: usize = 4;

/// The least one copying thread is given.
#[cfg(target_os = "linux")]
const COPY_PIECE_BYTES: usize = 8 << 20;

/// What one copying thread reads, sums and writes at a time: small enough to stay in the
/// CPU's cache between the three.
#[cfg(target_os = "linux")]
const COPY_BUFFER_BYTES: usize = 256 << 10;

/// A copy of the entry's artifact that nobody can change: a memory file (`memfd`) sealed
/// against writing, growing and shrinking, written a piece per core, each piece passing
/// through a small buffer where its CRC32 is summed while the bytes are in the CPU's cache.
/// `None` where there is no such thing (not Linux, or the kernel refused), and the entry is
/// then read into memory instead.
///
/// Why a copy: wasmtime maps what it loads, running code and mapping memory images straight
/// from the pages, and a mapped cache file truncated or written in place (by hand, by a tool,
/// by a test) would kill the whole host with SIGBUS, not just that plugin; reading it into
/// fresh memory instead made most of a Python plugin's cached start (the kernel zeroing
/// 36 MB for the read, then wasmtime's copy of it). Why written (`pwrite`), not read into a
/// mapping of the memory file: a page written whole is never zeroed first, while a mapped
/// page is faulted in and zeroed before the read overwrites it. Why in pieces on several
/// threads: one thread reads and sums while another writes (BENCHMARKS.md, "The cached
/// start").
#[cfg(target_os = "linux")]
fn sealed_copy(artifact: &File, len: u64) -> std::io::Result<Option<SealedCopy>> {
    use rustix::fs::{MemfdFlags, SealFlags};
    use std::os::unix::fs::FileExt;
    let Ok(size) = usize::try_from(len) else {
        return Ok(None);
    };
    if size == 0 || !Path::new("/proc/self/fd").is_dir() {
        return Ok(None);
    }
    let Ok(copy) = rustix::fs::memfd_create(
        "warden-plugin-cache-entry",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    ) else {
        return Ok(None);
    };
    let copy = File::from(copy);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores
        .min(COPY_THREADS)
        .min(size.div_ceil(COPY_PIECE_BYTES))
        .max(1);
    // Pieces on 2 MiB boundaries, so no two threads write the same page.
    let piece = size.div_ceil(threads).next_multiple_of(2 << 20);
    let pieces: Vec<(usize, usize)> = (0..size)
        .step_by(piece)
        .map(|offset| (offset, piece.min(size - offset)))
        .collect();
    let copy_ref = &copy;
    let fill = move |(offset, len): (usize, usize)| -> std::io::Result<crc32fast::Hasher> {
        let mut buffer = vec![0u8; COPY_BUFFER_BYTES.min(len)];
        let mut hasher = crc32fast::Hasher::new();
        let mut filled = 0;
        while filled < len {
            let at = (offset + filled) as u64;
            let want = buffer.len().min(len - filled);
            let n = artifact.read_at(&mut buffer[..want], at)?;
            if n == 0 {
                // Cut short since it was measured.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file is shorter than its description says",
                ));
            }
            hasher.update(&buffer[..n]);
            copy_ref.write_all_at(&buffer[..n], at)?;
            filled += n;
        }
        Ok(hasher)
    };
    let sums: Vec<_> = std::thread::scope(|scope| {
        // A piece whose thread cannot start is filled here instead.
        let others: Vec<_> = pieces[1..]
            .iter()
            .map(|&range| {
                std::thread::Builder::new()
                    .name("warden-cache-copy".into())
                    .spawn_scoped(scope, move || fill(range))
                    .map_err(|_| range)
            })
            .collect();
        let mut sums = vec![fill(pieces[0])];
        for other in others {
            sums.push(match other {
                Ok(thread) => thread.join().unwrap_or_else(|_| {
                    Err(std::io::Error::other(
                        "a thread copying the cache entry panicked",
                    ))
                }),
                Err(range) => fill(range),
            });
        }
        sums
    });
    let mut crc = crc32fast::Hasher::new();
    for sum in sums {
        crc.combine(&sum?);
    }
    rustix::fs::fcntl_add_seals(
        &copy,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    Ok(Some(SealedCopy {
        file: copy,
        len,
        crc: crc.finalize(),
    }))
}

#[cfg(not(target_os = "linux"))]
fn sealed_copy(_artifact: &File, _len: u64) -> std::io::Result<Option<SealedCopy>> {
    Ok(None)
}

/// The checked artifact handed to wasmtime: a sealed copy is mapped by wasmtime, a cache file
/// is read into memory (see [`sealed_copy`]).
///
/// # Safety
///
/// As [`Component::deserialize`].
unsafe fn deserialize(engine: &Engine, artifact: &File) -> wasmtime::Result<Component> {
    #[cfg(target_os = "linux")]
    if let Ok(seals) = rustix::fs::fcntl_get_seals(artifact)
        && seals.contains(rustix::fs::SealFlags::WRITE | rustix::fs::SealFlags::SHRINK)
    {
        use std::os::fd::AsRawFd;
        let path = format!("/proc/self/fd/{}", artifact.as_raw_fd());
        // SAFETY: as this function's; and the file can no longer change (sealed).
        return unsafe { Component::deserialize_file(engine, path) };
    }
    let mut bytes = Vec::new();
    (&*artifact).seek(std::io::SeekFrom::Start(0))?;
    (&*artifact).read_to_end(&mut bytes)?;
    // SAFETY: as this function's.
    unsafe { Component::deserialize(engine, bytes) }
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
    let mut meta = Vec::with_capacity(META_LEN);
    meta.extend_from_slice(META_MAGIC);
    meta.push(match format {
        PluginFormat::Component => 0,
        PluginFormat::CoreModule => 1,
    });
    meta.extend_from_slice(&crc32fast::hash(&artifact).to_le_bytes());
    meta.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
    dir.write(&format!("{name}.cwasm"), &artifact)?;
    dir.write(&format!("{name}.meta"), &meta)
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

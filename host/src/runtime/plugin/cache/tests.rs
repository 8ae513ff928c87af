//! The compiled-plugin cache against folders and files planted by another user (tests run
//! as root, so "another user" is uid 65534 given the files with chown), folders others can
//! write, links, and writers racing each other.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use wasmtime::Engine;

use super::user_cache_dir_from;
use crate::runtime::plugin::{CacheOutcome, PluginCache};

/// Not the user running the tests (nobody).
const OTHER_UID: u32 = 65534;

fn plugin() -> &'static Path {
    Path::new(warden_tests::artifacts::TRIVIAL)
}

fn load(dir: &Path, engine: &Engine) -> CacheOutcome {
    PluginCache::new(dir.to_owned())
        .load_or_compile(engine, false, plugin())
        .expect("the plugin compiles")
        .2
}

/// The files in `dir` with their contents, sorted by name.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// A folder holding a valid entry for the plugin, as this user's cache wrote it.
fn valid_entry_in(dir: &Path, engine: &Engine) {
    let made = dir.with_extension("made");
    assert_eq!(load(&made, engine), CacheOutcome::Compiled);
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in contents(&made) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Gives `path` to [`OTHER_UID`]; false (the test has nothing to show) when not root.
fn give_away(path: &Path) -> bool {
    match std::os::unix::fs::chown(path, Some(OTHER_UID), Some(OTHER_UID)) {
        Ok(()) => true,
        Err(e) if rustix::process::geteuid().as_raw() != 0 => {
            eprintln!("skipped: only root can give {} away: {e}", path.display());
            false
        }
        Err(e) => panic!("chown {}: {e}", path.display()),
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn with_extension(dir: &Path, extension: &str) -> Option<PathBuf> {
    entries(dir)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == extension))
}

/// The entry's artifact, the native code.
fn artifact(dir: &Path) -> Option<PathBuf> {
    with_extension(dir, "cwasm")
}

/// The entry's description (format, checksum).
fn meta(dir: &Path) -> Option<PathBuf> {
    with_extension(dir, "meta")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn assert_uncached(outcome: &CacheOutcome, reason: &str) {
    match outcome {
        CacheOutcome::Uncached(why) => assert!(why.contains(reason), "{why}"),
        other => panic!("expected compiled, not cached ({reason}); got {other:?}"),
    }
}

fn assert_rebuilt(outcome: &CacheOutcome, reason: &str) {
    match outcome {
        CacheOutcome::Rebuilt(why) => assert!(why.contains(reason), "{why}"),
        other => panic!("expected compiled again ({reason}); got {other:?}"),
    }
}

#[test]
fn a_new_cache_folder_is_owner_only_and_its_entries_are_too() {
    let engine = Engine::default();
    let scratch = tempfile::tempdir().unwrap();
    let parent = scratch.path().join("cache");
    let dir = parent.join("warden");

    assert_eq!(load(&dir, &engine), CacheOutcome::Compiled);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(
        mode(&parent),
        0o700,
        "folders made on the way are private too"
    );
    let files = entries(&dir);
    assert_eq!(
        [artifact(&dir), meta(&dir)].map(|f| f.is_some()),
        [true, true],
        "an artifact and its description: {files:?}"
    );
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
        assert!(
            !file.to_string_lossy().ends_with(".tmp"),
            "a temporary left"
        );
    }
    assert_eq!(load(&dir, &engine), CacheOutcome::Hit);
}

#[test]
fn a_planted_folder_of_another_user_is_neither_loaded_nor_written() {
    let engine = Engine::default();
    let scratch = tempfile::tempdir().unwrap();
    let planted = scratch.path().join("planted");
    valid_entry_in(&planted, &engine);
    for file in entries(&planted) {
        if !give_away(&file) {
            return;
        }
    }
    assert!(give_away(&planted));
    let before = contents(&planted);

    let outcome = load(&planted, &engine);
    assert_uncached(
        &outcome,
        &format!(
            "the cache folder {} is owned by uid {OTHER_UID}, not by this user",
            planted.display()
        ),
    );
    assert_eq!(
        contents(&planted),
        before,
        "nothing written to the planted folder"
    );
}

#[test]
fn a_folder_other_users_can_write_is_refused_even_if_this_user_owns_it() {
    let engine = Engine::default();
    let scratch = tempfile::tempdir().unwrap();
    for (name, mode) in [("world", 0o777), ("group", 0o770), ("sticky", 0o1777)] {
        let dir = scratch.path().join(name);
        valid_entry_in(&dir, &engine);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let before = contents(&dir);

        let outcome = load(&dir, &engine);
        assert_uncached(
            &outcome,
            &format!("can be written by other users (mode {mode:04o})"),
        );
        assert_eq!(contents(&dir), before, "{name}: nothing written");
    }
}

#[test]
fn an_entry_of_another_user_in_a_good_folder_is_compiled_again_and_replaced() {
    let engine = Engine::default();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("cache");
    assert_eq!(load(&dir, &engine), CacheOutcome::Compiled);
    for entry in [artifact(&dir).unwrap(), meta(&dir).unwrap()] {
        if !give_away(&entry) {
            return;
        }

        let outcome = load(&dir, &engine);
        assert_rebuilt(
            &outcome,
            &format!(
                "the cache entry {} is owned by uid {OTHER_UID}",
                entry.display()
            ),
        );
        let replaced = std::fs::symlink_metadata(&entry).unwrap();
        assert_eq!(replaced.uid(), rustix::process::geteuid().as_raw());
        assert_eq!(replaced.mode() & 0o7777, 0o600);
        assert_eq!(load(&dir, &engine), CacheOutcome::Hit);
    }
}

#[test]
fn an_entry_others_can_write_or_a_link_is_compiled_again() {
    let engine = Engine::default();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("cache");
    assert_eq!(load(&dir, &engine), CacheOutcome::Compiled);
    let entry = artifact(&dir).unwrap();

    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_rebuilt(
        &load(&dir, &engine),
        "can be written by other users (mode 0666)",
    );
    assert_eq!(mode(&entry), 0o600);

    // A link to a valid entry elsewhere: whoever made the link chose what it points to.
    let elsewhere = scratch.path().join("elsewhere.cwasm");
    std::fs::rename(&entry, &elsewhere).unwrap();
    symlink(&elsewhere, &entry).unwrap();
    assert_rebuilt(&load(&dir, &engine), "is a symbolic link");
    assert!(!std::fs::symlink_metadata(&entry).unwrap().is_symlink());
    assert_eq!(load(&dir, &engine), CacheOutcome::Hit);
}

#[test]
fn a_link_planted_at_a_predictable_temporary_name_is_not_written_through() {
    let engine = Engine::default();
    let scratch = tempfile::tempdir().unwrap();
    let made = scratch.path().join("made");
    assert_eq!(load(&made, &engine), CacheOutcome::Compiled);
    let victim = scratch.path().join("victim");
    std::fs::write(&victim, "the user's own file").unwrap();
    // Links at the names a writer using the entry's name and its process id would pick.
    let dir = scratch.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    for (name, _) in contents(&made) {
        let stem = Path::new(&name)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for planted in [
            format!("{stem}.tmp{}", std::process::id()),
            format!(".{name}.tmp"),
        ] {
            let _ = symlink(&victim, dir.join(planted));
        }
    }

    assert_eq!(load(&dir, &engine), CacheOutcome::Compiled);
    let victim_now = std::fs::read(&victim).unwrap();
    assert!(
        victim_now == b"the user's own file",
        "the victim was written through a link: now {} bytes",
        victim_now.len()
    );
    assert_eq!(load(&dir, &engine), CacheOutcome::Hit);
}

#[test]
fn writers_racing_on_one_entry_each_write_their_own_file() {
    let engine = Engine::default();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("cache");
    let outcomes: Vec<CacheOutcome> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4).map(|_| s.spawn(|| load(&dir, &engine))).collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for outcome in &outcomes {
        assert!(
            matches!(outcome, CacheOutcome::Compiled | CacheOutcome::Hit),
            "{outcomes:?}"
        );
    }
    let files = entries(&dir);
    assert!(
        files.iter().all(|f| !f.to_string_lossy().ends_with(".tmp")),
        "no temporary left: {files:?}"
    );
    assert_eq!(load(&dir, &engine), CacheOutcome::Hit);
}

/// The size of a component's native code: tells the trivial plugin's from the probe's.
fn code_size(component: &wasmtime::component::Component) -> usize {
    let range = component.image_range();
    range.end as usize - range.start as usize
}

#[test]
fn a_files_identity_settles_after_what_its_change_time_can_tell_apart() {
    use std::time::{Duration, SystemTime};
    let read_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let identity = |mtime, ctime| super::FileIdentity {
        dev: 1,
        ino: 2,
        size: 3,
        mtime,
        ctime,
    };
    let settled = |mtime, ctime| identity(mtime, ctime).settled_before(read_at, super::SETTLED);
    // Times to the nanosecond: the kernel's clock, which moves every tick.
    assert!(settled((999_999, 850_000_000), (999_999, 850_000_000)));
    assert!(!settled((999_999, 950_000_000), (999_999, 950_000_000)));
    // The modification time can be set to anything; the change time alone does not settle it.
    assert!(!settled((999_999, 950_000_000), (999_999, 850_000_000)));
    // Whole seconds: perhaps all the filesystem keeps, so the file is not trusted for longer.
    assert!(!settled((999_998, 0), (999_998, 0)));
    assert!(!settled((999_999, 850_000_000), (999_998, 0)));
    assert!(settled((999_996, 0), (999_996, 0)));
}

#[test]
fn a_settled_plugin_files_identity_stands_for_its_hash_until_the_file_changes() {
    let engine = Engine::default();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("cache");
    let file = scratch.path().join("plugin.wasm");
    std::fs::copy(plugin(), &file).unwrap();
    let load_at = |cache: &PluginCache, path: &Path| {
        let (component, _, outcome) = cache.load_or_compile(&engine, false, path).unwrap();
        (code_size(&component), outcome)
    };

    // Just written: its times could still name a later version too, so nothing is recorded.
    let fresh = PluginCache {
        settled: super::Settled::always(std::time::Duration::from_secs(3600)),
        ..PluginCache::new(dir.clone())
    };
    let (trivial_size, outcome) = load_at(&fresh, &file);
    assert_eq!(outcome, CacheOutcome::Compiled);
    assert_eq!(with_extension(&dir, "id"), None);
    assert_eq!(load_at(&fresh, &file).1, CacheOutcome::Hit);
    assert_eq!(with_extension(&dir, "id"), None);

    // Settled: recorded, then used without reading the file. Shown by pointing the record at
    // the probe's entry: the trivial plugin's file then loads the probe.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let settled = PluginCache {
        settled: super::Settled::always(std::time::Duration::ZERO),
        ..PluginCache::new(dir.clone())
    };
    assert_eq!(load_at(&settled, &file), (trivial_size, CacheOutcome::Hit));
    let record = with_extension(&dir, "id").expect("the file's identity recorded");
    assert_eq!(mode(&record), 0o600);
    let probe = Path::new(warden_tests::artifacts::PROBE);
    let (probe_size, _) = load_at(&settled, probe);
    assert_ne!(probe_size, trivial_size);
    let probe_hash = {
        use sha2::Digest;
        super::hex(&sha2::Sha256::digest(std::fs::read(probe).unwrap()))
    };
    let mut planted = super::ID_MAGIC.to_vec();
    planted.extend_from_slice(probe_hash.as_bytes());
    std::fs::write(&record, &planted).unwrap();
    assert_eq!(load_at(&settled, &file), (probe_size, CacheOutcome::Hit));
    // A record another user owns is not believed: the file is hashed, the record replaced.
    if give_away(&record) {
        assert_eq!(load_at(&settled, &file), (trivial_size, CacheOutcome::Hit));
        let replaced = std::fs::metadata(&record).unwrap();
        assert_eq!(replaced.uid(), rustix::process::geteuid().as_raw());
        std::fs::write(&record, &planted).unwrap();
        assert_eq!(load_at(&settled, &file), (probe_size, CacheOutcome::Hit));
    }

    // Changed in place, its modification time put back: the change time still moves, so the
    // file is hashed again and its own entry loaded.
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::fs::write(&file, std::fs::read(plugin()).unwrap()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    assert_eq!(load_at(&fresh, &file), (trivial_size, CacheOutcome::Hit));
}

#[test]
fn the_default_folder_is_the_users_own_cache_folder() {
    let home = Some(PathBuf::from("/home/alice"));
    assert_eq!(
        user_cache_dir_from(Some("/xdg/cache".into()), home.clone()),
        Some(PathBuf::from(if cfg!(target_os = "macos") {
            "/home/alice/Library/Caches/warden"
        } else {
            "/xdg/cache/warden"
        }))
    );
    let home_cache = Some(PathBuf::from(if cfg!(target_os = "macos") {
        "/home/alice/Library/Caches/warden"
    } else {
        "/home/alice/.cache/warden"
    }));
    assert_eq!(user_cache_dir_from(None, home.clone()), home_cache);
    // Relative values are ignored, as the XDG spec says: never a folder under the current one.
    assert_eq!(
        user_cache_dir_from(Some("cache".into()), home.clone()),
        home_cache
    );
    assert_eq!(user_cache_dir_from(None, Some("alice".into())), None);
    assert_eq!(user_cache_dir_from(None, None), None);
}

#[test]
fn a_damaged_entry_is_compiled_again_and_a_loaded_one_outlives_its_file() {
    let engine = Engine::default();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("cache");
    assert_eq!(load(&dir, &engine), CacheOutcome::Compiled);
    let entry = artifact(&dir).unwrap();

    // One byte changed in place, the length kept: the checksum tells.
    let mut bytes = std::fs::read(&entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    assert_rebuilt(&load(&dir, &engine), "does not match its checksum");

    // A loaded entry does not run from the cache file's pages: the file truncated and
    // rewritten in place under it (which would be SIGBUS for a mapping of the file), the
    // component still makes instances.
    let (component, _, outcome) = PluginCache::new(dir.clone())
        .load_or_compile(&engine, false, plugin())
        .expect("the plugin loads");
    assert_eq!(outcome, CacheOutcome::Hit);
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&entry)
        .unwrap();
    // Copying the component's image out reads every page of it.
    let image = component
        .serialize()
        .expect("the component's image is all there");
    std::fs::write(&entry, b"written in place").unwrap();
    assert_eq!(component.serialize().unwrap(), image);
    assert_rebuilt(&load(&dir, &engine), "does not match");
}

#[cfg(target_os = "linux")]
#[test]
fn an_entry_copied_in_pieces_is_what_its_file_holds_summed_and_sealed() {
    use std::io::{Read, Write};
    // More than two pieces' worth and not a whole number of pages: pieces of unequal length.
    let len = 2 * super::COPY_PIECE_BYTES + 4097;
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("entry.cwasm");
    std::fs::write(&path, &bytes).unwrap();
    let file = std::fs::File::open(&path).unwrap();

    let copy = super::sealed_copy(&file, len as u64)
        .unwrap()
        .expect("a memory file on Linux");
    assert_eq!(copy.len, len as u64);
    assert_eq!(copy.crc, crc32fast::hash(&bytes));
    let mut held = Vec::new();
    (&copy.file).read_to_end(&mut held).unwrap();
    assert!(held == bytes, "the copy holds other bytes than the file");
    // Sealed: what was summed is what stays.
    assert!((&copy.file).write_all(b"changed").is_err());
    assert!(copy.file.set_len(1).is_err());
    assert!(copy.file.set_len(len as u64 + 1).is_err());

    // A file shorter than its description (cut since it was measured) is an error, not a
    // copy with a zeroed tail.
    let short = super::sealed_copy(&file, len as u64 + 1).err();
    assert_eq!(
        short.map(|e| e.kind()),
        Some(std::io::ErrorKind::UnexpectedEof)
    );
}

#[test]
fn the_least_recently_used_entries_go_when_the_folder_outgrows_its_room() {
    use warden_tests::artifacts::{PROBE, TRIVIAL, VICTOROPS, WITNESS};
    let engine = Engine::default();
    let scratch = tempfile::tempdir().unwrap();
    let hash = |plugin: &str| {
        use sha2::Digest;
        super::hex(&sha2::Sha256::digest(std::fs::read(plugin).unwrap()))
    };
    // What each plugin's entry (artifact and description) takes, from a folder of its own.
    let entry_bytes = |dir: &Path, plugin: &str| -> u64 {
        let prefix = hash(plugin);
        entries(dir)
            .iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    };
    let measured = scratch.path().join("measured");
    let size = |plugin: &str| {
        PluginCache::new(measured.clone())
            .load_or_compile(&engine, false, Path::new(plugin))
            .unwrap();
        entry_bytes(&measured, plugin)
    };
    let (trivial, witness, victorops) = (size(TRIVIAL), size(WITNESS), size(VICTOROPS));

    let dir = scratch.path().join("cache");
    let cache = |kept_bytes| PluginCache {
        kept_bytes,
        settled: super::Settled::always(std::time::Duration::ZERO),
        ..PluginCache::new(dir.clone())
    };
    let outcome = |cache: &PluginCache, plugin: &str| {
        let outcome = cache
            .load_or_compile(&engine, false, Path::new(plugin))
            .unwrap()
            .2;
        // Apart in time, so last uses are ordered as the calls are.
        std::thread::sleep(std::time::Duration::from_millis(15));
        outcome
    };
    let roomy = cache(u64::MAX);
    for plugin in [TRIVIAL, PROBE, WITNESS] {
        assert_eq!(outcome(&roomy, plugin), CacheOutcome::Compiled);
    }
    // Compiled first, used last: the trivial plugin is now the most recently used.
    assert_eq!(outcome(&roomy, TRIVIAL), CacheOutcome::Hit);
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let age = |path: &Path| {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    };
    let entry = format!("{}-{}", "a".repeat(64), "b".repeat(16));
    let abandoned = dir.join(format!(".{entry}.cwasm.{}.tmp", "0".repeat(24)));
    let in_progress = dir.join(format!(".{entry}.meta.{}.tmp", "1".repeat(24)));
    std::fs::write(&abandoned, b"half").unwrap();
    std::fs::write(&in_progress, b"half").unwrap();
    age(&abandoned);
    // Files warden did not write, old and named much like its own: never removed, nor
    // counted against the room.
    let foreign: Vec<_> = [
        "backup-2024.id",
        ".session.tmp",
        ".notes.cwasm.tmp",
        "notes.cwasm",
        "photo-1.meta",
    ]
    .iter()
    .map(|name| dir.join(name))
    .collect();
    for file in &foreign {
        std::fs::write(file, vec![0u8; 1 << 20]).unwrap();
        age(file);
    }

    let only_entries_of = |kept: &[&str]| {
        for plugin in [TRIVIAL, PROBE, WITNESS, VICTOROPS] {
            assert_eq!(
                entry_bytes(&dir, plugin) > 0,
                kept.contains(&plugin),
                "{plugin}"
            );
        }
    };

    // Room for three entries, four after this compile: the least recently used one goes.
    let tight = cache(trivial + witness + victorops);
    assert_eq!(outcome(&tight, VICTOROPS), CacheOutcome::Compiled);
    only_entries_of(&[TRIVIAL, WITNESS, VICTOROPS]);
    // Identity records only for entries still there; the abandoned write removed, not the
    // one that may still be going on.
    let recorded: Vec<_> = entries(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "id") && !foreign.contains(p))
        .map(|p| std::fs::read(p).unwrap()[super::ID_MAGIC.len()..].to_vec())
        .collect();
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    assert!(!recorded.contains(&hash(PROBE).into_bytes()));
    assert!(!abandoned.exists());
    assert!(in_progress.exists());
    for file in &foreign {
        assert!(file.exists(), "{}", file.display());
    }

    // No room at all: a load removes nothing; a compile keeps the entry it wrote, and only it.
    assert_eq!(outcome(&cache(0), VICTOROPS), CacheOutcome::Hit);
    assert_eq!(entry_bytes(&dir, TRIVIAL), trivial);
    std::fs::remove_file(artifact_of(&dir, &hash(WITNESS))).unwrap();
    assert_rebuilt(&outcome(&cache(0), WITNESS), "missing");
    only_entries_of(&[WITNESS]);
    assert_eq!(entry_bytes(&dir, WITNESS), witness);
}

fn artifact_of(dir: &Path, hash: &str) -> PathBuf {
    entries(dir)
        .into_iter()
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(hash) && name.ends_with(".cwasm")
        })
        .expect("an artifact")
}

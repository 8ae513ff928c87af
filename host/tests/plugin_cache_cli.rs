//! The compiled-plugin cache as `warden check` and `warden test` use it: the user's own
//! cache folder (`$XDG_CACHE_HOME/warden` here), never one another user planted. Tests run as
//! root, so "another user" is uid 65534 given the folder with chown.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use warden_tests::{Scratch, artifacts, toml_path};

const OTHER_UID: u32 = 65534;

fn warden(args: &[&str], dir: &Path, xdg_cache_home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", xdg_cache_home)
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

/// Gives `path` and what it holds to another user; false when not root (nothing to show).
fn give_away(path: &Path) -> bool {
    let mut paths = vec![path.to_owned()];
    paths.extend(std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()));
    for p in paths {
        if let Err(e) = std::os::unix::fs::chown(&p, Some(OTHER_UID), Some(OTHER_UID)) {
            eprintln!("skipped: cannot give {} to another user: {e}", p.display());
            return false;
        }
    }
    true
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn mode(path: &Path) -> u32 {
    let metadata = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    metadata.permissions().mode() & 0o7777
}

#[test]
fn warden_check_uses_the_users_cache_folder_and_refuses_one_another_user_planted() {
    let scratch = Scratch::new();
    let config = scratch.config(&format!(
        "[environments.main]\n[flows.probe]\nenvironment = \"main\"\nplugin = {}\n",
        toml_path(artifacts::PROBE)
    ));
    let config = config.to_str().unwrap();
    let own = scratch.path().join("own-cache");
    let out = warden(&["check", "--config", config], scratch.path(), &own);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("compiled (now cached)"),
        "{}",
        text(&out)
    );
    let folder = own.join("warden");
    assert_eq!(mode(&folder), 0o700);
    let out = warden(&["check", "--config", config], scratch.path(), &own);
    assert!(
        text(&out).contains("loaded from the plugin cache"),
        "{}",
        text(&out)
    );

    // The same, valid entry in a folder another user made first.
    if !give_away(&folder) {
        return;
    }
    let planted = files(&folder);
    let out = warden(&["check", "--config", config], scratch.path(), &own);
    assert!(out.status.success(), "{}", text(&out));
    let refused = format!(
        "compiled, not cached: the cache folder {} is owned by uid {OTHER_UID}, not by this user",
        folder.display()
    );
    assert!(text(&out).contains(&refused), "{}", text(&out));
    assert_eq!(
        files(&folder),
        planted,
        "nothing written to the planted folder"
    );
}

const SUITE: &str = r#"
[event]
user = { email = "alice@example.com" }

[[case]]
name = "approves"
vars = { action = "approve:fine" }
expect = { decision = "approve", reason = "fine" }
"#;

#[test]
fn warden_test_keeps_compiled_plugins_in_the_users_cache_folder_and_says_when_it_cannot() {
    let scratch = Scratch::new();
    scratch.write("suite/probe.toml", SUITE);
    let own = scratch.path().join("own-cache");
    let run = || {
        warden(
            &["test", "suite", "--plugin", artifacts::PROBE],
            scratch.path(),
            &own,
        )
    };
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("note "), "{}", text(&out));
    let folder = own.join("warden");
    assert_eq!(mode(&folder), 0o700);
    let entries = files(&folder);
    // One plugin, one entry: its compiled code, the code's checksum record, and the record of
    // which plugin file it was compiled from.
    let with_extension = |ext: &str| {
        entries
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .count()
    };
    assert_eq!(with_extension("cwasm"), 1, "{entries:?}");
    assert_eq!(with_extension("meta"), 1, "{entries:?}");
    assert_eq!(with_extension("id"), 1, "{entries:?}");
    assert_eq!(entries.len(), 3, "{entries:?}");
    for entry in &entries {
        assert_eq!(mode(entry), 0o600, "{}", entry.display());
    }

    if !give_away(&folder) {
        return;
    }
    let out = run();
    assert!(out.status.success(), "{}", text(&out));
    let note = format!(
        "note {}: compiled, not cached: the cache folder {} is owned by uid {OTHER_UID}",
        artifacts::PROBE,
        folder.display()
    );
    assert!(text(&out).contains(&note), "{}", text(&out));
    assert_eq!(files(&folder), entries);
}

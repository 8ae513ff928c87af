//! Python plugins for the tests, built by `scripts/build-python-plugin` (componentize-py)
//! into the target dir, each once per test binary. Without componentize-py the tests that
//! need it are skipped, each saying so ([`componentize_py_or_skip`]), unless
//! `WARDEN_REQUIRE_PYTHON` is set: `scripts/test` installs componentize-py and sets it, so
//! there they fail instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Where the tests' Python plugins and their compiled cache go.
pub fn build_dir() -> PathBuf {
    Path::new(env!("OUT_DIR")).join("python")
}

/// Runs `scripts/build-python-plugin DIR OUT` and returns what it printed.
pub fn run_build_script(plugin_dir: &Path, out: &Path) -> Output {
    let script = repo_root().join("scripts/build-python-plugin");
    Command::new(&script)
        .arg(plugin_dir)
        .arg(out)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (it needs python3 on PATH): {e}",
                script.display()
            )
        })
}

static BUILT: Mutex<BTreeMap<PathBuf, PathBuf>> = Mutex::new(BTreeMap::new());

/// The component built from the Python plugin in `dir` (relative to the repository's root,
/// e.g. `plugins/victorops-python`): built on the first call in this test binary, then
/// reused. Panics with the build's output when it fails, e.g. when componentize-py is
/// missing.
pub fn plugin(dir: &str) -> PathBuf {
    let source = repo_root().join(dir);
    // Held while building: builds one at a time (each takes a core for ~20 s).
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(out) = built.get(&source) {
        return out.clone();
    }
    let out = build_dir().join(format!("{}.wasm", dir.replace('/', "-")));
    let output = run_build_script(&source, &out);
    if !output.status.success() {
        panic!(
            "building the Python plugin {dir} failed (scripts/build-python-plugin; `scripts/test` installs componentize-py):\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert!(out.is_file(), "the build said it wrote {}", out.display());
    built.insert(source, out.clone());
    out
}

/// Whether a test that builds a Python plugin can run: true when componentize-py runs. When
/// it does not, the test is skipped (this prints why) unless `WARDEN_REQUIRE_PYTHON` is set,
/// when it fails: CI sets it, so a broken install cannot pass unnoticed.
pub fn componentize_py_or_skip(test: &str) -> bool {
    let runs = Command::new("componentize-py")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return true;
    }
    if std::env::var_os("WARDEN_REQUIRE_PYTHON").is_some() {
        panic!(
            "{test}: componentize-py does not run, and WARDEN_REQUIRE_PYTHON is set; install it with `pip install componentize-py=={}`",
            std::fs::read_to_string(repo_root().join("guest-sdk/python/componentize-py.version"))
                .unwrap_or_default()
                .trim()
        );
    }
    eprintln!(
        "SKIPPED {test}: componentize-py is not installed (set WARDEN_REQUIRE_PYTHON to make this a failure)"
    );
    false
}

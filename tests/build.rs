//! Builds every plugin crate under `plugins/` and `tests/plugins/` for wasm32-wasip2 (and
//! the allowlist example also for wasm32-wasip1), so `cargo test` needs no manual step.
//! The paths of the built files become constants in `warden_tests::artifacts`. They are
//! built as the scripts build them, with the workspace's `plugin` profile.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins also built as core modules, to test loading wasm32-wasip1 plugins.
const ALSO_WASIP1: &[&str] = &["allowlist"];

struct PluginCrate {
    package: String,
    lib: String,
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = out_dir.join("wasm");

    for watched in ["wit", "guest-sdk", "plugins", "tests/plugins"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let mut crates = Vec::new();
    for folder in ["plugins", "tests/plugins"] {
        crates.extend(plugin_crates(&root.join(folder)));
    }
    crates.sort_by(|a, b| a.lib.cmp(&b.lib));

    let mut constants = String::new();
    build(&root, &target_dir, "wasm32-wasip2", &crates);
    for c in &crates {
        let path = target_dir
            .join("wasm32-wasip2/plugin")
            .join(format!("{}.wasm", c.lib));
        constants.push_str(&constant(&c.lib.to_uppercase(), &path));
    }
    let wasip1: Vec<&PluginCrate> = crates
        .iter()
        .filter(|c| ALSO_WASIP1.contains(&c.lib.as_str()))
        .collect();
    let wasip1_owned: Vec<PluginCrate> = wasip1
        .iter()
        .map(|c| PluginCrate {
            package: c.package.clone(),
            lib: c.lib.clone(),
        })
        .collect();
    build(&root, &target_dir, "wasm32-wasip1", &wasip1_owned);
    for c in &wasip1_owned {
        let path = target_dir
            .join("wasm32-wasip1/plugin")
            .join(format!("{}.wasm", c.lib));
        constants.push_str(&constant(
            &format!("{}_WASIP1", c.lib.to_uppercase()),
            &path,
        ));
    }
    std::fs::write(out_dir.join("artifacts.rs"), constants).unwrap();
}

fn constant(name: &str, path: &Path) -> String {
    assert!(
        path.is_file(),
        "expected the build to produce {}",
        path.display()
    );
    format!(
        "pub const {name}: &str = {:?};\n",
        path.display().to_string()
    )
}

fn plugin_crates(folder: &Path) -> Vec<PluginCrate> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let doc: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        let package = doc["package"]["name"].as_str().unwrap().to_string();
        let lib = doc
            .get("lib")
            .and_then(|l| l.get("name"))
            .and_then(|n| n.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| package.replace('-', "_"));
        found.push(PluginCrate { package, lib });
    }
    found
}

fn build(root: &Path, target_dir: &Path, target: &str, crates: &[PluginCrate]) {
    if crates.is_empty() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--profile", "plugin", "--target", target])
        .arg("--target-dir")
        .arg(target_dir);
    for c in crates {
        cmd.args(["-p", &c.package]);
    }
    // The outer build's flags are for the host, not for wasm.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build the plugins");
    if !status.success() {
        panic!(
            "building the plugins for {target} failed (see above). If the target is missing, run `rustup target add {target}`."
        );
    }
}

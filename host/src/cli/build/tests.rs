use std::collections::BTreeSet;
use std::path::Path;

use super::*;

fn files_under(root: &Path, dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n != "tests" && n != "__pycache__")
            {
                files_under(root, &path, keep, out);
            }
        } else if keep(&path) {
            out.insert(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

#[test]
fn the_bundle_holds_every_sdk_module_and_wit_file() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let is_py = |p: &Path| p.extension().is_some_and(|e| e == "py");
    let is_wit = |p: &Path| p.extension().is_some_and(|e| e == "wit");
    let sdk_dir = repo.join("guest-sdk/python");
    let mut sdk = BTreeSet::new();
    files_under(&sdk_dir, &sdk_dir, &is_py, &mut sdk);
    let bundled: BTreeSet<String> = bundle::SDK.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(
        bundled, sdk,
        "host/src/build/bundle.rs must list guest-sdk/python's modules"
    );
    let wit_dir = repo.join("wit");
    let mut wit = BTreeSet::new();
    files_under(&wit_dir, &wit_dir, &is_wit, &mut wit);
    let bundled: BTreeSet<String> = bundle::WIT.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(
        bundled, wit,
        "host/src/build/bundle.rs must list wit/'s files"
    );
    assert_eq!(
        componentize_py_version(),
        std::fs::read_to_string(sdk_dir.join("componentize-py.version"))
            .unwrap()
            .trim()
    );
}

/// What componentize-py 0.25.1 prints for a syntax error in a helper module (run by hand).
const SYNTAX_ERROR: &str = r#"Traceback (most recent call last):
  File "/usr/bin/componentize-py", line 8, in <module>
    sys.exit(script())
             ^^^^^^^^
AssertionError: Traceback (most recent call last):
  File "/0/warden_app.py", line 50, in <module>
    import plugin  # noqa: E402 - the author's module, after the SDK is ready
    ^^^^^^^^^^^^^
  File "/1/plugin.py", line 2, in <module>
    import helper
  File "/1/helper.py", line 4
    def f(x)
            ^
SyntaxError: expected ':'


Caused by:
    SyntaxError: expected ':' (helper.py, line 4)
"#;

#[test]
fn a_python_error_names_the_authors_file_and_line() {
    let error = python_error(SYNTAX_ERROR, Path::new("/home/a/on-duty"));
    assert_eq!(
        error.location.as_deref(),
        Some("/home/a/on-duty/helper.py:4")
    );
    assert_eq!(error.summary, "SyntaxError: expected ':'");
    assert!(
        error.traceback.starts_with("Traceback"),
        "{}",
        error.traceback
    );
    assert!(
        error
            .traceback
            .contains(r#"File "<warden SDK>/warden_app.py""#)
    );
    assert!(
        !error.traceback.contains("Caused by"),
        "{}",
        error.traceback
    );
    assert!(!error.traceback.contains("/1/"), "{}", error.traceback);
    let shown = error.to_string();
    assert!(
        shown.starts_with("/home/a/on-duty/helper.py:4: SyntaxError: expected ':'\n"),
        "{shown}"
    );
}

#[test]
fn a_python_error_outside_the_plugin_has_no_location_and_control_characters_are_escaped() {
    let error = python_error("Error: bad WIT\x1b[2J\n", Path::new("/p"));
    assert_eq!(error.location, None);
    assert_eq!(error.summary, "Error: bad WIT\\x1b[2J");
    let missing = python_error(
        "AssertionError: Traceback\n  File \"/1/plugin.py\", line 1, in <module>\nModuleNotFoundError: No module named 'numpy'\n",
        Path::new("/p"),
    );
    assert_eq!(missing.location.as_deref(), Some("/p/plugin.py:1"));
    assert!(missing.to_string().contains("hint: a plugin can import"));
}

#[test]
fn python_source_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let py = dir.path().join("plugin.py");
    std::fs::write(&py, "").unwrap();
    let message = not_a_component(&py).unwrap();
    assert!(message.contains("is Python source"), "{message}");
    assert!(
        message.contains(&format!("warden build {}", dir.path().display())),
        "{message}"
    );
    let message = not_a_component(dir.path()).unwrap();
    assert!(message.contains("Python plugin's folder"), "{message}");
    assert!(message.contains("build/plugin.wasm"), "{message}");
    assert_eq!(not_a_component(&dir.path().join("plugin.wasm")), None);
    assert_eq!(not_a_component(Path::new("/nonexistent/x.wasm")), None);
}

#[test]
fn a_folder_that_is_no_plugin_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let error = build(dir.path(), None).unwrap_err().to_string();
    assert!(error.contains("is not a plugin"), "{error}");
    assert!(error.contains(&dir.path().display().to_string()), "{error}");
    std::fs::write(dir.path().join("plugin.py"), "").unwrap();
    std::fs::write(dir.path().join("requests.py"), "").unwrap();
    let error = build(dir.path(), None).unwrap_err().to_string();
    assert!(error.contains("has its own `requests`"), "{error}");
}

//! `warden build`, `warden new plugin --lang python` and the refusal of Python source where a
//! component is expected, run as an author runs them. The tests that build a Python plugin
//! need componentize-py; without it they are skipped, saying so, unless
//! `WARDEN_REQUIRE_PYTHON` is set.

use std::path::Path;
use std::process::{Command, Output};

use warden_tests::{Scratch, artifacts, python};

fn warden(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(dir)
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

/// The scaffold, built with `warden build` and tested with `warden test`, as its README says.
#[test]
fn a_new_python_plugin_builds_with_warden_build_and_passes_warden_test() {
    if !python::componentize_py_or_skip("a_new_python_plugin_builds...") {
        return;
    }
    let scratch = Scratch::new();
    let out = warden(
        &["new", "plugin", "on-duty", "--lang", "python"],
        scratch.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let dir = scratch.path().join("on-duty");
    assert!(dir.join("plugin.py").is_file());
    assert!(dir.join("tests/on_duty.toml").is_file());

    // Not built yet: warden test says how to build it.
    let out = warden(&["test"], &dir);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(output.contains("run `warden build "), "{output}");

    let out = warden(&["build"], &dir);
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    let component = dir.join("build/plugin.wasm");
    assert!(
        output.starts_with(&format!("built {} (Python, ", component.display())),
        "{output}"
    );
    assert_eq!(&std::fs::read(&component).unwrap()[..4], b"\0asm");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&component).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "{mode:o}");
    // Nothing left beside it.
    let left: Vec<_> = std::fs::read_dir(dir.join("build"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["plugin.wasm"], "{left:?}");

    // Found from the parent folder too, as a Rust crate would be; cases run from its tests/.
    let out = warden(&["test", "on-duty"], scratch.path());
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(output.ends_with("\n3 passed, 0 failed\n"), "{output}");
    assert!(
        output.contains("ok   on-duty/tests/on_duty.toml › on duty: approved"),
        "{output}"
    );
}

/// A syntax error in a module the plugin imports: the error names that file and line first,
/// then the traceback with the author's paths; the last good component is left as it was.
#[test]
fn a_python_syntax_error_is_reported_with_its_file_and_line() {
    if !python::componentize_py_or_skip("a_python_syntax_error...") {
        return;
    }
    let scratch = Scratch::new();
    scratch.write(
        "bad/plugin.py",
        "from warden import hook\nimport helper\n\n@hook\ndef on_request(event):\n    return None\n",
    );
    scratch.write("bad/helper.py", "X = 1\n\ndef f(x)\n    return x\n");
    scratch.write("bad/build/plugin.wasm", "the last good build");
    let out = warden(&["build", "bad"], scratch.path());
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    let dir = scratch.path().join("bad");
    assert!(
        output.contains(&format!(
            "error: building {} failed:\n{}/helper.py:3: SyntaxError: expected ':'\n",
            dir.display(),
            dir.display()
        )),
        "{output}"
    );
    assert!(
        output.contains(&format!("File \"{}/plugin.py\", line 2", dir.display())),
        "{output}"
    );
    assert!(!output.contains("Caused by"), "{output}");
    assert_eq!(
        std::fs::read_to_string(dir.join("build/plugin.wasm")).unwrap(),
        "the last good build"
    );
    assert_eq!(std::fs::read_dir(dir.join("build")).unwrap().count(), 1);
    // A first build that fails leaves no empty build folder behind.
    std::fs::remove_dir_all(dir.join("build")).unwrap();
    let out = warden(&["build", "bad"], scratch.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!dir.join("build").exists());
}

/// Without componentize-py on PATH, the error says how to install the pinned version.
#[test]
fn warden_build_without_componentize_py_says_how_to_install_it() {
    let scratch = Scratch::new();
    scratch.write(
        "p/plugin.py",
        "from warden import hook\n\n@hook\ndef on_request(event):\n    return None\n",
    );
    let empty = scratch.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["build", "p"])
        .current_dir(scratch.path())
        .env("PATH", &empty)
        .output()
        .unwrap();
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    let version = warden::cli::build::componentize_py_version();
    assert!(
        output.contains(&format!(
            "componentize-py is not installed (not on PATH); a Python plugin is built with it: install it with `pip install componentize-py=={version}`"
        )),
        "{output}"
    );
    assert!(!scratch.path().join("p/build").exists());

    // One that answers another version is refused the same way.
    let fake = empty.join("componentize-py");
    std::fs::write(&fake, "#!/bin/sh\necho componentize-py 0.1.0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["build", "p"])
        .current_dir(scratch.path())
        .env("PATH", format!("{}:/bin:/usr/bin", empty.display()))
        .output()
        .unwrap();
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(
        output.contains("is `componentize-py 0.1.0`; install the pinned one with"),
        "{output}"
    );
}

/// A plugin's folder whose `build` links elsewhere: the component would be written over
/// what it points at. Refused before anything is built (componentize-py is not needed).
#[test]
fn warden_build_refuses_a_build_folder_that_links_elsewhere() {
    let scratch = Scratch::new();
    scratch.write("p/plugin.py", "from warden import hook\n");
    scratch.write("victim/plugin.wasm", "a deployed plugin");
    std::os::unix::fs::symlink(
        scratch.path().join("victim"),
        scratch.path().join("p/build"),
    )
    .unwrap();
    let out = warden(&["build", "p"], scratch.path());
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(
        output.contains("p/build is a symbolic link or not a folder"),
        "{output}"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("victim/plugin.wasm")).unwrap(),
        "a deployed plugin"
    );
}

#[test]
fn warden_build_refuses_a_folder_that_is_no_plugin() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.path().join("empty")).unwrap();
    let out = warden(&["build", "empty"], scratch.path());
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(
        output.contains("empty is not a plugin: it holds neither plugin.py (a Python plugin) nor Cargo.toml (a Rust plugin crate)"),
        "{output}"
    );
}

const CONFIG: &str = r#"
[environments.main]
[flows.f]
environment = "main"
plugin = "PLUGIN"
"#;

/// Python source where a component is expected (the config's `plugin`, so `warden check`,
/// `warden hook` and `warden test --plugin`) is refused, naming the file, with the command
/// that builds it.
#[test]
fn python_source_given_as_a_plugin_is_refused_with_a_hint_to_build_it() {
    let scratch = Scratch::new();
    scratch.write(
        "on-duty/plugin.py",
        "from warden import hook\n\n@hook\ndef on_request(event):\n    return None\n",
    );
    scratch.write("event.json", r#"{"user": {"email": "a@example.com"}}"#);
    let py = scratch.path().join("on-duty/plugin.py");

    scratch.write("py.toml", CONFIG.replace("PLUGIN", "on-duty/plugin.py"));
    for args in [
        vec!["check", "-c", "py.toml"],
        vec![
            "hook",
            "-c",
            "py.toml",
            "--flow",
            "f",
            "--event",
            "event.json",
        ],
    ] {
        let out = warden(&args, scratch.path());
        let output = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {output}");
        // The config names it relative to the config's folder, and so does the error.
        assert!(
            output.contains(
                "py.toml:5:1: flows.f.plugin: on-duty/plugin.py is Python source, not a component: a Python plugin is built with `warden build on-duty` (its hooks in plugin.py), which writes on-duty/build/plugin.wasm"
            ),
            "{args:?}: {output}"
        );
    }

    scratch.write("dir.toml", CONFIG.replace("PLUGIN", "on-duty"));
    let out = warden(&["check", "-c", "dir.toml"], scratch.path());
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(
        output.contains(
            "on-duty is a Python plugin's folder, not a component: run `warden build on-duty` and use on-duty/build/plugin.wasm"
        ),
        "{output}"
    );

    scratch.write(
        "suite/t.toml",
        "[event]\nuser = { email = \"a@example.com\" }\n[[case]]\nname = \"c\"\nexpect = { decision = \"continue\" }\n",
    );
    let out = warden(
        &["test", "suite", "--plugin", "on-duty/plugin.py"],
        scratch.path(),
    );
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(
        output.contains(&format!("{} is Python source", py.display())),
        "{output}"
    );
}

/// A relative plugin path, in a test file or on the command line, is resolved once: against
/// the test file's folder, or the working folder.
#[test]
fn warden_test_resolves_relative_plugin_paths_once() {
    let scratch = Scratch::new();
    std::fs::copy(artifacts::PROBE, scratch.path().join("probe.wasm")).unwrap();
    let suite = "[event]\nuser = { email = \"a@example.com\" }\n[[case]]\nname = \"approves\"\nvars = { action = \"approve:fine\" }\nexpect = { decision = \"approve\", reason = \"fine\" }\n";
    scratch.write(
        "plugins/suite/tests/t.toml",
        format!("plugin = \"../../../probe.wasm\"\n{suite}"),
    );
    scratch.write("other/t.toml", suite);
    let out = warden(&["test", "plugins/suite/tests"], scratch.path());
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(output.ends_with("\n1 passed, 0 failed\n"), "{output}");

    let out = warden(&["test", "other", "--plugin", "probe.wasm"], scratch.path());
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(output.ends_with("\n1 passed, 0 failed\n"), "{output}");
}

/// `warden build` in a Rust plugin crate runs cargo's release build for wasm32-wasip2 and
/// names the component it made.
#[test]
fn warden_build_builds_a_rust_plugin_crate_with_cargo() {
    let scratch = Scratch::new();
    let out = warden(&["new", "plugin", "on-duty"], scratch.path());
    assert!(out.status.success(), "{}", text(&out));
    let dir = scratch.path().join("on-duty");
    // The test plugins' target folder: the SDK's dependencies are already built there.
    let target = Path::new(artifacts::PROBE)
        .ancestors()
        .nth(3)
        .expect("<target>/wasm32-wasip2/plugin/probe.wasm")
        .to_path_buf();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("build")
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    let component = target.join("wasm32-wasip2/release/on_duty.wasm");
    assert!(
        output.contains(&format!("built {} (Rust, ", component.display())),
        "{output}"
    );
    assert!(component.is_file());
}

/// Code a build runs (a plugin's import, at build time) changes only a copy of the plugin's
/// folder: what its author reviews after `warden build` is what was there before.
#[test]
fn warden_build_leaves_the_plugins_folder_as_it_was() {
    if !python::componentize_py_or_skip("warden_build_leaves_the_plugins_folder_as_it_was") {
        return;
    }
    let scratch = Scratch::new();
    let source = "import pathlib\n\
                  from warden import hook\n\
                  here = pathlib.Path(__file__).parent\n\
                  (here / \"planted.py\").write_text(\"print('planted')\\n\")\n\
                  pathlib.Path(__file__).write_text(\"# harmless\\n\")\n\n\
                  @hook\n\
                  def on_request(event):\n    return None\n";
    scratch.write("p/plugin.py", source);
    let out = warden(&["build", "p"], scratch.path());
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("p/plugin.py")).unwrap(),
        source
    );
    assert!(!scratch.path().join("p/planted.py").exists());
    assert!(scratch.path().join("p/build/plugin.wasm").is_file());
}

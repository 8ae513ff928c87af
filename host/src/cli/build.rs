//! `warden build [DIR]`: one command that turns a plugin's source into a component.
//!
//! A Python plugin is a folder holding `plugin.py` (its `@hook` functions) and any modules it
//! imports beside it; it is built with componentize-py, at the one version the SDK is tested
//! with, into `DIR/build/plugin.wasm`. The SDK and the WIT are compiled into warden
//! ([`bundle`]) and written to a temporary folder for the build, so the author passes neither.
//! A Rust plugin is a crate (`Cargo.toml`); it is built with
//! `cargo build --release --target wasm32-wasip2`, and the component is where that puts it.
//!
//! [`not_a_component`] is the other half: a `.py` file or a Python plugin's folder given where
//! a component is expected gets an error that says to build it.

mod bundle;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use bundle::componentize_py_version;

use crate::runtime::child::{Bounds, Ended, run_bounded};

/// The Python module a plugin's `@hook` functions are in.
pub const PYTHON_ENTRY: &str = "plugin.py";
/// Where `warden build` puts a Python plugin's component, relative to its folder.
pub const PYTHON_OUTPUT: &str = "build/plugin.wasm";

/// The WIT world plugins implement, and the SDK's module that implements it.
const WORLD: &str = "plugin";
const APP: &str = "warden_app";
/// Modules the SDK provides (or componentize-py generates): a plugin's own would hide them.
const RESERVED: [&str; 4] = ["warden", "requests", APP, "wit_world"];
/// componentize-py's output kept in an error: its traceback is short, but the tool is not
/// warden's and its output is not bounded.
const MAX_TOOL_OUTPUT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Python,
    Rust,
}

/// What a build made.
#[derive(Debug)]
pub struct Built {
    pub language: Language,
    pub component: PathBuf,
    pub elapsed: Duration,
}

impl Built {
    /// What `warden build` prints.
    pub fn describe(&self) -> String {
        let size = std::fs::metadata(&self.component).map_or(0, |m| m.len());
        let language = match self.language {
            Language::Python => "Python",
            Language::Rust => "Rust",
        };
        format!(
            "built {} ({language}, {:.1} MB) in {:.1} s",
            self.component.display(),
            size as f64 / 1e6,
            self.elapsed.as_secs_f64()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{} is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error(
        "{} is not a plugin: it holds neither {PYTHON_ENTRY} (a Python plugin) nor Cargo.toml (a Rust plugin crate)",
        .0.display()
    )]
    NotAPlugin(PathBuf),
    #[error(
        "{} has its own `{name}`, which hides the one the SDK provides; rename it",
        dir.display()
    )]
    Reserved { dir: PathBuf, name: &'static str },
    #[error(
        "componentize-py is not installed (not on PATH); a Python plugin is built with it: install it with `pip install componentize-py=={version}`"
    )]
    ComponentizePyMissing { version: &'static str },
    #[error(
        "warden's Python SDK is built with componentize-py {version}, but {} is `{shown}`; install the pinned one with `pip install componentize-py=={version}`",
        exe.display()
    )]
    ComponentizePyVersion {
        exe: PathBuf,
        shown: String,
        version: &'static str,
    },
    #[error(
        "{} is a symbolic link or not a folder: warden build writes the component only into a real `build` folder inside the plugin's folder (remove it, or choose another place with --out)",
        .0.display()
    )]
    OutputNotAFolder(PathBuf),
    #[error(
        "building {} took over {} s, so it was stopped: does plugin.py (or a module it imports) loop or wait at import? componentize-py runs the plugin's top level while building",
        dir.display(), BUILD_TIMEOUT.as_secs()
    )]
    TimedOut { dir: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building {} failed:\n{}", dir.display(), .failure)]
    Python { dir: PathBuf, failure: PythonError },
    #[error(
        "`cargo build --release --target wasm32-wasip2` in {} failed ({status})",
        dir.display()
    )]
    Cargo { dir: PathBuf, status: String },
    #[error(
        "`cargo build` in {} succeeded, but its component is not where cargo's target folder says it would be: {reason}",
        dir.display()
    )]
    NoComponent { dir: PathBuf, reason: String },
}

/// A Python build error as the author should read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonError {
    /// `FILE:LINE` of the innermost frame in the author's own files, if any.
    pub location: Option<String>,
    /// The exception's last line, e.g. `SyntaxError: expected ':'`.
    pub summary: String,
    /// The traceback, with the author's files under their real paths.
    pub traceback: String,
}

impl std::fmt::Display for PythonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(at) => writeln!(f, "{at}: {}", self.summary)?,
            None => writeln!(f, "{}", self.summary)?,
        }
        write!(f, "\n{}", self.traceback)?;
        if self.summary.contains("ModuleNotFoundError") {
            write!(
                f,
                "\nhint: a plugin can import the standard library, the SDK (warden, requests) and \
                 the modules in its own folder; copy pure-Python dependencies into the folder"
            )?;
        }
        Ok(())
    }
}

/// Builds the plugin in `dir`; `out` is where a Python plugin's component goes (default
/// `DIR/build/plugin.wasm`; a Rust crate's goes where cargo puts it).
pub fn build(dir: &Path, out: Option<&Path>) -> Result<Built, BuildError> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    if !dir.is_dir() {
        return Err(BuildError::NotAFolder(dir));
    }
    if dir.join(PYTHON_ENTRY).is_file() {
        if out.is_none() {
            // The plugin's folder may come from anyone: a `build` that links elsewhere would
            // have the component written over whatever it points at.
            let build = dir.join("build");
            if let Ok(meta) = std::fs::symlink_metadata(&build)
                && !meta.is_dir()
            {
                return Err(BuildError::OutputNotAFolder(build));
            }
        }
        let out = out.map_or_else(|| dir.join(PYTHON_OUTPUT), Path::to_path_buf);
        build_python(&dir, &out)
    } else if dir.join("Cargo.toml").is_file() {
        build_rust(&dir)
    } else {
        Err(BuildError::NotAPlugin(dir))
    }
}

/// The longest a Python build may take (one takes about 16 s here): componentize-py runs the
/// plugin's top-level code, which may loop.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

fn build_rust(dir: &Path) -> Result<Built, BuildError> {
    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // cargo's own output goes to the author as it comes: a Rust build can take minutes.
    let status = Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .status()
        .map_err(io(format!(
            "cannot run `cargo` in {} (is Rust installed?)",
            dir.display()
        )))?;
    if !status.success() {
        return Err(BuildError::Cargo {
            dir: dir.to_path_buf(),
            status: status.to_string(),
        });
    }
    let component = crate::harness::default_plugin(&dir.join("Cargo.toml")).map_err(|reason| {
        BuildError::NoComponent {
            dir: dir.to_path_buf(),
            reason,
        }
    })?;
    Ok(Built {
        language: Language::Rust,
        component,
        elapsed: started.elapsed(),
    })
}

/// componentize-py on PATH, at the pinned version.
pub fn componentize_py() -> Result<PathBuf, BuildError> {
    let version = componentize_py_version();
    let exe = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("componentize-py"))
        .find(|path| path.is_file())
        .ok_or(BuildError::ComponentizePyMissing { version })?;
    let shown = Command::new(&exe)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if shown.split_whitespace().last() != Some(version) {
        let shown = if shown.is_empty() {
            "unknown".to_string()
        } else {
            crate::cli::escape::escape_control(&shown)
                .chars()
                .take(200)
                .collect()
        };
        return Err(BuildError::ComponentizePyVersion {
            exe,
            shown,
            version,
        });
    }
    Ok(exe)
}

/// A folder a build made, removed when dropped if it is still empty (`remove_dir` takes away
/// nothing else); `None` once the build succeeded.
struct MadeFolder(Option<PathBuf>);

impl Drop for MadeFolder {
    fn drop(&mut self) {
        if let Some(folder) = &self.0 {
            let _ = std::fs::remove_dir(folder);
        }
    }
}

fn build_python(dir: &Path, out: &Path) -> Result<Built, BuildError> {
    for name in RESERVED {
        if dir.join(name).is_dir() || dir.join(format!("{name}.py")).is_file() {
            return Err(BuildError::Reserved {
                dir: dir.to_path_buf(),
                name,
            });
        }
    }
    let exe = componentize_py()?;
    let started = Instant::now();
    let temp = tempfile::Builder::new()
        .prefix("warden-build-")
        .tempdir()
        .map_err(io("cannot make a temporary folder for the build"))?;
    let sdk = temp.path().join("sdk");
    let wit = temp.path().join("wit");
    let venv = temp.path().join("venv");
    let cwd = temp.path().join("cwd");
    let write = |path: PathBuf, text: &str| {
        std::fs::create_dir_all(path.parent().expect("inside the temporary folder"))
            .and_then(|()| std::fs::write(&path, text))
            .map_err(io(format!("cannot write {}", path.display())))
    };
    for (path, text) in bundle::SDK {
        write(sdk.join(path), text)?;
    }
    for (name, text) in bundle::WIT {
        write(wit.join(name), text)?;
    }
    std::fs::create_dir_all(venv.join("lib/python3/site-packages"))
        .and_then(|()| std::fs::create_dir_all(&cwd))
        .map_err(io("cannot make the build's folders"))?;
    // Built from a copy: code the build runs (a plugin's imports run at build time) can
    // change only the copy, never the folder its author reviews and keeps.
    let copy = temp.path().join("plugin");
    let out_dir_inside = out.parent().filter(|p| p.starts_with(dir));
    copy_plugin_folder(dir, &copy, out_dir_inside)?;
    let out_dir = out.parent().unwrap_or(Path::new("."));
    // A folder made here and left empty by a failed build is taken away again (declared
    // before the partial file, so it is dropped after it).
    let mut made = MadeFolder((!out_dir.exists()).then(|| out_dir.to_path_buf()));
    std::fs::create_dir_all(out_dir).map_err(io(format!("cannot make {}", out_dir.display())))?;
    // Written beside the output and renamed when complete: a failed build leaves the last
    // good component as it was, never half a file. A new file of a random name, so nothing
    // planted in the folder beforehand is written through.
    let partial = tempfile::Builder::new()
        .prefix(".warden-build-")
        .suffix(".wasm")
        .tempfile_in(out_dir)
        .map_err(io(format!("cannot write in {}", out_dir.display())))?;
    // componentize-py adds a virtualenv's site-packages, else those of the Python running
    // it, and searches the folder it runs in: an empty one of each keeps the build to the
    // SDK, the plugin's folder and the standard library, whatever this machine has installed.
    let mut command = Command::new(&exe);
    command
        .arg("-d")
        .arg(&wit)
        .args(["-w", WORLD, "componentize", APP, "-p"])
        .arg(&sdk)
        .arg("-p")
        .arg(&copy)
        .arg("-o")
        .arg(partial.path())
        .current_dir(&cwd)
        .env("VIRTUAL_ENV", &venv)
        .env("RUST_BACKTRACE", "0")
        .env_remove("PIPENV_ACTIVE")
        .env_remove("PYTHONPATH");
    let bounds = Bounds {
        timeout: BUILD_TIMEOUT,
        memory_bytes: None,
        max_stdout: MAX_TOOL_OUTPUT,
        stop_past_max_stdout: false,
        max_stderr: MAX_TOOL_OUTPUT,
    };
    let ended =
        run_bounded(command, None, &bounds).map_err(io(format!("cannot run {}", exe.display())))?;
    let Ended::Exited {
        status,
        stdout,
        stderr,
    } = ended
    else {
        return Err(BuildError::TimedOut {
            dir: dir.to_path_buf(),
        });
    };
    if !status.success() {
        let mut text = String::from_utf8_lossy(&stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&stderr));
        return Err(BuildError::Python {
            dir: dir.to_path_buf(),
            failure: python_error(&text, dir),
        });
    }
    // Readable like any file the author writes (a temporary file is the owner's alone): the
    // component is deployed to where warden runs, maybe as another user.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(partial.path(), std::fs::Permissions::from_mode(0o644))
        .map_err(io(format!("cannot write {}", partial.path().display())))?;
    partial.persist(out).map_err(|e| BuildError::Io {
        what: format!("cannot write {}", out.display()),
        source: e.error,
    })?;
    made.0 = None;
    Ok(Built {
        language: Language::Python,
        component: out.to_path_buf(),
        elapsed: started.elapsed(),
    })
}

/// The most a Python plugin's folder may hold to be built: its files, and how many.
const MAX_FOLDER_BYTES: u64 = 256 << 20;
const MAX_FOLDER_ENTRIES: usize = 20_000;

/// Copies the plugin's folder `from` to `to` for a build: folders, files and links as they
/// are (componentize-py refuses a link leading out), nothing else (a FIFO would hang the
/// copy), without `.git`, `__pycache__` and `skip` (the folder the component is written to).
fn copy_plugin_folder(from: &Path, to: &Path, skip: Option<&Path>) -> Result<(), BuildError> {
    let too_big = || BuildError::Io {
        what: format!(
            "cannot copy {} to build it: it holds more than {} MiB or {MAX_FOLDER_ENTRIES} files",
            from.display(),
            MAX_FOLDER_BYTES >> 20
        ),
        source: std::io::Error::other("too large"),
    };
    let (mut bytes, mut entries) = (0u64, 0usize);
    let mut folders = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((source, target)) = folders.pop() {
        std::fs::create_dir_all(&target)
            .map_err(io(format!("cannot make {}", target.display())))?;
        let listing =
            std::fs::read_dir(&source).map_err(io(format!("cannot read {}", source.display())))?;
        for entry in listing {
            let entry = entry.map_err(io(format!("cannot read {}", source.display())))?;
            let (path, name) = (entry.path(), entry.file_name());
            if name == ".git" || name == "__pycache__" || Some(path.as_path()) == skip {
                continue;
            }
            entries += 1;
            if entries > MAX_FOLDER_ENTRIES {
                return Err(too_big());
            }
            let kind = entry
                .file_type()
                .map_err(io(format!("cannot read {}", path.display())))?;
            let into = target.join(&name);
            if kind.is_dir() {
                folders.push((path, into));
            } else if kind.is_symlink() {
                let points_to = std::fs::read_link(&path)
                    .map_err(io(format!("cannot read {}", path.display())))?;
                std::os::unix::fs::symlink(points_to, &into)
                    .map_err(io(format!("cannot copy {}", path.display())))?;
            } else if kind.is_file() {
                bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                if bytes > MAX_FOLDER_BYTES {
                    return Err(too_big());
                }
                std::fs::copy(&path, &into)
                    .map_err(io(format!("cannot copy {}", path.display())))?;
            }
        }
    }
    Ok(())
}

/// componentize-py's failure as the author's error: without the tool's own frames and its
/// repeated cause, the mounted paths (`/0/` the SDK, `/1/` the plugin's folder) replaced,
/// and the innermost frame in the plugin's folder picked out as the location.
pub fn python_error(output: &str, plugin_dir: &Path) -> PythonError {
    let mut text = output;
    if text.len() > MAX_TOOL_OUTPUT {
        let mut end = MAX_TOOL_OUTPUT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
    }
    const MARKER: &str = "AssertionError: ";
    if let Some(at) = text.find(MARKER) {
        text = &text[at + MARKER.len()..];
        text = text.split("\n\nCaused by:").next().unwrap_or(text);
    }
    let plugin = plugin_dir.display().to_string();
    // The traceback quotes the author's source lines: escaped one by one, so nothing in
    // them reaches the terminal as a control sequence.
    let text = text
        .trim_end()
        .lines()
        .map(crate::cli::escape::escape_control)
        .collect::<Vec<_>>()
        .join("\n");
    let text = text
        .replace("File \"/0/", "File \"<warden SDK>/")
        .replace("File \"/1/", &format!("File \"{plugin}/"));
    let frame = regex::Regex::new(r#"File "([^"]+)", line (\d+)"#).expect("a valid pattern");
    let prefix = format!("{plugin}/");
    let location = frame
        .captures_iter(&text)
        .filter(|c| c[1].starts_with(&prefix))
        .last()
        .map(|c| format!("{}:{}", &c[1], &c[2]));
    let summary = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty() && !line.starts_with(' '))
        .unwrap_or("componentize-py failed without saying why")
        .to_string();
    PythonError {
        location,
        summary,
        traceback: text,
    }
}

/// An error for `path` when it is Python source (a `.py` file, or a folder holding
/// `plugin.py` or `Cargo.toml`) rather than a component; `None` otherwise.
pub fn not_a_component(path: &Path) -> Option<String> {
    let shown = path.display();
    if path.is_dir() {
        if path.join(PYTHON_ENTRY).is_file() {
            return Some(format!(
                "{shown} is a Python plugin's folder, not a component: run `warden build {shown}` and use {}",
                path.join(PYTHON_OUTPUT).display()
            ));
        }
        if path.join("Cargo.toml").is_file() {
            return Some(format!(
                "{shown} is a Rust plugin crate, not a component: run `warden build {shown}` and use the component it names"
            ));
        }
        return None;
    }
    if path.extension().is_some_and(|e| e == "py") {
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return Some(format!(
            "{shown} is Python source, not a component: a Python plugin is built with `warden build {}` (its hooks in {PYTHON_ENTRY}), which writes {}",
            folder.display(),
            folder.join(PYTHON_OUTPUT).display()
        ));
    }
    None
}

#[cfg(test)]
mod tests;

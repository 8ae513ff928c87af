//! Compiling a plugin in a child process that warden can stop.
//!
//! Cranelift cannot be interrupted, and a component can be crafted to take minutes (tens of
//! thousands of live locals in one function) or gigabytes to compile. So the `warden` binary
//! compiles each plugin in a child of itself (`warden __compile-plugin`), bounded by the
//! config's `[compile]` limits; the compiled artifact comes back over a pipe and is
//! deserialized as a cached one is. Only the binary knows how to start itself, so it says so
//! at start ([`compile_in_child_processes`]); a program embedding the library compiles in its
//! own process, unbounded.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::config::CompileLimits;
use crate::runtime::child::{Bounds, Ended, run_bounded};

use super::{CompileError, root_message};

/// The hidden subcommand the child runs.
pub const CHILD_COMMAND: &str = "__compile-plugin";

/// The `warden` executable to compile in, once the binary has named itself.
static CHILD_EXE: OnceLock<PathBuf> = OnceLock::new();

/// From now on this process compiles plugins in children running `exe` (which must be this
/// `warden` binary: it is given [`CHILD_COMMAND`]).
pub fn compile_in_child_processes(exe: PathBuf) {
    let _ = CHILD_EXE.set(exe);
}

/// The component for `engine` from a plugin file's `bytes` (a component, or a core module
/// adapted first): compiled in a bounded child when the binary asked for that, here
/// otherwise.
pub(super) fn compile(
    engine: &Engine,
    copy_on_write: bool,
    bytes: &[u8],
    limits: &CompileLimits,
) -> Result<Component, CompileError> {
    let Some(exe) = CHILD_EXE.get() else {
        return super::compile_here(engine, bytes);
    };
    let artifact = compile_in_child(exe, copy_on_write, bytes, limits)?;
    // SAFETY: the artifact is what this very binary's compiler wrote for an engine of this
    // kind, handed over a pipe only this process holds; wasmtime checks it was made for an
    // engine like this one.
    unsafe { Component::deserialize(engine, &artifact) }.map_err(|e| {
        let message = root_message(&e);
        // The pool's limits are checked as the component is loaded (so here, not in the
        // child, whose engine has no pool): a plugin over them is at fault, as when it
        // compiles here.
        if message.contains("pooling allocator") {
            CompileError::from(format!("not a valid component: {message}"))
        } else {
            CompileError::host(format!("cannot load what the compiler made: {message}"))
        }
    })
}

fn compile_in_child(
    exe: &Path,
    copy_on_write: bool,
    bytes: &[u8],
    limits: &CompileLimits,
) -> Result<Vec<u8>, CompileError> {
    let mut command = Command::new(exe);
    command
        .arg(CHILD_COMMAND)
        .arg(if copy_on_write { "mapping" } else { "copying" })
        .env_clear();
    let max_artifact = max_artifact_bytes(bytes.len(), limits);
    let bounds = Bounds {
        timeout: limits.timeout,
        memory_bytes: Some(limits.memory_bytes),
        max_stdout: max_artifact,
        stop_past_max_stdout: true,
        max_stderr: 16 * 1024,
    };
    let mib = limits.memory_bytes >> 20;
    let ended = run_bounded(command, Some(bytes.to_vec()), &bounds).map_err(|e| {
        CompileError::host(format!(
            "cannot start the compiler ({}): {e}",
            exe.display()
        ))
    })?;
    let (status, stdout, stderr) = match ended {
        Ended::Exited {
            status,
            stdout,
            stderr,
        } => (status, stdout, stderr),
        Ended::TimedOut => {
            return Err(format!(
                "compiling took longer than {} s, and was stopped ([compile] timeout_seconds); \
                 a plugin this slow to compile is likely crafted to be",
                limits.timeout.as_secs()
            )
            .into());
        }
        Ended::TooMuchOutput => {
            return Err(format!(
                "compiled to more than {} MiB (four times the plugin file and 64 MiB, at most \
                 [compile] memory_mib), and was stopped: only a crafted plugin compiles so \
                 large (the memory images of many mostly empty memories)",
                max_artifact >> 20
            )
            .into());
        }
    };
    let message = String::from_utf8_lossy(&stderr);
    let message = message.trim();
    if status.success() {
        return Ok(stdout);
    }
    // Past its address space the child cannot allocate: Rust's allocator aborts, saying so,
    // and wasmtime's own mappings fail with ENOMEM.
    if message.contains("memory allocation of") || message.contains("os error 12") {
        return Err(format!(
            "compiling needed more than {mib} MiB, and was stopped ([compile] memory_mib)"
        )
        .into());
    }
    if status.code() == Some(1) && !message.is_empty() {
        return Err(message.to_string().into());
    }
    Err(CompileError::host(format!(
        "the compiler stopped ({status}){}{message}",
        if message.is_empty() { "" } else { ": " }
    )))
}

/// The most a compiled plugin may take: four times its file and 64 MiB (the Rust plugins
/// compile to 2.5 times their file, a Python one to 2), and never more than the child may
/// hold. warden holds it a few times over while it loads and caches it, and once for as long
/// as it serves: a component of many modules declaring mostly empty memories compiles to
/// 16 MiB of memory image each.
fn max_artifact_bytes(plugin_bytes: usize, limits: &CompileLimits) -> usize {
    let child = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
    plugin_bytes
        .saturating_mul(4)
        .saturating_add(64 << 20)
        .min(child)
}

/// The child's side: the plugin file's bytes on standard input (a core module is adapted
/// here too), the artifact for the engine `kind` names (`copying` or `mapping`) on standard
/// output, or the reason on standard error and exit status 1.
pub fn run_child(kind: &str) -> std::process::ExitCode {
    let result = (|| {
        let copy_on_write = match kind {
            "copying" => false,
            "mapping" => true,
            other => return Err(format!("no engine of kind `{other}`")),
        };
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read the component: {e}"))?;
        let engine = crate::runtime::engine::compiling_engine(copy_on_write)?;
        let artifact = super::precompile_here(&engine, &bytes)?;
        std::io::stdout()
            .lock()
            .write_all(&artifact)
            .map_err(|e| format!("cannot write the compiled plugin: {e}"))
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::report::Blame;

    fn limits() -> CompileLimits {
        CompileLimits {
            timeout: Duration::from_secs(20),
            memory_bytes: 256 << 20,
        }
    }

    /// A stand-in for the compiler: a shell script.
    fn compiler(dir: &tempfile::TempDir, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("compiler");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_compiler_that_cannot_run_is_the_hosts_fault_and_what_it_refuses_the_plugins() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-warden");
        let error = compile_in_child(&missing, false, b"", &limits()).unwrap_err();
        assert_eq!(error.blame, Blame::Host, "{error}");
        assert!(
            error.message.starts_with("cannot start the compiler"),
            "{error}"
        );

        let crashed = compiler(&dir, "kill -SEGV $$");
        let error = compile_in_child(&crashed, false, b"", &limits()).unwrap_err();
        assert_eq!(error.blame, Blame::Host, "{error}");
        assert!(error.message.starts_with("the compiler stopped"), "{error}");

        let refused = compiler(
            &dir,
            "cat >/dev/null; echo 'not a valid component: bad' >&2; exit 1",
        );
        let error = compile_in_child(&refused, false, b"plugin", &limits()).unwrap_err();
        assert_eq!(
            error,
            CompileError {
                message: "not a valid component: bad".into(),
                blame: Blame::Plugin
            }
        );
    }
}

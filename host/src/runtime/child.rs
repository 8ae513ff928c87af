//! Running a program warden cannot interrupt from inside, bounded from outside: in a child
//! process with a deadline, an address-space limit and capped output, killed when the
//! deadline passes or warden goes away. What compiles a plugin (`plugin::isolated`) and what
//! builds a Python plugin (`warden build`) run in.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a child may use.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Killed once it has run this long.
    pub timeout: Duration,
    /// Its address space (`RLIMIT_AS`); `None`: unlimited.
    pub memory_bytes: Option<u64>,
    /// Standard output kept.
    pub max_stdout: usize,
    /// Whether a child writing more than `max_stdout` is killed (its output is a result a
    /// part of which is no use); otherwise the rest is read and dropped, as for errors.
    pub stop_past_max_stdout: bool,
    /// Standard error kept; the rest is read and dropped.
    pub max_stderr: usize,
}

/// How a bounded child ended.
#[derive(Debug)]
pub enum Ended {
    /// It exited or was killed by a signal not of warden's sending.
    Exited {
        status: ExitStatus,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    /// It ran past [`Bounds::timeout`] and was killed.
    TimedOut,
    /// It wrote more than [`Bounds::max_stdout`] and was killed
    /// ([`Bounds::stop_past_max_stdout`]).
    TooMuchOutput,
}

/// Runs `command` with `stdin` as its standard input, within `bounds`.
pub fn run_bounded(
    mut command: Command,
    stdin: Option<Vec<u8>>,
    bounds: &Bounds,
) -> std::io::Result<Ended> {
    let memory = bounds.memory_bytes;
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec, and makes system calls only (no
    // allocation, no locks).
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(move || limit_self(memory));
    }
    let mut child = command.spawn()?;
    let feeding = stdin.and_then(|bytes| {
        let mut pipe = child.stdin.take()?;
        // A child that exits before reading it all closes the pipe: that is its answer.
        Some(std::thread::spawn(move || drop(pipe.write_all(&bytes))))
    });
    let overflowed = Arc::new(AtomicBool::new(false));
    let stdout = read_capped(
        child.stdout.take(),
        bounds.max_stdout,
        bounds.stop_past_max_stdout.then(|| overflowed.clone()),
    );
    let stderr = read_capped(child.stderr.take(), bounds.max_stderr, None);
    let waited = wait_until(&mut child, bounds.timeout, &overflowed)?;
    if let Some(feeding) = feeding {
        let _ = feeding.join();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok(match waited {
        Waited::Exited(_) | Waited::Stopped if overflowed.load(Ordering::Relaxed) => {
            Ended::TooMuchOutput
        }
        Waited::Exited(status) => Ended::Exited {
            status,
            stdout,
            stderr,
        },
        Waited::Stopped => Ended::TimedOut,
    })
}

/// In the child, before it runs the program: its address space bounded, no core file, and
/// killed when the thread that started it ends (warden exiting or killed mid-compile).
fn limit_self(memory_bytes: Option<u64>) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    if let Some(bytes) = memory_bytes {
        let limit = Rlimit {
            current: Some(bytes),
            maximum: Some(bytes),
        };
        setrlimit(Resource::As, limit)?;
    }
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    )?;
    #[cfg(target_os = "linux")]
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    Ok(())
}

/// Reads `pipe` on a thread of its own, so a chatty child never blocks on a full pipe; keeps
/// `max` bytes. With `overflowed`, a child writing more has it set (and is killed by
/// [`wait_until`]); otherwise the rest is read and dropped.
fn read_capped(
    pipe: Option<impl Read + Send + 'static>,
    max: usize,
    overflowed: Option<Arc<AtomicBool>>,
) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let Some(pipe) = pipe else {
            return Vec::new();
        };
        let mut kept = Vec::new();
        let mut limited = pipe.take(max as u64 + 1);
        let _ = limited.read_to_end(&mut kept);
        if kept.len() > max {
            kept.truncate(max);
            match overflowed {
                Some(flag) => flag.store(true, Ordering::Relaxed),
                None => drop(std::io::copy(
                    &mut limited.into_inner(),
                    &mut std::io::sink(),
                )),
            }
        }
        kept
    })
}

enum Waited {
    Exited(ExitStatus),
    /// Killed by warden: past its deadline, or past its output cap.
    Stopped,
}

/// Waits for the child to exit; kills (and reaps) it once it has run past `timeout` or
/// `overflowed` is set. Polls at growing intervals: a compile takes from milliseconds to
/// seconds.
fn wait_until(
    child: &mut Child,
    timeout: Duration,
    overflowed: &AtomicBool,
) -> std::io::Result<Waited> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Waited::Exited(status));
        }
        let elapsed = started.elapsed();
        if elapsed >= timeout || overflowed.load(Ordering::Relaxed) {
            let _ = child.kill();
            child.wait()?;
            return Ok(Waited::Stopped);
        }
        std::thread::sleep(pause.min(timeout - elapsed));
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(timeout: Duration) -> Bounds {
        Bounds {
            timeout,
            memory_bytes: None,
            max_stdout: 1024,
            stop_past_max_stdout: true,
            max_stderr: 16,
        }
    }

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn a_child_gets_its_input_and_its_output_and_status_come_back() {
        let ended = run_bounded(
            shell("tr a-z A-Z; echo oops >&2; exit 3"),
            Some(b"plugin".to_vec()),
            &bounds(Duration::from_secs(30)),
        )
        .unwrap();
        let Ended::Exited {
            status,
            stdout,
            stderr,
        } = ended
        else {
            panic!("{ended:?}");
        };
        assert_eq!(status.code(), Some(3));
        assert_eq!(stdout, b"PLUGIN");
        assert_eq!(stderr, b"oops\n");
    }

    #[test]
    fn a_child_past_its_deadline_is_killed() {
        let started = Instant::now();
        let ended = run_bounded(
            shell("echo started >&2; exec sleep 30"),
            None,
            &bounds(Duration::from_millis(300)),
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(matches!(ended, Ended::TimedOut), "{ended:?}");
    }

    #[test]
    fn a_child_writing_past_its_output_cap_is_stopped_or_cut() {
        let ended = run_bounded(
            shell("head -c 100000 /dev/zero; exec sleep 30"),
            None,
            &bounds(Duration::from_secs(20)),
        )
        .unwrap();
        assert!(matches!(ended, Ended::TooMuchOutput), "{ended:?}");
        let mut kept_going = bounds(Duration::from_secs(20));
        kept_going.stop_past_max_stdout = false;
        let ended = run_bounded(
            shell("head -c 100000 /dev/zero; head -c 100000 /dev/zero >&2; echo done >&2"),
            None,
            &kept_going,
        )
        .unwrap();
        let Ended::Exited { stdout, stderr, .. } = ended else {
            panic!("{ended:?}");
        };
        assert_eq!((stdout.len(), stderr.len()), (1024, 16));
    }

    #[test]
    fn a_child_is_limited_in_address_space() {
        let mut limited = bounds(Duration::from_secs(20));
        limited.memory_bytes = Some(64 << 20);
        // `ulimit -v` prints the limit in KiB.
        let ended = run_bounded(shell("ulimit -v"), None, &limited).unwrap();
        let Ended::Exited { stdout, .. } = ended else {
            panic!("{ended:?}");
        };
        assert_eq!(String::from_utf8_lossy(&stdout).trim(), "65536");
    }
}

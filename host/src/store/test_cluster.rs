//! A throwaway PostgreSQL cluster for the store's tests: its own data folder in a temporary
//! folder, a free loopback port, started once per test process and stopped when it exits;
//! each test gets a database of its own ([`database`]).
//!
//! PostgreSQL refuses to run as root, so as root the cluster runs as `nobody`. Without a
//! PostgreSQL installation the tests that need one skip with a message, unless
//! `WARDEN_REQUIRE_POSTGRES` is set (as `scripts/test` does), when they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::StoreUrl;

/// The uid and gid the cluster runs as when the tests run as root.
const NOBODY: u32 = 65534;

struct Cluster {
    port: u16,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// A new, empty database in the test cluster; `None` (the test should return) when there is
/// no PostgreSQL to run and it is not required.
pub(crate) async fn database() -> Option<StoreUrl> {
    let cluster = match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(why) => {
            if std::env::var_os("WARDEN_REQUIRE_POSTGRES").is_some() {
                panic!("WARDEN_REQUIRE_POSTGRES is set, but {why}");
            }
            eprintln!("skipped: {why} (set WARDEN_REQUIRE_POSTGRES to make this fail)");
            return None;
        }
    };
    let name = format!("test_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
    let admin = format!("postgres://warden@127.0.0.1:{}/postgres", cluster.port);
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    drop(client);
    let _ = connection.await;
    let url = format!("postgres://warden@127.0.0.1:{}/{name}", cluster.port);
    Some(StoreUrl::parse(&url).expect("a valid test URL"))
}

/// The newest PostgreSQL server installed where Debian puts it, or `WARDEN_POSTGRES_BIN`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WARDEN_POSTGRES_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn start() -> Result<Cluster, String> {
    let bin = bin_dir().ok_or("no PostgreSQL server is installed (/usr/lib/postgresql/*/bin)")?;
    let root = rustix::process::getuid().is_root();
    remove_stale_folders();
    let data = std::env::temp_dir().join(format!("warden-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir(&data).map_err(|e| format!("cannot make {}: {e}", data.display()))?;
    if root {
        std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY))
            .map_err(|e| format!("cannot hand {} to nobody: {e}", data.display()))?;
    }
    let as_owner = |program: &str| {
        // setpriv sets the parent-death signal after its change of uid, which would clear it.
        let mut command = Command::new("setpriv");
        command.arg("--pdeathsig=INT");
        if root {
            command.args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
            ]);
        }
        command.arg(bin.join(program));
        command
    };
    let initdb = as_owner("initdb")
        .args([
            "-U",
            "warden",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run initdb (setpriv): {e}"))?;
    if !initdb.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr).trim()
        ));
    }
    let port = free_port()?;
    let (started, outcome) = std::sync::mpsc::channel();
    let mut postgres = as_owner("postgres");
    postgres
        .args(["-D"])
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&data)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=300",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(data.with_extension("log")).map_err(|e| e.to_string())?,
        ));
    // The server is told to stop (fast shutdown, SIGINT) when the thread that started it
    // ends, which is when the test process exits.
    std::thread::Builder::new()
        .name("warden-test-postgres".into())
        .spawn(move || {
            let child = postgres.spawn();
            let failed = child.as_ref().err().map(|e| e.to_string());
            let _ = started.send(failed);
            // Kept alive (and parked) until the process exits.
            let _child = child;
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| e.to_string())?;
    if let Ok(Some(e)) = outcome.recv() {
        return Err(format!("cannot start postgres: {e}"));
    }
    wait_ready(&bin, port, &data)?;
    Ok(Cluster { port })
}

fn wait_ready(bin: &Path, port: u16, data: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .map_err(|e| format!("cannot run pg_isready: {e}"))?;
        if ready.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
            return Err(format!("postgres did not start in 30 s:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Data folders of test processes that have exited (their server stopped with them).
fn remove_stale_folders() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("warden-pg-")) else {
            continue;
        };
        let pid = pid.trim_end_matches(".log");
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

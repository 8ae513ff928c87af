//! A throwaway PostgreSQL cluster for the store's tests and the end-to-end tests of
//! `warden serve` replicas (host/tests): its own data folder in a temporary folder, a free
//! loopback port, started once per test process and stopped when it exits; each test gets a
//! database of its own ([`database`]), or a cluster of its own to stop and start
//! ([`dedicated`]). For tests only.
//!
//! A test that needs a cluster set up otherwise (its own `pg_hba.conf`, TLS) starts one of its
//! own with [`dedicated_with`].
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
    server: Server,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// A new, empty database in the test cluster; `None` (the test should return) when there is
/// no PostgreSQL to run and it is not required.
pub async fn database() -> Option<StoreUrl> {
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
    let admin = format!(
        "postgres://warden@127.0.0.1:{}/postgres",
        cluster.server.port
    );
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
    let url = format!("postgres://warden@127.0.0.1:{}/{name}", cluster.server.port);
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
    remove_stale_folders();
    let mut server = Server::init(format!("warden-pg-{}", std::process::id()))?;
    server.run()?;
    // Kept in a static, never dropped: the server stops when the process exits.
    Ok(Cluster { server })
}

/// A cluster a test owns, to stop and start again (the database restarting under warden).
pub struct Server {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    root: bool,
    /// The postmaster, while it runs.
    pid: Option<u32>,
}

/// How a cluster of a test's own differs from the shared one's.
#[derive(Default)]
pub(crate) struct Options {
    /// `pg_hba.conf` (who may connect, how); None: initdb's, which trusts every local
    /// connection. The tests' own administration goes through the Unix socket (`local`).
    pub(crate) hba: Option<String>,
    /// `ssl = on` with this certificate chain and key (PEM).
    pub(crate) tls: Option<ServerTls>,
}

pub(crate) struct ServerTls {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// A cluster of the test's own, running, with a `warden` database; `None` as [`database`].
pub fn dedicated() -> Option<Server> {
    dedicated_with(Options::default())
}

/// [`dedicated`], set up as `options` says.
pub(crate) fn dedicated_with(options: Options) -> Option<Server> {
    static SERVERS: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "warden-pg-{}-{}",
        std::process::id(),
        SERVERS.fetch_add(1, Ordering::Relaxed)
    );
    let started = Server::init(name).and_then(|mut server| {
        server.configure(&options)?;
        server.run()?;
        // Through the socket, which every `pg_hba.conf` of these tests trusts.
        let created = Command::new(server.bin.join("createdb"))
            .arg("-h")
            .arg(&server.data)
            .args(["-p", &server.port.to_string(), "-U", "warden", "warden"])
            .status()
            .map_err(|e| format!("cannot run createdb: {e}"))?;
        created
            .success()
            .then_some(server)
            .ok_or_else(|| "createdb failed".to_string())
    });
    match started {
        Ok(server) => Some(server),
        Err(why) => {
            if std::env::var_os("WARDEN_REQUIRE_POSTGRES").is_some() {
                panic!("WARDEN_REQUIRE_POSTGRES is set, but {why}");
            }
            eprintln!("skipped: {why} (set WARDEN_REQUIRE_POSTGRES to make this fail)");
            None
        }
    }
}

impl Server {
    /// A new cluster in the temporary folder `name`, on a free port, not yet running.
    fn init(name: String) -> Result<Self, String> {
        let bin =
            bin_dir().ok_or("no PostgreSQL server is installed (/usr/lib/postgresql/*/bin)")?;
        let root = rustix::process::getuid().is_root();
        let data = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir(&data).map_err(|e| format!("cannot make {}: {e}", data.display()))?;
        if root {
            std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY))
                .map_err(|e| format!("cannot hand {} to nobody: {e}", data.display()))?;
        }
        let server = Self {
            bin,
            data,
            port: free_port()?,
            root,
            pid: None,
        };
        let initdb = server
            .as_owner("initdb")
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
            .arg(&server.data)
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run initdb (setpriv): {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr).trim()
            ));
        }
        Ok(server)
    }

    /// Writes what `options` asks for into the (not yet running) cluster's folder.
    fn configure(&self, options: &Options) -> Result<(), String> {
        let write = |name: &str, text: &str, mode: u32| -> Result<(), String> {
            use std::os::unix::fs::PermissionsExt;
            let path = self.data.join(name);
            std::fs::write(&path, text)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                })
                .and_then(|()| match self.root {
                    true => std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)),
                    false => Ok(()),
                })
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        if let Some(hba) = &options.hba {
            write("pg_hba.conf", hba, 0o600)?;
        }
        if let Some(tls) = &options.tls {
            write("server.crt", &tls.cert_pem, 0o600)?;
            // PostgreSQL refuses a key others may read.
            write("server.key", &tls.key_pem, 0o600)?;
            let conf = self.data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).map_err(|e| e.to_string())?;
            text.push_str(
                "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            );
            std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A client of the cluster's `dbname` as its superuser, through the Unix socket.
    #[cfg(test)]
    pub(crate) async fn admin(&self, dbname: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(&self.data)
            .port(self.port)
            .user("warden")
            .dbname(dbname)
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster's socket");
        tokio::spawn(connection);
        client
    }

    /// `program` of the server, run as the cluster's owner (`nobody` when the tests run as
    /// root: PostgreSQL refuses root).
    fn as_owner(&self, program: &str) -> Command {
        // setpriv sets the parent-death signal after its change of uid, which would clear it.
        let mut command = Command::new("setpriv");
        command.arg("--pdeathsig=INT");
        if self.root {
            command.args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
            ]);
        }
        command.arg(self.bin.join(program));
        command
    }

    /// Starts the server and waits until it accepts connections.
    pub fn run(&mut self) -> Result<(), String> {
        let (started, outcome) = std::sync::mpsc::channel();
        let mut postgres = self.as_owner("postgres");
        postgres
            .args(["-D"])
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.data)
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
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.data.with_extension("log"))
                    .map_err(|e| e.to_string())?,
            ));
        // The server is told to stop (fast shutdown, SIGINT) when the thread that started it
        // ends, which is when the test process exits.
        std::thread::Builder::new()
            .name("warden-test-postgres".into())
            .spawn(move || {
                let child = postgres.spawn();
                let _ = started.send(child.as_ref().map(|c| c.id()).map_err(|e| e.to_string()));
                // Kept alive (and parked) until the process exits.
                let _child = child;
                loop {
                    std::thread::park();
                }
            })
            .map_err(|e| e.to_string())?;
        let pid = outcome
            .recv()
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot start postgres: {e}"))?;
        self.pid = Some(pid);
        wait_ready(&self.bin, self.port, &self.data)
    }

    /// The URL of its `warden` database (made by [`dedicated`]).
    pub fn url(&self) -> String {
        format!("postgres://warden@127.0.0.1:{}/warden", self.port)
    }

    /// Stops the server (fast shutdown: clients are disconnected) and waits until it has.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid.take() else { return };
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.data.join("postmaster.pid").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data);
        let _ = std::fs::remove_file(self.data.with_extension("log"));
    }
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
        let pid = pid.split('-').next().unwrap_or(pid);
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

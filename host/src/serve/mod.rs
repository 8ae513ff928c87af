//! `warden serve`: the access-request lifecycle as a long-running service.
//!
//! [`Server`] wires the pieces:
//! - the current [`Warden`] behind an atomic swap, so a reload replaces it while requests
//!   already running keep the one they started with ([`CurrentWarden`]);
//! - the [`lifecycle::Lifecycle`] state machine: each operation claims its request, runs its
//!   step's hooks and transitions, and finishes. The [`claim`] holds the operation's writes
//!   until they can share one commit; [`fields`] checks a new request's fields; [`view`] is
//!   what it answers with;
//! - the store ([`crate::store::backend`]): a SQLite file, or PostgreSQL shared by several
//!   replicas (`[store] url`), which then coordinate through it alone;
//! - the expiry sleeper ([`lifecycle::Lifecycle::expire_loop`]);
//! - [`policy`]: who may decide, see and revoke a request (the flows' `approvers` and
//!   `approvals_required`, beside the API roles);
//! - the notifications' delivery tasks ([`notify`]), fed by the outbox the claims write;
//! - [`metrics`], and the HTTP [`api`] in front of it all, with the approvers' web
//!   [`console`] beside it.

mod answers;
mod api;
mod bodies;
mod caller;
mod claim;
mod coalesce;
mod connections;
mod console;
pub(crate) mod fields;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
mod policy;
pub mod throttle;
mod view;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigErrors};
use crate::secrets::SecretStore;
use crate::store::StoreError;
use crate::store::backend::{self, Backend};
use crate::{SharedEngine, StartError, StartOptions, Warden};

use coalesce::Coalesced;
use lifecycle::{Lifecycle, LifecycleError};
use metrics::Metrics;

pub use api::{DecisionBody, NewRequestBody, parse_body};
pub use fields::event_as_served;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{}", ConfigErrors::summary(.0))]
    Config(ConfigErrors),
    #[error("{0}")]
    Start(#[from] StartError),
    #[error(
        "{0}: no API tokens: add at least one [serve.tokens.<name>] with token_env or token_file, user and role"
    )]
    NoTokens(PathBuf),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot resume stored requests: {0}")]
    Recover(#[from] LifecycleError),
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

impl CurrentWarden {
    /// Refuses a config without a flow whose plugin granted access that is still held
    /// (requests escalated) or is granting it (approved: `on_escalate` running): only that
    /// plugin's `on_deescalate` removes it, and without the flow no hook can. Asked before
    /// the new config compiles and again after, just before it is swapped in: a request of
    /// the flow may be approved while it compiles.
    async fn no_access_left_behind(&self, before: &Config, config: &Config) -> Result<(), String> {
        use crate::store::requests::{ListQuery, State};
        let mut held = Vec::new();
        for flow in before.flows.keys().filter(|f| config.flow(f).is_none()) {
            // Approved first: a request moves from approved to escalated, never back, so one
            // moving between the two queries is seen by the second.
            for state in [State::Approved, State::Escalated] {
                let query = ListQuery {
                    state: Some(state),
                    flow: Some(flow.clone()),
                    limit: 3,
                    ..ListQuery::default()
                };
                let found = self.store.list(&query).await.map_err(|e| e.to_string())?;
                // Counted by the rows read, those that do not read as requests included: one
                // of them may hold access as well.
                if found.read == 0 {
                    continue;
                }
                let mut ids: Vec<&str> = found.rows.iter().map(|r| r.id.as_str()).collect();
                let unreadable = found.read - found.rows.len();
                let unreadable_note = format!("{unreadable} that cannot be read");
                if unreadable > 0 {
                    ids.push(&unreadable_note);
                }
                let how = match state {
                    State::Escalated => "access its plugin granted is still held",
                    _ => "its plugin is granting access",
                };
                held.push(format!(
                    "flow `{flow}` is removed, but {how} ({}{}): only its on_deescalate removes it; revoke those requests (POST /v1/requests/ID/revoke) or let them expire, then reload",
                    ids.join(", "),
                    if found.read == 3 { ", ..." } else { "" }
                ));
            }
        }
        if held.is_empty() {
            Ok(())
        } else {
            Err(held.join("\n"))
        }
    }
}

/// The settings `config` changes from `before` that apply only after a restart: what the
/// listener, the API's counters, the notifications' client and the store's connections took
/// at start.
fn restart_needed_for(before: &Config, config: &Config) -> Vec<String> {
    let (now, then) = (&config.serve, &before.serve);
    let store_tls = |c: &Config| c.store_url.as_ref().map(|u| u.tls().clone());
    let store_password = |c: &Config| {
        c.store_url
            .as_ref()
            .and_then(|u| u.password_secret())
            .map(|s| s.source.clone())
    };
    [
        (now.listen != then.listen, "serve.listen"),
        (
            now.max_in_flight != then.max_in_flight,
            "serve.max_in_flight",
        ),
        (
            now.max_body_bytes != then.max_body_bytes,
            "serve.max_body_bytes",
        ),
        (
            now.max_connections != then.max_connections,
            "serve.max_connections",
        ),
        (
            now.max_connections_per_address != then.max_connections_per_address,
            "serve.max_connections_per_address",
        ),
        // The listener's exemption from `max_connections_per_address` is taken at start;
        // the throttles read the config serving.
        (
            now.trusted_proxies != then.trusted_proxies,
            "serve.trusted_proxies (for max_connections_per_address)",
        ),
        (
            now.client_timeout != then.client_timeout,
            "serve.client_timeout_ms",
        ),
        (
            now.new_requests_per_minute != then.new_requests_per_minute,
            "serve.new_requests_per_minute",
        ),
        (
            now.unknown_tokens_per_minute != then.unknown_tokens_per_minute,
            "serve.unknown_tokens_per_minute",
        ),
        // Plugins' requests use the new one at once; notifications' client keeps its own.
        (
            config.http.extra_roots != before.http.extra_roots,
            "http.ca_file (for notifications)",
        ),
        // The same URL (another one is refused), but the store connects as it did at start:
        // with the certificates its `sslrootcert` file held then, and its password's secret
        // from where it was kept then.
        (
            store_tls(config) != store_tls(before),
            "store.url's sslrootcert (the file's certificates)",
        ),
        (
            store_password(config) != store_password(before),
            "store.password_secret (where it is kept)",
        ),
    ]
    .into_iter()
    .filter(|(changed, _)| *changed)
    .map(|(_, name)| name.to_string())
    .collect()
}

/// What a reload applied.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadSummary {
    pub flows: Vec<String>,
    /// Settings that changed but take effect only on restart.
    pub restart_needed_for: Vec<String>,
}

/// What a refused reload logs, one event per line of `errors` (a config's errors are one
/// line each, their quotes of the file escaped), each saying it is the refusal: the log's
/// formatter would write a line break in one event as `\n`, indistinguishable from one the
/// config's text holds.
fn reload_refused_lines(errors: &str) -> Vec<String> {
    let mut lines = errors.lines().filter(|line| !line.trim().is_empty());
    let first = lines.next().unwrap_or("(no reason given)");
    std::iter::once(format!(
        "config reload refused; the old config keeps serving: {first}"
    ))
    .chain(lines.map(|line| format!("config reload refused: {line}")))
    .collect()
}

/// The current `Warden`, swapped whole on reload.
pub struct CurrentWarden {
    current: Arc<ArcSwap<Warden>>,
    config_path: PathBuf,
    reload_lock: tokio::sync::Mutex<()>,
    store: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
}

impl CurrentWarden {
    pub fn current(&self) -> Arc<Warden> {
        self.current.load_full()
    }

    /// Loads and compiles the config file again, off to the side, and swaps it in only if
    /// all of it is valid. On error the old config keeps serving and the errors come back.
    pub async fn reload(&self, actor: &str) -> Result<ReloadSummary, String> {
        let never = CancellationToken::new();
        self.reload_unless(actor, &never)
            .await
            .expect("a reload not asked to stop finishes")
    }

    /// [`Self::reload`], abandoned (`None`) if `stop` comes while the new config loads and
    /// compiles (up to `[compile] timeout_seconds`); once it is swapped in, the reload is
    /// finished, its audit written, whatever comes.
    pub async fn reload_unless(
        &self,
        actor: &str,
        stop: &CancellationToken,
    ) -> Option<Result<ReloadSummary, String>> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let loaded = tokio::select! {
            loaded = self.load_new() => loaded,
            () = stop.cancelled() => return None,
        };
        let result = match loaded {
            Ok((warden, summary)) => {
                let serving = self.current();
                match self
                    .no_access_left_behind(serving.config(), warden.config())
                    .await
                {
                    Ok(()) => {
                        self.current.store(Arc::new(warden));
                        Ok(summary)
                    }
                    Err(held) => Err(held),
                }
            }
            Err(errors) => Err(errors),
        };
        self.metrics.observe_reload(result.is_ok());
        let detail = match &result {
            Ok(summary) => serde_json::json!({ "flows": summary.flows }),
            Err(errors) => serde_json::json!({ "refused": errors }),
        };
        let action = if result.is_ok() {
            "reload"
        } else {
            "reload-refused"
        };
        let audited = self.store.audit(actor, action, None, &detail).await;
        if let Err(e) = audited {
            tracing::error!("reload not audited: {e}");
        }
        match &result {
            Ok(summary) => tracing::info!(
                flows = ?summary.flows,
                restart_needed_for = ?summary.restart_needed_for,
                "config reloaded"
            ),
            Err(errors) => {
                for line in reload_refused_lines(errors) {
                    tracing::error!("{line}")
                }
            }
        }
        Some(result)
    }

    /// The config file as it is now, loaded and compiled, and what a reload to it says;
    /// nothing swapped in yet.
    async fn load_new(&self) -> Result<(Warden, ReloadSummary), String> {
        // Off the runtime's threads: loading reads files and asks AWS for secrets, each
        // waited for, and a one-CPU host has one such thread, every request's.
        let path = self.config_path.clone();
        let config = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| format!("loading the config failed: {e}"))?
            .map_err(|e| ServeError::Config(e).to_string())?;
        let old = self.current();
        let before = old.config();
        if config.store_url != before.store_url {
            return Err(
                "store.url changed; the store cannot move while serving: restart warden".into(),
            );
        }
        if config.store_url.is_none() && config.store_path != before.store_path {
            return Err(store_moved(&before.store_path, &config.store_path));
        }
        if config.serve.tokens.is_empty() {
            return Err(ServeError::NoTokens(self.config_path.clone()).to_string());
        }
        self.no_access_left_behind(before, &config).await?;
        let config = keep_redacting_what_flows_sealed(before, config);
        let restart_needed_for = restart_needed_for(before, &config);
        let flows = config.flows.keys().cloned().collect();
        let secrets = Arc::new(SecretStore::new(&config.secrets));
        old.secret_store().hand_on_to(&secrets);
        let options = StartOptions::default();
        let warden = Warden::start_with(config, old.identity_store().clone(), secrets, options)
            .await
            .map_err(|e| e.to_string())?;
        let summary = ReloadSummary {
            flows,
            restart_needed_for,
        };
        Ok((warden, summary))
    }
}

/// `config` with each flow told the secrets it could seal under `before` (and under the
/// configs before that): a server it sent one to may echo it back after a reload took the
/// secret from the flow (or renamed it, or moved the flow to another environment), and its
/// values stay redacted from what the flow receives. Flows are the same by name.
fn keep_redacting_what_flows_sealed(before: &Config, mut config: Config) -> Config {
    for (name, flow) in &mut config.flows {
        let Some(earlier) = before.flow(name) else {
            continue;
        };
        let then: Vec<String> = earlier.grants.redacted_ids().map(str::to_string).collect();
        let flow = Arc::get_mut(flow).expect("a config just loaded shares no flow");
        flow.grants.sealed_before.extend(
            then.into_iter()
                .filter(|id| !flow.grants.secrets.contains_key(id)),
        );
    }
    config
}

/// A running `warden serve`.
pub struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    warden: Arc<CurrentWarden>,
    store: Arc<dyn Backend>,
    tasks: TaskTracker,
    http: tokio::task::JoinHandle<()>,
    expiry: tokio::task::JoinHandle<()>,
    notify: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Loads the config, compiles the plugins, opens the store, resumes stored requests
    /// (expiry timers included) and starts listening on `listen` or `serve.listen`. A flow
    /// whose plugin does not load is logged and served without it: its hooks fail closed.
    pub async fn start(config_path: &Path, listen: Option<SocketAddr>) -> Result<Self, ServeError> {
        let config = Config::load(config_path).map_err(ServeError::Config)?;
        if config.serve.tokens.is_empty() {
            return Err(ServeError::NoTokens(config_path.to_path_buf()));
        }
        let settings = config.serve.clone();
        let engine = SharedEngine::for_config(&config)?;
        let store = backend::open(&config).await?;
        let secrets = Arc::new(SecretStore::new(&config.secrets));
        let options = StartOptions {
            engine: Some(engine),
            ..StartOptions::default()
        };
        // One flow's broken plugin must not keep the others from serving.
        let warden =
            Warden::start_with_failed_flows(config, store.clone(), secrets, options).await?;
        for failed in warden.load_failures() {
            tracing::error!(
                flow = %failed.flow,
                blame = %failed.blame,
                "{failed}; the flow's requests go to a human until a reload loads it"
            );
        }
        let metrics = Arc::new(Metrics::default());
        let current = Arc::new(ArcSwap::from_pointee(warden));
        let warden = Arc::new(CurrentWarden {
            current: current.clone(),
            config_path: config_path.to_path_buf(),
            reload_lock: tokio::sync::Mutex::new(()),
            store: store.clone(),
            metrics: metrics.clone(),
        });
        let lifecycle = Arc::new(Lifecycle::new(current, store.clone(), metrics.clone()));
        let resumed = lifecycle.recover().await?;
        if resumed > 0 {
            tracing::info!(resumed, "resumed requests cut short by the last stop");
        }

        let addr = listen.unwrap_or(settings.listen);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;

        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let expiry = tokio::spawn(lifecycle.clone().expire_loop(tasks.clone(), stop.clone()));
        let notify = tokio::spawn(notify::run(
            lifecycle.outbox().clone(),
            store.clone(),
            metrics.clone(),
            stop.clone(),
        ));
        let app = Arc::new(api::App {
            lifecycle,
            warden: warden.clone(),
            metrics: metrics.clone(),
            tasks: tasks.clone(),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            max_in_flight: settings.max_in_flight,
            // Counting every request is a scan of them all (about 70 ms at a million): begun
            // at most 4 times a second, however often `/metrics` is asked.
            store_counts: Coalesced::spaced(std::time::Duration::from_millis(250)),
            readiness: Coalesced::default(),
            token_failures: api::token_failures(settings.unknown_tokens_per_minute),
            new_requests: (settings.new_requests_per_minute > 0).then(|| {
                throttle::PerUser::new(
                    settings.new_requests_per_minute,
                    std::time::Duration::from_secs(60),
                )
            }),
            unsent_answers: answers::Unsent::new(),
            stop: stop.clone(),
        });
        let router = api::router(app, &settings);
        let limits = connections::ConnectionLimits {
            max_connections: settings.max_connections,
            max_per_address: settings.max_connections_per_address,
            unlimited: settings.trusted_proxies.clone(),
            client_timeout: settings.client_timeout,
        };
        let http = tokio::spawn(connections::serve(
            listener,
            router,
            limits,
            metrics,
            stop.clone(),
            tasks.clone(),
        ));
        tracing::info!(%addr, "warden serving");
        Ok(Self {
            addr,
            stop,
            warden,
            store,
            tasks,
            http,
            expiry,
            notify,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn warden(&self) -> &Arc<CurrentWarden> {
        &self.warden
    }

    pub async fn reload(&self, actor: &str) -> Result<ReloadSummary, String> {
        self.warden.reload(actor).await
    }

    /// [`Self::reload`] as a future of its own, to run beside whatever awaits the server (a
    /// signal loop must still see a stop while a reload compiles, up to `[compile]
    /// timeout_seconds`); abandoned, `None`, once the server begins to stop.
    pub fn reload_owned(
        &self,
        actor: &str,
    ) -> impl std::future::Future<Output = Option<Result<ReloadSummary, String>>> + Send + 'static
    {
        let (warden, actor, stop) = (self.warden.clone(), actor.to_string(), self.stop.clone());
        async move { warden.reload_unless(&actor, &stop).await }
    }

    /// Begins to stop: connections are no longer accepted and reloads compiling are
    /// abandoned; [`Self::shutdown`] then waits for the rest.
    pub fn begin_stop(&self) {
        self.stop.cancel();
    }

    /// Stops accepting, lets requests in flight and their hooks finish, then closes the
    /// store.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        tracing::info!("shutting down: finishing requests in flight");
        self.stop.cancel();
        let served = self.http.await;
        let _ = self.expiry.await;
        let _ = self.notify.await;
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(e) = self.store.checkpoint().await {
            tracing::warn!("{e}");
        }
        tracing::info!("stopped");
        // The accept loop has no error of its own; a panic in it is one.
        served.map_err(|e| ServeError::Serve(std::io::Error::other(e)))
    }
}

/// A reload's refusal to move the SQLite store, its paths escaped: the error is one line of
/// the log and of the reload's answer whatever the config names.
fn store_moved(from: &std::path::Path, to: &std::path::Path) -> String {
    let shown = |path: &std::path::Path| path.display().to_string().escape_debug().to_string();
    format!(
        "store.path changed from {} to {}; the store cannot move while serving: restart warden",
        shown(from),
        shown(to)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    #[test]
    fn a_store_path_a_reload_would_move_is_quoted_on_one_line() {
        let refused = store_moved(
            std::path::Path::new("/var/lib/warden.db"),
            std::path::Path::new("/tmp/x\nERROR forged \x1b[31m.db"),
        );
        assert_eq!(
            refused,
            "store.path changed from /var/lib/warden.db to /tmp/x\\nERROR forged \\u{1b}[31m.db; the store cannot move while serving: restart warden"
        );
        assert_eq!(reload_refused_lines(&refused).len(), 1);
    }

    #[test]
    fn what_the_store_connects_with_changed_under_the_same_url_needs_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ca = || {
            rcgen::CertificateParams::new(Vec::<String>::new())
                .unwrap()
                .self_signed(&rcgen::KeyPair::generate().unwrap())
                .unwrap()
                .pem()
        };
        let load = |secret_var: &str| {
            let text = format!(
                "[store]\nurl = \"postgres://warden@db/warden?sslmode=verify-full&sslrootcert=ca.pem\"\n\
                 password_secret = \"db\"\n[secrets.db]\nsource = \"env\"\nname = \"{secret_var}\"\n"
            );
            Config::parse(&text, &dir.path().join("warden.toml"), &|_| {
                Some("pw".into())
            })
            .unwrap_or_else(|e| panic!("{e}"))
        };
        std::fs::write(dir.path().join("ca.pem"), ca()).unwrap();
        let before = load("DB_PASSWORD");
        assert!(restart_needed_for(&before, &load("DB_PASSWORD")).is_empty());
        // The CA file rotated in place, the URL the same.
        std::fs::write(dir.path().join("ca.pem"), ca()).unwrap();
        assert_eq!(
            restart_needed_for(&before, &load("DB_PASSWORD")),
            ["store.url's sslrootcert (the file's certificates)"]
        );
        // The password's secret kept elsewhere under the same id.
        let moved = load("OTHER_PASSWORD");
        assert!(
            restart_needed_for(&before, &moved)
                .contains(&"store.password_secret (where it is kept)".to_string())
        );
    }

    #[test]
    fn a_refused_reload_logs_each_error_as_its_own_event_with_the_files_text_escaped() {
        let error = |key: &str, message: &str| ConfigError {
            file: PathBuf::from("/etc/warden.toml"),
            location: None,
            key: key.into(),
            message: message.into(),
        };
        let errors = ConfigErrors(vec![
            error("flows.a.plugin", "cannot read `a\nERROR forged`"),
            error("flows.b.vars.x", "bad \x1b[31m value"),
        ]);
        let text = ServeError::Config(errors).to_string();
        assert_eq!(
            reload_refused_lines(&text),
            [
                "config reload refused; the old config keeps serving: 2 problem(s) in the config:",
                "config reload refused: /etc/warden.toml: flows.a.plugin: cannot read `a\\nERROR forged`",
                "config reload refused: /etc/warden.toml: flows.b.vars.x: bad \\x1b[31m value",
            ]
        );
        assert_eq!(
            reload_refused_lines("store.url changed; restart warden"),
            [
                "config reload refused; the old config keeps serving: store.url changed; restart warden"
            ]
        );
    }
}

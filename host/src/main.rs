//! The `warden` command.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warden::capabilities::log::{LogLine, LogSource};
use warden::cli::escape::{escape_control, escape_control_by_line};
use warden::runtime::plugin::isolated;
use warden::{Config, EventInput, HookName, HookReport, Warden};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A sandboxed WebAssembly plugin host for access-request workflows.
#[derive(Parser)]
#[command(name = "warden", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config, compile every flow's plugin, and print what each flow may do.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run one hook of one flow for one event; print the decision as JSON.
    ///
    /// Exit status: 0 with a decision, 3 when the hook failed (the decision printed is then
    /// `continue`: a human decides), 1 when the config or event is invalid.
    Hook {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        flow: String,
        /// e.g. on_request, after_approve.
        #[arg(long, default_value = "on_request")]
        hook: HookName,
        /// The event as JSON; `-` reads it from standard input.
        #[arg(long)]
        event: PathBuf,
    },
    /// Run one hook many times and print latency percentiles and throughput as JSON.
    Bench {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        flow: String,
        #[arg(long, default_value = "on_request")]
        hook: HookName,
        #[arg(long)]
        event: PathBuf,
        #[arg(long, default_value_t = 1000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_BENCH_ITERATIONS))]
        iterations: usize,
        /// Hooks in flight at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Also report the peak proportional set size (`peak_pss_bytes`, Linux), read every
        /// 20 ms during the run.
        #[arg(long)]
        sample_memory: bool,
    },
    /// Manage users and their identities in the store (like `symflow users`).
    Users {
        #[arg(long, short)]
        config: PathBuf,
        #[command(subcommand)]
        command: warden::cli::users::UsersCommand,
    },
    /// Serve the access-request lifecycle over HTTP until SIGTERM or Ctrl-C; SIGHUP reloads
    /// the config.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Overrides `serve.listen`, e.g. 127.0.0.1:0 for any free port.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// Run plugin test cases (`tests/*.toml` in a plugin crate or a Python plugin's folder)
    /// in the sandbox, HTTP mocked.
    ///
    /// Prints a line per case, the details of each failure, and `N passed, N failed`;
    /// exits 1 when any case fails or no case is found.
    Test {
        /// Test files, plugins' folders, or folders to search for them (default: .).
        paths: Vec<PathBuf>,
        /// Run only the cases whose name or file contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Also write the results as JUnit XML to this file.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Test this plugin file instead of the crate's build output.
        #[arg(long, value_name = "FILE")]
        plugin: Option<PathBuf>,
        /// Cases run at once, at most 256 (default: the number of CPUs).
        #[arg(long, short, default_value_t = 0, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_TEST_JOBS))]
        jobs: usize,
    },
    /// Build a plugin into a component: a Python plugin's folder (its hooks in plugin.py)
    /// with componentize-py, a Rust plugin crate with cargo.
    Build {
        /// The plugin's folder (default: .).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where a Python plugin's component goes (default: DIR/build/plugin.wasm).
        #[arg(long, short, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Create something new.
    New {
        #[command(subcommand)]
        what: NewCommand,
    },
}

#[derive(Subcommand)]
enum NewCommand {
    /// A plugin (a Rust crate, or a Python folder) with a hook and a test file, ready for
    /// `warden build` and `warden test`.
    Plugin {
        name: String,
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// Where to create the crate's folder (default: .).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The warden-sdk crate to depend on (default: the SDK warden was built from); Rust only.
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Lang {
    Rust,
    Python,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// The hook failed and warden failed closed.
const EXIT_HOOK_FAILED: u8 = 3;
/// The most events `warden bench` runs: each one's time is kept until the end.
const MAX_BENCH_ITERATIONS: u64 = 100_000_000;
/// Cases `warden test` runs at once at most: each holds an instance and its memory.
const MAX_TEST_JOBS: u64 = 256;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(isolated::CHILD_COMMAND.as_ref()) {
        let kind = args.next().unwrap_or_default();
        return isolated::run_child(&kind.to_string_lossy());
    }
    // Plugins are compiled in children of this binary, which warden can stop. On Linux
    // through /proc/self/exe: the very binary running, even if an upgrade has replaced the
    // file since it started (a newer warden's compiled code would not load here).
    let own = Path::new("/proc/self/exe");
    match own
        .exists()
        .then(|| own.to_path_buf())
        .map_or_else(std::env::current_exe, Ok)
    {
        Ok(exe) => isolated::compile_in_child_processes(exe),
        Err(e) => eprintln!(
            "warning: cannot find this program's own file ({e}): plugins compile in this process, without [compile]'s limits"
        ),
    }
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // A single event at a time needs a single worker thread: a second one only adds a
    // cross-thread wake-up to each await (measured in BENCHMARKS.md).
    match &cli.command {
        Command::Hook { .. } => {
            runtime.worker_threads(1);
        }
        Command::Bench { concurrency, .. } => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            runtime.worker_threads((*concurrency).clamp(1, cores));
        }
        _ => {}
    }
    match runtime.build() {
        Ok(runtime) => {
            let code = runtime.block_on(run(cli));
            // What `run` waited for is done. A plugin still compiling on a blocking thread (a
            // reload a stop abandoned) is not waited for: its process dies with this one.
            runtime.shutdown_background();
            code
        }
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check { config } => check(&config).await,
        Command::Hook {
            config,
            flow,
            hook,
            event,
        } => run_hook(&config, &flow, hook, &event).await,
        Command::Bench {
            config,
            flow,
            hook,
            event,
            iterations,
            concurrency,
            sample_memory,
        } => {
            bench(
                &config,
                &flow,
                hook,
                &event,
                iterations,
                concurrency,
                sample_memory,
            )
            .await
        }
        Command::Users { config, command } => {
            warden::cli::users::run(&config, command, &mut std::io::stdout().lock())
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Serve {
            config,
            listen,
            log_format,
        } => serve(&config, listen, log_format).await,
        Command::Test {
            paths,
            filter,
            junit,
            plugin,
            jobs,
        } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                paths
            };
            let options = warden::harness::RunOptions {
                paths,
                filter,
                plugin,
                jobs,
            };
            test(&options, junit.as_deref()).await
        }
        Command::Build { dir, out } => warden::cli::build::build(&dir, out.as_deref())
            .map(|built| {
                println!("{}", built.describe());
                ExitCode::SUCCESS
            })
            .map_err(|e| e.to_string()),
        Command::New {
            what:
                NewCommand::Plugin {
                    name,
                    lang: Lang::Python,
                    dir,
                    sdk_path,
                },
        } => new_python_plugin(&name, &dir, sdk_path.is_some()),
        Command::New {
            what:
                NewCommand::Plugin {
                    name,
                    dir,
                    sdk_path,
                    ..
                },
        } => new_plugin(&name, &dir, sdk_path),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            // Errors quote names from files warden does not trust (a config, an event, a
            // plugin); each source escapes its own onto one line, this keeps any it missed
            // from writing to the terminal.
            eprintln!("error: {}", escape_control_by_line(&message));
            ExitCode::FAILURE
        }
    }
}

async fn start(config: &Path) -> Result<Warden, String> {
    let config = Config::load(config).map_err(|e| e.summary())?;
    Warden::start(config).await.map_err(|e| e.to_string())
}

async fn check(config: &Path) -> Result<ExitCode, String> {
    let warden = start(config).await?;
    let summaries = warden.summaries();
    // Every name here is the config's: escaped, none can start a line or move the cursor.
    let shown = |text: &dyn std::fmt::Display| escape_control(&text.to_string()).into_owned();
    println!(
        "{}: {} flow(s), store {}",
        shown(&config.display()),
        summaries.len(),
        shown(&warden.identity_store().label().display())
    );
    let list = |items: &[String]| {
        if items.is_empty() {
            "(none)".to_string()
        } else {
            items
                .iter()
                .map(|i| shown(i))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    for s in &summaries {
        println!();
        println!("flow {}", shown(&s.name));
        let adapted = if s.adapted_from_core_module {
            " (core module, adapted from wasm32-wasip1)"
        } else {
            ""
        };
        println!(
            "  plugin            {}{adapted}",
            shown(&s.plugin.display())
        );
        println!("                    {}", s.compiled);
        println!("  hooks             {}", list(&s.hooks));
        println!("  integrations      {}", list(&s.integrations));
        println!(
            "  secrets           {}{}",
            list(&s.secrets),
            if s.reveal_secrets {
                ""
            } else {
                " (sealed only)"
            }
        );
        println!("  identities        {}", list(&s.identity_services));
        println!("  allowed hosts     {}", list(&s.allowed_hosts));
        if let Some(flow) = warden.config().flow(&s.name) {
            let routes: Vec<String> = flow
                .notify
                .iter()
                .map(|(event, channels)| format!("{event} → {}", channels.join(" ")))
                .collect();
            println!("  notify            {}", list(&routes));
        }
        println!(
            "  limits            memory {} MiB, timeout {} ms",
            s.limits.memory_mib, s.limits.timeout_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The most an event file (or `--event -`'s input) may hold.
const MAX_EVENT_BYTES: u64 = 16 << 20;

fn read_event(path: &Path) -> Result<EventInput, String> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .take(MAX_EVENT_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the event from standard input: {e}"))?;
        if text.len() as u64 > MAX_EVENT_BYTES {
            return Err(format!(
                "the event on standard input is over {} MiB",
                MAX_EVENT_BYTES >> 20
            ));
        }
        text
    } else {
        warden::config::read_bounded_text(path, MAX_EVENT_BYTES)
            .map_err(|e| format!("cannot read event file {}: {e}", path.display()))?
    };
    // The reader's error quotes the event's own keys.
    EventInput::from_json(&text)
        .map_err(|e| escape_control(&format!("{}: {e}", path.display())).into_owned())
}

async fn run_hook(
    config: &Path,
    flow: &str,
    hook: HookName,
    event: &Path,
) -> Result<ExitCode, String> {
    let event = read_event(event)?;
    let warden = start(config).await?;
    // The fields as `warden serve` hands them on (`duration` as its seconds).
    // Both errors may quote the event's own text (a field's name, its `name`): one line.
    let event = warden::serve::event_as_served(warden.config(), flow, &event).map_err(|e| {
        escape_control(&format!(
            "the event's fields, as warden serve refuses them: {e}"
        ))
        .into_owned()
    })?;
    let report = warden
        .run_hook(flow, hook, &event)
        .await
        .map_err(|e| escape_control(&e.to_string()).into_owned())?;
    print_logs(&report);
    let (json, code) = match &report.outcome {
        Ok(decision) => (
            serde_json::to_value(decision).expect("decisions serialize"),
            ExitCode::SUCCESS,
        ),
        Err(failure) => (
            serde_json::json!({ "decision": "continue", "error": failure.to_string() }),
            ExitCode::from(EXIT_HOOK_FAILED),
        ),
    };
    println!(
        "{}",
        warden::cli::escape::json_for_terminal(&json.to_string())
    );
    Ok(code)
}

async fn bench(
    config: &Path,
    flow: &str,
    hook: HookName,
    event: &Path,
    iterations: usize,
    concurrency: usize,
    sample_memory: bool,
) -> Result<ExitCode, String> {
    let event = read_event(event)?;
    let warden = std::sync::Arc::new(start(config).await?);
    let report = warden::cli::bench::run(
        warden,
        flow,
        hook,
        &event,
        iterations,
        concurrency,
        sample_memory,
    )
    .await
    .map_err(|e| escape_control(&e.to_string()).into_owned())?;
    let report = serde_json::to_string_pretty(&report).expect("reports serialize");
    println!("{}", warden::cli::escape::json_for_terminal(&report));
    Ok(ExitCode::SUCCESS)
}

fn print_logs(report: &HookReport) {
    let prefix = |line: &LogLine| {
        let source = match line.source {
            LogSource::Plugin => "plugin",
            LogSource::Stdout => "plugin stdout",
            LogSource::Stderr => "plugin stderr",
            LogSource::Host => "warden",
        };
        format!("{:5} {source}", format!("{:?}", line.level).to_uppercase())
    };
    // The plugin's text (its lines, the names refusals quote, its errors) is escaped: one
    // line each, whatever it holds.
    for line in &report.logs {
        eprintln!("{}: {}", prefix(line), escape_control(&line.message));
    }
    for refusal in &report.refusals {
        eprintln!("WARN  warden: {}", escape_control(&refusal.to_string()));
    }
    if let Err(failure) = &report.outcome {
        eprintln!(
            "ERROR warden: {} (failing closed: a human decides)",
            escape_control(&failure.to_string())
        );
    }
}

async fn test(
    options: &warden::harness::RunOptions,
    junit: Option<&Path>,
) -> Result<ExitCode, String> {
    let summary = warden::harness::run(options).await;
    print!("{}", summary.render());
    if let Some(path) = junit {
        std::fs::write(path, summary.junit())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(if summary.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn new_plugin(name: &str, dir: &Path, sdk: Option<PathBuf>) -> Result<ExitCode, String> {
    let sdk = sdk.unwrap_or_else(warden::cli::scaffold::bundled_sdk_path);
    let created = warden::cli::scaffold::new_plugin(name, dir, &sdk).map_err(|e| e.to_string())?;
    println!("created {}", created.display());
    println!("next:");
    println!("  cd {}", created.display());
    println!("  cargo build --release --target wasm32-wasip2");
    println!("  warden test");
    Ok(ExitCode::SUCCESS)
}

fn new_python_plugin(name: &str, dir: &Path, sdk_path: bool) -> Result<ExitCode, String> {
    if sdk_path {
        return Err("--sdk-path is for Rust plugins: a Python plugin is built with the SDK compiled into warden".into());
    }
    let created = warden::cli::scaffold::new_python_plugin(name, dir).map_err(|e| e.to_string())?;
    println!("created {}", created.display());
    println!(
        "next:\n  cd {}\n  warden build\n  warden test",
        created.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour only on a terminal: a log file or pipe gets no escape sequences at all.
        // Field values (plugin text among them) are escaped onto one line.
        LogFormat::Human => logs
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(warden::cli::escape::human_log_fields())
            .init(),
        LogFormat::Json => logs
            .json()
            .with_writer(|| warden::cli::escape::JsonForTerminal(std::io::stderr()))
            .init(),
    }
}

async fn serve(
    config: &Path,
    listen: Option<std::net::SocketAddr>,
    log_format: LogFormat,
) -> Result<ExitCode, String> {
    use tokio::signal::unix::{SignalKind, signal};
    init_logs(log_format);
    // Each listened for once, for the life of the process: a signal that arrives while the
    // loop is elsewhere waits for it, none is lost.
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let server = warden::serve::Server::start(config, listen)
        .await
        .map_err(|e| e.to_string())?;
    // Scripts and tests read the address from here (the port may have been chosen by the OS).
    println!("listening on http://{}", server.local_addr());
    // A reload runs beside the signals: a stop while it compiles stops warden at once (the
    // reload is abandoned, the config serving kept to the end). A SIGHUP meanwhile reloads
    // again after it.
    let mut reloading = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = hangup.recv(), if reloading.is_empty() => {
                // The outcome is logged and audited; a refused config keeps the old one.
                reloading.spawn(server.reload_owned("SIGHUP"));
            }
            Some(_) = reloading.join_next() => {}
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    // A reload still compiling is abandoned; one already swapped in finishes its audit.
    server.begin_stop();
    while reloading.join_next().await.is_some() {}
    server.shutdown().await.map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

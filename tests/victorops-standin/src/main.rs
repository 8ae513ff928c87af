//! `victorops-standin --roster FILE --api-id ID --api-key KEY [--port N] [--casing working|spec]`
//!
//! Serves the VictorOps public API stand-in on 127.0.0.1, prints
//! `listening on http://127.0.0.1:PORT` on stdout once the socket is bound,
//! and serves until interrupted or terminated.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use victorops_standin::{Casing, Roster, StandIn, StandInConfig};

#[derive(Parser, Debug)]
#[command(
    name = "victorops-standin",
    about = "A stand-in for the VictorOps (Splunk On-Call) public API, on 127.0.0.1"
)]
struct Args {
    /// Roster file (TOML, or JSON when named *.json).
    #[arg(long, value_name = "FILE")]
    roster: PathBuf,
    /// The X-VO-Api-Id to accept.
    #[arg(long, value_name = "ID")]
    api_id: String,
    /// The X-VO-Api-Key to accept.
    #[arg(long, value_name = "KEY")]
    api_key: String,
    /// Port on 127.0.0.1 (default: any free port).
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// Key spelling of the on-call answer: `working` (oncallNow/onCalluser,
    /// as the live API) or `spec` (onCallNow/onCallUser, as documented).
    #[arg(long, value_name = "working|spec", default_value = "working")]
    casing: Casing,
    /// Do not print one line per request on stderr.
    #[arg(long)]
    quiet: bool,
    /// Delay every answer by this many milliseconds (a slow API, for load tests).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let roster = Roster::from_file(&args.roster)?;
    let standin = StandIn::start(StandInConfig {
        api_id: args.api_id,
        api_key: args.api_key,
        roster,
        casing: args.casing,
        port: args.port,
    })
    .await
    .context("binding 127.0.0.1")?;
    standin.set_log_to_stderr(!args.quiet);
    standin.set_latency(std::time::Duration::from_millis(args.latency_ms));

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", standin.url())?;
    stdout.flush()?;
    drop(stdout);

    stop_signal().await;
    standin.shutdown().await;
    Ok(())
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

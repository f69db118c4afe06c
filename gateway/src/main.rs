//! `vigil-gateway`: wiring only. Load and validate the config, set up
//! routes, tokens and the link to the collector, then serve until SIGINT
//! or SIGTERM; on the way out, give the collector a moment to acknowledge
//! the last job records.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio::sync::watch;
use tracing::{error, info, warn};
use vigil_gateway::link::Link;
use vigil_gateway::metrics::{self, Metrics};
use vigil_gateway::{Gateway, GatewayConfig};

/// Vigil's quantum job gateway: relays quantum SDK calls to their
/// providers with the credential it holds, records and polices each one.
#[derive(Debug, Parser)]
#[command(name = "vigil-gateway", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Validate the configuration (routes, credentials, tokens), print every
    /// problem, and exit.
    #[arg(long)]
    check: bool,
}

/// How long records not yet acknowledged are given at exit.
const EXIT_FLUSH: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-gateway: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = GatewayConfig::load(&cli.config)?;
    vigil_gateway::server::check(&config)
        .map_err(|e| anyhow::anyhow!("invalid config {}:\n  {e:#}", cli.config.display()))?;
    if cli.check {
        println!("{}: ok", cli.config.display());
        return Ok(());
    }
    // one worker: relaying is I/O and bodies are parsed on blocking
    // threads; a second worker cost more in cross-thread wake-ups than it
    // gave (scripts/bench-gateway: added p50 297 → 213 µs, CPU per request
    // 247 → 171 µs on 2 cores)
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(config.limits.max_parallel_parses + 4)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: GatewayConfig) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop) = watch::channel(false);
    let metrics_listener = match config.metrics.listen.as_str() {
        "" => None,
        addr => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen for metrics on {addr}"))?,
        ),
    };
    let link = Link::start(
        config.collector_socket.clone(),
        config.buffer_records,
        metrics.clone(),
        stop.clone(),
    );
    let gateway = Gateway::bind(config, link.clone(), metrics.clone())?;
    if let Some(listener) = metrics_listener {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(listener, metrics).await {
                error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    let pending = gateway.pending();
    let server = tokio::spawn(gateway.serve(stop.clone()));
    shutdown_signal().await;
    info!("stopping: no new connections");
    let started = Instant::now();
    // stop accepting, let relays in flight finish their records, then let
    // the link deliver what is left
    server.abort();
    let busy =
        || pending.load(std::sync::atomic::Ordering::SeqCst) > 0 || link.unacknowledged() > 0;
    while busy() && started.elapsed() < EXIT_FLUSH {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = link.unacknowledged();
    if left > 0 {
        warn!(
            records = left,
            "job records not acknowledged by the collector at exit are lost"
        );
    }
    let _ = stop_tx.send(true);
    info!("gateway stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

//! `vigil-collector`: Vigil's endpoint agent.
//!
//! Wiring only: parse flags, load and validate the config, load the BPF
//! programs, seed the process table from /proc, then run the pipeline
//! (source → enrich → sink) until SIGINT or SIGTERM.

mod config;
mod enrich;
mod pipeline;
mod sink;
mod source;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tracing::info;

use config::Config;
use enrich::agents::AgentMatcher;
use enrich::process_table::ProcessTable;
use enrich::redact::Redactor;
use enrich::{Enricher, Host};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    /// JSON lines on stdout, one event per line.
    Stdout,
}

/// Vigil's endpoint agent: process, file and network telemetry from eBPF,
/// attributed to hosts and desktop AI agents.
#[derive(Debug, Parser)]
#[command(name = "vigil-collector", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where events go.
    #[arg(long, value_enum, default_value = "stdout")]
    output: Output,
    /// Validate the configuration, print every problem, and exit.
    #[arg(long)]
    check: bool,
}

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
            eprintln!("vigil-collector: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config)?;
    if cli.check {
        println!("{}: ok", cli.config.display());
        return Ok(());
    }
    let Output::Stdout = cli.output;

    let host = Host::detect(config.host_id.as_deref()).context("cannot determine host identity")?;
    let redactor = Redactor::new(&config.redaction.patterns, &config.redaction.flags)
        .context("invalid redaction pattern")?;
    let agents = AgentMatcher::new(&config.agents)?;
    let table = ProcessTable::new(host.host_id.clone(), config.max_ancestors, agents);
    let mut enricher = Enricher::new(host, table, redactor);

    // Attach first, seed second: a process born in between is then seen by both.
    let (bpf, ring) = source::bpf::BpfSource::load(&config.bpf)?;
    let seeded = enricher.seed_from_proc();
    info!(
        processes = seeded,
        programs = bpf.attached,
        host_id = %enricher.host().host_id,
        agents = config.agents.len(),
        "collector ready"
    );

    let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    let intervals = pipeline::Intervals {
        flow_report: secs(config.network.flow_report_interval_secs),
        stats: secs(config.stats.interval_secs),
        gc: Duration::from_secs(30),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let pipeline = pipeline::Pipeline::new(bpf, enricher, sink::stdout::StdoutSink::new());
        pipeline.run(ring, intervals, shutdown_signal()).await
    })?;
    info!("collector stopped");
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

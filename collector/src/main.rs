//! `vigil-collector`: Vigil's endpoint agent.
//!
//! Wiring only: parse flags, load and validate the config, load the BPF
//! programs, seed the process table from /proc, then run the pipeline
//! (source → enrich → sinks) until SIGINT or SIGTERM. Batches go through the
//! spool (a writer thread) and, with `[kafka]`, to the broker (the shipper
//! thread, which also serves the metrics).

use vigil_collector::{
    bench, config, enrich, link, metrics, pipeline, ship, sink, source, transport,
};

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;
use tracing::{error, info};

use config::Config;
use enrich::agents::AgentMatcher;
use enrich::process_table::ProcessTable;
use enrich::redact::Redactor;
use enrich::{Enricher, Host};
use metrics::Metrics;
use ship::kafka::Shipper;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Batches into the spool (`<data_dir>/spool`), shipped to Kafka when `[kafka]` is set.
    Spool,
    /// JSON lines on stdout, one event per line.
    Stdout,
}

/// Vigil's endpoint agent: process, file and network telemetry from eBPF,
/// attributed to hosts and desktop AI agents.
#[derive(Debug, Parser)]
#[command(name = "vigil-collector", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Where events go (repeat or separate by commas for several).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "spool")]
    output: Vec<Output>,
    /// Validate the configuration, print every problem, and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the Kafka topics of the configured `[kafka]` cluster.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Benchmark: synthetic events from the batcher to broker acknowledgement
    /// (scripts/bench-transport); prints a JSON report.
    #[command(hide = true)]
    BenchTransport {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
}

#[derive(Debug, Subcommand)]
enum TopicsAction {
    /// Create every event kind's topic that does not exist yet.
    Create,
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
    let path = cli.config.clone().context("--config FILE is required")?;
    let config = Config::load(&path)?;
    if let Some(k) = &config.kafka {
        ship::kafka::validate(k)
            .map_err(|e| anyhow::anyhow!("invalid config {}:\n  kafka: {e}", path.display()))?;
    }
    if cli.check {
        println!("{}: ok", path.display());
        return Ok(());
    }
    match cli.command {
        Some(Command::Topics {
            action: TopicsAction::Create,
        }) => return create_topics(&config),
        Some(Command::BenchTransport { events }) => {
            let report = bench::run(&config, events)?;
            println!("{}", serde_json::to_string(&report)?);
            return Ok(());
        }
        None => {}
    }

    let host = Host::detect(config.host_id.as_deref()).context("cannot determine host identity")?;
    let redactor = Redactor::new(&config.redaction.patterns, &config.redaction.flags)
        .context("invalid redaction pattern")?;
    let agents = AgentMatcher::new(&config.agents)?;
    let table = ProcessTable::new(host.host_id.clone(), config.max_ancestors, agents);
    let mut enricher = Enricher::new(host, table, redactor);
    let metrics = Arc::new(Metrics::default());

    // sinks: stdout and/or the spool, and the shipper reading the spool
    let mut sinks = pipeline::Sinks::default();
    if cli.output.contains(&Output::Stdout) {
        sinks.stdout = Some(sink::stdout::StdoutSink::new());
    }
    let mut transport = None;
    if cli.output.contains(&Output::Spool) {
        let t = transport::Transport::open(&config, enricher.host().clone(), metrics.clone())?;
        sinks.batcher = Some(t.batcher);
        transport = Some((t.spool_thread, t.shipper));
    }
    let metrics_listener = if config.metrics.listen.is_empty() {
        None
    } else {
        Some(metrics::bind(&config.metrics.listen)?)
    };

    // the gateway link binds now so a bad path or user fails before BPF loads
    let (to_pipeline, from_link) = tokio::sync::mpsc::channel(link::PIPELINE_QUEUE);
    let link_server = match &config.link {
        Some(l) => Some(link::LinkServer::bind(l, metrics.clone())?),
        None => None,
    };
    let from_link = link_server.as_ref().map(|_| from_link);

    // Attach first, seed second: a process born in between is then seen by both.
    let (bpf, ring) = source::bpf::BpfSource::load(&config.bpf)?;
    let seeded = enricher.seed_from_proc();
    info!(
        processes = seeded,
        programs = bpf.attached,
        host_id = %enricher.host().host_id,
        agents = config.agents.len(),
        outputs = ?cli.output,
        kafka = config.kafka.as_ref().map(|k| k.brokers.as_str()),
        "collector ready"
    );

    let (spool_thread, shipper) = match transport {
        Some((t, s)) => (Some(t), s),
        None => (None, None),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let drain = Duration::from_secs(config.kafka.as_ref().map_or(0, |k| k.shutdown_drain_secs));
    let link_thread = link_server
        .map(|l| start_link(l, to_pipeline, stop_rx.clone()))
        .transpose()?;
    let network = start_network(shipper, metrics_listener, metrics.clone(), stop_rx, drain)?;

    let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    let intervals = pipeline::Intervals {
        flow_report: secs(config.network.flow_report_interval_secs),
        heartbeat: secs(config.heartbeat.interval_secs),
        gc: Duration::from_secs(30),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (sinks, result) = runtime.block_on(async move {
        let pipeline = pipeline::Pipeline::new(bpf, enricher, sinks, metrics);
        pipeline
            .run(ring, intervals, from_link, shutdown_signal())
            .await
    });
    if let Err(e) = &result {
        error!(error = %e, "the pipeline stopped; closing the spool before exiting");
    }

    // close in pipeline order: batches into the spool, then ship what can be shipped
    drop(sinks);
    if let Some(t) = spool_thread {
        t.join();
    }
    let _ = stop_tx.send(true);
    if let Some(t) = link_thread {
        if t.join().is_err() {
            error!("the gateway link thread panicked");
        }
    }
    if let Some(t) = network {
        if t.join().is_err() {
            error!("the shipper thread panicked");
        }
    }
    result.context("the pipeline failed")?;
    info!("collector stopped");
    Ok(())
}

/// The shipper and the metrics endpoint, on their own thread and runtime so
/// the pipeline's loop never waits for the network.
fn start_network(
    shipper: Option<Shipper>,
    metrics_listener: Option<std::net::TcpListener>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    drain: Duration,
) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    if shipper.is_none() && metrics_listener.is_none() {
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the shipper's runtime")?;
    let thread = std::thread::Builder::new()
        .name("vigil-ship".into())
        .spawn(move || {
            runtime.block_on(async move {
                if let Some(listener) = metrics_listener {
                    tokio::spawn(async move {
                        if let Err(e) = metrics::serve(listener, metrics).await {
                            error!(error = %e, "metrics endpoint stopped");
                        }
                    });
                }
                match shipper {
                    Some(s) => s.run(stop, drain).await,
                    None => {
                        let mut stop = stop;
                        let _ = stop.wait_for(|s| *s).await;
                    }
                }
            })
        })?;
    Ok(Some(thread))
}

/// The gateway link on its own thread and runtime, apart from the
/// pipeline's loop (which answers its questions between drains).
fn start_link(
    server: link::LinkServer,
    to_pipeline: tokio::sync::mpsc::Sender<link::ToPipeline>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the gateway link's runtime")?;
    Ok(std::thread::Builder::new()
        .name("vigil-link".into())
        .spawn(move || {
            if let Err(e) = runtime.block_on(server.serve(to_pipeline, stop)) {
                error!(error = %e, "the gateway link stopped");
            }
            // blocking /proc lookups still running are not waited for long
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        })?)
}

fn create_topics(config: &Config) -> anyhow::Result<()> {
    let kafka = config
        .kafka
        .as_ref()
        .context("the config has no [kafka] table")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let created = runtime
        .block_on(ship::kafka::create_topics(kafka))
        .with_context(|| format!("cannot create topics on {}", kafka.brokers))?;
    for kind in vigil_schema::EventKind::ALL {
        let topic = kafka.topic(kind);
        let state = if created.contains(&topic) {
            "created"
        } else {
            "exists"
        };
        println!("{topic}\t{state}");
    }
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

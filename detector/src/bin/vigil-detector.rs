//! `vigil-detector --config FILE`: run the detection rules over the events
//! of the configured source until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};
use vigil_detector::config::DetectorConfig;
use vigil_detector::detector::Detector;
use vigil_detector::metrics::{self, Metrics};
use vigil_detector::outputs::kafka::AlertPublisher;
use vigil_detector::rules::check::check_dir;
use vigil_detector::rules::engine::Engine;
use vigil_detector::source::kafka::{ensure_topics, KafkaSource};
use vigil_detector::source::spool::SpoolSource;
use vigil_detector::source::Source;

// Arrow allocates and frees buffers per batch and column; glibc malloc spent
// a third of the detector's CPU on it (perf), mimalloc a fraction
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "vigil-detector",
    version,
    about = "Vigil's detector: SQL rules over windows of events, alerts to Parquet and Kafka"
)]
struct Args {
    /// The detector's TOML configuration.
    #[arg(long)]
    config: PathBuf,
    /// Check the configuration and rules, then exit.
    #[arg(long)]
    check: bool,
    /// Print each alert as it is raised (one line per alert version) on stdout.
    #[arg(long)]
    print: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks (scripts/bench-detector): synthetic collector batches into
    /// the config's spool directory, the full rule pack; prints JSON.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Write N events into the spool, then time the detector through them.
    Throughput {
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Keep every event in the window (ignore the rules' keep predicates).
        #[arg(long)]
        keep_all: bool,
    },
    /// Append at a fixed rate while the detector runs; alert latency.
    Latency {
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-detector: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = DetectorConfig::load(&args.config).map_err(anyhow::Error::msg)?;
    if let Some(Command::Bench { what }) = args.command {
        let report = match what {
            Bench::Throughput { events, keep_all } => serde_json::to_string(
                &vigil_detector::bench::throughput(&config, events, keep_all)?,
            )?,
            Bench::Latency { rate, secs } => {
                serde_json::to_string(&vigil_detector::bench::latency(&config, rate, secs)?)?
            }
        };
        println!("{report}");
        return Ok(());
    }
    let engine = Engine::new();
    let checked = check_dir(&engine, &config.rules)
        .with_context(|| format!("rules {}", config.rules.display()))?;
    for e in &checked.errors {
        // a broken rule never stops the others
        error!("rule not loaded: {e}");
    }
    if args.check {
        if !checked.errors.is_empty() {
            bail!("{} rule problem(s)", checked.errors.len());
        }
        println!("config and {} rules OK", checked.rules.len());
        return Ok(());
    }
    if checked.rules.is_empty() {
        warn!(dir = %config.rules.display(), "no rule loaded: alerts cannot be raised");
    }
    info!(rules = checked.rules.len(), dir = %config.rules.display(), "rules loaded");
    let metrics = Arc::new(Metrics::default());
    if !config.metrics.listen.is_empty() {
        metrics::spawn(metrics::bind(&config.metrics.listen)?, metrics.clone());
    }
    let source: Box<dyn Source> = match (&config.source.spool, &config.source.kafka) {
        (Some(dir), _) => {
            info!(spool = %dir.display(), "reading the collector's spool");
            Box::new(SpoolSource::open(dir, &config.data_dir)?)
        }
        (None, Some(k)) => {
            info!(brokers = %k.brokers, group = %k.group_id, "consuming Kafka");
            Box::new(KafkaSource::open(k)?)
        }
        (None, None) => unreachable!("validated"),
    };
    let publisher = match config.alert_brokers() {
        Some(brokers) => {
            let props: Vec<(String, String)> = config
                .source
                .kafka
                .as_ref()
                .map(|k| k.properties.clone().into_iter().collect())
                .unwrap_or_default();
            if let Some(k) = &config.source.kafka {
                ensure_topics(k, std::slice::from_ref(&config.alerts.topic))?;
            }
            info!(topic = %config.alerts.topic, "publishing alerts");
            Some(
                AlertPublisher::new(brokers, &config.alerts.topic, &props)
                    .map_err(anyhow::Error::msg)?,
            )
        }
        None => None,
    };
    let mut detector = Detector::new(&config, checked.rules, source, publisher, metrics)?;
    if args.print {
        detector.on_alert(|a| {
            use std::io::Write;
            let agent = a.agent_id.as_deref().unwrap_or("-");
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "ALERT {} [{}] {} host={} agent={} count={}: {}",
                a.id, a.severity, a.rule_id, a.host_id, agent, a.count, a.summary
            );
            let _ = out.flush();
        });
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    info!(data_dir = %config.data_dir.display(), "detector running");
    detector.run(&STOP)?;
    info!("stopped");
    Ok(())
}

//! The detector's counters, served to Prometheus on loopback (`/metrics`).
//! Every loss has a counter: dead letters, gaps, late rows, window overflow.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tracing::{error, info};

#[derive(Debug, Default)]
pub struct Metrics {
    pub messages: AtomicU64,
    pub events: AtomicU64,
    pub duplicate_batches: AtomicU64,
    /// Batches that never came (sequence jumps).
    pub gap_batches: AtomicU64,
    pub dead_letters: AtomicU64,
    pub corrupt_records: AtomicU64,
    pub skipped_segments: AtomicU64,
    pub late_events: AtomicU64,
    /// Events no rule can use (the rules' `keep` predicates), not held.
    pub unneeded_events: AtomicU64,
    pub window_evicted_events: AtomicU64,
    pub window_overflow_events: AtomicU64,
    pub window_events: AtomicU64,
    /// `messages` as of the last completed evaluation and commit: every
    /// message up to it has had its alerts stored.
    pub evaluated_messages: AtomicU64,
    pub window_bytes: AtomicU64,
    pub evaluations: AtomicU64,
    pub evaluation_ns: AtomicU64,
    pub rule_errors: AtomicU64,
    pub findings: AtomicU64,
    pub alerts_written: AtomicU64,
    pub alerts_published: AtomicU64,
    pub publish_errors: AtomicU64,
    pub commits: AtomicU64,
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub fn set(c: &AtomicU64, n: u64) {
    c.store(n, Ordering::Relaxed);
}

pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[derive(Debug)]
struct Scrape(Arc<Metrics>);

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = &self.0;
        let counters: [(&str, &str, &AtomicU64); 19] = [
            (
                "vigil_detector_unneeded_events",
                "Events no rule can use, not held in the window",
                &m.unneeded_events,
            ),
            (
                "vigil_detector_messages",
                "Messages read from the source",
                &m.messages,
            ),
            (
                "vigil_detector_events",
                "Events taken into the window",
                &m.events,
            ),
            (
                "vigil_detector_duplicate_batches",
                "Batches dropped as already seen (host, kind, seq)",
                &m.duplicate_batches,
            ),
            (
                "vigil_detector_gap_batches",
                "Batches missing from a host's sequence",
                &m.gap_batches,
            ),
            (
                "vigil_detector_dead_letters",
                "Messages that did not decode, kept in the dead-letter place",
                &m.dead_letters,
            ),
            (
                "vigil_detector_corrupt_records",
                "Spool records that failed their checksum",
                &m.corrupt_records,
            ),
            (
                "vigil_detector_skipped_segments",
                "Times spool segments were deleted before they were read",
                &m.skipped_segments,
            ),
            (
                "vigil_detector_late_events",
                "Events older than the window when they arrived",
                &m.late_events,
            ),
            (
                "vigil_detector_window_evicted_events",
                "Events that left the window",
                &m.window_evicted_events,
            ),
            (
                "vigil_detector_window_overflow_events",
                "Events that left the window early because of max_bytes",
                &m.window_overflow_events,
            ),
            (
                "vigil_detector_evaluations",
                "Rule evaluations",
                &m.evaluations,
            ),
            (
                "vigil_detector_evaluation_nanoseconds",
                "Time spent evaluating rules",
                &m.evaluation_ns,
            ),
            (
                "vigil_detector_rule_errors",
                "Rule evaluations that failed",
                &m.rule_errors,
            ),
            (
                "vigil_detector_findings",
                "Rows rules returned",
                &m.findings,
            ),
            (
                "vigil_detector_alerts_written",
                "Alert versions written to Parquet",
                &m.alerts_written,
            ),
            (
                "vigil_detector_alerts_published",
                "Alert versions acknowledged by the alerts topic",
                &m.alerts_published,
            ),
            (
                "vigil_detector_publish_errors",
                "Failed publications to the alerts topic (retried)",
                &m.publish_errors,
            ),
            (
                "vigil_detector_commits",
                "Source positions committed",
                &m.commits,
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(get(value));
            c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        for (name, help, value) in [
            (
                "vigil_detector_window_events_held",
                "Events held in the window",
                &m.window_events,
            ),
            (
                "vigil_detector_window_bytes",
                "Memory held by the window's batches",
                &m.window_bytes,
            ),
            (
                "vigil_detector_evaluated_messages",
                "Messages whose alerts are stored and whose position is committed",
                &m.evaluated_messages,
            ),
        ] {
            let g = ConstGauge::new(get(value) as i64);
            g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// Bind the metrics listener (at start-up, so a bad address fails early).
pub fn bind(addr: &str) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for metrics on {addr}: {e}"),
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serve `/metrics` on its own thread.
pub fn spawn(listener: std::net::TcpListener, metrics: Arc<Metrics>) {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            if let Err(e) = rt.block_on(serve(listener, metrics)) {
                error!(error = %e, "metrics listener stopped");
            }
        })
        .expect("spawn metrics thread");
}

async fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(metrics)));
    let registry = Arc::new(registry);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response(),
                    Err(e) => {
                        error!(error = %e, "cannot encode metrics");
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::from_std(listener)?;
    info!(%addr, "metrics at http://{addr}/metrics");
    axum::serve(listener, app).await
}

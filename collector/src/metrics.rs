//! The collector's own counters: shared by every stage, reported in
//! heartbeats and served to Prometheus on loopback (`/metrics`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tracing::{error, info};
use vigil_schema::{EventKind, TransportStats};
use vigil_spool::Spool;

/// Every counter of one collector. Stages add to them; readers load them.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events produced, by kind (index of `EventKind::ALL`).
    pub events: [AtomicU64; EventKind::ALL.len()],
    pub decode_errors: AtomicU64,
    pub processes_tracked: AtomicU64,
    /// Kernel drops by record kind, mirrored from the BPF map.
    pub kernel_drops: Mutex<BTreeMap<String, u64>>,
    /// Batches lost before the spool (it refused to write them).
    pub queue_drops_batches: AtomicU64,
    pub queue_drops_events: AtomicU64,
    /// Time the pipeline waited for the spool writer (backpressure), ns.
    pub spool_wait_ns: AtomicU64,
    pub shipped_batches: AtomicU64,
    pub shipped_events: AtomicU64,
    pub shipped_messages: AtomicU64,
    pub shipped_bytes: AtomicU64,
    pub delivery_failures: AtomicU64,
    /// Messages handed to the producer and not yet acknowledged.
    pub producer_queue: AtomicU64,
    /// Whether the last attempt to reach the broker succeeded.
    pub broker_up: AtomicU64,
    pub loss_events: AtomicU64,
    pub spool: OnceLock<Arc<Spool>>,
    // gateway link
    pub link_lookups: AtomicU64,
    pub link_unattributed: AtomicU64,
    pub link_jobs: AtomicU64,
    pub link_refused: AtomicU64,
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Metrics {
    pub fn count_event(&self, kind: EventKind) {
        // codes are 1..=ALL.len(), in ALL's order
        add(&self.events[usize::from(kind.code()) - 1], 1);
    }

    pub fn events_total(&self) -> u64 {
        self.events.iter().map(get).sum()
    }

    pub fn kernel_drops(&self) -> BTreeMap<String, u64> {
        self.kernel_drops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn transport(&self) -> TransportStats {
        let mut t = TransportStats {
            batches_shipped: get(&self.shipped_batches),
            events_shipped: get(&self.shipped_events),
            producer_queue: get(&self.producer_queue),
            ..Default::default()
        };
        if let Some(spool) = self.spool.get() {
            let c = &spool.counters;
            t.batches_spooled = get(&c.batches_spooled);
            t.events_spooled = get(&c.events_spooled);
            t.spool_bytes = get(&c.bytes);
            t.evicted_batches = get(&c.evicted_batches);
            t.evicted_events = get(&c.evicted_events);
            t.corrupt_records = get(&c.corrupt_records);
        }
        t
    }
}

/// Reads [`Metrics`] at scrape time.
#[derive(Debug)]
struct Scrape(Arc<Metrics>);

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let g = ConstGauge::new(value as i64);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn labelled_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    values: &[(String, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (value, n) in values {
        let labels = [(label, value.as_str())];
        ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = &self.0;
        let events: Vec<(String, u64)> = EventKind::ALL
            .iter()
            .zip(&m.events)
            .map(|(k, c)| (k.as_str().to_string(), get(c)))
            .collect();
        labelled_counter(
            &mut e,
            "vigil_events",
            "Events produced, by kind",
            "kind",
            &events,
        )?;
        let drops: Vec<(String, u64)> = m.kernel_drops().into_iter().collect();
        labelled_counter(
            &mut e,
            "vigil_kernel_drops",
            "Records the kernel could not put in the ring buffer, by record kind",
            "record",
            &drops,
        )?;
        counter(
            &mut e,
            "vigil_decode_errors",
            "Undecodable BPF records",
            get(&m.decode_errors),
        )?;
        gauge(
            &mut e,
            "vigil_processes_tracked",
            "Processes in the process table",
            get(&m.processes_tracked),
        )?;
        counter(
            &mut e,
            "vigil_queue_dropped_batches",
            "Batches the spool could not write",
            get(&m.queue_drops_batches),
        )?;
        counter(
            &mut e,
            "vigil_queue_dropped_events",
            "Events in batches the spool could not write",
            get(&m.queue_drops_events),
        )?;
        counter(
            &mut e,
            "vigil_spool_wait_nanoseconds",
            "Time the pipeline waited for the spool writer",
            get(&m.spool_wait_ns),
        )?;
        if let Some(spool) = m.spool.get() {
            let c = &spool.counters;
            counter(
                &mut e,
                "vigil_spool_batches",
                "Batches written to the spool",
                get(&c.batches_spooled),
            )?;
            counter(
                &mut e,
                "vigil_spool_events",
                "Events written to the spool",
                get(&c.events_spooled),
            )?;
            gauge(
                &mut e,
                "vigil_spool_bytes",
                "Bytes in the spool's segment files",
                get(&c.bytes),
            )?;
            counter(
                &mut e,
                "vigil_spool_evicted_batches",
                "Unshipped batches evicted because the spool was full",
                get(&c.evicted_batches),
            )?;
            counter(
                &mut e,
                "vigil_spool_evicted_events",
                "Unshipped events evicted because the spool was full",
                get(&c.evicted_events),
            )?;
            counter(
                &mut e,
                "vigil_spool_retired_segments",
                "Segments deleted by the size bound with no shipper configured",
                get(&c.retired_segments),
            )?;
            counter(
                &mut e,
                "vigil_spool_corrupt_records",
                "Spool records skipped because their checksum failed",
                get(&c.corrupt_records),
            )?;
        }
        counter(
            &mut e,
            "vigil_shipped_batches",
            "Batches acknowledged by Kafka",
            get(&m.shipped_batches),
        )?;
        counter(
            &mut e,
            "vigil_shipped_events",
            "Events acknowledged by Kafka",
            get(&m.shipped_events),
        )?;
        counter(
            &mut e,
            "vigil_shipped_messages",
            "Kafka messages acknowledged",
            get(&m.shipped_messages),
        )?;
        counter(
            &mut e,
            "vigil_shipped_bytes",
            "Payload bytes acknowledged by Kafka",
            get(&m.shipped_bytes),
        )?;
        counter(
            &mut e,
            "vigil_delivery_failures",
            "Kafka deliveries that failed (the batches are sent again)",
            get(&m.delivery_failures),
        )?;
        gauge(
            &mut e,
            "vigil_producer_queue",
            "Messages handed to the producer and not yet acknowledged",
            get(&m.producer_queue),
        )?;
        gauge(
            &mut e,
            "vigil_broker_up",
            "1 when the last exchange with the broker succeeded",
            get(&m.broker_up),
        )?;
        counter(
            &mut e,
            "vigil_loss_reports",
            "collector loss events emitted",
            get(&m.loss_events),
        )?;
        let link: [(&str, &str, &AtomicU64); 4] = [
            (
                "vigil_link_lookups",
                "callers the quantum job gateway asked about",
                &m.link_lookups,
            ),
            (
                "vigil_link_unattributed",
                "gateway callers no process could be found for",
                &m.link_unattributed,
            ),
            (
                "vigil_link_jobs",
                "job records received from the gateway",
                &m.link_jobs,
            ),
            (
                "vigil_link_refused",
                "link connections refused: the peer's user is not allowed",
                &m.link_refused,
            ),
        ];
        for (name, help, value) in link {
            counter(&mut e, name, help, get(value))?;
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

/// Serve `/metrics` until the runtime stops.
pub async fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
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

use axum::response::IntoResponse;

pub fn set(c: &AtomicU64, n: u64) {
    c.store(n, Ordering::Relaxed);
}

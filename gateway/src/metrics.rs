//! The gateway's counters, served to Prometheus on loopback (`/metrics`).
//! Each is declared once, with its name and help, in `counters!`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tracing::{error, info};

macro_rules! counters {
    ($( $(#[$kind:ident])? $field:ident: $name:literal, $help:literal; )*) => {
        /// Every counter of one gateway.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( pub $field: AtomicU64, )*
        }

        impl Metrics {
            /// (name, help, is a gauge, value) of each.
            fn all(&self) -> Vec<(&'static str, &'static str, bool, u64)> {
                vec![$( ($name, $help, counters!(@gauge $($kind)?), get(&self.$field)), )*]
            }
        }
    };
    (@gauge gauge) => { true };
    (@gauge) => { false };
}

counters! {
    requests: "vigil_gateway_requests_total", "requests received";
    jobs: "vigil_gateway_jobs_total", "job submissions received";
    polls: "vigil_gateway_status_polls_total", "job status polls relayed";
    denied: "vigil_gateway_denied_total", "calls refused by the policy";
    monitored: "vigil_gateway_monitored_total", "calls over a limit or off the allowlist, forwarded in monitor mode";
    not_allowed: "vigil_gateway_not_allowlisted_total", "calls to operations not on the provider's allowlist";
    token_mismatches: "vigil_gateway_token_mismatches_total", "calls whose token belongs to another agent than the caller's";
    parse_errors: "vigil_gateway_parse_errors_total", "bodies that could not be read (limits included)";
    limit_hits: "vigil_gateway_limit_hits_total", "requests refused by a work limit (size, time, depth, elements)";
    upstream_errors: "vigil_gateway_upstream_errors_total", "requests the upstream failed or did not answer in time";
    unattributed: "vigil_gateway_unattributed_total", "callers the collector could not place";
    connections_refused: "vigil_gateway_connections_refused_total", "connections closed at accept: max_connections reached";
    records: "vigil_gateway_records_total", "job records made";
    records_dropped: "vigil_gateway_records_dropped_total", "job records dropped: the buffer for the collector was full";
    #[gauge] records_buffered: "vigil_gateway_records_buffered", "job records not yet acknowledged by the collector";
    link_disconnects: "vigil_gateway_link_disconnects_total", "times the link to the collector was lost";
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
        for (name, help, is_gauge, value) in self.0.all() {
            // prometheus-client adds `_total` to counters itself
            if is_gauge {
                let g = ConstGauge::new(value as i64);
                g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)?;
            } else {
                let c = ConstCounter::new(value);
                let name = name.trim_end_matches("_total");
                c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// Serve `/metrics` on `listener` until the runtime stops.
pub async fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
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
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    info!(%addr, "metrics at http://{addr}/metrics");
    axum::serve(listener, app).await
}

//! The gateway's counters, served to Prometheus on loopback (`/metrics`).
//! Each is declared once, with its name and help, in `counters!`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// Scrapers served at once; more connections are closed at accept (any
/// local user can connect: they must not take the gateway's descriptors).
const SCRAPERS: usize = 8;
/// A scraper's request must arrive within this long.
const SCRAPE_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serve `/metrics` on `listener` until the runtime stops.
pub async fn serve(listener: std::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(metrics)));
    let registry = Arc::new(registry);
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let slots = Arc::new(tokio::sync::Semaphore::new(SCRAPERS));
    info!(%addr, "metrics at http://{addr}/metrics");
    loop {
        let (stream, _) = listener.accept().await?;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let response = scrape(&registry, req.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(SCRAPE_HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

fn scrape(registry: &Registry, path: &str) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, content_type, body) = if path != "/metrics" {
        (
            http::StatusCode::NOT_FOUND,
            "text/plain",
            String::from("not found\n"),
        )
    } else {
        let mut body = String::new();
        match prometheus_client::encoding::text::encode(&mut body, registry) {
            Ok(()) => (
                http::StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Err(e) => {
                error!(error = %e, "cannot encode metrics");
                (
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    String::new(),
                )
            }
        }
    };
    let mut resp = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn every_counter_is_scraped_under_its_declared_name() {
        let metrics = Arc::new(Metrics::default());
        add(&metrics.denied, 3);
        set(&metrics.records_buffered, 7);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(metrics)));
        let resp = scrape(&registry, "/metrics");
        assert_eq!(resp.status(), http::StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("vigil_gateway_denied_total 3"), "{text}");
        assert!(text.contains("vigil_gateway_records_buffered 7"), "{text}");
        assert_eq!(
            scrape(&registry, "/other").status(),
            http::StatusCode::NOT_FOUND
        );
    }
}

//! The Kafka shipper: sends spooled batches in order, and acknowledges them
//! in the spool only once the broker has (acks=all, idempotent producer).
//!
//! A failed delivery is not retried message by message: everything in
//! flight is let go, missing topics are created again (a broker with memory
//! storage forgets them on restart), and sending resumes from the first
//! unacknowledged batch in the spool. A batch may so reach the broker twice;
//! its (host, kind, seq) says so.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio::sync::{watch, Notify};
use tracing::{error, info, warn};
use vigil_schema::{EventKind, SCHEMA_VERSION};
use vigil_spool::reader::Read;
use vigil_spool::segment::Record;
use vigil_spool::{Encoding, Position, SpoolReader};

use crate::config::KafkaConfig;
use crate::metrics::{self, Metrics};

/// Messages in flight at most (each Arrow message is a whole batch).
const MAX_IN_FLIGHT: usize = 50_000;
/// Bytes in flight at most; also at most a quarter of the spool, because
/// segments in flight cannot be evicted and the bound must hold while the
/// broker is away.
const MAX_IN_FLIGHT_BYTES: usize = 32 << 20;
/// The cursor file is rewritten at most this often.
const CURSOR_EVERY: Duration = Duration::from_millis(200);
/// Waiting after a failure, doubled each time up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long the admin client waits for the broker.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Producer settings Vigil depends on; the config may override the tunables.
fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        // the same key → partition mapping as Java clients, so consumers
        // grouping by partition see every kind of one host together
        .set("partitioner", "murmur2_random")
        // a message unacknowledged this long is sent again from the spool
        .set("message.timeout.ms", "30000")
        .set("topic.metadata.propagation.max.ms", "5000")
        .set("message.max.bytes", "67108864")
        .set("client.id", "vigil-collector");
    for (k, v) in config.rdkafka_properties() {
        c.set(k, v);
    }
    c
}

/// Check the passed-through librdkafka properties without connecting.
pub fn validate(config: &KafkaConfig) -> Result<(), String> {
    client_config(config)
        .create::<rdkafka::producer::BaseProducer>()
        .map(drop)
        .map_err(|e| match e {
            // name the key as it is written in the config file
            KafkaError::ClientConfig(_, description, key, value) => {
                format!(
                    "\"{key}\" = {value:?}: {}",
                    description.trim_end_matches(&*format!(" {key} {value}"))
                )
            }
            other => other.to_string(),
        })
}

/// Create every event kind's topic that does not exist yet.
pub async fn create_topics(config: &KafkaConfig) -> Result<Vec<String>, KafkaError> {
    let admin: AdminClient<LogContext> =
        client_config(config).create_with_context(LogContext::default())?;
    let names: Vec<String> = EventKind::ALL.iter().map(|k| config.topic(*k)).collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n,
                config.partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Timeout::After(ADMIN_TIMEOUT)));
    let results = tokio::time::timeout(ADMIN_TIMEOUT * 2, admin.create_topics(&topics, &options))
        .await
        .map_err(|_| KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut))??;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOpCreation(format!(
                    "cannot create topic {name}: {code}"
                )))
            }
        }
    }
    Ok(created)
}

/// librdkafka reports every failed reconnect as an error; while a broker is
/// away that is one line per attempt. This logs each kind of error at most
/// once a minute, as a warning: the shipper's own messages say what matters.
#[derive(Default)]
struct LogContext {
    last: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl LogContext {
    fn throttled(&self, key: String) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match last.get(&key) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(60) => true,
            _ => {
                last.insert(key, now);
                false
            }
        }
    }
}

impl rdkafka::ClientContext for LogContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if matches!(
            level,
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
        ) && !self.throttled(format!("log:{fac}"))
        {
            warn!(facility = fac, "librdkafka: {log_message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !self.throttled(format!("error:{:?}", error.rdkafka_error_code())) {
            warn!(%error, reason, "librdkafka (repeats within a minute are not logged)");
        }
    }
}

struct InFlight {
    /// None: the producer refused the message; counts as a failed delivery.
    delivery: Option<DeliveryFuture>,
    /// Set on a batch's last message: where the spool may be acknowledged up to.
    end: Option<Position>,
    events: u64,
    bytes: usize,
}

pub struct Shipper {
    config: KafkaConfig,
    host_id: String,
    reader: SpoolReader,
    producer: FutureProducer<LogContext>,
    topics: Vec<(EventKind, String)>,
    in_flight: VecDeque<InFlight>,
    in_flight_bytes: usize,
    max_in_flight_bytes: usize,
    /// The rest of a batch the producer's queue had no room for.
    pending: Option<(Record, Position, usize)>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    backoff: Duration,
    cursor_saved: tokio::time::Instant,
    /// The position last written to the cursor file.
    saved: Option<Position>,
}

enum Step {
    Continue,
    Stop,
}

impl Shipper {
    pub fn new(
        config: KafkaConfig,
        host_id: String,
        reader: SpoolReader,
        spool_max_bytes: u64,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KafkaError> {
        let producer = client_config(&config).create_with_context(LogContext::default())?;
        let topics = EventKind::ALL
            .iter()
            .map(|k| (*k, config.topic(*k)))
            .collect();
        Ok(Self {
            config,
            host_id,
            reader,
            producer,
            topics,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            max_in_flight_bytes: MAX_IN_FLIGHT_BYTES.min((spool_max_bytes / 4) as usize),
            pending: None,
            wake,
            metrics,
            backoff: BACKOFF_MIN,
            cursor_saved: tokio::time::Instant::now(),
            saved: None,
        })
    }

    /// Ship until `stop` turns true; then keep shipping what is spooled for
    /// at most `drain` before returning (the rest goes at the next start).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, drain: Duration) {
        self.ensure_topics().await;
        loop {
            if *stop.borrow() {
                break;
            }
            match self.step(&mut stop).await {
                Step::Continue => {}
                Step::Stop => break,
            }
        }
        let deadline = tokio::time::Instant::now() + drain;
        let (_keep, mut never) = watch::channel(false);
        while tokio::time::Instant::now() < deadline {
            self.fill();
            if self.in_flight.is_empty() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.step(&mut never)).await {
                Ok(_) => {}
                Err(_) => break,
            }
        }
        self.save_cursor();
        if !self.in_flight.is_empty() {
            info!(
                messages = self.in_flight.len(),
                "shipper stopped with messages unacknowledged: they stay spooled"
            );
        }
    }

    /// Send what the window allows, then wait for the oldest delivery, new
    /// spooled data or `stop`.
    async fn step(&mut self, stop: &mut watch::Receiver<bool>) -> Step {
        self.fill();
        metrics::set(&self.metrics.producer_queue, self.in_flight.len() as u64);
        let Some(front) = self.in_flight.front_mut() else {
            self.save_cursor();
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = stop.changed() => return Step::Stop,
            }
            return Step::Continue;
        };
        let Some(delivery) = front.delivery.as_mut() else {
            self.in_flight.pop_front();
            self.failed(KafkaError::Canceled).await;
            return Step::Continue;
        };
        tokio::select! {
            result = delivery => {
                let done = self.in_flight.pop_front().expect("front exists");
                self.in_flight_bytes -= done.bytes;
                match result {
                    Ok(Ok(_)) => self.delivered(done),
                    Ok(Err((e, _))) => self.failed(e).await,
                    Err(_canceled) => self.failed(KafkaError::Canceled).await,
                }
            }
            _ = self.wake.notified() => {}
            _ = stop.changed() => return Step::Stop,
        }
        Step::Continue
    }

    fn delivered(&mut self, done: InFlight) {
        let m = &self.metrics;
        metrics::add(&m.shipped_messages, 1);
        metrics::add(&m.shipped_bytes, done.bytes as u64);
        metrics::set(&m.broker_up, 1);
        if let Some(end) = done.end {
            metrics::add(&m.shipped_batches, 1);
            metrics::add(&m.shipped_events, done.events);
            self.reader.ack(end);
            self.backoff = BACKOFF_MIN;
            if self.cursor_saved.elapsed() >= CURSOR_EVERY {
                self.save_cursor();
            }
        }
    }

    /// A delivery failed: let everything in flight go, make sure the topics
    /// exist, wait, and send again from the first unacknowledged batch.
    async fn failed(&mut self, e: KafkaError) {
        metrics::add(&self.metrics.delivery_failures, 1);
        metrics::set(&self.metrics.broker_up, 0);
        warn!(error = %e, in_flight = self.in_flight.len(), retry_in_ms = self.backoff.as_millis() as u64,
            "Kafka delivery failed; resending from the spool");
        self.producer
            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        for f in self.in_flight.drain(..) {
            if let Some(d) = f.delivery {
                let _ = d.await;
            }
        }
        self.in_flight_bytes = 0;
        self.pending = None;
        metrics::set(&self.metrics.producer_queue, 0);
        // A new producer for a new start: the idempotence state of the old
        // one (producer id, epoch, sequences) may be unknown to a broker that
        // restarted (Tansu answers ProducerFenced) or poisoned by the failure.
        match client_config(&self.config).create_with_context(LogContext::default()) {
            Ok(p) => self.producer = p,
            Err(e) => error!(error = %e, "cannot create a new producer; keeping the old one"),
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.ensure_topics().await;
        self.reader.rewind();
    }

    async fn ensure_topics(&mut self) {
        if !self.config.create_topics {
            return;
        }
        match create_topics(&self.config).await {
            Ok(created) if !created.is_empty() => {
                metrics::set(&self.metrics.broker_up, 1);
                info!(topics = ?created, "created Kafka topics");
            }
            Ok(_) => metrics::set(&self.metrics.broker_up, 1),
            Err(e) => {
                metrics::set(&self.metrics.broker_up, 0);
                warn!(error = %e, brokers = %self.config.brokers, "cannot reach Kafka to create topics; events stay spooled");
            }
        }
    }

    /// Hand spooled batches to the producer while the window has room.
    fn fill(&mut self) {
        if let Some((record, end, from)) = self.pending.take() {
            if self.send(record, end, from).is_err() {
                return;
            }
        }
        while self.in_flight.len() < MAX_IN_FLIGHT
            && self.in_flight_bytes < self.max_in_flight_bytes
        {
            match self.reader.next_batch() {
                Ok(Read::Batch { record, end }) => {
                    if self.send(record, end, 0).is_err() {
                        break;
                    }
                }
                Ok(Read::Corrupt {
                    segment,
                    offset,
                    reason,
                }) => {
                    error!(
                        segment,
                        offset, reason, "spool: corrupt record skipped (counted)"
                    );
                }
                Ok(Read::Idle) => break,
                Err(e) => {
                    error!(error = %e, "spool: cannot read");
                    break;
                }
            }
        }
    }

    /// Hand one batch's messages to the producer, from message `from` on.
    /// Stops at a full producer queue, keeping the rest for the next `fill`.
    fn send(&mut self, record: Record, end: Position, from: usize) -> Result<(), ()> {
        let h = record.header;
        let (Some(kind), Some(encoding)) = (h.kind(), h.encoding()) else {
            error!(
                kind = h.kind,
                encoding = h.encoding,
                "spool: record of unknown kind or encoding skipped"
            );
            self.reader.ack(end);
            return Ok(());
        };
        let topic = self
            .topics
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("every kind has a topic")
            .1
            .clone();
        let messages: Vec<&[u8]> = match encoding {
            Encoding::Arrow => vec![&record.payload[..]],
            Encoding::Json => record
                .payload
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect(),
        };
        let identity = [
            ("vigil.host_id", self.host_id.clone()),
            ("vigil.kind", kind.as_str().to_string()),
            ("vigil.seq", h.seq.to_string()),
            ("vigil.schema_version", SCHEMA_VERSION.to_string()),
            ("vigil.encoding", encoding.as_str().to_string()),
            ("vigil.events", h.events.to_string()),
        ];
        let last = messages.len().saturating_sub(1);
        for (i, payload) in messages.iter().enumerate().skip(from) {
            let mut headers = OwnedHeaders::new_with_capacity(identity.len() + 1);
            for (key, value) in &identity {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                });
            }
            if encoding == Encoding::Json {
                headers = headers.insert(Header {
                    key: "vigil.index",
                    value: Some(&i.to_string()),
                });
            }
            let msg = FutureRecord::to(&topic)
                .key(self.host_id.as_bytes())
                .payload(*payload)
                .headers(headers);
            let delivery = match self.producer.send_result(msg) {
                Ok(d) => Some(d),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.pending = Some((record.clone(), end, i));
                    return Err(());
                }
                Err((e, _)) => {
                    // not retriable message by message: fail the window, resend from the spool
                    error!(error = %e, topic, "cannot hand a message to the producer");
                    None
                }
            };
            self.in_flight_bytes += payload.len();
            self.in_flight.push_back(InFlight {
                delivery,
                end: (i == last).then_some(end),
                events: u64::from(h.events),
                bytes: payload.len(),
            });
        }
        Ok(())
    }

    fn save_cursor(&mut self) {
        let acked = self.reader.acked();
        if self.saved == Some(acked) {
            return;
        }
        match self.reader.save_cursor() {
            Ok(()) => self.saved = Some(acked),
            Err(e) => error!(error = %e, "spool: cannot save the shipper's position"),
        }
        self.cursor_saved = tokio::time::Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(extra: &str) -> KafkaConfig {
        let c =
            crate::config::Config::parse(&format!("[kafka]\nbrokers = \"127.0.0.1:1\"\n{extra}"))
                .unwrap();
        c.kafka.unwrap()
    }

    #[test]
    fn librdkafka_properties_are_checked_without_a_broker() {
        assert_eq!(validate(&kafka("\"linger.ms\" = 20\n")), Ok(()));
        let err = validate(&kafka("\"no.such.property\" = 1\n")).unwrap_err();
        assert!(err.contains("no.such.property"), "{err}");
        let err = validate(&kafka("\"acks\" = \"sometimes\"\n")).unwrap_err();
        assert!(err.contains("acks"), "{err}");
    }
}

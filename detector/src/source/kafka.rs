//! The Kafka source: a consumer group over the event topics. Collectors key
//! messages by `host_id` with the same partitioner on every topic, so the
//! `range` assignor gives one detector every kind of a host: detectors
//! scale out by partitions. Offsets are committed by hand (see
//! [`Source::commit`]); dead letters go to a topic with the reason in a
//! header.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};
use vigil_spool::Encoding;

use super::{Envelope, Message, Origin, Polled, Source, SourceError, Stream};
use crate::config::KafkaSourceConfig;

pub struct KafkaSource {
    consumer: BaseConsumer,
    producer: BaseProducer,
    dead_letter_topic: String,
    /// Next offset to read, per partition polled from.
    next: BTreeMap<Stream, i64>,
    committed: BTreeMap<Stream, i64>,
    topics: BTreeMap<String, Arc<str>>,
}

/// The client settings of both the consumer and the dead-letter producer.
pub fn client_config(config: &KafkaSourceConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    for (k, v) in &config.properties {
        c.set(k, v);
    }
    c
}

/// Create `topics` that do not exist (a broker with memory storage forgets them).
pub fn ensure_topics(config: &KafkaSourceConfig, topics: &[String]) -> Result<(), SourceError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config)
        .create()
        .map_err(|e| SourceError::Kafka(format!("admin client: {e}")))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, config.partitions, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SourceError::Kafka(e.to_string()))?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = rt
        .block_on(admin.create_topics(&new, &opts))
        .map_err(|e| SourceError::Kafka(format!("create topics: {e}")))?;
    for r in results {
        match r {
            Ok(t) => info!(topic = %t, "created topic"),
            Err((t, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %t, "topic exists")
            }
            Err((t, e)) => return Err(SourceError::Kafka(format!("create topic {t}: {e}"))),
        }
    }
    Ok(())
}

impl KafkaSource {
    pub fn open(config: &KafkaSourceConfig) -> Result<KafkaSource, SourceError> {
        let mut topics = config.topics.clone();
        topics.push(config.dead_letter_topic.clone());
        ensure_topics(config, &topics)?;
        let consumer: BaseConsumer = client_config(config)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // co-partitioned topics: a host's kinds go to one detector
            .set("partition.assignment.strategy", "range")
            .set("client.id", "vigil-detector")
            .create()
            .map_err(|e| SourceError::Kafka(format!("consumer: {e}")))?;
        let names: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| SourceError::Kafka(format!("subscribe {names:?}: {e}")))?;
        let producer: BaseProducer = client_config(config)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("client.id", "vigil-detector-deadletter")
            .create()
            .map_err(|e| SourceError::Kafka(format!("dead-letter producer: {e}")))?;
        Ok(KafkaSource {
            consumer,
            producer,
            dead_letter_topic: config.dead_letter_topic.clone(),
            next: BTreeMap::new(),
            committed: BTreeMap::new(),
            topics: BTreeMap::new(),
        })
    }
}

/// One shared name per topic, not one allocation per message.
fn interned(topics: &mut BTreeMap<String, Arc<str>>, name: &str) -> Arc<str> {
    if let Some(t) = topics.get(name) {
        return t.clone();
    }
    let t: Arc<str> = Arc::from(name);
    topics.insert(name.to_string(), t.clone());
    t
}

fn header_str<'a>(
    headers: Option<&'a rdkafka::message::BorrowedHeaders>,
    key: &str,
) -> Option<&'a str> {
    headers?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

impl Source for KafkaSource {
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Polled>, SourceError> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < max {
            let left = if out.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let Some(m) = self.consumer.poll(left) else {
                break;
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    // broker away, topic not yet created: librdkafka retries
                    warn!(error = %e, "kafka consumer");
                    if Instant::now() >= deadline {
                        break;
                    }
                    continue;
                }
            };
            let headers = m.headers();
            let encoding = match header_str(headers, "vigil.encoding") {
                Some("json") => Encoding::Json,
                _ => Encoding::Arrow,
            };
            let envelope = Envelope {
                kind: header_str(headers, "vigil.kind").map(str::to_string),
                host_id: header_str(headers, "vigil.host_id").map(str::to_string),
                seq: header_str(headers, "vigil.seq").and_then(|s| s.parse().ok()),
                index: header_str(headers, "vigil.index").and_then(|s| s.parse().ok()),
                schema_version: header_str(headers, "vigil.schema_version").map(str::to_string),
            };
            let topic = interned(&mut self.topics, m.topic());
            let origin = Origin::Kafka {
                topic,
                partition: m.partition(),
                offset: m.offset(),
            };
            self.next.insert(origin.stream(), m.offset() + 1);
            out.push(Polled::Message(Message {
                payload: m.payload().unwrap_or_default().to_vec(),
                encoding,
                envelope,
                origin,
            }));
        }
        Ok(out)
    }

    fn dead_letter(&mut self, message: &Message, reason: &str) -> Result<(), SourceError> {
        let origin = message.origin.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "vigil.dead_letter.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "vigil.dead_letter.origin",
                value: Some(&origin),
            });
        let e = &message.envelope;
        for (key, value) in [
            ("vigil.kind", e.kind.clone()),
            ("vigil.host_id", e.host_id.clone()),
            ("vigil.seq", e.seq.map(|s| s.to_string())),
            ("vigil.schema_version", e.schema_version.clone()),
        ] {
            if let Some(v) = value {
                headers = headers.insert(Header {
                    key,
                    value: Some(&v),
                });
            }
        }
        let key = e.host_id.clone().unwrap_or_default();
        self.producer
            .send(
                BaseRecord::to(&self.dead_letter_topic)
                    .payload(&message.payload)
                    .key(&key)
                    .headers(headers),
            )
            .map_err(|(err, _)| SourceError::DeadLetter {
                place: self.dead_letter_topic.clone(),
                message: err.to_string(),
            })?;
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|err| SourceError::DeadLetter {
                place: self.dead_letter_topic.clone(),
                message: err.to_string(),
            })
    }

    fn commit(&mut self, oldest: &BTreeMap<Stream, Origin>) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        let mut now = BTreeMap::new();
        // after a rebalance only the partitions still ours may be committed
        let assigned = self
            .consumer
            .assignment()
            .map_err(|e| SourceError::Kafka(format!("assignment: {e}")))?;
        for (stream, next) in &self.next {
            let Stream::Kafka { topic, partition } = stream else {
                continue;
            };
            if assigned.find_partition(topic, *partition).is_none() {
                continue;
            }
            let at = match oldest.get(stream) {
                Some(Origin::Kafka { offset, .. }) => *offset,
                _ => *next,
            };
            if self.committed.get(stream) == Some(&at) {
                continue;
            }
            tpl.add_partition_offset(topic, *partition, Offset::Offset(at))
                .map_err(|e| SourceError::Kafka(e.to_string()))?;
            now.insert(stream.clone(), at);
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| SourceError::Kafka(format!("commit offsets: {e}")))?;
        self.committed.extend(now);
        Ok(())
    }

    fn dead_letter_place(&self) -> String {
        format!("topic {}", self.dead_letter_topic)
    }
}

//! Alerts on a Kafka topic (default `vigil.alerts`): one JSON object per
//! alert version, keyed by alert id, headers `vigil.alert_id`,
//! `vigil.rule_id`, `vigil.severity`. [`AlertPublisher::publish`] returns
//! once the broker has acknowledged every message (acks=all, idempotent).

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::alerts::Alert;

pub struct AlertPublisher {
    producer: FutureProducer,
    topic: String,
    runtime: tokio::runtime::Runtime,
}

impl AlertPublisher {
    pub fn new(
        brokers: &str,
        topic: &str,
        properties: &[(String, String)],
    ) -> Result<AlertPublisher, String> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("client.id", "vigil-detector-alerts");
        for (k, v) in properties {
            c.set(k, v);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        // the producer's futures complete on librdkafka's thread: any runtime may await them
        let producer = c.create().map_err(|e| format!("alerts producer: {e}"))?;
        Ok(AlertPublisher {
            producer,
            topic: topic.to_string(),
            runtime,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Send every alert version and wait for the broker's acknowledgements.
    pub fn publish(&self, alerts: &[Alert]) -> Result<(), String> {
        let mut pending = Vec::with_capacity(alerts.len());
        for a in alerts {
            let payload = serde_json::to_vec(a).expect("alerts serialize");
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "vigil.alert_id",
                    value: Some(&a.id),
                })
                .insert(Header {
                    key: "vigil.rule_id",
                    value: Some(&a.rule_id),
                })
                .insert(Header {
                    key: "vigil.severity",
                    value: Some(&a.severity),
                });
            let record = FutureRecord::to(&self.topic)
                .key(&a.id)
                .payload(&payload)
                .headers(headers);
            pending.push(
                self.producer
                    .send_result(record)
                    .map_err(|(e, _)| format!("alerts topic {}: {e}", self.topic))?,
            );
        }
        self.runtime.block_on(async {
            for p in pending {
                match tokio::time::timeout(Duration::from_secs(60), p).await {
                    Ok(Ok(Ok(_))) => {}
                    Ok(Ok(Err((e, _)))) => return Err(format!("alerts topic {}: {e}", self.topic)),
                    Ok(Err(_)) => {
                        return Err(format!("alerts topic {}: delivery cancelled", self.topic))
                    }
                    Err(_) => {
                        return Err(format!(
                            "alerts topic {}: no acknowledgement in 60 s",
                            self.topic
                        ))
                    }
                }
            }
            Ok(())
        })
    }
}

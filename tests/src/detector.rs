//! Harness for the detector's end-to-end tests: the built-in rules'
//! examples as one scenario of collector batches, written where a real
//! collector writes them (Kafka topics with its headers, or a spool), and
//! the real `vigil-detector` binary reading them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::Value;
use vigil_detector::alerts::{latest, store, Alert};
use vigil_detector::rules::examples::event;
use vigil_detector::rules::model::{load_dir, Rule};
use vigil_schema::arrow::EventBatchBuilder;
use vigil_schema::ipc::{self, Compression};
use vigil_schema::{Event, EventKind, SCHEMA_VERSION};
use vigil_spool::{Encoding, Fsync, SpoolWriter, WriterOptions};

use crate::workspace_bin;

/// The repository's `rules/` directory.
pub fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

pub fn builtin_rules() -> Vec<Rule> {
    load_dir(&rules_dir())
        .expect("read rules/")
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("built-in rule does not load: {e:?}")))
        .collect()
}

/// One batch as a collector would ship it.
#[derive(Clone)]
pub struct Shipment {
    pub kind: EventKind,
    pub host_id: String,
    pub seq: u64,
    pub events: Vec<Event>,
}

impl Shipment {
    pub fn max_time(&self) -> i64 {
        self.events.iter().map(|e| e.time).max().unwrap_or(0)
    }

    /// The Arrow IPC payload (LZ4, as the collector's default).
    pub fn arrow(&self) -> Vec<u8> {
        let mut b = EventBatchBuilder::new(self.kind);
        for e in &self.events {
            b.append(e, None);
        }
        ipc::encode(&b.finish(), &self.host_id, self.seq, Compression::Lz4).expect("encode")
    }
}

/// What a rule must (or must not) raise for one example's hosts.
#[derive(Debug, Clone)]
pub struct Expectation {
    pub rule_id: String,
    pub example: String,
    /// Every host of the example is this or starts with it and `-`.
    pub host: String,
    pub fires: bool,
}

impl Expectation {
    pub fn matches(&self, a: &Alert) -> bool {
        a.rule_id == self.rule_id
            && (a.host_id == self.host || a.host_id.starts_with(&format!("{}-", self.host)))
    }
}

/// Every example of every rule, each on hosts of its own, shifted so that
/// every example's last event is at `end_ms` (rules that compare with the
/// detector's clock see each example as `vigil rules test` does). Batches
/// are one per (host, kind), in time order.
pub fn examples_scenario(rules: &[Rule], end_ms: i64) -> (Vec<Shipment>, Vec<Expectation>) {
    let mut by_host_kind: BTreeMap<(String, EventKind), Vec<Event>> = BTreeMap::new();
    let mut expected = Vec::new();
    for rule in rules {
        for (j, ex) in rule.examples.iter().enumerate() {
            let host = format!("{}.ex{j}", rule.id);
            let last_t = ex
                .events
                .iter()
                .filter_map(|e| e.get("t").and_then(Value::as_f64))
                .fold(0.0, f64::max);
            // minute-aligned, as in `vigil rules test`: minute buckets hold the same events
            let epoch = (end_ms - (last_t * 1000.0) as i64).div_euclid(60_000) * 60_000;
            for partial in &ex.events {
                let mut p = partial.clone();
                let own = p.get("host_id").and_then(Value::as_str).map(str::to_string);
                let h = match own {
                    Some(o) => format!("{host}-{o}"),
                    None => host.clone(),
                };
                p.as_object_mut()
                    .unwrap()
                    .insert("host_id".into(), Value::String(h.clone()));
                let ev = event(&p, epoch, &h)
                    .unwrap_or_else(|e| panic!("{} / {}: {e}", rule.id, ex.name));
                by_host_kind.entry((h, ev.kind)).or_default().push(ev);
            }
            expected.push(Expectation {
                rule_id: rule.id.clone(),
                example: ex.name.clone(),
                host,
                fires: ex.fires,
            });
        }
    }
    let mut shipments: Vec<Shipment> = by_host_kind
        .into_iter()
        .map(|((host_id, kind), mut events)| {
            events.sort_by_key(|e| e.time);
            Shipment {
                kind,
                host_id,
                seq: 1,
                events,
            }
        })
        .collect();
    shipments.sort_by_key(Shipment::max_time);
    (shipments, expected)
}

/// Check every expectation against stored alerts; the failures, described.
pub fn unmet(expected: &[Expectation], alerts: &[Alert]) -> Vec<String> {
    expected
        .iter()
        .filter_map(|e| {
            let raised: Vec<&Alert> = alerts.iter().filter(|a| e.matches(a)).collect();
            match (e.fires, raised.is_empty()) {
                (true, true) => Some(format!(
                    "{} / {}: expected an alert, none",
                    e.rule_id, e.example
                )),
                (false, false) => Some(format!(
                    "{} / {}: expected none, got {:?}",
                    e.rule_id,
                    e.example,
                    raised.iter().map(|a| &a.summary).collect::<Vec<_>>()
                )),
                _ => None,
            }
        })
        .collect()
}

/// Create the event, dead-letter and alert topics (Tansu does not create
/// topics on first use; collectors and detectors create theirs).
pub fn create_topics(brokers: &str, partitions: i32) {
    let config: vigil_detector::config::KafkaSourceConfig =
        toml::from_str(&format!("brokers = {brokers:?}\npartitions = {partitions}")).unwrap();
    let mut topics = config.topics.clone();
    topics.push(config.dead_letter_topic.clone());
    topics.push("vigil.alerts".into());
    vigil_detector::source::kafka::ensure_topics(&config, &topics).expect("create topics");
}

/// Produce shipments as the collector does: topic `vigil.events.<kind>`,
/// key host_id, the `vigil.*` headers.
pub fn produce(brokers: &str, shipments: &[Shipment]) {
    create_topics(brokers, 2);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for s in shipments {
        produce_raw(
            &producer,
            s.kind,
            &s.host_id,
            s.seq,
            &s.arrow(),
            SCHEMA_VERSION,
        );
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// One message with the collector's headers and any payload.
pub fn produce_raw(
    producer: &BaseProducer,
    kind: EventKind,
    host: &str,
    seq: u64,
    payload: &[u8],
    version: u32,
) {
    let seq = seq.to_string();
    let version = version.to_string();
    let headers = [
        ("vigil.host_id", host),
        ("vigil.kind", kind.as_str()),
        ("vigil.seq", seq.as_str()),
        ("vigil.schema_version", version.as_str()),
        ("vigil.encoding", "arrow"),
    ]
    .iter()
    .fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(*value),
        })
    });
    let topic = format!("vigil.events.{}", kind.as_str());
    loop {
        match producer.send(
            BaseRecord::to(&topic)
                .key(host)
                .payload(payload)
                .headers(headers.clone()),
        ) {
            Ok(()) => break,
            Err((e, _)) => {
                // queue full: let deliveries drain
                eprintln!("produce: {e}");
                producer.poll(Duration::from_millis(100));
            }
        }
    }
    producer.poll(Duration::ZERO);
}

/// A spool a collector would have written, with these shipments in order.
pub struct TestSpool {
    pub writer: SpoolWriter,
}

impl TestSpool {
    pub fn create(dir: &Path) -> TestSpool {
        let (writer, _) = SpoolWriter::open(WriterOptions {
            dir: dir.to_path_buf(),
            host_id: "e2e".into(),
            max_bytes: 1 << 30,
            segment_bytes: 256 << 10,
            fsync: Fsync::Never,
            group: None,
        })
        .expect("open spool");
        TestSpool { writer }
    }

    pub fn append(&mut self, s: &Shipment) {
        self.append_raw(s.kind, s.events.len() as u32, &s.arrow());
    }

    pub fn append_raw(&mut self, kind: EventKind, events: u32, payload: &[u8]) {
        self.writer
            .append(kind, Encoding::Arrow, events, payload)
            .expect("append to spool");
        self.writer.sync().expect("sync spool");
    }
}

/// A running `vigil-detector`.
pub struct DetectorProcess {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub metrics: String,
    log: PathBuf,
}

impl DetectorProcess {
    /// Start with a config made of `source` (a `[source]` section) under
    /// `data_dir`, the built-in rules, and a free metrics port.
    pub fn start(data_dir: &Path, source: &str) -> DetectorProcess {
        std::fs::create_dir_all(data_dir).unwrap();
        let metrics = format!("127.0.0.1:{}", crate::kafka::free_port());
        let config = data_dir.join("detector.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\nrules = {:?}\n[window]\neval_interval_ms = 300\n[metrics]\nlisten = {metrics:?}\n{source}\n",
                data_dir,
                rules_dir()
            ),
        )
        .unwrap();
        let log = data_dir.join(format!("detector-{}.log", crate::marker("run")));
        let child = Command::new(workspace_bin("vigil-detector"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start vigil-detector");
        DetectorProcess {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            metrics,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A metric's value, once the listener is up.
    pub fn metric(&self, name: &str) -> f64 {
        crate::kafka::scrape(&self.metrics)
            .get(name)
            .copied()
            .unwrap_or(0.0)
    }

    /// Wait until `name` reaches `at_least`, failing with the log after `timeout`.
    pub fn wait_metric(&mut self, name: &str, at_least: f64, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("vigil-detector exited ({status}):\n{}", self.log());
            }
            if let Some(v) =
                crate::kafka::scrape_opt(&self.metrics).and_then(|m| m.get(name).copied())
            {
                if v >= at_least {
                    return;
                }
            }
            assert!(
                start.elapsed() < timeout,
                "{name} did not reach {at_least} in {timeout:?} (now {}):\n{}",
                self.metric(name),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The stored alerts (latest version of each).
    pub fn alerts(&self) -> Vec<Alert> {
        stored_alerts(&self.data_dir)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the detector evaluates and commits before it exits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let status = c.wait().unwrap();
            assert!(
                status.success(),
                "vigil-detector exited with {status}:\n{}",
                self.log()
            );
        }
    }
}

impl Drop for DetectorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn stored_alerts(data_dir: &Path) -> Vec<Alert> {
    let (versions, errors) = store::read_all(data_dir).expect("read alert store");
    assert!(errors.is_empty(), "unreadable alert files: {errors:?}");
    latest(versions)
}

/// Wall-clock now in ms, rounded down to a minute (so minute buckets do
/// not split an example).
pub fn minute_now() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now - now % 60_000
}

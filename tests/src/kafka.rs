//! The real broker (Tansu, installed by scripts/setup) and a reader of what
//! the collector shipped to it, for the transport tests.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use vigil_schema::{Event, EventKind};

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("VIGIL_TANSU_BIN") {
        return PathBuf::from(p);
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let bin = home.join("bin/tansu");
    assert!(
        bin.exists(),
        "{} not found: the Kafka tests need the Tansu broker (scripts/setup installs it)",
        bin.display()
    );
    bin
}

/// One Tansu broker with memory storage on a loopback port.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl Broker {
    pub fn start(port: u16) -> Broker {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut b = Broker {
            port,
            child: None,
            log,
        };
        b.restart();
        b
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start again after `stop` (memory storage: every topic is gone).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(self.log.reopen().unwrap())
            .stderr(Stdio::from(self.log.reopen().unwrap()))
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu not listening on {} after 20 s: {}",
                self.port,
                std::fs::read_to_string(self.log.path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message as the collector sent it.
#[derive(Debug, Clone)]
pub struct Shipped {
    pub topic: String,
    pub key: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

impl Shipped {
    pub fn header(&self, k: &str) -> &str {
        self.headers.get(k).map(String::as_str).unwrap_or("")
    }
    pub fn seq(&self) -> u64 {
        self.header("vigil.seq").parse().expect("vigil.seq header")
    }
    pub fn kind(&self) -> EventKind {
        EventKind::from_name(self.header("vigil.kind")).expect("vigil.kind header")
    }
}

/// Every message of every event topic: read from the beginning up to each
/// partition's high watermark at the time of the call (so a slow fetch is
/// waited for, not mistaken for the end), then on until 2 s pass without more.
pub fn read_all(brokers: &str, timeout: Duration) -> Vec<Shipped> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "vigil-e2e-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("broker metadata");
    let mut tpl = TopicPartitionList::new();
    let mut remaining: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for t in metadata.topics() {
        if t.name().starts_with("vigil.events.") {
            for p in t.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(t.name(), p.id(), Duration::from_secs(10))
                    .expect("watermarks");
                if high > low {
                    remaining.insert((t.name().to_string(), p.id()), high);
                }
                tpl.add_partition_offset(t.name(), p.id(), Offset::Beginning)
                    .unwrap();
            }
        }
    }
    assert!(tpl.count() > 0, "no vigil.events.* topic on {brokers}");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let started = Instant::now();
    let watermarks = remaining.clone();
    // to the watermarks, then on until nothing new comes for a while
    let mut quiet_since: Option<Instant> = None;
    while quiet_since.is_none_or(|t| t.elapsed() < Duration::from_secs(2)) {
        if remaining.is_empty() && quiet_since.is_none() {
            quiet_since = Some(Instant::now());
        }
        assert!(
            started.elapsed() < timeout,
            "reading {brokers}: partitions not read to their end within {timeout:?}: {remaining:?}"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let key = (m.topic().to_string(), m.partition());
                if quiet_since.is_some() {
                    eprintln!(
                        "read_all: message past the watermarks {watermarks:?}: {key:?} offset {}",
                        m.offset()
                    );
                    quiet_since = Some(Instant::now());
                }
                if let Some(high) = remaining.get(&key) {
                    if m.offset() + 1 >= *high {
                        remaining.remove(&key);
                    }
                }
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default()).into(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Shipped {
                    topic: m.topic().to_string(),
                    key: m.key().unwrap_or_default().to_vec(),
                    headers,
                    payload: m.payload().unwrap_or_default().to_vec(),
                });
            }
            Some(Err(e)) => panic!("consume from {brokers}: {e}"),
            None => {}
        }
    }
    out
}

/// One decoded batch (Arrow) or message (JSON): its identity and events.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub kind: EventKind,
    pub host_id: String,
    pub seq: u64,
    /// JSON encoding: the message's place in its batch.
    pub index: Option<u64>,
    pub events: Vec<Event>,
}

pub fn decode(m: &Shipped) -> Batch {
    match m.header("vigil.encoding") {
        "arrow" => {
            let (id, batches) = vigil_schema::ipc::decode(&m.payload).expect("Arrow IPC decodes");
            assert_eq!(id.seq, m.seq(), "header and schema metadata agree");
            let events = batches
                .iter()
                .flat_map(|b| vigil_schema::arrow::decode_batch(b).expect("batch decodes"))
                .collect();
            Batch {
                kind: id.kind,
                host_id: id.host_id,
                seq: id.seq,
                index: None,
                events,
            }
        }
        "json" => {
            let ev: Event = serde_json::from_slice(&m.payload).expect("JSON event");
            Batch {
                kind: m.kind(),
                host_id: m.header("vigil.host_id").to_string(),
                seq: m.seq(),
                index: Some(m.header("vigil.index").parse().expect("vigil.index")),
                events: vec![ev],
            }
        }
        other => panic!("unknown vigil.encoding {other:?}"),
    }
}

/// Batches per kind in sequence order with duplicates (same seq and index)
/// removed after checking they are identical.
pub fn dedup(batches: Vec<Batch>) -> BTreeMap<EventKind, Vec<Batch>> {
    let mut by_kind: BTreeMap<EventKind, BTreeMap<(u64, Option<u64>), Batch>> = BTreeMap::new();
    for b in batches {
        let slot = by_kind.entry(b.kind).or_default();
        match slot.get(&(b.seq, b.index)) {
            Some(seen) => assert_eq!(seen, &b, "a duplicate seq carries the same events"),
            None => {
                slot.insert((b.seq, b.index), b);
            }
        }
    }
    by_kind
        .into_iter()
        .map(|(k, m)| (k, m.into_values().collect()))
        .collect()
}

/// Sequence numbers present for one kind, deduplicated, sorted.
pub fn seqs(batches: &[Batch]) -> Vec<u64> {
    let mut s: Vec<u64> = batches.iter().map(|b| b.seq).collect();
    s.dedup();
    s
}

/// The collector's Prometheus metrics, `name{labels}` → value.
pub fn scrape(addr: &str) -> BTreeMap<String, f64> {
    scrape_opt(addr).unwrap_or_else(|| panic!("cannot scrape http://{addr}/metrics"))
}

/// [`scrape`], or `None` while nothing listens there yet.
pub fn scrape_opt(addr: &str) -> Option<BTreeMap<String, f64>> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let metrics = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect();
    Some(metrics)
}

/// Wait until a metric satisfies `pred`.
pub fn wait_metric(
    addr: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&BTreeMap<String, f64>) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let m = scrape(addr);
        if pred(&m) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached within {timeout:?}; metrics: {m:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

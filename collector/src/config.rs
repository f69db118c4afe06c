//! The collector's TOML configuration: parsing, defaults and validation.
//!
//! Parsing rejects unknown keys and wrong types (the TOML error names the key,
//! line and column). Validation is pure and reports every problem at once,
//! each with the path of the key it concerns (`agents[1].cmdline: ...`), so
//! `vigil-collector check` can print them all.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

/// The collector's end of the gateway link (`schema::link`): a unix socket
/// only the gateway's user may use (checked with the peer's credentials).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// Where the socket is created (its directory must exist).
    #[serde(default = "default_link_socket")]
    pub socket: PathBuf,
    /// Users (names or numeric uids) whose processes may connect: the
    /// gateway's service user. Anyone else is refused and counted.
    #[serde(default = "default_link_users")]
    pub allowed_users: Vec<String>,
}

fn default_link_socket() -> PathBuf {
    PathBuf::from("/run/vigil/collector.sock")
}
fn default_link_users() -> Vec<String> {
    vec!["vigil-gateway".into()]
}

/// Top-level configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity of this host in every event. Default: /etc/machine-id.
    #[serde(default)]
    pub host_id: Option<String>,
    /// Where the collector keeps its state: the spool is `<data_dir>/spool`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// How many ancestors above the parent each event carries.
    #[serde(default = "default_max_ancestors")]
    pub max_ancestors: usize,
    #[serde(default)]
    pub bpf: BpfConfig,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub heartbeat: HeartbeatConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    /// Ship batches to Kafka. Absent: batches stay in the spool (the
    /// embedded single-host default, read by the local detector).
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Desktop AI agents whose process trees are attributed.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    #[serde(default)]
    pub redaction: RedactionConfig,
    /// The local socket the quantum job gateway asks who its callers are
    /// and hands its job records to (absent: no gateway link).
    #[serde(default)]
    pub link: Option<LinkConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BpfConfig {
    /// Size of the kernel→user ring buffer; a power of two, at least one page.
    #[serde(default = "default_ring_buffer_bytes")]
    pub ring_buffer_bytes: u32,
    /// How many open files and sockets the kernel aggregates bytes for at once.
    #[serde(default = "default_fd_table_entries")]
    pub fd_table_entries: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Long-lived flows report their traffic at this interval (0: only at close).
    #[serde(default = "default_flow_report_interval_secs")]
    pub flow_report_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// A `collector` heartbeat (version, uptime, counters) is emitted at
    /// this interval, so a silent host can be told from a quiet one (0: only at exit).
    #[serde(default = "default_heartbeat_interval_secs")]
    pub interval_secs: u64,
}

/// How events are gathered into batches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// `arrow` (Arrow IPC stream per batch) or `json` (one object per message).
    #[serde(default)]
    pub encoding: BatchEncoding,
    /// A batch is closed at this many events...
    #[serde(default = "default_batch_max_events")]
    pub max_events: usize,
    /// ...or at about this many bytes before compression...
    #[serde(default = "default_batch_max_bytes")]
    pub max_bytes: usize,
    /// ...or this long after its first event.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Compression of Arrow IPC buffers: `zstd`, `lz4` or `none`.
    #[serde(default)]
    pub compression: IpcCompression,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchEncoding {
    #[default]
    Arrow,
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpcCompression {
    #[default]
    Zstd,
    Lz4,
    None,
}

/// The on-disk spool every batch passes through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Bound on the spool; beyond it the oldest unshipped batches are evicted (and counted).
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
    /// Size of one segment file.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// `always` (every batch), `interval` (every `fsync_interval_ms`) or `never` (the kernel decides).
    #[serde(default)]
    pub fsync: FsyncPolicy,
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// Group that may read the spool (a detector reading it directly): the
    /// directory is given it, setgid, and its files are 0640. If the group
    /// does not exist, only the collector's user can read the spool. `""`:
    /// no group.
    #[serde(default = "default_spool_group")]
    pub group: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    Always,
    #[default]
    Interval,
    Never,
}

/// The Kafka producer. Keys other than those below are librdkafka
/// properties, passed through as they are (`"security.protocol" = "ssl"`).
#[derive(Debug, Clone, Deserialize)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port]`.
    pub brokers: String,
    /// Topic per event kind; kinds not named use `topic_prefix` + kind.
    #[serde(default)]
    pub topics: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Create missing topics (at start and whenever the broker lost them).
    #[serde(default = "default_true")]
    pub create_topics: bool,
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// A stopping collector keeps shipping what is spooled for at most this
    /// long (what is left ships at the next start).
    #[serde(default = "default_shutdown_drain_secs")]
    pub shutdown_drain_secs: u64,
    /// librdkafka properties.
    #[serde(flatten)]
    pub properties: std::collections::BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Prometheus endpoint (`/metrics`); empty disables it. Loopback by default.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

/// One desktop agent. Every matcher given must match the exec'd process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub name: String,
    /// Glob on the executable path, e.g. `/opt/cowork/bin/*`.
    #[serde(default)]
    pub exe: Option<String>,
    /// Exact process name (comm, at most 15 bytes).
    #[serde(default)]
    pub comm: Option<String>,
    /// Regex on the command line (arguments joined by spaces).
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Glob on the cgroup v2 path, e.g. `/user.slice/*/app-cowork-*.scope`.
    #[serde(default)]
    pub cgroup: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Regexes added to the built-in secret patterns. A named group `secret`
    /// limits redaction to that group; otherwise the whole match is replaced.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Option names (`--token`, `-p`) whose following argument is a secret,
    /// added to the built-in list.
    #[serde(default)]
    pub flags: Vec<String>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/vigil")
}
fn default_max_ancestors() -> usize {
    8
}
fn default_ring_buffer_bytes() -> u32 {
    16 << 20
}
fn default_fd_table_entries() -> u32 {
    65536
}
fn default_flow_report_interval_secs() -> u64 {
    30
}
fn default_heartbeat_interval_secs() -> u64 {
    30
}
fn default_batch_max_events() -> usize {
    8192
}
fn default_batch_max_bytes() -> usize {
    4 << 20
}
fn default_flush_interval_ms() -> u64 {
    250
}
fn default_spool_max_bytes() -> u64 {
    1 << 30
}
fn default_segment_bytes() -> u64 {
    16 << 20
}
fn default_fsync_interval_ms() -> u64 {
    1000
}
fn default_topic_prefix() -> String {
    "vigil.events.".into()
}
fn default_true() -> bool {
    true
}
fn default_partitions() -> i32 {
    3
}
fn default_replication_factor() -> i32 {
    1
}
fn default_shutdown_drain_secs() -> u64 {
    10
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

impl Default for BpfConfig {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: default_ring_buffer_bytes(),
            fd_table_entries: default_fd_table_entries(),
        }
    }
}
impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            flow_report_interval_secs: default_flow_report_interval_secs(),
        }
    }
}
impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval_secs: default_heartbeat_interval_secs(),
        }
    }
}
impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            encoding: BatchEncoding::default(),
            max_events: default_batch_max_events(),
            max_bytes: default_batch_max_bytes(),
            flush_interval_ms: default_flush_interval_ms(),
            compression: IpcCompression::default(),
        }
    }
}
impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_spool_max_bytes(),
            segment_bytes: default_segment_bytes(),
            fsync: FsyncPolicy::default(),
            fsync_interval_ms: default_fsync_interval_ms(),
            group: default_spool_group(),
        }
    }
}
fn default_spool_group() -> String {
    "vigil".into()
}
impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}

impl Config {
    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }
}

impl KafkaConfig {
    /// The topic of one event kind.
    pub fn topic(&self, kind: vigil_schema::EventKind) -> String {
        self.topics
            .get(kind.as_str())
            .cloned()
            .unwrap_or_else(|| format!("{}{}", self.topic_prefix, kind.as_str()))
    }

    /// The passed-through librdkafka properties as strings.
    pub fn rdkafka_properties(&self) -> Vec<(String, String)> {
        self.properties
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// One problem with a configuration, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid config {path}:\n{}", .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Every problem of a parsed config, each with its key path. Pure.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bad = |key: String, message: String| problems.push(Problem { key, message });

        if let Some(id) = &self.host_id {
            if id.trim().is_empty() {
                bad(
                    "host_id".into(),
                    "must not be empty (omit it to use /etc/machine-id)".into(),
                );
            }
        }
        if self.data_dir.as_os_str().is_empty() || !self.data_dir.is_absolute() {
            bad(
                "data_dir".into(),
                format!("must be an absolute path, got {:?}", self.data_dir),
            );
        }
        if self.max_ancestors > 64 {
            bad(
                "max_ancestors".into(),
                format!("at most 64, got {}", self.max_ancestors),
            );
        }
        let ring = self.bpf.ring_buffer_bytes;
        if ring < 4096 || !ring.is_power_of_two() {
            bad(
                "bpf.ring_buffer_bytes".into(),
                format!("must be a power of two of at least 4096, got {ring}"),
            );
        }
        if self.bpf.fd_table_entries == 0 {
            bad("bpf.fd_table_entries".into(), "must be at least 1".into());
        }

        let b = &self.batch;
        if b.max_events == 0 {
            bad("batch.max_events".into(), "must be at least 1".into());
        }
        if b.max_bytes < 1024 {
            bad(
                "batch.max_bytes".into(),
                format!("must be at least 1024, got {}", b.max_bytes),
            );
        }
        if b.flush_interval_ms == 0 || b.flush_interval_ms > 60_000 {
            bad(
                "batch.flush_interval_ms".into(),
                format!("must be 1 to 60000, got {}", b.flush_interval_ms),
            );
        }
        let sp = &self.spool;
        if sp.segment_bytes < 64 << 10 {
            bad(
                "spool.segment_bytes".into(),
                format!("must be at least 65536, got {}", sp.segment_bytes),
            );
        }
        if sp.max_bytes < 2 * sp.segment_bytes {
            bad(
                "spool.max_bytes".into(),
                format!(
                    "must hold at least two segments ({}), got {}",
                    2 * sp.segment_bytes,
                    sp.max_bytes
                ),
            );
        }
        if sp.fsync == FsyncPolicy::Interval && sp.fsync_interval_ms == 0 {
            bad(
                "spool.fsync_interval_ms".into(),
                "must be at least 1 (or use fsync = \"always\")".into(),
            );
        }
        if let Some(k) = &self.kafka {
            if k.brokers.trim().is_empty() {
                bad("kafka.brokers".into(), "must not be empty".into());
            }
            for name in k.topics.keys() {
                if vigil_schema::EventKind::from_name(name).is_none() {
                    bad(
                        format!("kafka.topics.{name}"),
                        format!(
                            "unknown event kind; known: {}",
                            vigil_schema::EventKind::ALL.map(|k| k.as_str()).join(", ")
                        ),
                    );
                }
            }
            if k.partitions < 1 {
                bad("kafka.partitions".into(), "must be at least 1".into());
            }
            if k.replication_factor < 1 {
                bad(
                    "kafka.replication_factor".into(),
                    "must be at least 1".into(),
                );
            }
            for (key, value) in &k.properties {
                if matches!(value, toml::Value::Table(_) | toml::Value::Array(_)) {
                    bad(
                        format!("kafka.{key}"),
                        "librdkafka properties are strings, numbers or booleans".into(),
                    );
                }
            }
        }
        if !self.metrics.listen.is_empty() {
            match self.metrics.listen.parse::<std::net::SocketAddr>() {
                Err(e) => bad(
                    "metrics.listen".into(),
                    format!("must be ip:port, got {:?} ({e})", self.metrics.listen),
                ),
                Ok(addr) if !addr.ip().is_loopback() => {
                    tracing::warn!(%addr, "metrics.listen is not a loopback address: metrics are reachable from the network")
                }
                Ok(_) => {}
            }
        }

        if let Some(l) = &self.link {
            if !l.socket.is_absolute() {
                bad(
                    "link.socket".into(),
                    format!("must be an absolute path, got {:?}", l.socket),
                );
            }
            if l.allowed_users.is_empty() {
                bad(
                    "link.allowed_users".into(),
                    "name at least the gateway's user".into(),
                );
            }
        }

        let mut names = std::collections::HashSet::new();
        for (i, agent) in self.agents.iter().enumerate() {
            let at = |k: &str| format!("agents[{i}].{k}");
            if agent.name.trim().is_empty() {
                bad(at("name"), "must not be empty".into());
            } else if !names.insert(agent.name.as_str()) {
                bad(at("name"), format!("duplicate agent name {:?}", agent.name));
            }
            if agent.exe.is_none()
                && agent.comm.is_none()
                && agent.cmdline.is_none()
                && agent.cgroup.is_none()
            {
                bad(
                    format!("agents[{i}]"),
                    "needs at least one matcher: exe, comm, cmdline or cgroup".into(),
                );
            }
            if let Some(g) = &agent.exe {
                if let Err(e) = globset::Glob::new(g) {
                    bad(at("exe"), format!("invalid glob {g:?}: {e}"));
                }
            }
            if let Some(g) = &agent.cgroup {
                if let Err(e) = globset::Glob::new(g) {
                    bad(at("cgroup"), format!("invalid glob {g:?}: {e}"));
                }
            }
            if let Some(c) = &agent.comm {
                if c.is_empty() || c.len() > 15 {
                    bad(
                        at("comm"),
                        format!("must be 1 to 15 bytes (the kernel's comm), got {c:?}"),
                    );
                }
            }
            if let Some(r) = &agent.cmdline {
                if let Err(e) = regex::Regex::new(r) {
                    bad(at("cmdline"), format!("invalid regex: {e}"));
                }
            }
        }
        for (i, p) in self.redaction.patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(p) {
                bad(
                    format!("redaction.patterns[{i}]"),
                    format!("invalid regex: {e}"),
                );
            }
        }
        for (i, f) in self.redaction.flags.iter().enumerate() {
            if !f.starts_with('-') || f.contains(char::is_whitespace) {
                bad(
                    format!("redaction.flags[{i}]"),
                    format!("must be an option name such as --token, got {f:?}"),
                );
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/vigil"));
        assert_eq!(c.bpf.ring_buffer_bytes, 16 << 20);
        assert!(c.validate().is_empty());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::parse("data_dir = \"/tmp\"\n[[agents]]\nname = \"a\"\nexee = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exee"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Config::parse("[bpf]\nring_buffer_bytes = \"big\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ring_buffer_bytes"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let c = Config::parse(
            r#"
            data_dir = "relative"
            [bpf]
            ring_buffer_bytes = 5000
            [[agents]]
            name = "a"
            cmdline = "("
            [[agents]]
            name = "a"
            [redaction]
            patterns = ["[z-a]"]
            flags = ["token"]
            "#,
        )
        .unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "data_dir",
                "bpf.ring_buffer_bytes",
                "agents[0].cmdline",
                "agents[1].name",
                "agents[1]",
                "redaction.patterns[0]",
                "redaction.flags[0]"
            ]
        );
    }

    #[test]
    fn kafka_keys_pass_through_and_topics_default_per_kind() {
        let c = Config::parse(
            r#"
            [kafka]
            brokers = "127.0.0.1:9092"
            "security.protocol" = "ssl"
            "linger.ms" = 20
            [kafka.topics]
            file = "custom.files"
            "#,
        )
        .unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let k = c.kafka.unwrap();
        assert_eq!(
            k.rdkafka_properties(),
            [
                ("linger.ms".to_string(), "20".to_string()),
                ("security.protocol".to_string(), "ssl".to_string())
            ]
        );
        assert_eq!(k.topic(vigil_schema::EventKind::File), "custom.files");
        assert_eq!(
            k.topic(vigil_schema::EventKind::Network),
            "vigil.events.network"
        );
    }

    #[test]
    fn transport_problems_are_named() {
        let c = Config::parse(
            r#"
            [batch]
            max_events = 0
            flush_interval_ms = 0
            [spool]
            max_bytes = 100000
            segment_bytes = 65536
            [kafka]
            brokers = ""
            partitions = 0
            [kafka.topics]
            bogus = "x"
            [metrics]
            listen = "localhost"
            "#,
        )
        .unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "batch.max_events",
                "batch.flush_interval_ms",
                "spool.max_bytes",
                "kafka.brokers",
                "kafka.topics.bogus",
                "kafka.partitions",
                "metrics.listen"
            ]
        );
    }

    #[test]
    fn an_unknown_encoding_is_named() {
        let err = Config::parse("[batch]\nencoding = \"xml\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("xml") && err.contains("arrow"), "{err}");
    }
}

//! `vigil-gateway`'s TOML configuration: parsing, defaults and validation
//! (pure; every problem at once, each with the path of its key).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The quantum job gateway: SDKs send their provider calls here; it relays
/// them upstream with the credential it holds, records each call and
/// applies the policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Loopback by default: agents on this host only.
    #[serde(default = "default_gateway_listen")]
    pub listen: String,
    /// The collector's link socket (`[link] socket` in its config): who
    /// callers are, and where job records go.
    #[serde(default = "default_collector_socket")]
    pub collector_socket: PathBuf,
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Per-agent gateway tokens: agent name → file holding the token that
    /// agent's SDK presents as its placeholder credential (mode 600). A token
    /// is honoured only from a process of that agent's tree.
    #[serde(default)]
    pub tokens: BTreeMap<String, PathBuf>,
    /// A job body larger than this is refused (413) before it is read whole.
    #[serde(default = "default_gateway_max_body_bytes")]
    pub max_body_bytes: usize,
    /// What to do with a submission whose body cannot be read as a job.
    #[serde(default)]
    pub on_parse_error: OnParseError,
    /// An upstream that has not answered (headers) in this long gets a 504.
    #[serde(default = "default_gateway_upstream_timeout_secs")]
    pub upstream_timeout_secs: u64,
    #[serde(default)]
    pub limits: WorkLimits,
    /// Job records kept while the collector is away; beyond this the
    /// oldest are dropped and counted.
    #[serde(default = "default_buffer_records")]
    pub buffer_records: usize,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// Bounds on the work one caller can make the gateway do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkLimits {
    /// Connections served at once; more are closed at accept and counted.
    pub max_connections: usize,
    /// A request's headers must arrive within this long.
    pub header_timeout_ms: u64,
    /// A request body must arrive whole within this long.
    pub body_timeout_ms: u64,
    /// Body bytes held by all requests at once; a request waits for room.
    pub body_budget_bytes: usize,
    /// CPU time a body's parse may take before it is abandoned (the job is
    /// recorded with `parse_error`).
    pub parse_timeout_ms: u64,
    /// Large bodies parsed at once (each on a blocking thread, off the
    /// workers; a maximum-size hostile body takes about 40 MiB while it is
    /// read); small ones have `server::SMALL_PARSES` slots of their own.
    pub max_parallel_parses: usize,
    /// A body up to this size is small: it takes nothing from the shared
    /// body budget and is parsed in the small lane, with a deadline of
    /// `small_parse_timeout_ms`, so SDK-sized jobs never queue behind
    /// maximum-size ones.
    pub small_body_bytes: usize,
    pub small_parse_timeout_ms: u64,
    /// OpenQASM tokens over all circuits of one body (8 bytes each in memory).
    pub max_tokens: usize,
    /// JSON values in one body.
    pub max_json_elements: usize,
    /// Nesting: JSON arrays and objects, OpenQASM blocks.
    pub max_depth: usize,
    /// Longest job id remembered for status polls.
    pub max_job_id_bytes: usize,
}

impl Default for WorkLimits {
    fn default() -> Self {
        Self {
            max_connections: 2048,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            body_budget_bytes: 32 << 20,
            parse_timeout_ms: 2_000,
            max_parallel_parses: 1,
            small_body_bytes: 64 << 10,
            small_parse_timeout_ms: 250,
            max_tokens: 2_000_000,
            max_json_elements: 500_000,
            max_depth: 64,
            max_job_id_bytes: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ip:port` of the Prometheus endpoint (empty: none).
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9482".into()
}
fn default_collector_socket() -> PathBuf {
    PathBuf::from("/run/vigil/collector.sock")
}
fn default_buffer_records() -> usize {
    100_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnParseError {
    #[default]
    Forward,
    Deny,
}

/// `prefix` on the gateway maps to `upstream`: `/ibm/api/v1/jobs` is relayed
/// to `<upstream>/api/v1/jobs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: String,
    /// `ibm_runtime`, `braket`, `ionq` or `generic`.
    pub provider: String,
    /// Base URL, `https://host[:port][/path]` (http only for loopback tests).
    pub upstream: String,
    /// Extra CA certificates (PEM) trusted for this upstream, besides the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub credential: Option<CredentialConfig>,
    /// Generic routes: where the job's fields are (JSON Pointers).
    #[serde(default)]
    pub fields: Option<vigil_quantum::providers::GenericFields>,
}

/// The real provider credential, held by the gateway: the agent is given a
/// placeholder, and the gateway sets `header` upstream from `file` (or, for
/// `aws_sigv4`, re-signs every request with the AWS keys in `file`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// `header` (a token in one header) or `aws_sigv4` (Amazon Braket).
    #[serde(default)]
    pub kind: CredentialKind,
    /// Header that carries the credential, e.g. `Authorization`.
    #[serde(default)]
    pub header: Option<String>,
    /// File holding the secret (for `aws_sigv4`: `aws_access_key_id = ...`
    /// and `aws_secret_access_key = ...` lines); must not be readable by
    /// group or others.
    pub file: PathBuf,
    /// Header value, `{}` standing for the secret: `Bearer {}`, `apiKey {}`.
    #[serde(default = "default_credential_format")]
    pub format: String,
    /// `aws_sigv4`: the region and service signed for.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default = "default_sigv4_service")]
    pub service: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    #[default]
    Header,
    AwsSigv4,
}

fn default_sigv4_service() -> String {
    "braket".into()
}

/// Limits on job submissions, per agent (`agents.<name>`) over the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `enforce` (deny over a limit) or `monitor` (record, forward anyway).
    #[serde(default)]
    pub mode: PolicyMode,
    #[serde(flatten)]
    pub limits: Limits,
    /// Overrides by agent name (the collector's `[[agents]]` name).
    #[serde(default)]
    pub agents: BTreeMap<String, AgentPolicy>,
    /// Callers with no valid token, or whom the collector cannot place
    /// (enforce mode; in monitor mode they are forwarded and recorded).
    #[serde(default)]
    pub unattributed: Unattributed,
}

/// What a caller without a token of its own, or whom the collector cannot
/// place, may do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unattributed {
    /// Whether its calls are relayed with the brokered credential (then
    /// under the default limits). Default: no, they are refused (403).
    #[serde(default)]
    pub broker_credentials: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPolicy {
    #[serde(default)]
    pub mode: Option<PolicyMode>,
    #[serde(flatten)]
    pub limits: Limits,
}

/// Every limit is optional: absent means no limit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Limits {
    pub jobs_per_minute: Option<u64>,
    pub shots_per_hour: Option<u64>,
    pub executions_per_hour: Option<u64>,
    pub max_qubits: Option<u32>,
    /// Backends allowed (names, or Braket device ARNs).
    pub backends: Option<Vec<String>>,
    /// Whether QPU (non-simulator) backends are allowed; a backend of
    /// unknown type counts as a QPU.
    pub allow_qpu: Option<bool>,
    /// Braket hybrid jobs submit their tasks from their own container,
    /// past the gateway: where `backends` or `allow_qpu = false` limit an
    /// agent they are refused unless this is `true`.
    pub allow_hybrid_jobs: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    #[default]
    Enforce,
    Monitor,
}

fn default_gateway_listen() -> String {
    "127.0.0.1:8480".into()
}
fn default_gateway_max_body_bytes() -> usize {
    8 << 20
}
fn default_gateway_upstream_timeout_secs() -> u64 {
    120
}
fn default_credential_format() -> String {
    "{}".into()
}

fn validate_gateway(g: &GatewayConfig, bad: &mut impl FnMut(String, String)) {
    match g.listen.parse::<std::net::SocketAddr>() {
        Err(e) => bad(
            "listen".into(),
            format!("must be ip:port, got {:?} ({e})", g.listen),
        ),
        Ok(addr) if !addr.ip().is_loopback() => tracing::warn!(
            %addr,
            "listen is not a loopback address: the gateway is reachable from the network"
        ),
        Ok(_) => {}
    }
    if g.routes.is_empty() {
        bad("routes".into(), "at least one route is needed".into());
    }
    if g.max_body_bytes < 1024 {
        bad(
            "max_body_bytes".into(),
            format!("must be at least 1024, got {}", g.max_body_bytes),
        );
    }
    if g.upstream_timeout_secs == 0 {
        bad("upstream_timeout_secs".into(), "must be at least 1".into());
    }
    let mut prefixes = std::collections::HashSet::new();
    for (i, r) in g.routes.iter().enumerate() {
        let at = |k: &str| format!("routes[{i}].{k}");
        if !r.prefix.starts_with('/') || r.prefix.len() < 2 || r.prefix.ends_with('/') {
            bad(
                at("prefix"),
                format!("must look like \"/name\", got {:?}", r.prefix),
            );
        } else if !prefixes.insert(r.prefix.as_str()) {
            bad(at("prefix"), format!("duplicate prefix {:?}", r.prefix));
        }
        let providers = vigil_quantum::Provider::NAMES;
        if !providers.contains(&r.provider.as_str()) {
            bad(
                at("provider"),
                format!(
                    "unknown provider {:?}; known: {}",
                    r.provider,
                    providers.join(", ")
                ),
            );
        }
        match r.upstream.parse::<http::Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("https" | "http")) && u.authority().is_some() =>
            {
                if u.query().is_some() {
                    bad(at("upstream"), "must not have a query".into());
                }
            }
            Ok(_) => bad(
                at("upstream"),
                format!("must be an http(s)://host URL, got {:?}", r.upstream),
            ),
            Err(e) => bad(at("upstream"), format!("invalid URL {:?}: {e}", r.upstream)),
        }
        if r.fields.is_some() && r.provider != "generic" {
            bad(at("fields"), "only generic routes take field paths".into());
        }
        if let Some(f) = &r.fields {
            if let Err(e) = f.validate() {
                bad(at("fields"), e);
            }
        }
        if let Some(c) = &r.credential {
            match (c.kind, &c.header) {
                (CredentialKind::Header, None) => bad(
                    at("credential.header"),
                    "is needed (e.g. \"Authorization\")".into(),
                ),
                (CredentialKind::Header, Some(h))
                    if http::HeaderName::from_bytes(h.as_bytes()).is_err() =>
                {
                    bad(
                        at("credential.header"),
                        format!("invalid header name {h:?}"),
                    )
                }
                (CredentialKind::AwsSigv4, _) if c.region.is_none() => bad(
                    at("credential.region"),
                    "aws_sigv4 needs the region it signs for (e.g. \"us-east-1\")".into(),
                ),
                _ => {}
            }
            if c.kind == CredentialKind::Header && !c.format.contains("{}") {
                bad(
                    at("credential.format"),
                    "must contain {} where the secret goes".into(),
                );
            }
            if !c.file.is_absolute() {
                bad(
                    at("credential.file"),
                    format!("must be an absolute path, got {:?}", c.file),
                );
            }
        }
    }
    if !g.collector_socket.is_absolute() {
        bad(
            "collector_socket".into(),
            format!("must be an absolute path, got {:?}", g.collector_socket),
        );
    }
    for (agent, file) in &g.tokens {
        if !file.is_absolute() {
            bad(
                format!("tokens.{agent}"),
                format!("must be an absolute path, got {file:?}"),
            );
        }
    }
    let l = &g.limits;
    for (key, value) in [
        ("limits.max_connections", l.max_connections),
        ("limits.max_parallel_parses", l.max_parallel_parses),
        ("limits.max_tokens", l.max_tokens),
        ("limits.max_json_elements", l.max_json_elements),
        ("limits.max_depth", l.max_depth),
        ("limits.max_job_id_bytes", l.max_job_id_bytes),
        ("buffer_records", g.buffer_records),
    ] {
        if value == 0 {
            bad(key.into(), "must be at least 1".into());
        }
    }
    if l.body_budget_bytes < g.max_body_bytes {
        bad(
            "limits.body_budget_bytes".into(),
            format!(
                "must hold at least one body of max_body_bytes ({}), got {}",
                g.max_body_bytes, l.body_budget_bytes
            ),
        );
    }
    if !g.metrics.listen.is_empty() && g.metrics.listen.parse::<std::net::SocketAddr>().is_err() {
        bad(
            "metrics.listen".into(),
            format!("must be ip:port, got {:?}", g.metrics.listen),
        );
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

#[derive(Debug, thiserror::Error)]
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

impl GatewayConfig {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = GatewayConfig::parse(&text).map_err(|source| ConfigError::Parse {
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

    pub fn parse(text: &str) -> Result<GatewayConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// Every problem of a parsed config, each with its key path. Pure.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        validate_gateway(self, &mut |key, message| {
            problems.push(Problem { key, message })
        });
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "[[routes]]\nprefix = \"/ibm\"\nprovider = \"ibm_runtime\"\nupstream = \"https://quantum.cloud.ibm.com\"\n";

    #[test]
    fn gateway_defaults_and_policy() {
        let c = GatewayConfig::parse(&format!(
            "{ROUTE}\
             [policy]\njobs_per_minute = 5\nallow_qpu = false\n\
             [policy.agents.cowork]\nmode = \"monitor\"\nmax_qubits = 20\n"
        ))
        .unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let g = c;
        assert_eq!(g.listen, "127.0.0.1:8480");
        assert_eq!(g.on_parse_error, OnParseError::Forward);
        assert_eq!(g.policy.limits.jobs_per_minute, Some(5));
        assert_eq!(g.policy.limits.allow_qpu, Some(false));
        let cowork = &g.policy.agents["cowork"];
        assert_eq!(cowork.mode, Some(PolicyMode::Monitor));
        assert_eq!(cowork.limits.max_qubits, Some(20));
    }

    #[test]
    fn misspelt_limit_is_refused() {
        let err = GatewayConfig::parse(&format!("{ROUTE}[policy]\njobs_per_minit = 5\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("jobs_per_minit"), "{err}");
        let err = GatewayConfig::parse(&format!("{ROUTE}[policy.agents.a]\nshots_per_hr = 5\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("shots_per_hr"), "{err}");
    }

    #[test]
    fn every_gateway_problem_is_named() {
        let c = GatewayConfig::parse(
            r#"
            listen = "localhost"
            max_body_bytes = 10
            [[routes]]
            prefix = "ibm/"
            provider = "rigetti"
            upstream = "ftp://x"
            [routes.credential]
            header = "bad header"
            file = "token.txt"
            format = "Bearer"
            [[routes]]
            prefix = "/gen"
            provider = "generic"
            upstream = "https://example.com"
            [routes.fields]
            backend = "device"
            "#,
        )
        .unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|p| p.key).collect();
        for key in [
            "listen",
            "max_body_bytes",
            "routes[0].prefix",
            "routes[0].provider",
            "routes[0].upstream",
            "routes[0].credential.header",
            "routes[0].credential.file",
            "routes[0].credential.format",
            "routes[1].fields",
        ] {
            assert!(keys.contains(&key.to_string()), "{key} not in {keys:?}");
        }
    }
}

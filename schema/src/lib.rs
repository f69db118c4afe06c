//! Vigil's shared event model.
//!
//! Every event the collector emits is an [`Event`]: an envelope (kind, OCSF
//! class and activity, times, host and agent identity), the acting
//! [`Process`] with its parent and a bounded ancestor chain (as Tetragon does),
//! and one payload section for its kind ([`FileActivity`], [`NetworkActivity`],
//! exit status). The JSON form of these types is the collector's stdout
//! output and is documented in `schema/README.md`; [`arrow`] gives the Arrow
//! schema of each kind for the batch transport.
//!
//! Field names follow OCSF where OCSF has one: Process Activity (1007), File
//! System Activity (1001), Network Activity (4001).

pub mod arrow;
pub mod ipc;
pub mod link;
pub mod ocsf;

use serde::{Deserialize, Serialize};

/// Version of this model; bumped when a field changes meaning or is removed.
pub const SCHEMA_VERSION: u32 = 1;

/// What an event is about. Each kind has its own Arrow schema and, later, topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Process,
    File,
    Network,
    /// The collector's own health: drops and counters, emitted periodically.
    Collector,
    /// A quantum job request seen by the collector's job gateway.
    QuantumJob,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Process,
        EventKind::File,
        EventKind::Network,
        EventKind::Collector,
        EventKind::QuantumJob,
    ];

    /// The kind's number in the spool's record header (schema/README.md).
    pub fn code(self) -> u8 {
        match self {
            EventKind::Process => 1,
            EventKind::File => 2,
            EventKind::Network => 3,
            EventKind::Collector => 4,
            EventKind::QuantumJob => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.code() == code)
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Process => "process",
            EventKind::File => "file",
            EventKind::Network => "network",
            EventKind::Collector => "collector",
            EventKind::QuantumJob => "quantum_job",
        }
    }
}

/// One observation, tagged with the host and (when in an agent tree) the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// OCSF class: 1007 process, 1001 file system, 4001 network, 0 collector.
    pub class_uid: u32,
    /// OCSF activity id within the class (see [`ocsf`]).
    pub activity_id: u32,
    /// Human name of the activity, e.g. `launch`, `open`, `close`.
    pub activity_name: String,
    /// Wall-clock time of the event, milliseconds since the Unix epoch.
    pub time: i64,
    /// Kernel boot-time clock of the event in nanoseconds (monotonic; orders events).
    pub ts_ns: u64,
    pub host_id: String,
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_process: Option<ProcessRef>,
    /// Ancestors above the parent, nearest first, bounded by the collector's config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<ProcessRef>,
    /// Process events: the new child's pid (fork) or the exit status (terminate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileActivity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkActivity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<CollectorStats>,
    /// Collector `loss` events: batches the spool had to evict unshipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossReport>,
    /// Quantum job gateway events: what a job request asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantum_job: Option<Box<QuantumJob>>,
}

impl Event {
    /// An event with its envelope set and every optional section empty.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per envelope field, all required"
    )]
    pub fn new(
        kind: EventKind,
        class_uid: u32,
        activity_id: u32,
        activity_name: &str,
        time: i64,
        ts_ns: u64,
        host_id: &str,
        hostname: &str,
    ) -> Event {
        Event {
            kind,
            class_uid,
            activity_id,
            activity_name: activity_name.to_string(),
            time,
            ts_ns,
            host_id: host_id.to_string(),
            hostname: hostname.to_string(),
            agent_id: None,
            agent_session: None,
            process: None,
            parent_process: None,
            ancestors: Vec::new(),
            child_pid: None,
            exit: None,
            file: None,
            network: None,
            collector: None,
            loss: None,
            quantum_job: None,
        }
    }

    /// Fill the process context fields from a shared context.
    pub fn set_context(&mut self, context: &ProcessContext) {
        self.agent_id.clone_from(&context.agent_id);
        self.agent_session.clone_from(&context.agent_session);
        self.process = Some(context.process.clone());
        self.parent_process.clone_from(&context.parent_process);
        self.ancestors.clone_from(&context.ancestors);
    }
}

/// Who did it: the part of an event that is the same for every event of one
/// process (thread) until it changes, so the collector builds it once and
/// shares it. Its fields are the [`Event`] fields of the same names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_session: Option<String>,
    pub process: Process,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_process: Option<ProcessRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<ProcessRef>,
}

/// The acting process, as complete as the collector knows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    /// Stable across pid reuse: derived from host, pid and start time.
    pub uid_exec: String,
    pub comm: String,
    pub exe: String,
    pub args: Vec<String>,
    /// `args` joined by spaces, after redaction.
    pub cmd_line: String,
    pub cwd: String,
    pub user_id: u32,
    pub group_id: u32,
    pub user: String,
    /// Process start, milliseconds since the Unix epoch.
    pub start_time: i64,
    pub cgroup_id: u64,
    /// cgroup v2 path, e.g. `/user.slice/user-1000.slice/session-2.scope`.
    pub cgroup: String,
    /// Where the record came from: `exec` (seen by BPF), `fork` (inherited from
    /// the parent, not yet exec'd), `procfs` (seeded from /proc at start-up).
    pub source: String,
    /// True when argv or a path was cut to the collector's limits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// A short reference to a related process (parent or ancestor).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub pid: u32,
    pub exe: String,
    pub uid_exec: String,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code passed to exit(2), when the process exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that ended the process, when it was killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Raw wait(2) status.
    pub status: u32,
}

/// File system activity: open, close (with byte counts), delete, rename.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileActivity {
    /// Absolute path when the collector could resolve it, else as passed.
    pub path: String,
    /// Rename target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// open(2) flags, numeric and as names (`O_WRONLY|O_CREAT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags_names: Option<String>,
    /// Syscall result: 0 or an fd on success, else the negated errno.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<i64>,
    /// Error name (`ENOENT`) when the call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_written: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_calls: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_calls: Option<u64>,
    /// Why a close record was written: `close`, `exit`, `replaced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
}

/// An address and port, OCSF `network_endpoint`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: String,
    pub port: u16,
}

/// Network activity: connect/accept/listen/first send, interval traffic, close.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkActivity {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// `ipv4` or `ipv6`.
    pub ip_version: String,
    /// `outbound` (connect, send) or `inbound` (accept, listen).
    pub direction: String,
    pub src_endpoint: Endpoint,
    pub dst_endpoint: Endpoint,
    pub fd: i32,
    /// Identifies the flow across its open, traffic and close events.
    pub flow_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Traffic: totals since the flow opened (close) or deltas (traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_out: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
}

/// The collector's own counters, emitted periodically and at shutdown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectorStats {
    pub version: String,
    pub uptime_secs: u64,
    pub events_total: u64,
    /// Records the kernel could not put in the ring buffer, by record kind.
    pub kernel_drops: std::collections::BTreeMap<String, u64>,
    pub kernel_drops_total: u64,
    /// Events dropped in user space (output queue full), total.
    pub queue_drops_total: u64,
    pub decode_errors_total: u64,
    pub processes_tracked: u64,
    /// Transport counters (zero when events only go to stdout).
    #[serde(default)]
    pub transport: TransportStats,
}

/// The batch transport's counters: spool and Kafka shipping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransportStats {
    pub batches_spooled: u64,
    pub events_spooled: u64,
    pub batches_shipped: u64,
    pub events_shipped: u64,
    /// Bytes in the spool's segment files now.
    pub spool_bytes: u64,
    /// Batches and events evicted unshipped because the spool was full.
    pub evicted_batches: u64,
    pub evicted_events: u64,
    /// Spool records skipped because their checksum did not match.
    pub corrupt_records: u64,
    /// Messages handed to the Kafka producer and not yet acknowledged.
    pub producer_queue: u64,
}

/// One request to a quantum cloud, relayed (or refused) by the collector's
/// job gateway: what the job asks for, as far as the request tells, and what
/// the gateway decided. OCSF API Activity (6003): activity `create` for a
/// submission, `read` for a status poll.
///
/// Sizes are of the job as submitted: `circuits` programs, the widest of
/// `qubits`, `bindings` parameter sets per circuit and `shots` per execution;
/// `executions` = circuits x bindings x shots (a provider's total shot count
/// where it states one). Fields the request does not tell are absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuantumJob {
    /// `ibm_runtime`, `braket`, `ionq` or `generic`.
    pub provider: String,
    /// The gateway route's prefix, e.g. `/ibm`.
    pub route: String,
    /// The upstream URL the request went (or would have gone) to, without query.
    pub endpoint: String,
    pub method: String,
    /// `submit`, `status` or `other`.
    pub operation: String,
    /// `allowed`, `denied` (not forwarded) or `monitored` (over a limit, forwarded in monitor mode).
    pub decision: String,
    /// The limit that denied (or would have denied) the job, e.g. `jobs_per_minute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_limit: Option<String>,
    /// Human explanation of the decision: the limit's value and what was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_reason: Option<String>,
    /// Status the client was answered with (the upstream's, or the gateway's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Milliseconds from request to response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// `simulator`, `qpu` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// What runs: `sampler`, `estimator`, `openqasm`, `program_set`, `ionq.circuit.v0`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The provider's job id, from the response (submit) or the path (status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuits: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qubits: Option<u32>,
    /// Operations over all circuits (gates, measurements, resets; not barriers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<u64>,
    /// Deepest circuit, when every circuit's operations could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub two_qubit_gates: Option<u64>,
    /// Free parameters of the widest parameterised circuit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    /// Parameter sets bound, summed over circuits (the sweep size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindings: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shots: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executions: Option<u64>,
    /// Number of tags and their total size in bytes (key plus value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_bytes: Option<u64>,
    /// Size of free-form job metadata (names, notes, metadata objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_bytes: Option<u64>,
    /// Where results go, e.g. `s3://bucket/prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_location: Option<String>,
    /// Request body size in bytes.
    pub payload_bytes: u64,
    /// SHA-256 of each circuit as submitted (QPY value or QASM source), hex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub circuit_hashes: Vec<String>,
    /// Status polls: the job's status, and the one seen before it (a change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<String>,
    /// Execution time the provider reports (quantum seconds, billed time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_seconds: Option<f64>,
    /// Why the body could not be read as a job, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
}

/// Batches evicted from the spool before they were shipped: a known gap in
/// one kind's sequence, reported by a collector `loss` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LossReport {
    /// The event kind whose batches were lost.
    pub lost_kind: String,
    /// First and last lost sequence number of that kind, inclusive: the
    /// spool is one ordered log, so what one eviction loses is contiguous.
    pub first_seq: u64,
    pub last_seq: u64,
    pub batches: u64,
    pub events: u64,
    /// Why: `spool_full`.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_codes_are_one_based_in_all_order() {
        // the spool header and the collector's per-kind counters index by them
        for (i, kind) in EventKind::ALL.iter().enumerate() {
            assert_eq!(usize::from(kind.code()), i + 1);
            assert_eq!(EventKind::from_code(kind.code()), Some(*kind));
            assert_eq!(EventKind::from_name(kind.as_str()), Some(*kind));
        }
    }
}

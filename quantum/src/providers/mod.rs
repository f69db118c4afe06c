//! Provider request formats: which requests are job submissions and status
//! polls, and what a submission asks for.
//!
//! Paths are relative to the gateway route (its prefix removed), without
//! the query string.

mod braket;
mod braket_job;
mod generic;
mod ibm;
mod ionq;
pub mod operations;

use serde_json::Value;
use vigil_schema::QuantumJob;

use crate::budget::Budget;
use crate::qasm::CircuitStats;
use crate::{ParseError, ParseLimits};

pub use generic::GenericFields;
pub use operations::{OpClass, Operation};

use crate::path::NormalPath;

/// A provider's API, as configured on a gateway route.
#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    /// IBM Qiskit Runtime REST API (`POST /api/v1/jobs`).
    IbmRuntime,
    /// Amazon Braket (`POST /quantum-task`).
    Braket,
    /// IonQ (`POST /v0.3/jobs`, `/v0.4/jobs`).
    Ionq,
    /// Any JSON job API, read through configured field paths.
    Generic(Box<GenericFields>),
    /// IBM Cloud IAM (`POST /identity/token`): the API-key exchange, no jobs.
    IbmIam,
}

impl Provider {
    /// The names a gateway route's `provider` key takes.
    pub const NAMES: [&'static str; 5] = ["ibm_runtime", "ibm_iam", "braket", "ionq", "generic"];

    /// The provider a route names; `fields` are a generic route's paths.
    pub fn from_name(name: &str, fields: Option<GenericFields>) -> Option<Provider> {
        Some(match name {
            "ibm_runtime" => Provider::IbmRuntime,
            "ibm_iam" => Provider::IbmIam,
            "braket" => Provider::Braket,
            "ionq" => Provider::Ionq,
            "generic" => Provider::Generic(Box::new(fields.unwrap_or_default())),
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Provider::IbmRuntime => "ibm_runtime",
            Provider::IbmIam => "ibm_iam",
            Provider::Braket => "braket",
            Provider::Ionq => "ionq",
            Provider::Generic(_) => "generic",
        }
    }

    /// The allowlisted operation `method` `path` (below the route's
    /// prefix, normalised) is, or `None`: not relayed in enforce mode.
    pub fn operation(&self, method: &str, path: &NormalPath) -> Option<Operation> {
        use operations::*;
        let root: &[&[&str]] = &[&[]];
        match self {
            Provider::IbmRuntime => lookup(IBM, IBM_PREFIXES, method, path),
            Provider::IbmIam => lookup(IBM_IAM, root, method, path),
            Provider::Braket => lookup(BRAKET, root, method, path),
            Provider::Ionq => lookup(IONQ, IONQ_PREFIXES, method, path),
            Provider::Generic(g) => generic_operation(&g.submit_path, method, path),
        }
    }

    /// Fill `job` with what a submission (`op`, of class Submit) asks for.
    pub fn parse_operation(
        &self,
        op: &Operation,
        body: &[u8],
        job: &mut QuantumJob,
        limits: &ParseLimits,
    ) -> Result<(), ParseError> {
        match (self, op.name) {
            (Provider::Braket, "hybrid_job_create") => braket_job::parse(body, job, limits),
            (Provider::IbmRuntime | Provider::Ionq, "session_create") => session(body, job, limits),
            (Provider::IbmIam, _) => Ok(()),
            _ => self.parse_submit_with(body, job, limits),
        }
    }

    /// Fill `job` with what a submission body asks for, within the default
    /// [`ParseLimits`].
    pub fn parse_submit(&self, body: &[u8], job: &mut QuantumJob) -> Result<(), ParseError> {
        self.parse_submit_with(body, job, &ParseLimits::default())
    }

    /// [`Provider::parse_submit`] within `limits`: a body over one of them
    /// is an error naming it ([`ParseError::limit`]), found before any
    /// `serde_json::Value` is built where the JSON itself is too large.
    pub fn parse_submit_with(
        &self,
        body: &[u8],
        job: &mut QuantumJob,
        limits: &ParseLimits,
    ) -> Result<(), ParseError> {
        let part = self.name();
        let mut budget = Budget::new(limits);
        budget
            .prescan_json(body)
            .map_err(|hit| hit.error(part, ""))?;
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ParseError::new(part, format!("body is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(ParseError::new(part, "body is not a JSON object"));
        }
        match self {
            Provider::IbmRuntime => ibm::parse_submit(&v, job, &mut budget),
            Provider::Braket => braket::parse_submit(&v, job, &mut budget),
            Provider::Ionq => ionq::parse_submit(&v, job, &mut budget),
            Provider::Generic(g) => g.parse_submit(&v, job, &mut budget),
            Provider::IbmIam => Ok(()),
        }
    }

    /// The job id a submission's response returns.
    pub fn submitted_job_id(&self, body: &[u8]) -> Option<String> {
        let v = response_json(body)?;
        let id = match self {
            Provider::IbmRuntime | Provider::Ionq => v.get("id"),
            Provider::Braket => v.get("quantumTaskArn").or_else(|| v.get("jobArn")),
            Provider::Generic(g) => v.pointer(&g.job_id),
            Provider::IbmIam => None,
        }?;
        scalar_string(id)
    }

    /// Status and usage from a status poll's response.
    pub fn status(&self, body: &[u8], job: &mut QuantumJob) {
        let Some(v) = response_json(body) else {
            return;
        };
        match self {
            Provider::IbmRuntime => {
                job.status = str_at(&v, "/state/status").or_else(|| str_at(&v, "/status"));
                job.backend = job.backend.take().or_else(|| str_at(&v, "/backend"));
                job.usage_seconds = num_at(&v, "/usage/quantum_seconds")
                    .or_else(|| num_at(&v, "/usage/seconds"))
                    .filter(|_| {
                        v.pointer("/usage")
                            .is_some_and(|u| u.as_object().is_some_and(|o| !o.is_empty()))
                    });
            }
            Provider::Braket => {
                job.status = str_at(&v, "/status");
                job.backend = job.backend.take().or_else(|| str_at(&v, "/deviceArn"));
            }
            Provider::Ionq => {
                job.status = str_at(&v, "/status");
                // execution_time is in milliseconds
                job.usage_seconds = num_at(&v, "/execution_time").map(|ms| ms / 1000.0);
            }
            Provider::Generic(g) => {
                job.status = g.status.as_deref().and_then(|p| str_at(&v, p));
            }
            Provider::IbmIam => {}
        }
    }

    /// `simulator`, `qpu` or `unknown` for a backend of this provider.
    pub fn device_type(&self, backend: &str) -> &'static str {
        let b = backend.to_ascii_lowercase();
        match self {
            Provider::IbmRuntime => {
                if b.contains("simulator") || b.starts_with("fake_") || b.starts_with("aer") {
                    "simulator"
                } else if b.starts_with("ibm") {
                    "qpu"
                } else {
                    "unknown"
                }
            }
            Provider::Braket => {
                if b.contains("/quantum-simulator/") {
                    "simulator"
                } else if b.contains("/qpu/") {
                    "qpu"
                } else {
                    "unknown"
                }
            }
            Provider::Ionq => {
                if b.starts_with("simulator") {
                    "simulator"
                } else if b.starts_with("qpu") {
                    "qpu"
                } else {
                    "unknown"
                }
            }
            Provider::Generic(g) => {
                if g.simulator_backends.iter().any(|s| s == backend) {
                    "simulator"
                } else {
                    "unknown"
                }
            }
            Provider::IbmIam => "unknown",
        }
    }
}

/// A session (IBM, IonQ) reserves a backend (`{"backend": ...}`): its
/// backend is what the policy checks.
fn session(body: &[u8], job: &mut QuantumJob, limits: &ParseLimits) -> Result<(), ParseError> {
    const PART: &str = "session";
    Budget::new(limits)
        .prescan_json(body)
        .map_err(|hit| hit.error(PART, ""))?;
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::new(PART, format!("body is not JSON: {e}")))?;
    job.backend = str_at(&v, "/backend");
    job.session_id = None;
    if job.backend.is_none() {
        return Err(ParseError::new(PART, "no backend"));
    }
    Ok(())
}

/// Totals over a job's circuits, written into the job.
#[derive(Default)]
struct Circuits {
    count: u64,
    qubits: u32,
    instructions: u64,
    /// None once any circuit's depth is unknown.
    depth: Option<u64>,
    two_qubit: Option<u64>,
    parameters: u64,
    hashes: Vec<String>,
}

impl Circuits {
    fn add(&mut self, width: u32, instructions: u64, depth: Option<u64>, two_qubit: Option<u64>) {
        if self.count == 0 {
            self.depth = Some(0);
            self.two_qubit = Some(0);
        }
        self.count += 1;
        self.qubits = self.qubits.max(width);
        // QPY headers state any count: add without overflow
        self.instructions = self.instructions.saturating_add(instructions);
        self.depth = self.depth.zip(depth).map(|(a, b)| a.max(b));
        self.two_qubit = self
            .two_qubit
            .zip(two_qubit)
            .map(|(a, b)| a.saturating_add(b));
    }

    fn add_qasm(&mut self, stats: &CircuitStats) {
        self.add(
            stats.qubits,
            stats.instructions,
            Some(stats.depth),
            Some(stats.two_qubit_gates),
        );
        self.parameters = self.parameters.max(stats.parameters);
    }

    fn write(self, job: &mut QuantumJob) {
        job.circuits = Some(self.count);
        if self.count > 0 {
            job.qubits = Some(self.qubits);
            job.instructions = Some(self.instructions);
            job.depth = self.depth;
            job.two_qubit_gates = self.two_qubit;
        }
        job.circuit_hashes = self.hashes;
    }
}

/// A provider's response as JSON, if it is JSON within the default
/// [`ParseLimits`] (responses come from the network too).
fn response_json(body: &[u8]) -> Option<Value> {
    let limits = ParseLimits::default();
    Budget::new(&limits).prescan_json(body).ok()?;
    serde_json::from_slice(body).ok()
}

fn str_at(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer).and_then(scalar_string)
}

fn num_at(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

/// A count: a non-negative integer, also written as a float (`1000.0`);
/// anything else (`1.5`, `-1`, `"100"`) is unreadable, not rounded.
fn u64_of(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Bytes of a value as JSON text (tags, metadata).
fn json_size(v: &Value) -> u64 {
    serde_json::to_string(v).map_or(0, |s| s.len() as u64)
}

/// Count and total size (keys plus values) of a tag list or tag map.
fn tag_sizes(tags: &Value) -> Option<(u64, u64)> {
    match tags {
        Value::Array(a) => Some((
            a.len() as u64,
            a.iter()
                .map(|t| t.as_str().map_or_else(|| json_size(t), |s| s.len() as u64))
                .sum(),
        )),
        Value::Object(o) => Some((
            o.len() as u64,
            o.iter()
                .map(|(k, v)| {
                    k.len() as u64 + v.as_str().map_or_else(|| json_size(v), |s| s.len() as u64)
                })
                .sum(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod provider_tests {
    use super::*;

    fn parse(p: &Provider, body: &str) -> Result<QuantumJob, ParseError> {
        let mut job = QuantumJob::default();
        p.parse_submit(body.as_bytes(), &mut job).map(|_| job)
    }

    #[test]
    fn ionq_gate_list_and_qasm() {
        let job = parse(
            &Provider::Ionq,
            r#"{"target": "qpu.aria-1", "shots": 500, "name": "bell", "metadata": {"note": "x"},
                "input": {"qubits": 3, "circuit": [
                  {"gate": "h", "target": 0},
                  {"gate": "cnot", "control": 0, "target": 1},
                  {"gate": "rx", "target": 2, "rotation": 0.5},
                  {"gate": "swap", "targets": [1, 2]}]}}"#,
        )
        .unwrap();
        assert_eq!(job.backend.as_deref(), Some("qpu.aria-1"));
        assert_eq!(Provider::Ionq.device_type("qpu.aria-1"), "qpu");
        assert_eq!(Provider::Ionq.device_type("simulator"), "simulator");
        assert_eq!(
            (job.qubits, job.instructions, job.two_qubit_gates),
            (Some(3), Some(4), Some(2))
        );
        assert_eq!(job.depth, Some(3));
        assert_eq!((job.shots, job.executions), (Some(500), Some(500)));
        assert!(job.metadata_bytes.unwrap() > 4);
        let job = parse(
            &Provider::Ionq,
            r#"{"target": "simulator", "shots": 10, "input": {"format": "openqasm",
                "data": "OPENQASM 2.0; qreg q[2]; h q[0]; cx q[0],q[1];"}}"#,
        )
        .unwrap();
        assert_eq!((job.qubits, job.instructions), (Some(2), Some(2)));
        assert_eq!(
            Provider::Ionq
                .submitted_job_id(br#"{"id": "abc", "status": "ready"}"#)
                .as_deref(),
            Some("abc")
        );
        let mut polled = QuantumJob::default();
        Provider::Ionq.status(
            br#"{"id": "abc", "status": "completed", "execution_time": 1500}"#,
            &mut polled,
        );
        assert_eq!(polled.status.as_deref(), Some("completed"));
        assert_eq!(polled.usage_seconds, Some(1.5));
    }

    #[test]
    fn generic_fields_by_json_pointer() {
        let fields = GenericFields {
            submit_path: "/runs".into(),
            backend: Some("/device/name".into()),
            shots: Some("/settings/shots".into()),
            circuit: Some("/program".into()),
            tags: Some("/labels".into()),
            job_id: "/run/id".into(),
            status: Some("/run/state".into()),
            simulator_backends: vec!["emu".into()],
            ..Default::default()
        };
        assert!(fields.validate().is_ok());
        let p = Provider::Generic(Box::new(fields));
        let path = |raw: &str| crate::path::normalise(raw).unwrap();
        assert_eq!(
            p.operation("POST", &path("/runs")).unwrap().class,
            OpClass::Submit
        );
        let poll = p.operation("GET", &path("/runs/r-1")).unwrap();
        assert_eq!(
            (poll.class, poll.job_id.as_deref()),
            (OpClass::Poll, Some("r-1"))
        );
        assert!(p.operation("DELETE", &path("/runs/r-1")).is_none());
        let job = parse(
            &p,
            r#"{"device": {"name": "emu"}, "settings": {"shots": 64}, "labels": ["a", "bb"],
                "program": "OPENQASM 3; qubit[3] q; h q; cz q[0], q[1];"}"#,
        )
        .unwrap();
        assert_eq!(job.backend.as_deref(), Some("emu"));
        assert_eq!(p.device_type("emu"), "simulator");
        assert_eq!(p.device_type("other"), "unknown");
        assert_eq!(
            (job.qubits, job.instructions, job.two_qubit_gates),
            (Some(3), Some(4), Some(1))
        );
        assert_eq!(
            (job.shots, job.tags, job.tags_bytes),
            (Some(64), Some(2), Some(3))
        );
        assert_eq!(
            p.submitted_job_id(br#"{"run": {"id": 42}}"#).as_deref(),
            Some("42")
        );
        let bad = GenericFields {
            backend: Some("device".into()),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("JSON Pointer"));
    }

    #[test]
    fn status_polls() {
        let mut job = QuantumJob::default();
        Provider::IbmRuntime.status(
            br#"{"id": "d1", "status": "Completed", "state": {"status": "Completed"},
                 "backend": "ibm_fez", "usage": {"quantum_seconds": 3, "seconds": 4}}"#,
            &mut job,
        );
        assert_eq!(job.status.as_deref(), Some("Completed"));
        assert_eq!(job.backend.as_deref(), Some("ibm_fez"));
        assert_eq!(job.usage_seconds, Some(3.0));
        let mut job = QuantumJob::default();
        Provider::IbmRuntime.status(
            br#"{"id": "d1", "status": "Queued", "usage": {}}"#,
            &mut job,
        );
        assert_eq!(
            (job.status.as_deref(), job.usage_seconds),
            (Some("Queued"), None)
        );
        let mut job = QuantumJob::default();
        Provider::Braket.status(br#"{"quantumTaskArn": "a", "status": "RUNNING"}"#, &mut job);
        assert_eq!(job.status.as_deref(), Some("RUNNING"));
        // not JSON: nothing learnt, nothing broken
        let mut job = QuantumJob::default();
        Provider::Braket.status(b"<html>", &mut job);
        assert_eq!(job, QuantumJob::default());
    }

    #[test]
    fn bad_bodies_are_errors_that_say_where() {
        let e = parse(&Provider::IbmRuntime, "{").unwrap_err().to_string();
        assert!(e.starts_with("ibm_runtime: body is not JSON"), "{e}");
        let e = parse(&Provider::IbmRuntime, r#"{"program_id": "sampler", "params": {"pubs": [[{"__type__": "QuantumCircuit", "__value__": "!!"}]]}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad base64"), "{e}");
        let e = parse(&Provider::Braket, r#"{"deviceArn": "x", "shots": 5, "action": "{\"braketSchemaHeader\": {\"name\": \"braket.ir.openqasm.program\"}, \"source\": \"\"}"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("braket: action: qasm: empty program"), "{e}");
        // what was read before the error is kept
        let mut job = QuantumJob::default();
        let _ = Provider::Braket.parse_submit(
            br#"{"deviceArn": "arn:x", "shots": 7, "action": 3}"#,
            &mut job,
        );
        assert_eq!(
            (job.backend.as_deref(), job.shots),
            (Some("arn:x"), Some(7))
        );
        let e = parse(&Provider::Ionq, "[]").unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
    }
}

//! Provider request formats: which requests are job submissions and status
//! polls, and what a submission asks for.
//!
//! Paths are relative to the gateway route (its prefix removed), without
//! the query string.

mod braket;
mod generic;
mod ibm;
mod ionq;

use serde_json::Value;
use vigil_schema::QuantumJob;

use crate::qasm::CircuitStats;
use crate::ParseError;

pub use generic::GenericFields;

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
}

/// What a request is, as far as job metadata goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Submit,
    Status { job_id: String },
    Other,
}

impl Operation {
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Submit => "submit",
            Operation::Status { .. } => "status",
            Operation::Other => "other",
        }
    }
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::IbmRuntime => "ibm_runtime",
            Provider::Braket => "braket",
            Provider::Ionq => "ionq",
            Provider::Generic(_) => "generic",
        }
    }

    pub fn operation(&self, method: &str, path: &str) -> Operation {
        let path = path.trim_end_matches('/');
        let (collection, status_ok) = match self {
            Provider::IbmRuntime | Provider::Ionq => ("/jobs", true),
            Provider::Braket => ("/quantum-task", true),
            Provider::Generic(g) => (g.submit_path.as_str(), true),
        };
        if method == "POST" && path.ends_with(collection) {
            return Operation::Submit;
        }
        if method == "GET" && status_ok {
            if let Some(at) = path.rfind(&format!("{collection}/")) {
                let id = &path[at + collection.len() + 1..];
                // the job itself, not a sub-resource such as /results
                if !id.is_empty() && !id.contains('/') {
                    return Operation::Status {
                        job_id: percent_decode(id),
                    };
                }
            }
        }
        Operation::Other
    }

    /// Fill `job` with what a submission body asks for.
    pub fn parse_submit(&self, body: &[u8], job: &mut QuantumJob) -> Result<(), ParseError> {
        let part = self.name();
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ParseError::new(part, format!("body is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(ParseError::new(part, "body is not a JSON object"));
        }
        match self {
            Provider::IbmRuntime => ibm::parse_submit(&v, job),
            Provider::Braket => braket::parse_submit(&v, job),
            Provider::Ionq => ionq::parse_submit(&v, job),
            Provider::Generic(g) => g.parse_submit(&v, job),
        }
    }

    /// The job id a submission's response returns.
    pub fn submitted_job_id(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        let id = match self {
            Provider::IbmRuntime | Provider::Ionq => v.get("id"),
            Provider::Braket => v.get("quantumTaskArn"),
            Provider::Generic(g) => v.pointer(&g.job_id),
        }?;
        scalar_string(id)
    }

    /// Status and usage from a status poll's response.
    pub fn status(&self, body: &[u8], job: &mut QuantumJob) {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
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
        }
    }
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
    started: bool,
}

impl Circuits {
    fn add(&mut self, width: u32, instructions: u64, depth: Option<u64>, two_qubit: Option<u64>) {
        if !self.started {
            self.depth = Some(0);
            self.two_qubit = Some(0);
            self.started = true;
        }
        self.count += 1;
        self.qubits = self.qubits.max(width);
        self.instructions += instructions;
        self.depth = self.depth.zip(depth).map(|(a, b)| a.max(b));
        self.two_qubit = self.two_qubit.zip(two_qubit).map(|(a, b)| a + b);
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

fn str_at(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer).and_then(scalar_string)
}

fn num_at(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

fn u64_of(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
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

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_by_method_and_path() {
        let ibm = Provider::IbmRuntime;
        assert_eq!(ibm.operation("POST", "/api/v1/jobs"), Operation::Submit);
        assert_eq!(
            ibm.operation("GET", "/api/v1/jobs/d0a0"),
            Operation::Status {
                job_id: "d0a0".into()
            }
        );
        assert_eq!(
            ibm.operation("GET", "/api/v1/jobs/d0a0/results"),
            Operation::Other
        );
        assert_eq!(ibm.operation("GET", "/api/v1/backends"), Operation::Other);
        let braket = Provider::Braket;
        assert_eq!(braket.operation("POST", "/quantum-task"), Operation::Submit);
        assert_eq!(
            braket.operation(
                "GET",
                "/quantum-task/arn%3Aaws%3Abraket%3Aus-east-1%3A1%3Aquantum-task%2Fabc"
            ),
            Operation::Status {
                job_id: "arn:aws:braket:us-east-1:1:quantum-task/abc".into()
            }
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}

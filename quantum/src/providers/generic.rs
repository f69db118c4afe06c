//! Any JSON job API: the gateway route says where each field is, as JSON
//! Pointers (RFC 6901), e.g. `backend = "/device"`, `circuit = "/program/source"`.

use serde::Deserialize;
use serde_json::Value;
use vigil_schema::QuantumJob;

use super::{str_at, tag_sizes, u64_of, Circuits};
use crate::budget::Budget;
use crate::{circuit_hash, qasm, ParseError};

/// Field paths of a generic route, from the collector config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericFields {
    /// Path (relative to the route) a job is POSTed to; `GET <path>/<id>` polls it.
    #[serde(default = "default_submit_path")]
    pub submit_path: String,
    pub backend: Option<String>,
    pub shots: Option<String>,
    /// OpenQASM 2 or 3 source of the circuit (a string, or a list of strings).
    pub circuit: Option<String>,
    /// Qubits, where the API states them rather than sending a circuit.
    pub qubits: Option<String>,
    pub session_id: Option<String>,
    pub tags: Option<String>,
    pub output_location: Option<String>,
    /// Job id in the submission's response.
    #[serde(default = "default_job_id")]
    pub job_id: String,
    /// Status in a poll's response.
    pub status: Option<String>,
    /// Backends that are simulators; any other counts as a QPU for `allow_qpu`.
    #[serde(default)]
    pub simulator_backends: Vec<String>,
}

fn default_submit_path() -> String {
    "/jobs".into()
}
fn default_job_id() -> String {
    "/id".into()
}

impl Default for GenericFields {
    fn default() -> Self {
        Self {
            submit_path: default_submit_path(),
            backend: None,
            shots: None,
            circuit: None,
            qubits: None,
            session_id: None,
            tags: None,
            output_location: None,
            job_id: default_job_id(),
            status: None,
            simulator_backends: Vec::new(),
        }
    }
}

impl GenericFields {
    /// Every configured path must be a JSON Pointer.
    pub fn validate(&self) -> Result<(), String> {
        let paths = [
            ("backend", self.backend.as_deref()),
            ("shots", self.shots.as_deref()),
            ("circuit", self.circuit.as_deref()),
            ("qubits", self.qubits.as_deref()),
            ("session_id", self.session_id.as_deref()),
            ("tags", self.tags.as_deref()),
            ("output_location", self.output_location.as_deref()),
            ("job_id", Some(self.job_id.as_str())),
            ("status", self.status.as_deref()),
        ];
        for (name, p) in paths {
            if let Some(p) = p {
                if !p.is_empty() && !p.starts_with('/') {
                    return Err(format!(
                        "{name} = {p:?} is not a JSON Pointer (it must start with '/')"
                    ));
                }
            }
        }
        if !self.submit_path.starts_with('/') {
            return Err(format!(
                "submit_path = {:?} must start with '/'",
                self.submit_path
            ));
        }
        Ok(())
    }

    /// Unreadable shots leave `shots` and `executions` unset.
    pub(crate) fn parse_submit(
        &self,
        v: &Value,
        job: &mut QuantumJob,
        budget: &mut Budget<'_>,
    ) -> Result<(), ParseError> {
        let at = |p: &Option<String>| p.as_deref().and_then(|p| v.pointer(p));
        job.backend = self.backend.as_deref().and_then(|p| str_at(v, p));
        job.shots = at(&self.shots).and_then(u64_of);
        job.session_id = self.session_id.as_deref().and_then(|p| str_at(v, p));
        job.output_location = self.output_location.as_deref().and_then(|p| str_at(v, p));
        if let Some((n, bytes)) = at(&self.tags).and_then(tag_sizes) {
            job.tags = Some(n);
            job.tags_bytes = Some(bytes);
        }
        let mut circuits = Circuits::default();
        if let Some(c) = at(&self.circuit) {
            let sources: Vec<&str> = match c {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if sources.is_empty() {
                return Err(ParseError::new(
                    "generic",
                    "circuit field holds no OpenQASM source",
                ));
            }
            for s in sources {
                circuits.add_qasm(&qasm::analyze_in(s, budget)?);
                circuits.hashes.push(circuit_hash(s.as_bytes()));
            }
            job.parameters = Some(circuits.parameters);
            circuits.write(job);
        } else if let Some(q) = at(&self.qubits).and_then(Value::as_u64) {
            job.qubits = Some(q.min(u64::from(u32::MAX)) as u32);
        }
        job.bindings = Some(1);
        let circuits = job.circuits.unwrap_or(1).max(1);
        job.executions = job.shots.map(|s| circuits.saturating_mul(s));
        Ok(())
    }
}

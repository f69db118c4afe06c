//! IonQ: `POST /v0.3/jobs` and `/v0.4/jobs`.
//!
//! `{"target"|"backend", "shots", "name", "metadata", "input": {"format"?,
//! "qubits", "circuit": [{"gate", "target"|"targets", "control"|"controls"}]}}`;
//! `input.circuits` holds several circuits; `input.format` `qasm` or
//! `openqasm` carries source in `input.data`. Unreadable `shots` leave
//! `shots` and `executions` unset.

use serde_json::Value;
use vigil_schema::QuantumJob;

use super::{json_size, str_at, u64_of, Circuits};
use crate::budget::Budget;
use crate::{circuit_hash, qasm, ParseError};

pub fn parse_submit(
    v: &Value,
    job: &mut QuantumJob,
    budget: &mut Budget<'_>,
) -> Result<(), ParseError> {
    let err = |m: String| ParseError::new("ionq", m);
    // v0.3 names the backend `target`, v0.4 `backend`: a body naming two
    // different ones could show the policy one and run on the other
    let (target, backend) = (str_at(v, "/target"), str_at(v, "/backend"));
    if let (Some(t), Some(b)) = (&target, &backend) {
        if t != b {
            return Err(err(format!(
                "target {t:?} and backend {b:?} disagree: which one runs is the provider's choice"
            )));
        }
    }
    job.backend = target.or(backend);
    job.shots = v.get("shots").and_then(u64_of);
    job.metadata_bytes = Some(
        ["name", "metadata"]
            .iter()
            .filter_map(|k| v.get(*k))
            .map(|v| v.as_str().map_or_else(|| json_size(v), |s| s.len() as u64))
            .sum(),
    );
    if let Some(tags) = v.get("tags").and_then(super::tag_sizes) {
        job.tags = Some(tags.0);
        job.tags_bytes = Some(tags.1);
    }
    let input = v.get("input").ok_or_else(|| err("no input".into()))?;
    let format = str_at(input, "/format")
        .or_else(|| str_at(v, "/type"))
        .unwrap_or_else(|| "ionq.circuit.v0".into());
    let mut circuits = Circuits::default();
    if format.contains("qasm") {
        let source = input
            .get("data")
            .and_then(Value::as_str)
            .ok_or_else(|| err("QASM input has no data".into()))?;
        let stats = qasm::analyze_in(source, budget)?;
        circuits.add_qasm(&stats);
        circuits.hashes.push(circuit_hash(source.as_bytes()));
    } else {
        let declared = input.get("qubits").and_then(Value::as_u64);
        let list: Vec<&Value> = match input.get("circuits").and_then(Value::as_array) {
            Some(many) => many.iter().map(|c| c.get("circuit").unwrap_or(c)).collect(),
            None => vec![input
                .get("circuit")
                .ok_or_else(|| err("input has no circuit".into()))?],
        };
        for (i, c) in list.into_iter().enumerate() {
            let gates = c
                .as_array()
                .ok_or_else(|| err(format!("circuit {i} is not a list of gates")))?;
            let (width, depth, two) = gate_list(gates);
            let width = declared.map_or(width, |d| width.max(d as u32));
            circuits.add(width, gates.len() as u64, Some(depth), Some(two));
            circuits.hashes.push(circuit_hash(c.to_string().as_bytes()));
        }
    }
    job.program = Some(format);
    job.bindings = Some(1);
    job.parameters = Some(circuits.parameters);
    job.executions = job.shots.map(|s| circuits.count.saturating_mul(s));
    circuits.write(job);
    Ok(())
}

/// Width, depth and two-qubit gates of an IonQ gate list.
fn gate_list(gates: &[Value]) -> (u32, u64, u64) {
    let mut level = std::collections::HashMap::<u64, u64>::new();
    let (mut width, mut depth, mut two) = (0u32, 0u64, 0u64);
    for g in gates {
        let mut qs = Vec::new();
        for key in ["target", "control"] {
            qs.extend(g.get(key).and_then(Value::as_u64));
        }
        for key in ["targets", "controls"] {
            qs.extend(
                g.get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64),
            );
        }
        for q in &qs {
            width = width.max((*q).min(u64::from(u32::MAX - 1)) as u32 + 1);
        }
        two += u64::from(qs.len() == 2);
        // the JSON element budget bounds the gates and their qubits: no
        // further charge needed
        let l = qs
            .iter()
            .map(|q| level.get(q).copied().unwrap_or(0))
            .max()
            .unwrap_or(0)
            + 1;
        for q in qs {
            level.insert(q, l);
        }
        depth = depth.max(l);
    }
    (width, depth, two)
}

#[cfg(test)]
mod backend_tests {
    use crate::Provider;
    use vigil_schema::QuantumJob;

    #[test]
    fn a_body_naming_two_backends_has_none() {
        let mut job = QuantumJob::default();
        let e = Provider::Ionq
            .parse_submit(
                br#"{"target": "simulator", "backend": "qpu.forte-1", "shots": 10,
                     "input": {"qubits": 1, "circuit": [{"gate": "h", "target": 0}]}}"#,
                &mut job,
            )
            .unwrap_err();
        assert!(e.to_string().contains("disagree"), "{e}");
        // unknown backend: a backend limit then fails closed
        assert_eq!(job.backend, None);
    }
}

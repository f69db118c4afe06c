//! Amazon Braket: `POST /quantum-task`.
//!
//! `{"deviceArn", "shots", "action", "deviceParameters", "outputS3Bucket",
//! "outputS3KeyPrefix", "tags", ...}`; `action` is a JSON document (sent as
//! a string) whose `braketSchemaHeader.name` says what it is: an OpenQASM 3
//! program (`source` and `inputs`), a program set (`programs`, each with
//! list-valued `inputs` that are zipped: one binding per position), a JAQCD
//! program or an analog Hamiltonian simulation. For program sets `shots` is
//! the task's total over all executables.
//!
//! The `action` string is JSON inside JSON: it is pre-scanned against the
//! same element and depth budget as the body before it is parsed, and its
//! programs share one OpenQASM budget. Unreadable `shots` leave `shots`
//! and `executions` unset.

use serde_json::Value;
use vigil_schema::QuantumJob;

use super::{str_at, tag_sizes, u64_of, Circuits};
use crate::budget::Budget;
use crate::{circuit_hash, qasm, ParseError};

pub fn parse_submit(
    v: &Value,
    job: &mut QuantumJob,
    budget: &mut Budget<'_>,
) -> Result<(), ParseError> {
    let err = |m: String| ParseError::new("braket", m);
    job.backend = str_at(v, "/deviceArn");
    job.shots = v.get("shots").and_then(u64_of);
    if let Some((n, bytes)) = v.get("tags").and_then(tag_sizes) {
        job.tags = Some(n);
        job.tags_bytes = Some(bytes);
    }
    if let Some(bucket) = str_at(v, "/outputS3Bucket") {
        let prefix = str_at(v, "/outputS3KeyPrefix").unwrap_or_default();
        job.output_location = Some(format!("s3://{bucket}/{prefix}"));
    }
    // job tokens tie tasks to a Braket hybrid job: free-form, count them
    job.metadata_bytes = Some(
        ["jobToken", "associations"]
            .iter()
            .filter_map(|k| v.get(*k))
            .map(super::json_size)
            .sum(),
    );
    let action = v.get("action").ok_or_else(|| err("no action".into()))?;
    let owned;
    let action = match action {
        Value::String(s) => {
            budget
                .prescan_json(s.as_bytes())
                .map_err(|hit| hit.error("braket", "action"))?;
            owned = serde_json::from_str::<Value>(s)
                .map_err(|e| err(format!("action is not JSON: {e}")))?;
            &owned
        }
        other => other,
    };
    let kind = str_at(action, "/braketSchemaHeader/name").unwrap_or_default();
    let mut circuits = Circuits::default();
    let shots = job.shots;
    match kind.as_str() {
        "braket.ir.openqasm.program" => {
            job.program = Some("openqasm".into());
            let bindings =
                program(action, &mut circuits, budget).map_err(|e| nest(e, "braket", "action"))?;
            job.bindings = Some(bindings);
            job.executions = shots.map(|s| bindings.saturating_mul(s));
        }
        "braket.ir.openqasm.program_set" => {
            job.program = Some("program_set".into());
            let programs = action
                .get("programs")
                .and_then(Value::as_array)
                .ok_or_else(|| err("program set has no programs".into()))?;
            let mut bindings = 0u64;
            for (i, p) in programs.iter().enumerate() {
                let b = program(p, &mut circuits, budget)
                    .map_err(|e| nest(e, "braket", &format!("action.programs[{i}]")))?;
                bindings = bindings.saturating_add(b);
            }
            job.bindings = Some(bindings);
            // the task's shots are the total over every executable
            job.executions = shots;
        }
        "braket.ir.jaqcd.program" => {
            job.program = Some("jaqcd".into());
            let instructions = action
                .get("instructions")
                .and_then(Value::as_array)
                .ok_or_else(|| err("JAQCD program has no instructions".into()))?;
            let mut width = 0u32;
            let mut two = 0u64;
            for ins in instructions {
                let mut n = 0;
                for key in ["target", "control"] {
                    if let Some(q) = ins.get(key).and_then(Value::as_u64) {
                        width = width.max(wire_count(q));
                        n += 1;
                    }
                }
                for key in ["targets", "controls"] {
                    for q in ins.get(key).and_then(Value::as_array).into_iter().flatten() {
                        if let Some(q) = q.as_u64() {
                            width = width.max(wire_count(q));
                            n += 1;
                        }
                    }
                }
                two += u64::from(n == 2);
            }
            circuits.add(width, instructions.len() as u64, None, Some(two));
            circuits
                .hashes
                .push(circuit_hash(action.to_string().as_bytes()));
            job.bindings = Some(1);
            job.executions = shots;
        }
        "" => return Err(err("action has no braketSchemaHeader.name".into())),
        other => {
            // analog Hamiltonian simulation and the like: no gate circuit
            job.program = Some(other.trim_start_matches("braket.ir.").to_string());
            job.executions = shots;
        }
    }
    job.parameters = Some(circuits.parameters);
    circuits.write(job);
    Ok(())
}

/// One OpenQASM program: its statistics into `circuits`; returns its
/// bindings (1 for scalar inputs, the zipped length for list inputs).
fn program(p: &Value, circuits: &mut Circuits, budget: &mut Budget<'_>) -> Result<u64, ParseError> {
    let source = p
        .get("source")
        .and_then(Value::as_str)
        .ok_or_else(|| ParseError::new("braket", "program has no OpenQASM source"))?;
    let stats = qasm::analyze_in(source, budget)?;
    circuits.add_qasm(&stats);
    circuits.hashes.push(circuit_hash(source.as_bytes()));
    let bindings = match p.get("inputs").and_then(Value::as_object) {
        Some(inputs) => inputs
            .values()
            .map(|v| match v {
                Value::Array(a) => a.len() as u64,
                _ => 1,
            })
            .max()
            .unwrap_or(1),
        None => 1,
    };
    Ok(bindings)
}

/// Qubits needed to hold qubit index `q` (saturating: indices are untrusted).
fn wire_count(q: u64) -> u32 {
    u32::try_from(q.saturating_add(1)).unwrap_or(u32::MAX)
}

/// `e` from inside `place` (e.g. `action`), as an error of `part` that
/// keeps which limit, if any, was hit.
fn nest(e: ParseError, part: &'static str, place: &str) -> ParseError {
    ParseError {
        part,
        message: format!("{place}: {e}"),
        limit: e.limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParseLimits;

    #[test]
    fn unreadable_shots_leave_executions_unset() {
        let action = r#"{"braketSchemaHeader": {"name": "braket.ir.openqasm.program"},
            "source": "OPENQASM 3; qubit[2] q; h q[0];"}"#;
        for shots in [
            serde_json::json!("100"),
            serde_json::json!(-1),
            serde_json::json!(1.5),
        ] {
            let body = serde_json::json!({"deviceArn": "d", "shots": shots, "action": action});
            let limits = ParseLimits::default();
            let mut job = QuantumJob::default();
            parse_submit(&body, &mut job, &mut Budget::new(&limits)).unwrap();
            assert_eq!((job.shots, job.executions), (None, None), "{shots}");
            assert_eq!(job.qubits, Some(2));
        }
    }

    #[test]
    fn huge_jaqcd_qubit_indices_saturate() {
        let action = serde_json::json!({
            "braketSchemaHeader": {"name": "braket.ir.jaqcd.program"},
            "instructions": [{"type": "cnot", "control": 4294967295u64, "target": u64::MAX}]
        });
        let body = serde_json::json!({"deviceArn": "d", "shots": 1, "action": action});
        let limits = ParseLimits::default();
        let mut job = QuantumJob::default();
        parse_submit(&body, &mut job, &mut Budget::new(&limits)).unwrap();
        assert_eq!(job.qubits, Some(u32::MAX));
    }
}

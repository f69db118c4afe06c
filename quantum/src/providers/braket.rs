//! Amazon Braket: `POST /quantum-task`.
//!
//! `{"deviceArn", "shots", "action", "deviceParameters", "outputS3Bucket",
//! "outputS3KeyPrefix", "tags", ...}`; `action` is a JSON document (sent as
//! a string) whose `braketSchemaHeader.name` says what it is: an OpenQASM 3
//! program (`source` and `inputs`), a program set (`programs`, each with
//! list-valued `inputs` that are zipped: one binding per position), a JAQCD
//! program or an analog Hamiltonian simulation. For program sets `shots` is
//! the task's total over all executables.

use serde_json::Value;
use vigil_schema::QuantumJob;

use super::{str_at, tag_sizes, u64_of, Circuits};
use crate::{circuit_hash, qasm, ParseError};

pub fn parse_submit(v: &Value, job: &mut QuantumJob) -> Result<(), ParseError> {
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
            owned = serde_json::from_str::<Value>(s)
                .map_err(|e| err(format!("action is not JSON: {e}")))?;
            &owned
        }
        other => other,
    };
    let kind = str_at(action, "/braketSchemaHeader/name").unwrap_or_default();
    let mut circuits = Circuits::default();
    let shots = job.shots.unwrap_or(0);
    match kind.as_str() {
        "braket.ir.openqasm.program" => {
            job.program = Some("openqasm".into());
            let bindings =
                program(action, &mut circuits).map_err(|e| err(format!("action: {e}")))?;
            job.bindings = Some(bindings);
            job.executions = Some(bindings.saturating_mul(shots));
        }
        "braket.ir.openqasm.program_set" => {
            job.program = Some("program_set".into());
            let programs = action
                .get("programs")
                .and_then(Value::as_array)
                .ok_or_else(|| err("program set has no programs".into()))?;
            let mut bindings = 0u64;
            for (i, p) in programs.iter().enumerate() {
                bindings += program(p, &mut circuits)
                    .map_err(|e| err(format!("action.programs[{i}]: {e}")))?;
            }
            job.bindings = Some(bindings);
            // the task's shots are the total over every executable
            job.executions = Some(shots);
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
                        width = width.max(q as u32 + 1);
                        n += 1;
                    }
                }
                for key in ["targets", "controls"] {
                    for q in ins.get(key).and_then(Value::as_array).into_iter().flatten() {
                        if let Some(q) = q.as_u64() {
                            width = width.max(q as u32 + 1);
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
            job.executions = Some(shots);
        }
        "" => return Err(err("action has no braketSchemaHeader.name".into())),
        other => {
            // analog Hamiltonian simulation and the like: no gate circuit
            job.program = Some(other.trim_start_matches("braket.ir.").to_string());
            job.executions = Some(shots);
        }
    }
    job.parameters = Some(circuits.parameters);
    circuits.write(job);
    Ok(())
}

/// One OpenQASM program: its statistics into `circuits`; returns its
/// bindings (1 for scalar inputs, the zipped length for list inputs).
fn program(p: &Value, circuits: &mut Circuits) -> Result<u64, ParseError> {
    let source = p
        .get("source")
        .and_then(Value::as_str)
        .ok_or_else(|| ParseError::new("braket", "program has no OpenQASM source"))?;
    let stats = qasm::analyze(source)?;
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

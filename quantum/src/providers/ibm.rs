//! IBM Qiskit Runtime: `POST /api/v1/jobs`.
//!
//! `{"program_id": "sampler"|"estimator", "backend", "session_id", "tags",
//! "params": {"pubs": [...], "options": {...}}}`. A PUB is a list:
//! sampler `[circuit, parameter_values?, shots?]`, estimator `[circuit,
//! observables, parameter_values?, precision?]`. Circuits are
//! `{"__type__": "QuantumCircuit", "__value__": base64(zlib(QPY))}`,
//! arrays `{"__type__": "ndarray", "__value__": base64(zlib(.npy))}`.

use serde_json::Value;
use vigil_schema::QuantumJob;

use super::{str_at, tag_sizes, u64_of, Circuits};
use crate::encoded::b64_zlib_head;
use crate::{circuit_hash, npy, qpy, ParseError};

/// Qiskit Runtime's defaults when a job does not say.
const SAMPLER_DEFAULT_SHOTS: u64 = 4096;
const ESTIMATOR_DEFAULT_PRECISION: f64 = 0.015625;

pub fn parse_submit(v: &Value, job: &mut QuantumJob) -> Result<(), ParseError> {
    let err = |m: String| ParseError::new("ibm_runtime", m);
    let program = str_at(v, "/program_id");
    job.backend = str_at(v, "/backend");
    job.session_id = str_at(v, "/session_id");
    if let Some((n, bytes)) = v.get("tags").and_then(tag_sizes) {
        job.tags = Some(n);
        job.tags_bytes = Some(bytes);
    }
    let estimator = program.as_deref() == Some("estimator");
    job.program = program;
    let Some(pubs) = v.pointer("/params/pubs") else {
        // other programs (e.g. Qiskit Functions) carry no PUBs
        return Ok(());
    };
    let pubs = pubs
        .as_array()
        .ok_or_else(|| err("params.pubs is not a list".into()))?;
    let options = v.pointer("/params/options");
    let default_shots = options
        .and_then(|o| o.get("default_shots"))
        .and_then(u64_of);
    let default_precision = options
        .and_then(|o| o.get("default_precision"))
        .and_then(Value::as_f64);

    let mut circuits = Circuits::default();
    let (mut bindings, mut executions, mut shots_max, mut metadata) = (0u64, 0u64, 0u64, 0u64);
    let mut parameters = 0u64;
    for (i, pub_) in pubs.iter().enumerate() {
        // a PUB may be a bare circuit
        let items: &[Value] = match pub_ {
            Value::Array(a) => a,
            other => std::slice::from_ref(other),
        };
        let circuit = items
            .first()
            .ok_or_else(|| err(format!("pubs[{i}] is empty")))?;
        let qpy_value = typed_value(circuit, "QuantumCircuit")
            .ok_or_else(|| err(format!("pubs[{i}][0] is not an encoded QuantumCircuit")))?;
        let head = b64_zlib_head(qpy_value, "qpy")?;
        let file = qpy::parse(&head).map_err(|e| err(format!("pubs[{i}]: {e}")))?;
        for c in &file.circuits {
            // operations are not decoded: depth and two-qubit gates stay unknown
            circuits.add(c.qubits, c.instructions, None, None);
            metadata += c.metadata_bytes + c.name.len() as u64;
        }
        circuits.hashes.push(circuit_hash(qpy_value.as_bytes()));

        let (values, shots) = if estimator {
            let precision = items
                .get(3)
                .and_then(Value::as_f64)
                .or(default_precision)
                .filter(|p| *p > 0.0);
            // explicit shots win; else the shots that reach the precision
            let shots = default_shots.unwrap_or_else(|| {
                let p = precision.unwrap_or(ESTIMATOR_DEFAULT_PRECISION);
                (1.0 / (p * p)).ceil() as u64
            });
            (items.get(2), shots)
        } else {
            let shots = items
                .get(2)
                .and_then(u64_of)
                .or(default_shots)
                .unwrap_or(SAMPLER_DEFAULT_SHOTS);
            (items.get(1), shots)
        };
        let (b, p) = sweep(values).map_err(|e| err(format!("pubs[{i}] parameter values: {e}")))?;
        bindings += b;
        parameters = parameters.max(p);
        executions = executions.saturating_add(b.saturating_mul(shots));
        shots_max = shots_max.max(shots);
    }
    circuits.parameters = parameters;
    circuits.write(job);
    job.parameters = Some(parameters);
    job.bindings = Some(bindings);
    job.shots = Some(shots_max);
    job.executions = Some(executions);
    job.metadata_bytes = Some(metadata);
    Ok(())
}

/// `{"__type__": type, "__value__": "..."}` → the value.
fn typed_value<'a>(v: &'a Value, type_name: &str) -> Option<&'a str> {
    (v.get("__type__")?.as_str()? == type_name).then_some(())?;
    v.get("__value__")?.as_str()
}

/// Parameter sets and parameters per set of a PUB's parameter values:
/// an encoded ndarray, nested lists, a mapping of names to arrays
/// (BindingsArray), or nothing (one execution, no parameters).
fn sweep(values: Option<&Value>) -> Result<(u64, u64), ParseError> {
    let Some(values) = values.filter(|v| !v.is_null()) else {
        return Ok((1, 0));
    };
    if let Some(encoded) = typed_value(values, "ndarray") {
        let head = b64_zlib_head(encoded, "npy")?;
        let h = npy::parse_header(&head)?;
        return Ok((h.bindings(), h.parameters()));
    }
    if let Value::Array(_) = values {
        let shape = list_shape(values);
        let (outer, last) = match shape.split_last() {
            Some((last, outer)) => (outer.iter().product::<u64>(), *last),
            None => (1, 0),
        };
        return Ok((outer.max(1), last));
    }
    if let Value::Object(map) = values {
        // BindingsArray data: {"(a, b)": array, ...}: the sets are the
        // broadcast of the arrays' outer shapes, the parameters their sum
        let (mut sets, mut params) = (1u64, 0u64);
        for v in map.values() {
            let (b, p) = sweep(Some(v))?;
            sets = sets.max(b);
            params += p;
        }
        return Ok((sets, params));
    }
    Err(ParseError::new(
        "ibm_runtime",
        "unrecognised parameter values",
    ))
}

/// Shape of nested JSON lists, following the first element at each level.
fn list_shape(v: &Value) -> Vec<u64> {
    let mut shape = Vec::new();
    let mut cur = v;
    while let Value::Array(a) = cur {
        shape.push(a.len() as u64);
        match a.first() {
            Some(first) if shape.len() < 32 => cur = first,
            _ => break,
        }
    }
    shape
}

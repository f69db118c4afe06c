//! IBM Qiskit Runtime: `POST /api/v1/jobs`.
//!
//! `{"program_id": "sampler"|"estimator", "backend", "session_id", "tags",
//! "params": {"pubs": [...], "options": {...}}}`. A PUB is a list:
//! sampler `[circuit, parameter_values?, shots?]`, estimator `[circuit,
//! observables, parameter_values?, precision?]`. Circuits are
//! `{"__type__": "QuantumCircuit", "__value__": base64(zlib(QPY))}`,
//! arrays `{"__type__": "ndarray", "__value__": base64(zlib(.npy))}`.
//!
//! Each PUB runs its own shots: its own (sampler shots, estimator
//! precision) else the options' default, else Qiskit Runtime's. `shots` is
//! their sum over the PUBs, `executions` the sum of each PUB's shots times
//! its parameter sets. A shots value present but unreadable leaves both
//! unset rather than guessed: policy denies on what it cannot read.

use serde_json::Value;
use vigil_schema::QuantumJob;

use super::{str_at, tag_sizes, u64_of, Circuits};
use crate::budget::Budget;
use crate::encoded::b64_zlib_head;
use crate::{circuit_hash, npy, qpy, ParseError};

/// Qiskit Runtime's defaults when a job does not say.
const SAMPLER_DEFAULT_SHOTS: u64 = 4096;
const ESTIMATOR_DEFAULT_PRECISION: f64 = 0.015625;

pub fn parse_submit(
    v: &Value,
    job: &mut QuantumJob,
    budget: &mut Budget<'_>,
) -> Result<(), ParseError> {
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
    // present but unreadable: no default applies, the shots are unknown
    let default_shots = readable(options.and_then(|o| o.get("default_shots")), u64_of);
    let default_precision = readable(
        options.and_then(|o| o.get("default_precision")),
        precision_of,
    );

    let mut circuits = Circuits::default();
    let (mut bindings, mut metadata) = (0u64, 0u64);
    // None once any PUB's shots cannot be read
    let (mut shots_total, mut executions) = (Some(0u64), Some(0u64));
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
        let head = b64_zlib_head(qpy_value, "qpy", budget)?;
        let file = qpy::parse(&head).map_err(|e| err(format!("pubs[{i}]: {e}")))?;
        for c in &file.circuits {
            // operations are not decoded: depth and two-qubit gates stay unknown
            circuits.add(c.qubits, c.instructions, None, None);
            metadata = metadata
                .saturating_add(c.metadata_bytes)
                .saturating_add(c.name.len() as u64);
        }
        circuits.hashes.push(circuit_hash(qpy_value.as_bytes()));

        let (values, shots) = if estimator {
            // the PUB's own precision wins, then default_shots, then the
            // default precision (qiskit_ibm_runtime EstimatorV2)
            let shots = match readable(items.get(3), precision_of) {
                Some(own) => own.map(shots_for),
                None => match default_shots {
                    Some(shots) => shots,
                    None => match default_precision {
                        Some(p) => p.map(shots_for),
                        None => Some(shots_for(ESTIMATOR_DEFAULT_PRECISION)),
                    },
                },
            };
            (items.get(2), shots)
        } else {
            let shots = match readable(items.get(2), u64_of) {
                Some(own) => own,
                None => default_shots.unwrap_or(Some(SAMPLER_DEFAULT_SHOTS)),
            };
            (items.get(1), shots)
        };
        let (b, p) =
            sweep(values, budget).map_err(|e| err(format!("pubs[{i}] parameter values: {e}")))?;
        bindings = bindings.saturating_add(b);
        parameters = parameters.max(p);
        shots_total = shots_total.zip(shots).map(|(t, s)| t.saturating_add(s));
        executions = executions
            .zip(shots)
            .map(|(e, s)| e.saturating_add(b.saturating_mul(s)));
    }
    circuits.parameters = parameters;
    circuits.write(job);
    job.parameters = Some(parameters);
    job.bindings = Some(bindings);
    job.shots = shots_total;
    job.executions = executions;
    job.metadata_bytes = Some(metadata);
    Ok(())
}

/// A field that may be absent (`None`), present and readable
/// (`Some(Some(x))`) or present and unreadable (`Some(None)`); null counts
/// as absent, as the SDKs send it for "not set".
fn readable<T>(v: Option<&Value>, read: impl Fn(&Value) -> Option<T>) -> Option<Option<T>> {
    v.filter(|v| !v.is_null()).map(read)
}

fn precision_of(v: &Value) -> Option<f64> {
    v.as_f64().filter(|p| *p > 0.0)
}

/// Shots an estimator runs to reach `precision`: 1 / precision².
fn shots_for(precision: f64) -> u64 {
    // a float cast saturates: a tiny precision asks for u64::MAX shots
    (1.0 / (precision * precision)).ceil() as u64
}

/// `{"__type__": type, "__value__": "..."}` → the value.
fn typed_value<'a>(v: &'a Value, type_name: &str) -> Option<&'a str> {
    (v.get("__type__")?.as_str()? == type_name).then_some(())?;
    v.get("__value__")?.as_str()
}

/// Parameter sets and parameters per set of a PUB's parameter values:
/// an encoded ndarray, nested lists, a mapping of names to either
/// (BindingsArray), or nothing (one execution, no parameters).
fn sweep(values: Option<&Value>, budget: &mut Budget<'_>) -> Result<(u64, u64), ParseError> {
    let Some(values) = values.filter(|v| !v.is_null()) else {
        return Ok((1, 0));
    };
    if let Value::Object(map) = values {
        if typed_value(values, "ndarray").is_none() {
            // BindingsArray data: {"(a, b)": array, ...}: the sets are the
            // broadcast of the arrays' outer shapes, the parameters their
            // sum. One level only (no recursion): a map inside is refused.
            let (mut sets, mut params) = (1u64, 0u64);
            for v in map.values() {
                let (b, p) = array_sweep(v, budget)?;
                sets = sets.max(b);
                params = params.saturating_add(p);
            }
            return Ok((sets, params));
        }
    }
    array_sweep(values, budget)
}

/// [`sweep`] of one array: an encoded ndarray or nested lists.
fn array_sweep(values: &Value, budget: &mut Budget<'_>) -> Result<(u64, u64), ParseError> {
    if let Some(encoded) = typed_value(values, "ndarray") {
        let head = b64_zlib_head(encoded, "npy", budget)?;
        let h = npy::parse_header(&head)?;
        return Ok((h.bindings(), h.parameters()));
    }
    if let Value::Array(_) = values {
        let shape = list_shape(values);
        let (outer, last) = match shape.split_last() {
            Some((last, outer)) => (outer.iter().fold(1u64, |a, &d| a.saturating_mul(d)), *last),
            None => (1, 0),
        };
        return Ok((outer.max(1), last));
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

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
                .saturating_add(c.name_bytes);
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use base64::Engine;

    use super::*;
    use crate::ParseLimits;

    /// base64(zlib(bytes)), as Qiskit Runtime encodes binary values.
    fn encoded(bytes: &[u8]) -> String {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(bytes).unwrap();
        base64::engine::general_purpose::STANDARD.encode(z.finish().unwrap())
    }

    /// A QPY 5 file of one circuit: `qubits` wide, `instructions` long.
    fn qpy(qubits: u32, instructions: u64) -> serde_json::Value {
        let mut f = b"QISKIT".to_vec();
        f.extend([5, 1, 0, 0]);
        f.extend(1u64.to_be_bytes());
        f.push(b'q');
        f.extend(1u16.to_be_bytes()); // name size
        f.extend([b'p', 0, 0]); // global phase type and size
        f.extend(qubits.to_be_bytes());
        f.extend(0u32.to_be_bytes()); // clbits
        f.extend(0u64.to_be_bytes()); // metadata
        f.extend(0u32.to_be_bytes()); // registers
        f.extend(instructions.to_be_bytes());
        f.push(b'c');
        serde_json::json!({"__type__": "QuantumCircuit", "__value__": encoded(&f)})
    }

    fn parse(body: serde_json::Value) -> QuantumJob {
        let limits = ParseLimits::default();
        let mut job = QuantumJob::default();
        parse_submit(&body, &mut job, &mut Budget::new(&limits)).unwrap();
        job
    }

    #[test]
    fn sampler_shots_and_executions_sum_over_every_pub() {
        let job = parse(serde_json::json!({
            "program_id": "sampler", "backend": "ibm_fez",
            "params": {"options": {"default_shots": 50}, "pubs": [
                // own shots, 3 parameter sets
                [qpy(2, 10), [[0.1], [0.2], [0.3]], 100],
                // the default shots, no parameters
                [qpy(5, 20)],
                // own shots, 2 x 2 sets of 4 parameters
                [qpy(3, 30), [[[1, 2, 3, 4], [1, 2, 3, 4]], [[1, 2, 3, 4], [1, 2, 3, 4]]], 7],
            ]}
        }));
        assert_eq!(job.circuits, Some(3));
        assert_eq!((job.qubits, job.instructions), (Some(5), Some(60)));
        assert_eq!(job.bindings, Some(3 + 1 + 4));
        assert_eq!(job.shots, Some(100 + 50 + 7));
        assert_eq!(job.executions, Some(3 * 100 + 50 + 4 * 7));
        assert_eq!(job.parameters, Some(4));
    }

    #[test]
    fn estimator_pub_precision_wins_over_the_defaults() {
        let job = parse(serde_json::json!({
            "program_id": "estimator",
            "params": {"options": {"default_shots": 1000}, "pubs": [
                // own precision 0.1: 100 shots, 2 sets
                [qpy(2, 5), "ZZ", [[0.1], [0.2]], 0.1],
                // default_shots
                [qpy(2, 5), "ZZ"],
            ]}
        }));
        assert_eq!(job.shots, Some(100 + 1000));
        assert_eq!(job.executions, Some(2 * 100 + 1000));
        let job = parse(serde_json::json!({
            "program_id": "estimator",
            "params": {"options": {"default_precision": 0.05}, "pubs": [[qpy(2, 5), "ZZ"]]}
        }));
        assert_eq!(job.shots, Some(400));
        // nothing said: Qiskit Runtime's default precision, 1/4096^0.5
        let job = parse(serde_json::json!({
            "program_id": "estimator", "params": {"pubs": [[qpy(2, 5), "ZZ"]]}
        }));
        assert_eq!(job.shots, Some(4096));
    }

    #[test]
    fn unreadable_shots_are_left_unset_not_guessed() {
        for pubs in [
            serde_json::json!([[qpy(2, 5), null, 100], [qpy(2, 5), null, "many"]]),
            serde_json::json!([[qpy(2, 5), null, -5]]),
            serde_json::json!([[qpy(2, 5), null, 2.5]]),
        ] {
            let job = parse(serde_json::json!({"program_id": "sampler", "params": {"pubs": pubs}}));
            assert_eq!((job.shots, job.executions), (None, None), "{pubs}");
            // what could be read still is
            assert!(job.circuits.is_some());
        }
        let job = parse(serde_json::json!({
            "program_id": "sampler",
            "params": {"options": {"default_shots": "x"}, "pubs": [[qpy(2, 5)]]}
        }));
        assert_eq!((job.shots, job.executions), (None, None));
        let job = parse(serde_json::json!({
            "program_id": "estimator",
            "params": {"pubs": [[qpy(2, 5), "ZZ", null, "fine"]]}
        }));
        assert_eq!((job.shots, job.executions), (None, None));
        // no backend named: none recorded
        let job = parse(serde_json::json!({"program_id": "sampler", "backend": {"name": 1}}));
        assert_eq!(job.backend, None);
    }

    #[test]
    fn nested_binding_maps_are_refused() {
        let limits = ParseLimits::default();
        let mut job = QuantumJob::default();
        let body = serde_json::json!({"program_id": "sampler", "params": {"pubs": [
            [qpy(2, 5), {"(a)": {"(b)": {"(c)": [[1]]}}}]
        ]}});
        let e = parse_submit(&body, &mut job, &mut Budget::new(&limits)).unwrap_err();
        assert!(
            e.to_string().contains("unrecognised parameter values"),
            "{e}"
        );
    }
}

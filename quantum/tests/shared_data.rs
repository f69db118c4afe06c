//! The parsers against the shared data: request bodies captured from the
//! real SDKs (with their ground truth in ../shared/quantum/requests/README.md)
//! and QASMBench's 127 OpenQASM 2 circuits.

use std::path::PathBuf;

use vigil_quantum::{qasm, Provider};
use vigil_schema::QuantumJob;

/// `../shared` beside the checkout (VIGIL_SHARED overrides). Missing data
/// fails the test: it is part of every checkout's environment.
fn shared() -> PathBuf {
    let dir = std::env::var_os("VIGIL_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    assert!(
        dir.is_dir(),
        "shared data not found at {} (set VIGIL_SHARED)",
        dir.display()
    );
    dir
}

fn submit(provider: Provider, file: &str) -> QuantumJob {
    let body = std::fs::read(shared().join("quantum/requests").join(file)).unwrap();
    let mut job = QuantumJob::default();
    provider.parse_submit(&body, &mut job).unwrap();
    job
}

#[test]
fn ibm_runtime_estimator_job() {
    let job = submit(Provider::IbmRuntime, "ibm-runtime-estimator-job.json");
    assert_eq!(job.program.as_deref(), Some("estimator"));
    assert_eq!(job.backend.as_deref(), Some("ibm_fez"));
    assert_eq!(job.session_id.as_deref(), Some("d1example0session"));
    assert_eq!(job.circuits, Some(1));
    assert_eq!(job.qubits, Some(5));
    assert_eq!(job.instructions, Some(39));
    assert_eq!(job.bindings, Some(64));
    assert_eq!(job.parameters, Some(4));
    assert_eq!(job.shots, Some(1000));
    assert_eq!(job.executions, Some(64 * 1000));
    assert_eq!(
        (job.tags, job.tags_bytes),
        (Some(1), Some("agent:demo".len() as u64))
    );
    assert_eq!(job.circuit_hashes.len(), 1);
    assert_eq!(job.circuit_hashes[0].len(), 64);
    assert_eq!(Provider::IbmRuntime.device_type("ibm_fez"), "qpu");
}

#[test]
fn braket_single_program() {
    let job = submit(Provider::Braket, "braket-task-single-program.json");
    let arn = "arn:aws:braket:::device/quantum-simulator/amazon/sv1";
    assert_eq!(job.backend.as_deref(), Some(arn));
    assert_eq!(Provider::Braket.device_type(arn), "simulator");
    assert_eq!(job.program.as_deref(), Some("openqasm"));
    assert_eq!(job.shots, Some(100));
    assert_eq!(job.circuits, Some(1));
    assert_eq!(job.qubits, Some(2));
    // 4 gates and 2 measurements
    assert_eq!(job.instructions, Some(6));
    assert_eq!(job.two_qubit_gates, Some(1));
    assert_eq!(job.parameters, Some(2));
    assert_eq!(job.bindings, Some(1));
    assert_eq!(job.executions, Some(100));
    assert_eq!(job.tags, Some(1));
    assert_eq!(
        job.output_location.as_deref(),
        Some("s3://amazon-braket-us-east-1-123456789012/tasks")
    );
}

#[test]
fn braket_program_set_sweep() {
    let job = submit(Provider::Braket, "braket-task-program-set-sweep.json");
    assert_eq!(job.program.as_deref(), Some("program_set"));
    assert_eq!(job.circuits, Some(1));
    assert_eq!(job.qubits, Some(2));
    assert_eq!(job.parameters, Some(2));
    // alpha and beta, 3 values each, zipped
    assert_eq!(job.bindings, Some(3));
    assert_eq!(job.shots, Some(300));
    assert_eq!(job.executions, Some(300));
}

/// What a transpiled QASMBench file implies by itself: one operation per
/// statement line (they are written one gate per line, on explicit qubits),
/// two-qubit gates where a gate line names two qubits.
fn implied_by_lines(src: &str) -> (u64, u64) {
    let (mut ops, mut two) = (0, 0);
    for line in src.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        let first = line
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .next()
            .unwrap_or("");
        if line.is_empty()
            || ["OPENQASM", "include", "qreg", "creg", "gate", "opaque"].contains(&first)
        {
            continue;
        }
        assert_eq!(
            line.matches(';').count(),
            1,
            "one statement per line: {line}"
        );
        ops += 1;
        // operands follow the gate name and its (parameters)
        let stmt = line
            .strip_prefix("if")
            .map_or(line, |rest| rest.split_once(')').map_or(rest, |r| r.1))
            .trim();
        let args = stmt
            .split_once(')')
            .filter(|_| {
                stmt.split_whitespace()
                    .next()
                    .is_some_and(|w| w.contains('('))
            })
            .map_or_else(
                || stmt.split_once(char::is_whitespace).map_or("", |a| a.1),
                |a| a.1,
            );
        if first != "measure" && first != "barrier" && args.split(',').count() == 2 {
            two += 1;
        }
    }
    (ops, two)
}

#[test]
fn qasmbench_counts_match_the_files() {
    let root = shared().join("qasm/qasmbench");
    let mut files = 0;
    for size in ["small", "medium"] {
        for dir in std::fs::read_dir(root.join(size)).unwrap() {
            let dir = dir.unwrap().path();
            let name = dir.file_name().unwrap().to_string_lossy().to_string();
            // `adder_n10`: the circuit's width is in its name
            let width: u32 = name.rsplit_once("_n").unwrap().1.parse().unwrap();
            for file in std::fs::read_dir(&dir).unwrap() {
                let path = file.unwrap().path();
                if path.extension().is_none_or(|e| e != "qasm") {
                    continue;
                }
                files += 1;
                let src = std::fs::read_to_string(&path).unwrap();
                let stats =
                    qasm::analyze(&src).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(stats.version, 2, "{}", path.display());
                assert_eq!(stats.qubits, width, "{}: qubits", path.display());
                assert!(
                    stats.instructions > 0 && stats.depth > 0,
                    "{}",
                    path.display()
                );
                assert!(stats.depth <= stats.instructions, "{}", path.display());
                if path.to_string_lossy().ends_with("_transpiled.qasm") {
                    let (ops, two) = implied_by_lines(&src);
                    assert_eq!(stats.instructions, ops, "{}: operations", path.display());
                    assert_eq!(
                        stats.two_qubit_gates,
                        two,
                        "{}: two-qubit gates",
                        path.display()
                    );
                }
            }
        }
    }
    assert_eq!(files, 127, "QASMBench circuits");
}

#[test]
fn truncated_and_mangled_circuits_never_panic() {
    let root = shared().join("qasm/qasmbench/small");
    for dir in std::fs::read_dir(root).unwrap().take(12) {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let src = std::fs::read(file.unwrap().path()).unwrap();
            // about 16 cuts per file: the scan is linear, the loop need not be quadratic
            for cut in (0..src.len()).step_by(src.len() / 16 + 1) {
                let s = String::from_utf8_lossy(&src[..cut]);
                let _ = qasm::analyze(&s);
                let mangled: String = s.chars().rev().collect();
                let _ = qasm::analyze(&mangled);
            }
        }
    }
}

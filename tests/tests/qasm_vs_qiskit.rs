//! The gateway's OpenQASM scanner against Qiskit itself: for every
//! QASMBench circuit Qiskit can load, width, operations, depth and two-qubit
//! gates must be exactly what Qiskit says.

use std::process::Command;

use vigil_e2e::quantum::{python, script, shared};
use vigil_quantum::qasm;

#[test]
fn qasmbench_counts_equal_qiskits() {
    let mut files: Vec<String> = Vec::new();
    for size in ["small", "medium"] {
        for dir in std::fs::read_dir(shared().join("qasm/qasmbench").join(size)).unwrap() {
            for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                if p.extension().is_some_and(|e| e == "qasm") {
                    files.push(p.to_string_lossy().into_owned());
                }
            }
        }
    }
    assert_eq!(files.len(), 127);
    let out = Command::new(python())
        .arg(script("qiskit_counts.py"))
        .args(&files)
        .output()
        .expect("run qiskit_counts.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mut compared, mut qiskit_failed) = (0, Vec::new());
    for path in &files {
        let want = &reference[path.as_str()];
        let Some(want) = want.as_array() else {
            // Qiskit refuses a few QASMBench files (gate bodies naming a global register)
            qiskit_failed.push(path.clone());
            continue;
        };
        let want: Vec<u64> = want.iter().map(|v| v.as_u64().unwrap()).collect();
        let s = qasm::analyze(&std::fs::read_to_string(path).unwrap()).unwrap();
        let got = [
            u64::from(s.qubits),
            s.instructions,
            s.depth,
            s.two_qubit_gates,
        ];
        assert_eq!(
            got[..],
            want[..],
            "{path}: [qubits, instructions, depth, two-qubit]"
        );
        compared += 1;
    }
    assert!(
        compared >= 119,
        "only {compared} compared; Qiskit failed on {qiskit_failed:?}"
    );
}

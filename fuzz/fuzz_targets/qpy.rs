//! Qiskit QPY file and circuit headers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vigil_quantum::qpy::parse(data);
});

//! OpenQASM 2/3 statistics on any UTF-8 text, within the default limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        let _ = vigil_quantum::qasm::analyze(src);
    }
});

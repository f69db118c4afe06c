//! NumPy `.npy` headers, and the sweep sizes derived from their shape.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = vigil_quantum::npy::parse_header(data) {
        let _ = (h.bindings(), h.parameters());
    }
});

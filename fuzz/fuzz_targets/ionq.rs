//! The ionq submission parser on any body, and its response readers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_quantum::Provider;
use vigil_schema::QuantumJob;

fuzz_target!(|data: &[u8]| {
    let p = Provider::Ionq;
    let mut job = QuantumJob::default();
    let _ = p.parse_submit(data, &mut job);
    let _ = p.submitted_job_id(data);
    p.status(data, &mut job);
});

//! The generic provider with every field configured, as a gateway route
//! would: the pointers below are what the seeds (fuzz/seeds/generic) use.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_quantum::providers::GenericFields;
use vigil_quantum::Provider;
use vigil_schema::QuantumJob;

fuzz_target!(|data: &[u8]| {
    let p = Provider::Generic(Box::new(GenericFields {
        backend: Some("/device/name".into()),
        shots: Some("/settings/shots".into()),
        circuit: Some("/program".into()),
        qubits: Some("/qubits".into()),
        session_id: Some("/session".into()),
        tags: Some("/labels".into()),
        output_location: Some("/output".into()),
        job_id: "/run/id".into(),
        status: Some("/run/state".into()),
        ..GenericFields::default()
    }));
    let mut job = QuantumJob::default();
    let _ = p.parse_submit(data, &mut job);
    let _ = p.submitted_job_id(data);
    p.status(data, &mut job);
});

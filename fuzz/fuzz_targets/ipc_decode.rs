//! Arrow IPC batches as they arrive from the spool or Kafka: whole, and
//! with a projection (as the detector reads them).
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // decode_projected turns arrow's panics on damaged input into errors
    // (catch_unwind); libFuzzer's panic hook would abort before that, so
    // the default hook is put back: a panic that escapes still aborts
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let _ = std::panic::take_hook();
    });
    let _ = vigil_schema::ipc::decode(data);
    let _ = vigil_schema::ipc::decode_projected(data, |_| Some(vec![0, 2, 5]));
});

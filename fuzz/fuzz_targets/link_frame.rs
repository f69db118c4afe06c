//! The gateway–collector link's frames (`vigil_schema::link`): the length
//! header and both directions' messages, as a hostile peer would send them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_schema::link::{decode, frame_len, ToCollector, ToGateway};

fuzz_target!(|data: &[u8]| {
    if let Some(header) = data.get(..4) {
        let _ = frame_len(header.try_into().unwrap());
    }
    let _ = decode::<ToCollector>(data);
    let _ = decode::<ToGateway>(data);
});

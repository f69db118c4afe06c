//! A detection rule's YAML as the detector loads it (needs `--features rules`:
//! the detector crate builds DataFusion and librdkafka).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(rule) =
            vigil_detector::rules::model::parse(text, std::path::Path::new("fuzz.yaml"))
        {
            let _ = rule.reads();
        }
    }
});

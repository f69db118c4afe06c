//! `vigil-collector`'s TOML configuration: parsing and (pure) validation,
//! regexes of the redaction rules included (needs `--features collector`:
//! the collector crate builds aya and librdkafka).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_collector::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = Config::parse(text) {
            let _ = config.validate();
        }
    }
});

//! `vigil-gateway`'s TOML configuration: parsing and (pure) validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_gateway::GatewayConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = GatewayConfig::parse(text) {
            let _ = config.validate();
        }
    }
});

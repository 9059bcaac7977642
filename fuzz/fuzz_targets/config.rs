//! Any text as a gateway configuration file: accepted or refused with an
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulegate::config::GatewayConfig;
use std::path::Path;

fuzz_target!(|text: &str| {
    if let Ok(config) = GatewayConfig::parse(text, Path::new("fuzz.toml"), "/nonexistent".into()) {
        let _ = config.outbox_settings();
    }
});

//! Any bytes as a rule module, as uploaded through the admin API: a `.wasm`
//! component or a precompiled artifact, told apart by their first bytes.
//! Refused with an error or loaded, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rulegate::engine::{EngineOptions, RuleEngine};
use std::path::Path;
use std::sync::OnceLock;

fn engine() -> &'static RuleEngine {
    static ENGINE: OnceLock<RuleEngine> = OnceLock::new();
    ENGINE.get_or_init(|| RuleEngine::new(EngineOptions::default()).expect("an engine"))
}

fuzz_target!(|bytes: &[u8]| {
    let _ = engine().load_bytes(Path::new("fuzz.wasm"), bytes);
});

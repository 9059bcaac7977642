//! The wasmtime settings of every rule engine, in one function: the gateway's
//! engine and the cross-compiling engine of `rule compile` both start here, so an
//! artifact precompiled for a gateway matches the code that gateway would make.
//! Used by `RuleEngine::new` and `RuleEngine::precompile`.

use super::{EngineOptions, pool};
use wasmtime::Config;

/// The wasmtime configuration for an engine with `options`, targeting the host.
/// A caller that precompiles for another machine adds only `Config::target`.
pub(super) fn wasmtime_config(options: &EngineOptions) -> Config {
    let mut config = Config::new();
    // Epoch interruption bounds a rule's time at a lower cost per call than fuel.
    // It changes the generated code, so artifacts must be compiled with it too.
    config.epoch_interruption(true);
    pool::configure(&mut config, options);
    config
}

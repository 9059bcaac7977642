//! The rule engine of a runtime-only build (without the `compiler` feature):
//! there is no Cranelift, so a `.wasm` rule is refused with an error that says
//! how to precompile it. `compiler.rs` takes this place in a full build.

use super::EngineOptions;
use super::artifact;
use super::error::LoadError;
use std::path::Path;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Stands in for the compiler; the artifact cache goes with it, since a
/// precompiled artifact needs no cache.
pub(super) struct Compiler;

impl Compiler {
    pub(super) fn new(_options: &EngineOptions, _engine: &Engine) -> Self {
        Compiler
    }

    /// Refuses the `.wasm` in `origin`: only precompiled artifacts load here.
    pub(super) fn compile(
        &self,
        _engine: &Engine,
        origin: &Path,
        _bytes: &[u8],
        _hash: &blake3::Hash,
    ) -> Result<Component, LoadError> {
        Err(LoadError::NeedsCompiler {
            path: origin.to_owned(),
            host: artifact::host_architecture().to_owned(),
        })
    }
}

//! Why a rule module could not be loaded, and why one call of a rule failed.

use std::path::PathBuf;
use std::time::Duration;

/// A rule module that cannot be used. Each variant names the module and says
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading rule module {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a WebAssembly file (it does not start with `\\0asm`)")]
    NotWasm { path: PathBuf },
    #[error(
        "{path} is a core WebAssembly module, not a component: build the rule with \
         rulegate-sdk for the wasm32-wasip2 target"
    )]
    CoreModule { path: PathBuf },
    #[error("{path} is not a valid WebAssembly component (truncated or corrupt?): {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path} does not implement the rulegate:rule@0.1.0 world: {reason}")]
    WrongWorld { path: PathBuf, reason: String },
    #[error(
        "{path} is a WebAssembly module, but this rulegate was built without the compiler \
         (runtime only): precompile it with `rulegate rule compile --target {host} {path}` \
         on a full build and load the .cwasm it writes"
    )]
    NeedsCompiler { path: PathBuf, host: String },
    #[error(
        "{path} is a damaged precompiled artifact ({problem}): compile it again with `rulegate rule compile`"
    )]
    ArtifactDamaged { path: PathBuf, problem: String },
    #[error(
        "{path} is a precompiled core module, not a rule component: precompile the rule's \
         component .wasm with `rulegate rule compile`"
    )]
    ArtifactNotComponent { path: PathBuf },
    #[error(
        "{path} was precompiled for {built_for} but this gateway runs on {host}: recompile it \
         with `rulegate rule compile --target {host}`"
    )]
    ArtifactTarget {
        path: PathBuf,
        built_for: String,
        host: String,
    },
    #[error(
        "{path} was precompiled by another version of rulegate or wasmtime ({reason}): recompile \
         it with `rulegate rule compile` of this rulegate, version {}",
        env!("CARGO_PKG_VERSION")
    )]
    ArtifactVersion { path: PathBuf, reason: String },
    #[error(
        "{path} was precompiled with engine settings this gateway does not use ({reason}): \
         recompile it with `rulegate rule compile` of this rulegate"
    )]
    ArtifactSettings { path: PathBuf, reason: String },
    #[error("rule `{rule}` ({path}) failed to start: {reason}")]
    Init {
        rule: String,
        path: PathBuf,
        reason: String,
    },
}

/// Why one `on-message` call failed. The instance that failed has already been
/// discarded; the next message gets a fresh one.
#[derive(Debug, thiserror::Error)]
#[error("rule `{rule}` on topic `{topic}`: {kind}")]
pub struct RunError {
    pub rule: String,
    pub topic: String,
    pub kind: RunErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum RunErrorKind {
    #[error("exceeded its time limit of {0:?}")]
    TimeLimit(Duration),
    #[error("exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("produced {size} bytes of output, over its limit of {limit} bytes")]
    OutputTooLarge { size: usize, limit: usize },
    #[error("trapped: {0}")]
    Trap(String),
    #[error("rejected the message: {0}")]
    InvalidMessage(String),
    #[error("reported a configuration error: {0}")]
    InvalidConfig(String),
    #[error("failed: {0}")]
    Failed(String),
    #[error("could not be restarted: {0}")]
    Restart(String),
}

//! Cranelift's part of the rule engine (the `compiler` feature): compiles `.wasm`
//! rules for the engine, through the artifact cache, and precompiles them for
//! another machine (`rule compile`). A runtime-only build uses
//! `without_compiler.rs` in its place and loads only precompiled artifacts.

use super::artifact_cache::ArtifactCache;
use super::error::LoadError;
use super::{EngineOptions, RuleEngine, artifact, settings};
use std::path::Path;
use std::str::FromStr;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::error::Context;

/// Compiles rule components for one engine, keeping the results in the artifact
/// cache when the options name one.
pub(super) struct Compiler {
    cache: Option<ArtifactCache>,
}

impl Compiler {
    pub(super) fn new(options: &EngineOptions, engine: &Engine) -> Self {
        Compiler {
            cache: options
                .cache_dir
                .clone()
                .map(|dir| ArtifactCache::new(dir, engine)),
        }
    }

    /// The component in `bytes` (a `.wasm`), from the cache when it holds a
    /// sound entry for these exact bytes, else compiled now.
    pub(super) fn compile(
        &self,
        engine: &Engine,
        origin: &Path,
        bytes: &[u8],
        hash: &blake3::Hash,
    ) -> Result<Component, LoadError> {
        let invalid = |error: wasmtime::Error| LoadError::Invalid {
            path: origin.to_owned(),
            reason: format!("{error:#}"),
        };
        let Some(cache) = &self.cache else {
            return Component::new(engine, bytes).map_err(invalid);
        };
        if let Some(component) = cache.load(engine, hash) {
            return Ok(component);
        }
        let sealed = artifact::seal(engine.precompile_component(bytes).map_err(invalid)?);
        cache.store(hash, &sealed);
        artifact::open(engine, origin, &sealed)
    }
}

/// The machine `rule compile` makes code for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileTarget {
    triple: String,
}

impl CompileTarget {
    /// The machine this rulegate runs on.
    pub fn host() -> Self {
        CompileTarget::linux(artifact::host_architecture())
    }

    fn linux(architecture: &str) -> Self {
        CompileTarget {
            triple: format!("{architecture}-unknown-linux-gnu"),
        }
    }

    /// The target triple, e.g. `aarch64-unknown-linux-gnu`.
    pub fn triple(&self) -> &str {
        &self.triple
    }
}

impl FromStr for CompileTarget {
    type Err = String;

    /// `aarch64` (Raspberry Pi OS 64-bit), `x86_64`, or a full target triple.
    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "aarch64" | "arm64" => Ok(CompileTarget::linux("aarch64")),
            "x86_64" | "amd64" => Ok(CompileTarget::linux("x86_64")),
            triple if triple.contains('-') => Ok(CompileTarget {
                triple: triple.to_owned(),
            }),
            _ => Err(format!(
                "`{name}` is not a target: use aarch64, x86_64 or a full target triple \
                 such as aarch64-unknown-linux-gnu"
            )),
        }
    }
}

impl RuleEngine {
    /// Compiles the rule component in `bytes` (a `.wasm`; `origin` names it) to
    /// native code for `target` and returns the sealed artifact, for a gateway
    /// of this version on that machine to load without a compiler.
    ///
    /// The component is first loaded here, so that a module that is not a rule
    /// (the wrong world, a core module) is refused before any artifact exists.
    /// The code is generated with this engine's settings and only the target
    /// changed, without the host's optional CPU features, so the artifact runs on
    /// any machine of that architecture.
    pub fn precompile(
        &self,
        origin: &Path,
        bytes: &[u8],
        target: &CompileTarget,
    ) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(
            !artifact::is_precompiled(bytes),
            "{} is already precompiled: `rule compile` takes the rule's .wasm",
            origin.display()
        );
        self.load_bytes(origin, bytes)?;
        let mut config = settings::wasmtime_config(&self.options);
        config
            .target(target.triple())
            .with_context(|| format!("target `{}`", target.triple()))?;
        let cross_engine = Engine::new(&config).with_context(|| {
            format!(
                "setting up a compiler for `{}` (a build on x86_64 compiles for x86_64 \
                 and aarch64, one on aarch64 for aarch64)",
                target.triple()
            )
        })?;
        let artifact = cross_engine
            .precompile_component(bytes)
            .with_context(|| format!("compiling {} for {}", origin.display(), target.triple()))?;
        Ok(artifact::seal(artifact))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_expand_to_linux_triples_and_triples_pass_through() {
        let parse = |name: &str| name.parse::<CompileTarget>().map(|t| t.triple().to_owned());
        assert_eq!(parse("aarch64").unwrap(), "aarch64-unknown-linux-gnu");
        assert_eq!(parse("x86_64").unwrap(), "x86_64-unknown-linux-gnu");
        assert_eq!(
            parse("aarch64-unknown-linux-musl").unwrap(),
            "aarch64-unknown-linux-musl"
        );
        assert!(
            parse("armv7")
                .unwrap_err()
                .contains("`armv7` is not a target")
        );
        assert_eq!(
            CompileTarget::host().triple(),
            format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
        );
    }
}

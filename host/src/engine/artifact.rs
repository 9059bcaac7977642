//! Precompiled rule artifacts (`.cwasm`): the native-code ELF object that wasmtime
//! writes, followed by a BLAKE3 trailer. `rule compile` and the artifact cache
//! seal them; `RuleEngine::load_bytes` and the cache open them here, which turns
//! each way wasmtime can refuse one into an error that says what to do.
//!
//! An artifact is machine code that runs as it is: wasmtime cannot check it the
//! way it validates a `.wasm`, which is why deserializing is `unsafe`. The trailer
//! catches truncation and corruption, not malice: load only artifacts from a
//! trusted source (your own `rule compile`, a package you verify).

use super::error::LoadError;
use std::path::Path;
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

/// How every ELF object starts; a `.wasm` starts with `\0asm` instead.
const ELF_MAGIC: &[u8] = b"\x7fELF";
/// Ends every artifact rulegate writes, after the digest of what precedes it.
const TRAILER_MAGIC: &[u8; 8] = b"rgcwasm1";
const DIGEST_LEN: usize = blake3::OUT_LEN;
const TRAILER_LEN: usize = DIGEST_LEN + TRAILER_MAGIC.len();

/// Appends the trailer to an artifact from `Engine::precompile_component`.
#[cfg(feature = "compiler")]
pub(crate) fn seal(mut artifact: Vec<u8>) -> Vec<u8> {
    let digest = blake3::hash(&artifact);
    artifact.extend_from_slice(digest.as_bytes());
    artifact.extend_from_slice(TRAILER_MAGIC);
    artifact
}

/// Whether `bytes` are a precompiled artifact rather than a Wasm binary. Checked
/// by the ELF magic alone, so that a truncated artifact, which wasmtime's
/// `Engine::detect_precompiled` no longer recognises, still gets an artifact's error.
pub(crate) fn is_precompiled(bytes: &[u8]) -> bool {
    bytes.starts_with(ELF_MAGIC)
}

/// The architecture this process runs on, as `rule compile --target` names it.
pub(crate) fn host_architecture() -> &'static str {
    std::env::consts::ARCH
}

/// Opens a sealed artifact as a component of `engine`, or says why it cannot be
/// used; `origin` names it in errors.
pub(crate) fn open(engine: &Engine, origin: &Path, sealed: &[u8]) -> Result<Component, LoadError> {
    let damaged = |problem: String| LoadError::ArtifactDamaged {
        path: origin.to_owned(),
        problem,
    };
    let artifact = unseal(sealed).map_err(|problem| damaged(problem.into()))?;
    match Engine::detect_precompiled(artifact) {
        Some(Precompiled::Component) => {}
        Some(Precompiled::Module) => {
            return Err(LoadError::ArtifactNotComponent {
                path: origin.to_owned(),
            });
        }
        None => {
            return Err(damaged(
                "wasmtime does not recognise it as an artifact".into(),
            ));
        }
    }
    if let Some(built_for) = architecture(artifact)
        && built_for != host_architecture()
    {
        return Err(LoadError::ArtifactTarget {
            path: origin.to_owned(),
            built_for: built_for.to_owned(),
            host: host_architecture().to_owned(),
        });
    }
    // SAFETY: the trailer shows these are the bytes `rule compile` or the artifact
    // cache wrote from `Engine::precompile_component`; that they come from a
    // trusted source is the operator's promise (see the module documentation).
    // wasmtime itself refuses an artifact of another version or other settings.
    unsafe { Component::deserialize(engine, artifact) }.map_err(|error| refusal(origin, &error))
}

/// The artifact inside `sealed`, if the trailer is there and its digest matches.
fn unseal(sealed: &[u8]) -> Result<&[u8], &'static str> {
    let Some((artifact, trailer)) = sealed
        .len()
        .checked_sub(TRAILER_LEN)
        .map(|end| sealed.split_at(end))
    else {
        return Err("it is too short to be an artifact: truncated?");
    };
    let (digest, magic) = trailer.split_at(DIGEST_LEN);
    if magic != TRAILER_MAGIC {
        return Err(
            "it does not end with rulegate's digest: truncated, or not written by `rulegate rule compile`",
        );
    }
    if blake3::hash(artifact).as_bytes() != digest {
        return Err("its contents do not match the digest written with them: corrupted");
    }
    Ok(artifact)
}

/// The architecture an artifact's code is for, from its ELF header's `e_machine`
/// (little-endian on both targets rulegate builds for). `None` for another
/// machine, which wasmtime's own check then reports.
fn architecture(artifact: &[u8]) -> Option<&'static str> {
    const EM_X86_64: u16 = 62;
    const EM_AARCH64: u16 = 183;
    let machine = artifact.get(18..20)?;
    match u16::from_le_bytes([machine[0], machine[1]]) {
        EM_X86_64 => Some("x86_64"),
        EM_AARCH64 => Some("aarch64"),
        _ => None,
    }
}

/// Names why wasmtime refused an artifact. wasmtime's error is one string, so the
/// cases are told apart by its wording (pinned with wasmtime's exact version in
/// Cargo.toml, and by the tests below).
fn refusal(origin: &Path, error: &wasmtime::Error) -> LoadError {
    let path = origin.to_owned();
    let reason = format!("{error:#}");
    if reason.contains("compiled with incompatible version") {
        LoadError::ArtifactVersion { path, reason }
    } else if reason.contains("Module was compiled")
        || reason.contains("incompatible with native host")
    {
        LoadError::ArtifactSettings { path, reason }
    } else {
        LoadError::ArtifactDamaged {
            path,
            problem: reason,
        }
    }
}

#[cfg(all(test, feature = "compiler"))]
mod tests {
    use super::*;
    use wasmtime::{Config, ModuleVersionStrategy};

    /// The smallest component there is: no imports, no exports.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn sealed_by(config: &Config) -> Vec<u8> {
        let engine = Engine::new(config).unwrap();
        seal(engine.precompile_component(EMPTY_COMPONENT).unwrap())
    }

    fn open_with_defaults(sealed: &[u8]) -> Result<Component, LoadError> {
        let engine = Engine::new(&config_with_epochs()).unwrap();
        open(&engine, Path::new("rule.cwasm"), sealed)
    }

    fn config_with_epochs() -> Config {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config
    }

    /// Why the gateway's kind of engine refuses what an engine of `config` sealed.
    fn refusal_of(config: &Config) -> LoadError {
        let sealed = sealed_by(config);
        open_with_defaults(&sealed).expect_err("the artifact must be refused")
    }

    #[test]
    fn opens_what_an_engine_of_the_same_settings_sealed() {
        open_with_defaults(&sealed_by(&config_with_epochs())).unwrap();
    }

    #[test]
    fn refuses_an_artifact_of_another_wasmtime_version() {
        let mut config = config_with_epochs();
        config
            .module_version(ModuleVersionStrategy::Custom("0.0.1".into()))
            .unwrap();
        let error = refusal_of(&config);
        assert!(
            matches!(error, LoadError::ArtifactVersion { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("'0.0.1'"), "{error}");
    }

    #[test]
    fn refuses_an_artifact_compiled_without_epoch_interruption() {
        let error = refusal_of(&Config::new());
        assert!(
            matches!(error, LoadError::ArtifactSettings { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("epoch interruption"), "{error}");
    }

    #[test]
    fn refuses_an_artifact_for_another_architecture() {
        let other = if host_architecture() == "aarch64" {
            "x86_64"
        } else {
            "aarch64"
        };
        let mut config = config_with_epochs();
        config
            .target(&format!("{other}-unknown-linux-gnu"))
            .unwrap();
        let error = refusal_of(&config);
        assert!(matches!(error, LoadError::ArtifactTarget { .. }), "{error}");
    }

    #[test]
    fn refuses_truncated_corrupted_and_unsealed_artifacts() {
        let sealed = sealed_by(&config_with_epochs());
        let mut corrupted = sealed.clone();
        corrupted[sealed.len() / 2] ^= 0x40;
        let unsealed = &sealed[..sealed.len() - TRAILER_LEN];
        for (case, bytes) in [
            ("truncated", &sealed[..sealed.len() / 2]),
            ("corrupted", &corrupted[..]),
            ("unsealed", unsealed),
            ("bare magic", ELF_MAGIC),
        ] {
            let error = open_with_defaults(bytes).expect_err(case);
            assert!(
                matches!(error, LoadError::ArtifactDamaged { .. }),
                "{case}: {error}"
            );
        }
    }
}

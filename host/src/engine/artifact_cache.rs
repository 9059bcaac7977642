//! On-disk cache of precompiled rule modules, so a restart skips Cranelift.
//!
//! An entry is keyed by the module's BLAKE3 hash, the wasmtime version and the
//! engine's compilation settings, and carries a BLAKE3 digest of its own bytes.
//! An entry whose digest does not match, or that wasmtime refuses, is deleted and
//! rebuilt: precompiled code is executable, so it is never trusted blindly.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

const DIGEST_LEN: usize = blake3::OUT_LEN;

pub(crate) struct ArtifactCache {
    dir: PathBuf,
    /// Identifies the compiler: wasmtime's compatibility hash covers its exact
    /// version and every setting that changes the generated code.
    engine_fingerprint: u64,
}

impl ArtifactCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ArtifactCache {
            dir,
            engine_fingerprint: hasher.finish(),
        }
    }

    /// Where the artifact for a module with this hash lives.
    pub(crate) fn entry_path(&self, module_hash: &blake3::Hash) -> PathBuf {
        self.dir.join(format!(
            "{}-{:016x}.cwasm",
            module_hash.to_hex(),
            self.engine_fingerprint
        ))
    }

    /// The cached component, if a sound entry exists. Unsound entries are removed.
    pub(crate) fn load(&self, engine: &Engine, module_hash: &blake3::Hash) -> Option<Component> {
        let path = self.entry_path(module_hash);
        let bytes = fs::read(&path).ok()?;
        match verified_artifact(&bytes).and_then(|artifact| {
            // SAFETY: the digest shows these are the bytes this cache wrote from
            // `Engine::precompile_component`, and wasmtime itself checks that they
            // match its version and configuration.
            unsafe { Component::deserialize(engine, artifact) }
                .map_err(|error| format!("wasmtime refused it: {error}"))
        }) {
            Ok(component) => Some(component),
            Err(reason) => {
                tracing::warn!(path = %path.display(), "discarding cached rule artifact: {reason}");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a precompiled artifact; failure to write only costs a recompile
    /// next time, so it is logged, not returned.
    pub(crate) fn store(&self, module_hash: &blake3::Hash, artifact: &[u8]) {
        let path = self.entry_path(module_hash);
        if let Err(error) = write_atomically(&path, artifact) {
            tracing::warn!(path = %path.display(), "could not cache rule artifact: {error}");
        }
    }
}

/// The artifact inside an entry, if its digest matches.
fn verified_artifact(entry: &[u8]) -> Result<&[u8], String> {
    if entry.len() < DIGEST_LEN {
        return Err("entry is truncated".into());
    }
    let (digest, artifact) = entry.split_at(DIGEST_LEN);
    if blake3::hash(artifact).as_bytes() != digest {
        return Err("digest does not match its contents".into());
    }
    Ok(artifact)
}

/// Writes digest + artifact to a temporary file, then renames it into place, so a
/// crash mid-write never leaves a half entry under the real name.
fn write_atomically(path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(blake3::hash(artifact).as_bytes())?;
    file.write_all(artifact)?;
    file.persist(path)?;
    Ok(())
}

//! On-disk cache of precompiled rule modules, so a restart skips Cranelift.
//! Used by the compiler (`compiler.rs`) only.
//!
//! An entry is keyed by the module's BLAKE3 hash, the wasmtime version and the
//! engine's compilation settings, and is a sealed artifact (`artifact.rs`) that
//! carries a BLAKE3 digest of its own bytes. An entry whose digest does not match,
//! or that wasmtime refuses, is deleted and rebuilt: precompiled code is
//! executable, so it is never trusted blindly.

use super::artifact;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

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
        let sealed = fs::read(&path).ok()?;
        match artifact::open(engine, &path, &sealed) {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!("discarding a cached rule artifact and compiling afresh: {error}");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a sealed artifact; failure to write only costs a recompile next
    /// time, so it is logged, not returned.
    pub(crate) fn store(&self, module_hash: &blake3::Hash, sealed: &[u8]) {
        let path = self.entry_path(module_hash);
        if let Err(error) = write_atomically(&path, sealed) {
            tracing::warn!(path = %path.display(), "could not cache rule artifact: {error}");
        }
    }
}

/// Writes the sealed artifact to a temporary file, then renames it into place, so
/// a crash mid-write never leaves a half entry under the real name.
fn write_atomically(path: &Path, sealed: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(sealed)?;
    file.persist(path)?;
    Ok(())
}

//! Modules uploaded through the admin API, kept in the state directory so an
//! uploaded version survives a restart. An uploaded module stands in for the
//! rule's configured one until it is removed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) struct ModuleStore {
    /// `<state dir>/modules`; `None` when there is no state directory.
    dir: Option<PathBuf>,
}

impl ModuleStore {
    /// The store under `state_dir`; none without one.
    pub(crate) fn new(state_dir: Option<&Path>) -> Self {
        let dir = state_dir.map(|dir| dir.join("modules"));
        ModuleStore { dir }
    }

    /// A store that holds nothing and keeps nothing.
    pub(crate) fn without_uploads() -> Self {
        ModuleStore { dir: None }
    }

    /// Where rule `rule`'s uploaded module lives (rule names are file-name safe).
    pub(crate) fn path_for(&self, rule: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("{rule}.wasm")))
    }

    /// The uploaded module of `rule`, if there is one.
    pub(crate) fn uploaded(&self, rule: &str) -> Option<PathBuf> {
        self.path_for(rule).filter(|path| path.is_file())
    }

    /// Keeps `bytes` as `rule`'s module: written beside it, synced, then renamed
    /// over it, so a crash leaves the old module or the new one, never half.
    pub(crate) fn save(&self, rule: &str, bytes: &[u8]) -> Result<PathBuf, String> {
        let path = self
            .path_for(rule)
            .ok_or("no state directory to keep uploads in: set `gateway.state_dir`")?;
        let failed = |step: &str, error: std::io::Error| {
            format!("keeping the upload: {step} {}: {error}", path.display())
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|error| failed("creating the directory of", error))?;
        let mut file = tempfile::NamedTempFile::new_in(dir)
            .map_err(|error| failed("creating a file beside", error))?;
        file.write_all(bytes)
            .and_then(|()| file.as_file().sync_all())
            .map_err(|error| failed("writing", error))?;
        file.persist(&path)
            .map_err(|error| failed("renaming into", error.error))?;
        Ok(path)
    }

    /// Forgets `rule`'s upload; true when there was one.
    pub(crate) fn remove(&self, rule: &str) -> Result<bool, String> {
        let Some(path) = self.uploaded(rule) else {
            return Ok(false);
        };
        fs::remove_file(&path)
            .map(|()| true)
            .map_err(|error| format!("removing {}: {error}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_module_replaces_the_previous_one_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::new(Some(dir.path()));
        assert_eq!(store.uploaded("alert"), None);
        let path = store.save("alert", b"first").unwrap();
        store.save("alert", b"second").unwrap();
        assert_eq!(store.uploaded("alert"), Some(path.clone()));
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let leftovers = fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file stays behind");
        assert!(store.remove("alert").unwrap());
        assert!(!store.remove("alert").unwrap());
        assert_eq!(store.uploaded("alert"), None);
    }
}

//! The file sink: each delivery's key becomes a relative path under the sink's
//! directory, written atomically (a temporary file beside it, then a rename),
//! so readers never see half a file. Keys that would leave the directory fail.

use super::destination::DeliveryError;
use super::{Delivery, Target};
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

pub(crate) struct FileSink {
    directory: Arc<Path>,
}

impl FileSink {
    /// Creates `directory` when missing.
    pub async fn open(directory: PathBuf) -> std::io::Result<Self> {
        tokio::fs::create_dir_all(&directory).await?;
        Ok(FileSink {
            directory: directory.into(),
        })
    }

    pub async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let Target::Object { key } = &delivery.target else {
            return Err(DeliveryError::permanent(
                "a file sink takes only object deliveries",
            ));
        };
        let relative = relative_path(key)?;
        let path = self.directory.join(relative);
        let payload = delivery.payload.clone();
        let directory = Arc::clone(&self.directory);
        // Plain blocking I/O on the blocking pool: tempfile gives a uniquely
        // named file that is removed if anything fails before the rename.
        tokio::task::spawn_blocking(move || write_atomically(&directory, &path, &payload))
            .await
            .map_err(|error| DeliveryError::transient(format!("file write task failed: {error}")))?
            .map_err(|cause| DeliveryError::transient(format!("writing key {key:?}: {cause}")))
    }
}

/// The key as a path relative to the sink's directory, or a permanent error
/// when the key is empty, absolute, climbs out with `..`, or names a directory.
fn relative_path(key: &str) -> Result<&Path, DeliveryError> {
    let reject = |why: &str| {
        Err(DeliveryError::permanent(format!(
            "object key {key:?} cannot be a file in the sink's directory: {why}"
        )))
    };
    if key.is_empty() {
        return reject("it is empty");
    }
    if key.ends_with('/') || key.ends_with(std::path::MAIN_SEPARATOR) {
        return reject("it ends with a separator and so names a directory");
    }
    if key.contains('\0') {
        return reject("it contains a NUL character");
    }
    let path = Path::new(key);
    let mut names = 0;
    for component in path.components() {
        match component {
            Component::Normal(_) => names += 1,
            Component::CurDir => {}
            Component::ParentDir => return reject("`..` would leave the directory"),
            Component::RootDir | Component::Prefix(_) => {
                return reject("it is an absolute path");
            }
        }
    }
    if names == 0 {
        return reject("it names the directory itself");
    }
    Ok(path)
}

/// Writes `payload` to `path` (inside `directory`) through a temporary file in
/// the same directory, flushed to disk before the rename makes it visible; the
/// rename is flushed too, as the delivery leaves the outbox once this returns.
fn write_atomically(directory: &Path, path: &Path, payload: &[u8]) -> Result<(), String> {
    let parent = path.parent().unwrap_or(directory);
    std::fs::create_dir_all(parent)
        .map_err(|error| format!("creating directory {}: {error}", parent.display()))?;
    let mut temporary = tempfile::NamedTempFile::new_in(parent)
        .map_err(|error| format!("creating a temporary file in {}: {error}", parent.display()))?;
    temporary
        .write_all(payload)
        .and_then(|()| temporary.as_file().sync_all())
        .map_err(|error| format!("writing {}: {error}", temporary.path().display()))?;
    temporary
        .persist(path)
        .map_err(|error| format!("renaming into {}: {}", path.display(), error.error))?;
    // Without this a power cut can undo the rename: the name lives in the
    // directory, which the file's own flush does not cover.
    std::fs::File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| format!("flushing directory {}: {error}", parent.display()))
}

//! Reloads the rules when the configuration file or a rule's module changes
//! on disk. It watches the files' directories, since editors and deploy tools
//! replace a file by renaming a new one over it, and waits for a quiet moment
//! first, so a file still being written is read once, whole.

use super::{RuleSet, Trigger};
use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long the watched files must stay still before the reload.
const QUIET: Duration = Duration::from_millis(250);

/// Watches while it lives.
pub struct FileWatcher {
    task: JoinHandle<()>,
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FileWatcher {
    /// Starts watching the files `rules` names ([`RuleSet::watched_files`]).
    pub async fn start(rules: Arc<RuleSet>) -> anyhow::Result<FileWatcher> {
        let (events, mut happened) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = events.send(event);
        })
        .context("starting the file watcher")?;
        let mut watched = Watched::default();
        watched.update(&mut watcher, rules.watched_files().await)?;
        let task = tokio::spawn(async move {
            while let Some(event) = happened.recv().await {
                if !watched.concerns(&event) {
                    continue;
                }
                loop {
                    match tokio::time::timeout(QUIET, happened.recv()).await {
                        Ok(Some(_)) => continue,
                        Ok(None) => return,
                        Err(_quiet) => break,
                    }
                }
                // The outcome is logged and recorded by the rule set.
                let _ = rules.reload(Trigger::FileChange).await;
                if let Err(error) = watched.update(&mut watcher, rules.watched_files().await) {
                    tracing::warn!("{error:#}");
                }
            }
        });
        Ok(FileWatcher { task })
    }
}

/// The files that matter and the directories watched for them, all absolute:
/// the watcher reports paths under the directory as it was given.
#[derive(Default)]
struct Watched {
    files: HashSet<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

impl Watched {
    fn update(
        &mut self,
        watcher: &mut notify::RecommendedWatcher,
        files: Vec<PathBuf>,
    ) -> anyhow::Result<()> {
        let files: HashSet<PathBuf> = files
            .into_iter()
            .filter_map(|file| std::path::absolute(file).ok())
            .collect();
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|file| file.parent().map(PathBuf::from))
            .collect();
        for gone in self.dirs.difference(&dirs) {
            let _ = watcher.unwatch(gone);
        }
        for dir in dirs.difference(&self.dirs) {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .with_context(|| format!("watching {} for rule changes", dir.display()))?;
        }
        self.files = files;
        self.dirs = dirs;
        Ok(())
    }

    fn concerns(&self, event: &notify::Result<notify::Event>) -> bool {
        match event {
            Ok(event) => {
                !event.kind.is_access() && event.paths.iter().any(|path| self.files.contains(path))
            }
            Err(error) => {
                tracing::warn!("file watcher: {error}");
                false
            }
        }
    }
}

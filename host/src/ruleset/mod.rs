//! The rule set of a running gateway: builds each rule's version from the
//! configuration and uploaded modules, works out what a change touches, and
//! swaps it into the pipeline. A change that does not compile, instantiate or
//! validate is refused as a whole, and the running versions keep serving.
//!
//! Changes come from [`watcher`] (the configuration file or a module changed),
//! SIGHUP (the binary), and the admin API (reload, upload); they are made one
//! at a time. Only `[[rules]]` can change while the gateway runs: the other
//! sections (broker, sinks, endpoints) take a restart.

mod uploads;
pub mod watcher;

use crate::config::GatewayConfig;
use crate::engine::{RuleEngine, unix_time_ms};
use crate::pipeline::{
    Pipeline, PipelineStopped, PreparedRule, RuleChange, RuleCounters, RuleVersion,
};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use uploads::ModuleStore;

/// What set a change off; it tags the log and the reload history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Start,
    FileChange,
    Signal,
    Api,
    Upload,
    UploadRemoved,
}

/// What an applied change did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangeSummary {
    /// Rules that started a new version (new, or changed).
    pub started: Vec<String>,
    /// Rules that stopped (no longer configured).
    pub removed: Vec<String>,
    /// Rules that kept running as they were.
    pub unchanged: usize,
}

/// One change, applied or refused.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeRecord {
    pub at_ms: u64,
    pub trigger: Trigger,
    /// What it did, when applied.
    pub applied: Option<ChangeSummary>,
    /// Why it was refused.
    pub error: Option<String>,
}

/// The changes so far, for the log and the admin API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChangeHistory {
    pub applied: u64,
    pub rejected: u64,
    pub last: Option<ChangeRecord>,
    /// Per rule, the latest refused change that concerned it; cleared when the
    /// rule starts a new version.
    pub rule_rejections: BTreeMap<String, ChangeRecord>,
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The change is broken (it names what and where); nothing changed.
    #[error("{reason}")]
    Rejected {
        /// The rule at fault, when the fault is one rule's.
        rule: Option<String>,
        reason: String,
    },
    #[error("no rule named `{0}` is configured")]
    UnknownRule(String),
    #[error(transparent)]
    Stopped(#[from] PipelineStopped),
}

impl ChangeError {
    fn rejected(reason: impl Into<String>) -> Self {
        ChangeError::Rejected {
            rule: None,
            reason: reason.into(),
        }
    }
}

/// The rules a gateway runs and the one way to change them. Shared by the
/// gateway, the file watcher, the signal handler and the admin API.
pub struct RuleSet {
    engine: Arc<RuleEngine>,
    pipeline: Pipeline,
    /// The intake's subscriptions, kept in step with the rules' `FROM`.
    subscriptions: watch::Sender<Vec<String>>,
    uploads: ModuleStore,
    /// Held for the whole of a change, so changes are made one at a time.
    applied: tokio::sync::Mutex<Applied>,
    history: Mutex<ChangeHistory>,
}

/// The configuration in force.
struct Applied {
    config: GatewayConfig,
    /// The file's sections other than `[[rules]]`, as at start; `Err` says why
    /// the file cannot be reloaded.
    fixed_sections: Result<toml::Table, String>,
}

/// How one change treats uploaded modules.
enum UploadOverride {
    /// As they are on disk.
    None,
    /// These bytes are being uploaded for this rule.
    New { rule: String, bytes: bytes::Bytes },
    /// This rule's upload is being removed: its configured module applies.
    Removed { rule: String },
}

impl RuleSet {
    /// Builds every rule of `config` and starts them in `pipeline`. Fails, with
    /// the key at fault, on the first rule that cannot run.
    pub async fn start(
        config: GatewayConfig,
        engine: Arc<RuleEngine>,
        pipeline: Pipeline,
    ) -> anyhow::Result<Arc<RuleSet>> {
        let fixed_sections = read_fixed_sections(&config.origin);
        let rules = Arc::new(RuleSet {
            engine,
            pipeline,
            subscriptions: watch::Sender::new(Vec::new()),
            uploads: ModuleStore::new(config.gateway.state_dir().as_deref()),
            applied: tokio::sync::Mutex::new(Applied {
                config: config.clone(),
                fixed_sections,
            }),
            history: Mutex::default(),
        });
        let applied = rules.applied.lock().await;
        rules
            .change_locked(applied, config, UploadOverride::None, Trigger::Start)
            .await?;
        Ok(rules)
    }

    /// Rereads the configuration file and applies what changed in `[[rules]]`
    /// and in the rules' module files.
    pub async fn reload(self: &Arc<Self>, trigger: Trigger) -> Result<ChangeSummary, ChangeError> {
        let applied = self.applied.lock().await;
        match applied.reread() {
            Ok(next) => {
                self.change_locked(applied, next, UploadOverride::None, trigger)
                    .await
            }
            Err(reason) => Err(self.refuse(trigger, ChangeError::rejected(reason))),
        }
    }

    /// Checks `bytes` as rule `rule`'s module, keeps them in the state
    /// directory and starts the new version; refused as a whole if it fails.
    pub async fn upload(
        self: &Arc<Self>,
        rule: &str,
        bytes: bytes::Bytes,
    ) -> Result<ChangeSummary, ChangeError> {
        let applied = self.applied.lock().await;
        let config = applied.config_with(rule)?;
        let upload = UploadOverride::New {
            rule: rule.to_owned(),
            bytes,
        };
        self.change_locked(applied, config, upload, Trigger::Upload)
            .await
    }

    /// Forgets rule `rule`'s uploaded module and goes back to its configured one.
    pub async fn remove_upload(self: &Arc<Self>, rule: &str) -> Result<ChangeSummary, ChangeError> {
        let applied = self.applied.lock().await;
        let config = applied.config_with(rule)?;
        if self.uploads.uploaded(rule).is_none() {
            return Err(ChangeError::rejected(format!(
                "rule `{rule}` has no uploaded module"
            )));
        }
        let upload = UploadOverride::Removed {
            rule: rule.to_owned(),
        };
        self.change_locked(applied, config, upload, Trigger::UploadRemoved)
            .await
    }

    /// The pipeline's counters and the running versions.
    pub fn stats(&self) -> &crate::pipeline::PipelineStats {
        self.pipeline.stats()
    }

    /// The changes so far.
    pub fn history(&self) -> ChangeHistory {
        self.lock_history().clone()
    }

    /// The subscriptions the rules need, updated as they change.
    pub fn subscriptions(&self) -> watch::Receiver<Vec<String>> {
        self.subscriptions.subscribe()
    }

    /// The files whose change should trigger a reload: the configuration and
    /// every configured module.
    pub async fn watched_files(&self) -> Vec<PathBuf> {
        let applied = self.applied.lock().await;
        let config = &applied.config;
        std::iter::once(config.origin.clone())
            .chain(
                config
                    .rules
                    .iter()
                    .filter_map(|rule| rule.module.as_deref())
                    .map(|module| config.resolve(module)),
            )
            .collect()
    }

    /// Builds what `next` changes, keeps an upload, swaps, and records it.
    async fn change_locked(
        self: &Arc<Self>,
        mut applied: tokio::sync::MutexGuard<'_, Applied>,
        next: GatewayConfig,
        upload: UploadOverride,
        trigger: Trigger,
    ) -> Result<ChangeSummary, ChangeError> {
        // Compiling keeps a core busy for a while; not on the runtime's threads.
        let this = self.clone();
        let planned = tokio::task::spawn_blocking(move || {
            let running = this.stats().running();
            let plan = plan(&this.engine, &this.uploads, &running, &next, &upload);
            (plan, next, upload)
        })
        .await;
        let (plan, next, upload) = match planned {
            Ok(planned) => planned,
            Err(panicked) => {
                let reason = format!("building the rules failed: {panicked}");
                return Err(self.refuse(trigger, ChangeError::rejected(reason)));
            }
        };
        let plan = match plan {
            Ok(plan) => plan,
            Err(error) => return Err(self.refuse(trigger, error)),
        };
        let kept = match &upload {
            UploadOverride::None => Ok(()),
            UploadOverride::New { rule, bytes } => self.uploads.save(rule, bytes).map(drop),
            UploadOverride::Removed { rule } => self.uploads.remove(rule).map(drop),
        };
        if let Err(reason) = kept {
            return Err(self.refuse(trigger, ChangeError::rejected(reason)));
        }
        let summary = plan.summary;
        if !summary.started.is_empty() || !summary.removed.is_empty() {
            self.pipeline.replace(plan.changes).await?;
        }
        let filters = next.broker.subscriptions(self.stats().topic_filters());
        self.subscriptions.send_if_modified(|current| {
            let changed = *current != filters;
            *current = filters;
            changed
        });
        applied.config = next;
        drop(applied);
        self.record_applied(trigger, &summary);
        Ok(summary)
    }

    /// Logs and records a refused change; returns its error.
    fn refuse(&self, trigger: Trigger, error: ChangeError) -> ChangeError {
        // At start the error goes back to the caller, which stops the gateway.
        if trigger != Trigger::Start {
            tracing::error!(
                ?trigger,
                "rule change refused; the running rules keep serving: {error}"
            );
        }
        let record = ChangeRecord {
            at_ms: unix_time_ms(),
            trigger,
            applied: None,
            error: Some(error.to_string()),
        };
        let mut history = self.lock_history();
        history.rejected += 1;
        if let ChangeError::Rejected {
            rule: Some(rule), ..
        } = &error
        {
            history.rule_rejections.insert(rule.clone(), record.clone());
        }
        history.last = Some(record);
        error
    }

    fn record_applied(&self, trigger: Trigger, summary: &ChangeSummary) {
        for report in self.stats().reports() {
            if summary.started.contains(&report.name) {
                tracing::info!(
                    rule = report.name,
                    version = report.version.number,
                    module = report.version.module_hash.as_deref().map(short_hash),
                    config = short_hash(&report.version.config_hash),
                    ?trigger,
                    "rule version serving"
                );
            }
        }
        for rule in &summary.removed {
            tracing::info!(rule, ?trigger, "rule removed");
        }
        let mut history = self.lock_history();
        history.applied += 1;
        for rule in summary.started.iter().chain(&summary.removed) {
            history.rule_rejections.remove(rule);
        }
        history.last = Some(ChangeRecord {
            at_ms: unix_time_ms(),
            trigger,
            applied: Some(summary.clone()),
            error: None,
        });
    }

    fn lock_history(&self) -> std::sync::MutexGuard<'_, ChangeHistory> {
        // The history is plain data: a panic elsewhere leaves it usable.
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The changes of one reload, in the new configuration's order.
#[derive(Default)]
struct Plan {
    changes: Vec<RuleChange>,
    summary: ChangeSummary,
}

/// The changes that take the `running` rules to `config`'s.
fn plan(
    engine: &RuleEngine,
    uploads: &ModuleStore,
    running: &HashMap<String, (RuleVersion, Arc<RuleCounters>)>,
    config: &GatewayConfig,
    upload: &UploadOverride,
) -> Result<Plan, ChangeError> {
    let mut plan = Plan::default();
    for (index, spec) in config.rules.iter().enumerate() {
        let rejected = |reason: String| ChangeError::Rejected {
            rule: Some(spec.name.clone()),
            reason,
        };
        let module = module_of(uploads, config, index, upload).map_err(&rejected)?;
        let module_hash = module
            .as_ref()
            .map(|module| blake3::hash(&module.bytes).to_hex().to_string());
        let config_hash = spec.config_hash();
        let previous = running.get(&spec.name);
        if previous.is_some_and(|(previous, _)| {
            previous.module_hash == module_hash && previous.config_hash == config_hash
        }) {
            plan.summary.unchanged += 1;
            plan.changes.push(RuleChange::Keep(spec.name.clone()));
            continue;
        }
        let key = config.rule_key(index);
        let loaded = module
            .as_ref()
            .map(|module| engine.load_bytes(&module.path, &module.bytes))
            .transpose()
            .map_err(|error| rejected(format!("`{key}.module`: {error}")))?;
        let version = RuleVersion {
            number: previous.map_or(1, |(previous, _)| previous.number + 1),
            module_hash,
            module_path: module.map(|module| module.path),
            config_hash,
            loaded_at_ms: unix_time_ms(),
        };
        let counters = previous.map(|(_, counters)| counters.clone());
        let prepared = PreparedRule::compile(config, index, loaded, version, counters)
            .map_err(|error| rejected(error.to_string()))?;
        plan.summary.started.push(spec.name.clone());
        plan.changes.push(RuleChange::Start(Box::new(prepared)));
    }
    plan.summary.removed = running
        .keys()
        .filter(|name| !config.rules.iter().any(|rule| rule.name == **name))
        .cloned()
        .collect();
    plan.summary.removed.sort();
    Ok(plan)
}

/// A rule's module: its bytes and the path it is known by.
struct ModuleFile<'a> {
    path: PathBuf,
    bytes: Cow<'a, [u8]>,
}

/// The module rule `index` runs, with the path it is known by: the upload in
/// progress, else a kept upload, else the configured file.
fn module_of<'a>(
    uploads: &ModuleStore,
    config: &GatewayConfig,
    index: usize,
    upload: &'a UploadOverride,
) -> Result<Option<ModuleFile<'a>>, String> {
    let spec = &config.rules[index];
    let name = spec.name.as_str();
    let uploaded = match upload {
        UploadOverride::New { rule, bytes } if rule == name => {
            let path = uploads
                .path_for(rule)
                .ok_or("no state directory to keep uploads in: set `gateway.state_dir`")?;
            let bytes = Cow::Borrowed(&bytes[..]);
            return Ok(Some(ModuleFile { path, bytes }));
        }
        UploadOverride::Removed { rule } if rule == name => None,
        _ => uploads.uploaded(name),
    };
    let (key, path) = match (uploaded, &spec.module) {
        (Some(path), _) => ("uploaded module", path),
        (None, Some(module)) => ("module", config.resolve(module)),
        (None, None) => return Ok(None),
    };
    let bytes = std::fs::read(&path).map_err(|error| {
        format!(
            "`{}`: reading the {key} {}: {error}",
            config.rule_key(index),
            path.display()
        )
    })?;
    let bytes = Cow::Owned(bytes);
    Ok(Some(ModuleFile { path, bytes }))
}

/// Compiles and starts every rule of `config`, with its configured module,
/// and throws them away: what a start would do, without running anything.
pub fn check(config: &GatewayConfig, engine: &RuleEngine) -> Result<usize, ChangeError> {
    let plan = plan(
        engine,
        &ModuleStore::without_uploads(),
        &HashMap::new(),
        config,
        &UploadOverride::None,
    )?;
    Ok(plan.changes.len())
}

impl Applied {
    /// The configuration file as it is now, if only its `[[rules]]` changed.
    fn reread(&self) -> Result<GatewayConfig, String> {
        let fixed = self.fixed_sections.as_ref().map_err(Clone::clone)?;
        let origin = &self.config.origin;
        let text = std::fs::read_to_string(origin)
            .map_err(|error| format!("reading configuration {}: {error}", origin.display()))?;
        let parsed = GatewayConfig::parse(&text, origin, self.config.base_dir.clone())
            .map_err(|error| error.to_string())?;
        let now = fixed_sections(&text)
            .map_err(|error| format!("configuration {}: {error}", origin.display()))?;
        let changed: Vec<&str> = fixed
            .keys()
            .chain(now.keys())
            .filter(|section| fixed.get(*section) != now.get(*section))
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !changed.is_empty() {
            return Err(format!(
                "configuration {}: `{}` changed; only `[[rules]]` changes while the gateway runs, \
                 restart it to apply the rest",
                origin.display(),
                changed.join("`, `")
            ));
        }
        let mut next = self.config.clone();
        next.rules = parsed.rules;
        Ok(next)
    }

    /// The configuration in force, after checking `rule` is in it.
    fn config_with(&self, rule: &str) -> Result<GatewayConfig, ChangeError> {
        if self.config.rules.iter().any(|spec| spec.name == rule) {
            Ok(self.config.clone())
        } else {
            Err(ChangeError::UnknownRule(rule.to_owned()))
        }
    }
}

/// The sections of configuration file `origin` other than `[[rules]]`.
fn read_fixed_sections(origin: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(origin).map_err(|error| {
        format!(
            "the gateway did not start from a readable configuration file ({}: {error}); \
             there is nothing to reload",
            origin.display()
        )
    })?;
    fixed_sections(&text).map_err(|error| format!("configuration {}: {error}", origin.display()))
}

fn fixed_sections(text: &str) -> Result<toml::Table, toml::de::Error> {
    let mut table: toml::Table = text.parse()?;
    table.remove("rules");
    Ok(table)
}

/// The first 12 hex digits of a hash, for logs.
fn short_hash(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

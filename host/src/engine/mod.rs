//! The Wasm rule engine: loads rule components, checks them against the
//! `rulegate:rule` world, and runs them in a sandbox with per-rule limits.
//!
//! It knows nothing of MQTT, SQL or sinks: the gateway calls
//! [`RuleEngine::load_file`] once per module and [`RuleInstance::on_message`] per
//! message. The split follows wasmtime's: one [`RuleEngine`] (compiler, linker,
//! epoch clock), a [`RuleModule`] per compiled component, a [`RuleInstance`] per
//! worker with its own store.
//!
//! A module is a component `.wasm`, compiled with Cranelift (the `compiler`
//! feature), or a precompiled `.cwasm` from [`RuleEngine::precompile`], which is
//! native code that a runtime-only build loads as it is: it must come from a
//! trusted source (see `artifact.rs`).

mod artifact;
#[cfg(feature = "compiler")]
mod artifact_cache;
mod bindings;
#[cfg_attr(feature = "compiler", path = "compiler.rs")]
#[cfg_attr(not(feature = "compiler"), path = "without_compiler.rs")]
mod compiler;
mod error;
mod host_api;
mod instance;
mod limits;
mod pool;
mod settings;

#[cfg(feature = "compiler")]
pub use compiler::CompileTarget;
pub use error::{LoadError, RunError, RunErrorKind};
pub use host_api::{RuleConfig, unix_time_ms};
pub use instance::RuleInstance;
pub use limits::RuleLimits;

use bindings::RulePre;
use compiler::Compiler;
use host_api::RuleState;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread;
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

/// How often the epoch clock ticks: the granularity of rule time limits.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Settings of a [`RuleEngine`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Directory for precompiled modules; `None` compiles every load afresh.
    /// A runtime-only build compiles nothing and has no cache.
    pub cache_dir: Option<PathBuf>,
    /// How many rule instances may exist at once. Instances come from a pool
    /// of this many slots, reserved when the engine starts; one more fails to
    /// start. The gateway passes the number of rules that have a module.
    pub max_instances: u32,
    /// The largest memory limit ([`RuleLimits::memory_bytes`]) of any rule; it
    /// sizes each slot of the pool, and a rule asking for more fails to start.
    pub max_memory_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_dir: None,
            max_instances: 16,
            max_memory_bytes: RuleLimits::default().memory_bytes,
        }
    }
}

impl EngineOptions {
    /// `$XDG_CACHE_HOME/rulegate`, else `$HOME/.cache/rulegate`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(base.join("rulegate"))
    }
}

/// Compiles and links rule components. One per gateway; cheap to share.
pub struct RuleEngine {
    engine: Engine,
    linker: Linker<RuleState>,
    compiler: Compiler,
    clock: Arc<EpochClock>,
    /// What the engine was made with; `precompile` makes code with the same.
    options: EngineOptions,
    /// The linked components in use, by the hash of their bytes: rules that
    /// run the same module (each with its own configuration) share one copy
    /// of its code, which is most of a module's memory.
    linked: Mutex<HashMap<blake3::Hash, Weak<RulePre<RuleState>>>>,
}

impl RuleEngine {
    pub fn new(options: EngineOptions) -> anyhow::Result<Self> {
        let engine = Engine::new(&settings::wasmtime_config(&options))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::Rule::add_to_linker::<RuleState, HasSelf<RuleState>>(&mut linker, |state| state)?;

        let compiler = Compiler::new(&options, &engine);
        let clock = Arc::new(EpochClock::start(engine.clone())?);
        Ok(RuleEngine {
            engine,
            linker,
            compiler,
            clock,
            options,
            linked: Mutex::default(),
        })
    }

    /// Loads a rule module from a `.wasm` file (from the artifact cache when it
    /// holds a sound entry for these exact bytes) or a precompiled `.cwasm`.
    pub fn load_file(&self, path: &Path) -> Result<RuleModule, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load_bytes(path, &bytes)
    }

    /// Loads a rule module from its bytes, a `.wasm` or a precompiled artifact
    /// (told apart by their first bytes); `origin` names it in errors. Bytes
    /// that a module still in use was loaded from reuse its compiled code (two
    /// loads racing may each compile; the later one is kept for reuse).
    pub fn load_bytes(&self, origin: &Path, bytes: &[u8]) -> Result<RuleModule, LoadError> {
        let hash = blake3::hash(bytes);
        let pre = match self.linked_in_use(&hash) {
            Some(pre) => pre,
            None => {
                let pre = Arc::new(self.link(origin, bytes, &hash)?);
                let mut linked = self.linked.lock().unwrap_or_else(PoisonError::into_inner);
                linked.retain(|_, pre| pre.strong_count() > 0);
                linked.insert(hash, Arc::downgrade(&pre));
                pre
            }
        };
        Ok(RuleModule {
            inner: Arc::new(ModuleInner {
                pre,
                hash,
                path: origin.to_owned(),
                max_memory_bytes: self.options.max_memory_bytes,
                _clock: self.clock.clone(),
            }),
        })
    }

    fn linked_in_use(&self, hash: &blake3::Hash) -> Option<Arc<RulePre<RuleState>>> {
        let linked = self.linked.lock().unwrap_or_else(PoisonError::into_inner);
        linked.get(hash).and_then(Weak::upgrade)
    }

    /// Compiles (or opens, when precompiled) and links a module.
    fn link(
        &self,
        origin: &Path,
        bytes: &[u8],
        hash: &blake3::Hash,
    ) -> Result<RulePre<RuleState>, LoadError> {
        let component = if artifact::is_precompiled(bytes) {
            artifact::open(&self.engine, origin, bytes)?
        } else {
            check_header(origin, bytes)?;
            self.compiler.compile(&self.engine, origin, bytes, hash)?
        };
        let wrong_world = |error: wasmtime::Error| LoadError::WrongWorld {
            path: origin.to_owned(),
            reason: format!("{error:#}"),
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        RulePre::new(instance_pre).map_err(wrong_world)
    }
}

/// Tells a core module and a non-Wasm file from a component by the preamble
/// (magic, then version and layer), before the compiler gives a vaguer error.
fn check_header(origin: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_MODULE_LAYER: [u8; 2] = [0, 0];
    if !bytes.starts_with(MAGIC) {
        return Err(LoadError::NotWasm {
            path: origin.to_owned(),
        });
    }
    if bytes.get(6..8) == Some(&CORE_MODULE_LAYER[..]) {
        return Err(LoadError::CoreModule {
            path: origin.to_owned(),
        });
    }
    Ok(())
}

/// A compiled rule component, linked and ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct RuleModule {
    inner: Arc<ModuleInner>,
}

struct ModuleInner {
    pre: Arc<RulePre<RuleState>>,
    hash: blake3::Hash,
    path: PathBuf,
    /// The memory of the engine's pool slots, which no rule's limit may exceed.
    max_memory_bytes: usize,
    /// Keeps the epoch clock running while any module can still run.
    _clock: Arc<EpochClock>,
}

impl RuleModule {
    /// The BLAKE3 hash of the module's bytes, in hex: its version identity.
    pub fn hash(&self) -> String {
        self.inner.hash.to_hex().to_string()
    }

    /// The file the module was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Creates an instance for rule `rule` and runs the module's `init`.
    pub fn instantiate(
        &self,
        rule: &str,
        config: RuleConfig,
        limits: RuleLimits,
    ) -> Result<RuleInstance, LoadError> {
        if limits.memory_bytes > self.inner.max_memory_bytes {
            return Err(LoadError::Init {
                rule: rule.to_owned(),
                path: self.inner.path.clone(),
                reason: format!(
                    "its memory limit of {} bytes is over the {} bytes the engine's instance slots \
                     were sized for when it started (the largest rule limit then); a gateway applies \
                     a larger limit at its next start",
                    limits.memory_bytes, self.inner.max_memory_bytes
                ),
            });
        }
        RuleInstance::start(self.clone(), rule, config, limits)
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a background thread, for
/// as long as the clock is alive.
struct EpochClock {
    /// Dropping the sender wakes the thread and ends it.
    _stop: mpsc::Sender<()>,
}

impl EpochClock {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        thread::Builder::new()
            .name("rulegate-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochClock { _stop: stop })
    }

    /// Epoch ticks that cover at least `limit`, whatever the phase of the clock.
    fn ticks_for(limit: Duration) -> u64 {
        limit.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1
    }
}

//! The pipeline: routes each inbound message through the topic index to the
//! rules whose `FROM` matches, evaluates their SQL, runs their Wasm module and
//! hands the outputs to the actions.
//!
//! The payload is parsed once per message and shared by every rule; of a JSON
//! object only the members some rule's SQL or templates read are built. Each
//! rule has its own bounded queue and worker, so the order of one rule's
//! messages is kept and a full queue slows intake instead of growing memory.
//! Rules with a module run on a thread of their own (Wasm calls are
//! synchronous); the others on a tokio task.
//!
//! The rule set is replaced while messages flow ([`Pipeline::replace`]): the
//! router switches between two messages, and a rule's new version starts only
//! once its previous version has finished the messages routed to it, so each
//! message is processed by exactly one version, in order. Deciding what to
//! replace is the `ruleset` module's job; the gateway wires this to MQTT and
//! the sinks.

mod router;
mod rule;
mod stats;
mod worker;

pub use rule::{PreparedRule, RuleVersion};
pub use stats::{IntakeStats, LATENCY_BOUNDS_MICROS, LatencySnapshot, RuleCounters, RuleStats};

use crate::actions::{FailedDelivery, Sinks};
use crate::mqtt::Inbound;
use bytes::Bytes;
use router::{Router, Swap};
use rule::CompiledRule;
use rulegate_sql::{MessageContext, Payload, Selected};
use stats::IntakeCounters;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// The sink that carries `publish` outputs of Wasm rules to device topics. The
/// gateway adds an `mqtt` sink of this name unless the configuration has one.
pub const DEVICE_TOPICS_SINK: &str = "device-topics";

/// A message as received, with its payload parsed once for every rule.
struct Received {
    inbound: Inbound,
    payload: Payload,
}

impl Received {
    fn topic(&self) -> &str {
        &self.inbound.topic
    }

    fn raw(&self) -> &Bytes {
        &self.inbound.payload
    }

    fn context(&self) -> MessageContext<'_> {
        MessageContext {
            topic: &self.inbound.topic,
            payload: &self.payload,
            raw_payload: &self.inbound.payload,
            client_id: None,
            timestamp_ms: self.inbound.received_at_ms as i64,
            mqtt: &self.inbound.properties,
        }
    }
}

/// What a rule's worker gets: the message and what the SQL selected from it.
struct Job {
    received: Arc<Received>,
    selected: Selected,
}

/// One rule of a new rule set, in the new set's order.
pub enum RuleChange {
    /// The rule of this name keeps running as it is: same worker, same queue.
    Keep(String),
    /// A new version of the rule of its name (or a new rule) starts.
    Start(Box<PreparedRule>),
}

/// Settings the pipeline takes from `[gateway]`.
#[derive(Debug, Clone, Copy)]
pub struct PipelineSettings {
    /// Messages with a larger payload are refused, counted and logged.
    pub max_payload_bytes: usize,
    /// Messages waiting in front of each rule; when full, intake waits.
    pub rule_queue: usize,
}

/// The pipeline has ended (its inbound channel closed); nothing can change it.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline has stopped")]
pub struct PipelineStopped;

/// A running pipeline. It routes messages from its inbound channel until that
/// closes; the task [`Pipeline::start`] returns ends once every message taken
/// has been handed to the sinks.
pub struct Pipeline {
    swaps: mpsc::Sender<Swap>,
    stats: PipelineStats,
}

impl Pipeline {
    /// Starts the router with no rules; [`Pipeline::replace`] brings them.
    pub fn start(
        settings: PipelineSettings,
        inbound: mpsc::Receiver<Inbound>,
        sinks: Arc<Sinks>,
        failures: mpsc::Receiver<FailedDelivery>,
    ) -> (Pipeline, JoinHandle<()>) {
        let intake = Arc::<IntakeCounters>::default();
        let (published, rules) = watch::channel(RuleList::from([]));
        let (swaps, swap_queue) = mpsc::channel(1);
        let failure_reports = tokio::spawn(worker::report_failed_deliveries(
            failures,
            rules.clone(),
            sinks.failure_settler(),
        ));
        let router = Router::new(settings, intake.clone(), sinks, published);
        let task = tokio::spawn(async move {
            router.run(inbound, swap_queue).await;
            // The failure reporter ends when the sinks shut down and close its
            // channel; it is not waited for here.
            drop(failure_reports);
        });
        let stats = PipelineStats { intake, rules };
        (Pipeline { swaps, stats }, task)
    }

    /// Replaces the rule set with `changes`; a running rule not named there is
    /// removed once it has finished its queue. Returns once the router routes
    /// by the new set.
    pub async fn replace(&self, changes: Vec<RuleChange>) -> Result<(), PipelineStopped> {
        let (applied, done) = oneshot::channel();
        self.swaps
            .send(Swap { changes, applied })
            .await
            .map_err(|_| PipelineStopped)?;
        done.await.map_err(|_| PipelineStopped)
    }

    /// A handle on the counters and the running rules.
    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }
}

/// The rules the router routes by, in configuration order.
type RuleList = Arc<[Arc<CompiledRule>]>;

/// Counters and versions of a pipeline, readable from anywhere, while and
/// after it runs.
#[derive(Clone)]
pub struct PipelineStats {
    intake: Arc<IntakeCounters>,
    rules: watch::Receiver<RuleList>,
}

/// What one running rule reports.
#[derive(Debug, Clone)]
pub struct RuleReport {
    pub name: String,
    pub version: RuleVersion,
    pub counters: RuleStats,
    /// Processing time of each selected message.
    pub latency: LatencySnapshot,
}

impl PipelineStats {
    pub fn intake(&self) -> IntakeStats {
        self.intake.snapshot()
    }

    /// Each rule's name and counters, in configuration order.
    pub fn rules(&self) -> Vec<(String, RuleStats)> {
        self.current()
            .iter()
            .map(|rule| (rule.name.to_string(), rule.counters.snapshot()))
            .collect()
    }

    /// Each running rule's version, counters and latency, in configuration order.
    pub fn reports(&self) -> Vec<RuleReport> {
        self.current()
            .iter()
            .map(|rule| RuleReport {
                name: rule.name.to_string(),
                version: rule.version.clone(),
                counters: rule.counters.snapshot(),
                latency: rule.counters.latency(),
            })
            .collect()
    }

    /// The topic filters the running rules read from (their `FROM`), each once.
    pub fn topic_filters(&self) -> Vec<String> {
        let rules = self.current();
        let filters: BTreeSet<&str> = rules
            .iter()
            .map(|rule| rule.statement.topic_filter().as_str())
            .collect();
        filters.into_iter().map(str::to_owned).collect()
    }

    /// Each running rule's version and live counters (to hand to its next
    /// version), by name.
    pub fn running(&self) -> HashMap<String, (RuleVersion, Arc<RuleCounters>)> {
        self.current()
            .iter()
            .map(|rule| {
                let running = (rule.version.clone(), rule.counters.clone());
                (rule.name.to_string(), running)
            })
            .collect()
    }

    fn current(&self) -> RuleList {
        self.rules.borrow().clone()
    }
}

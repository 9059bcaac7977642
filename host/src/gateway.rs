//! The running gateway: starts the embedded broker when configured, connects
//! to the broker, starts the sinks, the pipeline and the rules, the file
//! watcher and the HTTP endpoints, and shuts them down in the order that loses
//! nothing: the endpoints and the intake first, then the rules' queues, then
//! the sinks' queues, then the egress connection.

use crate::actions::{SinkConfig, SinkEnv, SinkStats, Sinks};
use crate::admin::AdminService;
use crate::broker;
use crate::config::GatewayConfig;
use crate::engine::{EngineOptions, RuleEngine, RuleLimits};
use crate::invoke::{InvokeService, InvokeStats};
use crate::mqtt::{self, BrokerEndpoint, Egress};
use crate::outbox::OutboxStats;
use crate::pipeline::{DEVICE_TOPICS_SINK, Pipeline, PipelineSettings, PipelineStats};
use crate::ruleset::RuleSet;
use crate::ruleset::watcher::FileWatcher;
use anyhow::Context;
use std::num::NonZeroUsize;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How long start waits for the broker to acknowledge the subscriptions.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the egress connection to send what it queued.
const EGRESS_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for readers of the counters to let go of the sinks.
const SINKS_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The runtime for a gateway's tasks (`gateway.worker_threads`): `threads`
/// workers, by default one per core; with one, the tasks run on the thread
/// that drives the runtime (`Runtime::block_on`), and no task is woken on
/// another thread.
pub fn runtime(threads: Option<NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads.map(NonZeroUsize::get) {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

/// A gateway that is running; [`Gateway::shutdown`] stops it cleanly.
pub struct Gateway {
    summary: Option<JoinHandle<()>>,
    stop_intake: watch::Sender<bool>,
    stop_egress: watch::Sender<bool>,
    intake: JoinHandle<()>,
    pipeline: JoinHandle<()>,
    egress: JoinHandle<()>,
    sinks: Arc<Sinks>,
    /// How long the sinks may deliver at shutdown.
    shutdown_grace: Duration,
    rules: Arc<RuleSet>,
    watcher: Option<FileWatcher>,
    invoke: Option<InvokeService>,
    admin: Option<AdminService>,
}

impl Gateway {
    /// Starts a gateway. `aws` overrides the standard AWS configuration chain
    /// (tests point it at a local endpoint); `None` uses the chain.
    pub async fn start(
        config: GatewayConfig,
        aws: Option<aws_config::SdkConfig>,
    ) -> anyhow::Result<Gateway> {
        let starting = std::time::Instant::now();
        let engine = Arc::new(RuleEngine::new(engine_options(&config))?);
        let max_payload = config.gateway.max_payload_bytes;
        if config.broker.embedded {
            broker::start_embedded(config.broker.listen, max_payload)?;
        }
        let endpoint = BrokerEndpoint::from_config(&config.broker)?;
        let (stop_intake, intake_stopped) = watch::channel(false);
        let (stop_egress, egress_stopped) = watch::channel(false);
        // Egress carries rule outputs, which may be larger than the inputs.
        let largest_output = config
            .rules
            .iter()
            .map(|rule| rule.limits.output_bytes)
            .fold(max_payload, usize::max);
        let (egress, egress_task) =
            Egress::spawn(&endpoint, mqtt::packet_room(largest_output), egress_stopped);

        let mut sink_configs = config.sinks.clone();
        if !sink_configs.contains_key(DEVICE_TOPICS_SINK) {
            sink_configs.insert(DEVICE_TOPICS_SINK.to_owned(), SinkConfig::mqtt());
        }
        let (failures, failed) = mpsc::channel(256);
        let env = SinkEnv {
            aws,
            publisher: Some(Arc::new(egress)),
        };
        let outbox = config.outbox_settings()?;
        let sinks = Arc::new(Sinks::start(&sink_configs, env, &outbox, failures).await?);

        let (inbound, inbound_queue) = mpsc::channel(config.gateway.rule_queue);
        let settings = PipelineSettings {
            max_payload_bytes: max_payload,
            rule_queue: config.gateway.rule_queue,
        };
        let (pipeline, pipeline_task) =
            Pipeline::start(settings, inbound_queue, sinks.clone(), failed);
        // A rule that cannot run stops the start here, with the key at fault;
        // dropping what started so far closes it.
        let rules = RuleSet::start(config.clone(), engine, pipeline).await?;
        let subscriptions = rules.subscriptions();
        tracing::info!(
            broker = endpoint.address(),
            rules = config.rules.len(),
            subscriptions = ?*subscriptions.borrow(),
            "gateway starting"
        );
        let (subscribed, mut ready) = watch::channel(false);
        // The intake only subscribes; rule outputs go out through the egress.
        let (_, intake) = mqtt::spawn_subscriber(
            &endpoint,
            &config.broker.client_id,
            subscriptions,
            max_payload,
            inbound,
            subscribed,
            intake_stopped,
        );
        // Ready means subscribed: a reading published after `start` returns is
        // not missed. A broker that is down is retried in the background.
        if tokio::time::timeout(READY_TIMEOUT, ready.wait_for(|&done| done))
            .await
            .is_err()
        {
            tracing::warn!(
                broker = endpoint.address(),
                "not subscribed after {READY_TIMEOUT:?}; still trying in the background"
            );
        }
        let watcher = if config.gateway.watch {
            Some(FileWatcher::start(rules.clone()).await?)
        } else {
            None
        };
        let invoke = match &config.invoke {
            Some(invoke) => Some(InvokeService::start(invoke, &endpoint, max_payload).await?),
            None => None,
        };
        let admin = match &config.admin {
            Some(admin) => {
                Some(AdminService::start(admin, rules.clone(), Arc::downgrade(&sinks)).await?)
            }
            None => None,
        };
        let summary = (config.gateway.stats_interval_secs > 0).then(|| {
            let period = Duration::from_secs(config.gateway.stats_interval_secs);
            tokio::spawn(log_summaries(
                period,
                rules.stats().clone(),
                Arc::downgrade(&sinks),
            ))
        });
        tracing::info!(
            elapsed_ms = starting.elapsed().as_millis() as u64,
            worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
            "gateway ready"
        );
        Ok(Gateway {
            summary,
            stop_intake,
            stop_egress,
            intake,
            pipeline: pipeline_task,
            egress: egress_task,
            sinks,
            shutdown_grace: Duration::from_secs(config.gateway.shutdown_grace_secs),
            rules,
            watcher,
            invoke,
            admin,
        })
    }

    /// The rules: their versions, and the way to change them.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Where the admin API listens, when `[admin]` is configured.
    pub fn admin_address(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(AdminService::address)
    }

    /// Where the invocation endpoint listens, when `[invoke]` is configured.
    pub fn invoke_address(&self) -> Option<std::net::SocketAddr> {
        self.invoke.as_ref().map(InvokeService::address)
    }

    /// Counters of the invocation endpoint, when `[invoke]` is configured.
    pub fn invoke_stats(&self) -> Option<InvokeStats> {
        self.invoke.as_ref().map(InvokeService::stats)
    }

    /// Counters of the intake and of each rule.
    pub fn stats(&self) -> &PipelineStats {
        self.rules.stats()
    }

    /// Counters of each sink.
    pub fn sink_stats(&self) -> Vec<(String, SinkStats)> {
        self.sinks.stats()
    }

    /// Counters of the outbox.
    pub fn outbox_stats(&self) -> OutboxStats {
        self.sinks.outbox_stats()
    }

    /// Stops taking messages, finishes every message already taken, delivers
    /// what the outbox holds for up to `gateway.shutdown_grace_secs` (the rest
    /// waits for the next start), and closes the connections. Returns the
    /// sinks' final counters.
    pub async fn shutdown(self) -> anyhow::Result<Vec<(String, SinkStats)>> {
        if let Some(summary) = self.summary {
            summary.abort();
            let _ = summary.await;
        }
        if let Some(admin) = self.admin {
            admin.shutdown().await?;
        }
        // No rule changes from here on.
        drop(self.watcher);
        if let Some(invoke) = self.invoke {
            let stats = invoke.shutdown().await?;
            tracing::info!(?stats, "invocations");
        }
        let _ = self.stop_intake.send(true);
        self.intake
            .await
            .context("waiting for the MQTT intake to stop")?;
        self.pipeline
            .await
            .context("waiting for the rules to finish their queues")?;
        let sinks = sole_owner(self.sinks).await?;
        let final_stats = sinks.shutdown(self.shutdown_grace).await;
        let _ = self.stop_egress.send(true);
        if tokio::time::timeout(EGRESS_DRAIN_TIMEOUT, self.egress)
            .await
            .is_err()
        {
            tracing::warn!("egress connection did not close in {EGRESS_DRAIN_TIMEOUT:?}");
        }
        log_summary(self.rules.stats(), &final_stats);
        Ok(final_stats)
    }
}

/// The Wasm engine for `config`'s rules. The instance pool has room for every
/// rule with a module twice over, plus a few, so each can be replaced (or a
/// few added) while the version it replaces finishes its queue.
fn engine_options(config: &GatewayConfig) -> EngineOptions {
    let modules = config.rules.iter().filter(|rule| rule.module.is_some());
    let default_slots = modules.clone().count().saturating_mul(2).saturating_add(4);
    EngineOptions {
        cache_dir: config
            .gateway
            .cache_dir
            .clone()
            .or_else(EngineOptions::default_cache_dir),
        max_instances: config
            .gateway
            .instance_slots
            .unwrap_or(u32::try_from(default_slots).unwrap_or(u32::MAX)),
        max_memory_bytes: modules
            .map(|rule| rule.limits.memory_bytes)
            .max()
            .unwrap_or(RuleLimits::default().memory_bytes),
    }
}

/// Takes the sinks back once the admin API and the periodic summary, which
/// hold them only for a moment at a time, have let go.
async fn sole_owner(mut sinks: Arc<Sinks>) -> anyhow::Result<Sinks> {
    let started = std::time::Instant::now();
    loop {
        match Arc::try_unwrap(sinks) {
            Ok(sinks) => return Ok(sinks),
            Err(shared) if started.elapsed() < SINKS_RELEASE_TIMEOUT => {
                sinks = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => anyhow::bail!(
                "the sinks are still shared after {SINKS_RELEASE_TIMEOUT:?}; their queues were not drained"
            ),
        }
    }
}

/// Writes the counters to the log every `period`.
async fn log_summaries(period: Duration, stats: PipelineStats, sinks: Weak<Sinks>) {
    let mut ticks = tokio::time::interval(period);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(sinks) = sinks.upgrade() else {
            return;
        };
        log_summary(&stats, &sinks.stats());
        let outbox = sinks.outbox_stats();
        tracing::info!(
            records = outbox.records,
            bytes = outbox.bytes,
            dropped = outbox.dropped,
            "outbox"
        );
    }
}

fn log_summary(stats: &PipelineStats, sinks: &[(String, SinkStats)]) {
    let intake = stats.intake();
    tracing::info!(
        received = intake.received,
        oversized = intake.oversized,
        "intake"
    );
    for (rule, counters) in stats.rules() {
        tracing::info!(
            rule,
            matched = counters.matched,
            selected = counters.selected,
            outputs = counters.outputs,
            dropped = counters.dropped,
            errors = counters.errors,
            busy_ms = counters.busy_micros / 1000,
            "rule"
        );
    }
    for (sink, counters) in sinks {
        tracing::info!(
            sink,
            delivered = counters.delivered,
            retried = counters.retried,
            failed = counters.failed,
            queued = counters.queued,
            "sink"
        );
    }
}

//! The pipeline: routes each inbound message through the topic index to the
//! rules whose `FROM` matches, evaluates their SQL, runs their Wasm module and
//! hands the outputs to the actions.
//!
//! The payload is parsed once per message and shared by every rule. Each rule
//! has its own bounded queue and worker, so the order of one rule's messages is
//! kept and a full queue slows intake instead of growing memory. Rules with a
//! module run on a thread of their own (Wasm calls are synchronous); the others
//! on a tokio task. The gateway module wires this to MQTT and the sinks.

mod rule;
mod stats;

pub use stats::{IntakeStats, RuleStats};

use crate::actions::{Delivery, FailedDelivery, Sinks, SubmitError, Target};
use crate::config::{ConfigError, GatewayConfig};
use crate::engine::{RuleEngine, RuleInstance};
use crate::message::{Message, Output, Property};
use crate::mqtt::Inbound;
use base64::Engine as _;
use bytes::Bytes;
use rule::CompiledRule;
use rulegate_sql::{MessageContext, Payload, Selected, TopicIndex};
use serde_json::json;
use stats::IntakeCounters;
use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Weak};
use std::time::Instant;
use tokio::sync::mpsc;
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

/// The compiled rules of a gateway, ready to run.
pub struct Pipeline {
    rules: Vec<Arc<CompiledRule>>,
    instances: Vec<Option<RuleInstance>>,
    index: TopicIndex<usize>,
    intake: Arc<IntakeCounters>,
    max_payload_bytes: usize,
    rule_queue: usize,
}

impl Pipeline {
    /// Compiles every rule of `config`: SQL, templates, modules. The first
    /// problem stops it, with the key that holds it.
    pub fn compile(config: &GatewayConfig, engine: &RuleEngine) -> Result<Pipeline, ConfigError> {
        let mut rules = Vec::with_capacity(config.rules.len());
        let mut instances = Vec::with_capacity(config.rules.len());
        let mut index = TopicIndex::new();
        for position in 0..config.rules.len() {
            let (rule, instance) = CompiledRule::compile(config, position, engine)?;
            index.insert(rule.statement.topic_filter(), position);
            rules.push(Arc::new(rule));
            instances.push(instance);
        }
        Ok(Pipeline {
            rules,
            instances,
            index,
            intake: Arc::default(),
            max_payload_bytes: config.gateway.max_payload_bytes,
            rule_queue: config.gateway.rule_queue,
        })
    }

    /// The topic filters to subscribe to: the rules' `FROM`, each once.
    pub fn subscriptions(&self) -> Vec<String> {
        let filters: BTreeSet<&str> = self
            .rules
            .iter()
            .map(|rule| rule.statement.topic_filter().as_str())
            .collect();
        filters.into_iter().map(str::to_owned).collect()
    }

    /// A handle on the counters, valid while and after the pipeline runs.
    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            intake: self.intake.clone(),
            rules: self.rules.clone(),
        }
    }

    /// Starts the workers and the router. The returned task ends once `inbound`
    /// is closed and every queued message has been handed to the sinks.
    pub fn run(
        self,
        inbound: mpsc::Receiver<Inbound>,
        sinks: Arc<Sinks>,
        failures: mpsc::Receiver<FailedDelivery>,
    ) -> JoinHandle<()> {
        let runtime = tokio::runtime::Handle::current();
        let mut queues = Vec::with_capacity(self.rules.len());
        let mut workers = Vec::with_capacity(self.rules.len());
        for (rule, instance) in self.rules.iter().zip(self.instances) {
            let (queue, jobs) = mpsc::channel(self.rule_queue);
            queues.push(queue);
            let actions = Actions {
                rule: rule.clone(),
                sinks: sinks.clone(),
            };
            workers.push(match instance {
                Some(instance) => spawn_module_worker(instance, jobs, actions, runtime.clone()),
                None => tokio::spawn(sql_worker(jobs, actions)),
            });
        }
        let failure_reports = tokio::spawn(report_failed_deliveries(
            failures,
            self.rules.clone(),
            Arc::downgrade(&sinks),
        ));
        let router = Router {
            rules: self.rules,
            queues,
            index: self.index,
            intake: self.intake,
            max_payload_bytes: self.max_payload_bytes,
        };
        tokio::spawn(async move {
            router.route(inbound).await;
            for worker in workers {
                if let Err(error) = worker.await {
                    tracing::error!("a rule worker ended abnormally: {error}");
                }
            }
            // The failure reporter ends when the sinks shut down and drop their
            // sender; it is not waited for here.
            drop(failure_reports);
        })
    }
}

/// Counters of a pipeline, readable from anywhere.
#[derive(Clone)]
pub struct PipelineStats {
    intake: Arc<IntakeCounters>,
    rules: Vec<Arc<CompiledRule>>,
}

impl PipelineStats {
    pub fn intake(&self) -> IntakeStats {
        self.intake.snapshot()
    }

    /// Each rule's name and counters, in configuration order.
    pub fn rules(&self) -> Vec<(String, RuleStats)> {
        self.rules
            .iter()
            .map(|rule| (rule.name.to_string(), rule.counters.snapshot()))
            .collect()
    }
}

struct Router {
    rules: Vec<Arc<CompiledRule>>,
    queues: Vec<mpsc::Sender<Job>>,
    index: TopicIndex<usize>,
    intake: Arc<IntakeCounters>,
    max_payload_bytes: usize,
}

impl Router {
    async fn route(self, mut inbound: mpsc::Receiver<Inbound>) {
        let mut matched = Vec::new();
        while let Some(message) = inbound.recv().await {
            self.intake.received();
            if message.payload.len() > self.max_payload_bytes {
                self.intake.oversized();
                tracing::warn!(
                    topic = message.topic,
                    size = message.payload.len(),
                    limit = self.max_payload_bytes,
                    "payload over gateway.max_payload_bytes: message refused"
                );
                continue;
            }
            matched.clear();
            self.index
                .for_each_match(&message.topic, |&rule| matched.push(rule));
            if matched.is_empty() {
                continue;
            }
            let payload = Payload::parse(&message.payload);
            if let Payload::Binary(bytes) = &payload {
                self.intake.not_json();
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let reason = serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
                        .err()
                        .map(|error| error.to_string());
                    tracing::debug!(
                        topic = message.topic,
                        ?reason,
                        "payload is not JSON: SQL sees it as binary"
                    );
                }
            }
            let received = Arc::new(Received {
                payload,
                inbound: message,
            });
            let context = received.context();
            for &position in &matched {
                let rule = &self.rules[position];
                rule.counters.matched();
                let Some(selected) = rule.statement.evaluate(&context) else {
                    continue;
                };
                rule.counters.selected();
                let job = Job {
                    received: received.clone(),
                    selected,
                };
                // Waits while the rule's queue is full: backpressure to intake.
                if self.queues[position].send(job).await.is_err() {
                    tracing::error!(
                        rule = &*rule.name,
                        "rule worker has stopped; message not processed"
                    );
                    rule.counters.error();
                }
            }
        }
    }
}

/// A rule's way to its sinks.
struct Actions {
    rule: Arc<CompiledRule>,
    sinks: Arc<Sinks>,
}

impl Actions {
    /// Hands each output to the rule's actions, in order.
    async fn deliver(&self, received: &Received, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Emit {
                    payload,
                    attributes,
                } => self.emit(received, Bytes::from(payload), &attributes).await,
                Output::Publish {
                    topic,
                    payload,
                    qos,
                    retain,
                    user_properties,
                } => {
                    self.rule.counters.outputs(1);
                    let target = Target::Publish {
                        topic,
                        qos,
                        retain,
                        user_properties,
                    };
                    self.submit(DEVICE_TOPICS_SINK, target, Bytes::from(payload), received)
                        .await;
                }
                Output::Drop { reason } => {
                    self.rule.counters.dropped();
                    tracing::debug!(
                        rule = &*self.rule.name,
                        topic = received.topic(),
                        "dropped: {reason}"
                    );
                }
            }
        }
    }

    /// Sends one emitted payload to every action of the rule.
    async fn emit(&self, received: &Received, payload: Bytes, attributes: &[Property]) {
        self.rule.counters.outputs(1);
        let context = received.context();
        for action in &self.rule.actions {
            let target = action.target(&context, attributes);
            self.submit(&action.sink, target, payload.clone(), received)
                .await;
        }
    }

    async fn submit(&self, sink: &str, target: Target, payload: Bytes, received: &Received) {
        let delivery = Delivery {
            rule: self.rule.name.clone(),
            ordering_key: ordering_key(&self.rule.name, received.topic()),
            payload,
            target,
        };
        if let Err(error) = self.sinks.submit(sink, delivery).await {
            self.report(received, "Submit", sink, &error.to_string())
                .await;
        }
    }

    /// Logs and counts a failure of this rule, and sends it to the rule's error
    /// action when it has one.
    async fn report(&self, received: &Received, failed_action: &str, resource: &str, cause: &str) {
        let rule = &self.rule;
        rule.counters.error();
        tracing::warn!(
            rule = &*rule.name,
            topic = received.topic(),
            action = failed_action,
            resource,
            "{cause}"
        );
        let Some(action) = &rule.error_action else {
            return;
        };
        let report = error_report(
            &rule.name,
            Some(received.topic()),
            received.raw(),
            failed_action,
            resource,
            cause,
        );
        let delivery = Delivery {
            rule: rule.name.clone(),
            ordering_key: ordering_key(&rule.name, received.topic()),
            payload: report,
            target: action.target(&received.context(), &[]),
        };
        if let Err(error) = self.sinks.submit(&action.sink, delivery).await {
            log_lost_report(&rule.name, &error);
        }
    }
}

/// The worker of a rule without a module: the selection goes to the actions.
async fn sql_worker(mut jobs: mpsc::Receiver<Job>, actions: Actions) {
    while let Some(job) = jobs.recv().await {
        let started = Instant::now();
        let payload = match job.selected {
            // `SELECT *` alone: the bytes as received, without a copy.
            Selected::Payload => job.received.raw().clone(),
            selected => Bytes::from(selected.to_bytes(job.received.raw()).into_owned()),
        };
        actions.emit(&job.received, payload, &[]).await;
        actions.rule.counters.busy(started.elapsed());
    }
}

/// The worker of a rule with a module: a thread that owns the rule's instance.
fn spawn_module_worker(
    mut instance: RuleInstance,
    mut jobs: mpsc::Receiver<Job>,
    actions: Actions,
    runtime: tokio::runtime::Handle,
) -> JoinHandle<()> {
    let (done, finished) = tokio::sync::oneshot::channel();
    let rule_name = actions.rule.name.clone();
    let name = format!("rule-{rule_name}");
    let spawned =
        std::thread::Builder::new().name(name).spawn(move || {
            let mut message = Message::default();
            while let Some(job) = jobs.blocking_recv() {
                let started = Instant::now();
                let received = &job.received;
                message.topic.clone_from(&received.inbound.topic);
                message.payload.clear();
                message
                    .payload
                    .extend_from_slice(&job.selected.to_bytes(received.raw()));
                message.received_at_ms = received.inbound.received_at_ms;
                message.qos = received.inbound.qos;
                message.user_properties.clear();
                message.user_properties.extend(
                    received
                        .inbound
                        .properties
                        .user_properties
                        .iter()
                        .map(|(key, value)| Property {
                            key: key.clone(),
                            value: value.clone(),
                        }),
                );
                match instance.on_message(&message) {
                    Ok(outputs) => runtime.block_on(actions.deliver(received, outputs)),
                    Err(error) => runtime.block_on(actions.report(
                        received,
                        "WasmRule",
                        instance.module().path().to_string_lossy().as_ref(),
                        &error.to_string(),
                    )),
                }
                actions.rule.counters.busy(started.elapsed());
            }
            // Release the sinks and the instance before saying so: shutdown waits
            // for this signal and then needs to be the sinks' only owner.
            drop(actions);
            drop(instance);
            let _ = done.send(());
        });
    tokio::spawn(async move {
        match spawned {
            Ok(_) => {
                let _ = finished.await;
            }
            Err(error) => tracing::error!(
                rule = &*rule_name,
                "starting the rule's worker thread: {error}"
            ),
        }
    })
}

/// Deliveries of one rule and source topic share a key, so sinks keep their order.
fn ordering_key(rule: &str, topic: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    rule.hash(&mut hasher);
    topic.hash(&mut hasher);
    hasher.finish()
}

/// The document an error action receives, in the shape AWS IoT gives its
/// `errorAction`: the rule, the topic, the original payload and what failed.
fn error_report(
    rule: &str,
    topic: Option<&str>,
    payload: &[u8],
    failed_action: &str,
    resource: &str,
    cause: &str,
) -> Bytes {
    let report = json!({
        "ruleName": rule,
        "topic": topic,
        "base64OriginalPayload": base64::engine::general_purpose::STANDARD.encode(payload),
        "failures": [{
            "failedAction": failed_action,
            "failedResource": resource,
            "errorMessage": cause,
        }],
    });
    Bytes::from(report.to_string())
}

/// Sends deliveries that the sinks gave up on to their rule's error action.
/// Holds the sinks weakly: they shut down (and end this task) once the
/// pipeline has finished, and a failure after that is only logged.
async fn report_failed_deliveries(
    mut failures: mpsc::Receiver<FailedDelivery>,
    rules: Vec<Arc<CompiledRule>>,
    sinks: Weak<Sinks>,
) {
    let by_name: HashMap<&str, &CompiledRule> =
        rules.iter().map(|rule| (&*rule.name, &**rule)).collect();
    while let Some(failed) = failures.recv().await {
        let Some(rule) = by_name.get(&*failed.delivery.rule) else {
            tracing::error!(
                rule = &*failed.delivery.rule,
                sink = failed.sink,
                "failed delivery of an unknown rule: {}",
                failed.cause
            );
            continue;
        };
        rule.counters.error();
        tracing::error!(
            rule = &*rule.name,
            sink = failed.sink,
            attempts = failed.attempts,
            "delivery failed for good: {}",
            failed.cause
        );
        let Some(action) = &rule.error_action else {
            continue;
        };
        if action.sink == failed.sink {
            // Reporting a sink's failure through the same sink would loop.
            continue;
        }
        let report = error_report(
            &rule.name,
            None,
            &failed.delivery.payload,
            "Delivery",
            &failed.sink,
            &failed.cause,
        );
        let payload = Payload::parse(&report);
        let context = MessageContext::new("", &payload, &report);
        let delivery = Delivery {
            rule: rule.name.clone(),
            ordering_key: failed.delivery.ordering_key,
            target: action.target(&context, &[] as &[Property]),
            payload: report,
        };
        // Never wait on a sink here: the sinks wait on this task to take their
        // failures, so waiting could close a circle.
        let submitted = match sinks.upgrade() {
            Some(sinks) => sinks.try_submit(&action.sink, delivery),
            None => Err(SubmitError::Stopped {
                sink: action.sink.clone(),
            }),
        };
        if let Err(error) = submitted {
            log_lost_report(&rule.name, &error);
        }
    }
}

fn log_lost_report(rule: &str, error: &SubmitError) {
    tracing::error!(
        rule,
        "could not hand the failure to the error action: {error}"
    );
}

//! A rule's worker: takes the rule's queued jobs in order, runs the module (on
//! a thread of its own, as Wasm calls are synchronous) or passes the SQL
//! selection on, and hands the outputs to the rule's actions. Also the
//! reporting of failures to a rule's error action.

use super::rule::CompiledRule;
use super::{DEVICE_TOPICS_SINK, Job, Received, RuleList};
use crate::actions::{Delivery, FailedDelivery, FailureSettler, Sinks, SubmitError, Target};
use crate::engine::{RuleInstance, RunError};
use crate::message::{Message, Output, Property};
use base64::Engine as _;
use bytes::Bytes;
use rulegate_sql::{MessageContext, Payload, Selected};
use serde_json::json;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Queued jobs a rule's thread takes at once, at most. It runs their module
/// calls one after another, then hands all their outputs over together: the
/// outbox's writer is then woken once for them, not once per message.
const MODULE_BATCH: usize = 64;
/// The module time after which a rule's thread hands over the outputs it has
/// although calls of its batch are still to run, so that a slow module's
/// outputs do not wait for many more of its calls.
const MODULE_BATCH_TIME: Duration = Duration::from_millis(1);

/// Resolves once a worker has ended: the worker holds the sending half and
/// drops it when it ends, however it ends.
#[derive(Clone)]
pub(super) struct WorkerExit(watch::Receiver<()>);

impl WorkerExit {
    /// A new exit, and the token the worker holds for as long as it runs.
    fn new() -> (WorkerExit, watch::Sender<()>) {
        let (alive, exit) = watch::channel(());
        (WorkerExit(exit), alive)
    }

    pub(super) async fn wait(mut self) {
        while self.0.changed().await.is_ok() {}
    }

    pub(super) fn ended(&self) -> bool {
        self.0.has_changed().is_err()
    }
}

/// A rule's way to its sinks.
pub(super) struct Actions {
    pub(super) rule: Arc<CompiledRule>,
    pub(super) sinks: Arc<Sinks>,
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
        let Some((last, others)) = self.rule.actions.split_last() else {
            return;
        };
        let context = received.context();
        for action in others {
            let target = action.target(&context, attributes);
            self.submit(&action.sink, target, payload.clone(), received)
                .await;
        }
        // The last action takes the payload itself: the first clone of one
        // made from a `Vec` allocates its shared count.
        let target = last.target(&context, attributes);
        self.submit(&last.sink, target, payload, received).await;
    }

    async fn submit(&self, sink: &str, target: Target, payload: Bytes, received: &Received) {
        if let Target::Publish { topic, .. } = &target
            && !self.rule.may_publish(topic)
        {
            let cause = "the topic is outside the rule's `capabilities.publish`: not published";
            self.report(received, "Publish", topic, cause).await;
            return;
        }
        let delivery = Delivery {
            rule: self.rule.name.clone(),
            ordering_key: ordering_key(&self.rule.name, received.topic()),
            payload,
            target,
        };
        let receipt = received.inbound.receipt.clone();
        if let Err(error) = self.sinks.submit(sink, delivery, receipt).await {
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
        let receipt = received.inbound.receipt.clone();
        if let Err(error) = self.sinks.submit(&action.sink, delivery, receipt).await {
            log_lost_report(&rule.name, &error);
        }
    }
}

/// Starts the worker of a rule without a module, which passes the selection to
/// the actions. It starts taking jobs once `previous` (the rule's previous
/// version) has ended.
pub(super) fn spawn_sql_worker(
    mut jobs: mpsc::Receiver<Job>,
    actions: Actions,
    previous: Option<WorkerExit>,
) -> WorkerExit {
    let (exit, alive) = WorkerExit::new();
    tokio::spawn(async move {
        let _alive = alive;
        if let Some(previous) = previous {
            previous.wait().await;
        }
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
    });
    exit
}

/// Starts the worker of a rule with a module: a thread that owns the rule's
/// instance. It starts taking jobs once `previous` has ended.
pub(super) fn spawn_module_worker(
    mut instance: RuleInstance,
    mut jobs: mpsc::Receiver<Job>,
    actions: Actions,
    previous: Option<WorkerExit>,
    runtime: tokio::runtime::Handle,
) -> WorkerExit {
    let (exit, alive) = WorkerExit::new();
    let rule_name = actions.rule.name.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("rule-{rule_name}"))
        .spawn(move || {
            if let Some(previous) = previous {
                runtime.block_on(previous.wait());
            }
            let mut message = Message::default();
            let mut taken = Vec::with_capacity(MODULE_BATCH);
            let mut ran = Vec::with_capacity(MODULE_BATCH);
            while jobs.blocking_recv_many(&mut taken, MODULE_BATCH) > 0 {
                let mut to_run = taken.drain(..).peekable();
                while to_run.peek().is_some() {
                    // One clock reading per message and stage: each step's
                    // end is the next one's start.
                    let mut lap = Lap::start();
                    let mut spent = Duration::ZERO;
                    for job in to_run.by_ref() {
                        fill_message(&mut message, &job.received, &job.selected);
                        let result = instance.on_message(&message);
                        let running = lap.next();
                        ran.push(Ran {
                            received: job.received,
                            result,
                            running,
                        });
                        spent += running;
                        if spent >= MODULE_BATCH_TIME {
                            break;
                        }
                    }
                    deliver_ran(&mut ran, &actions, &instance, &runtime);
                }
            }
            // Release the sinks and the instance (its pool slot) before saying
            // so: shutdown then needs to be the sinks' only owner, and the next
            // version may need the slot.
            drop(actions);
            drop(instance);
            drop(alive);
        });
    if let Err(error) = spawned {
        // The closure, and with it the exit token and the queue, is gone: the
        // router counts each message it can no longer queue as an error.
        tracing::error!(
            rule = &*rule_name,
            "starting the rule's worker thread: {error}"
        );
    }
    exit
}

/// A module call made, whose outputs are yet to be handed over.
struct Ran {
    received: Arc<Received>,
    result: Result<Vec<Output>, RunError>,
    /// How long the call took.
    running: Duration,
}

/// Hands the outputs of the calls in `ran` to the rule's actions, in order,
/// from the rule's thread.
fn deliver_ran(
    ran: &mut Vec<Ran>,
    actions: &Actions,
    instance: &RuleInstance,
    runtime: &tokio::runtime::Handle,
) {
    let module = instance.module().path().to_string_lossy();
    runtime.block_on(async {
        let mut lap = Lap::start();
        for Ran {
            received,
            result,
            running,
        } in ran.drain(..)
        {
            match result {
                Ok(outputs) => actions.deliver(&received, outputs).await,
                Err(error) => {
                    let cause = error.to_string();
                    actions.report(&received, "WasmRule", &module, &cause).await;
                }
            }
            actions.rule.counters.busy(running + lap.next());
        }
    });
}

/// Times consecutive steps with one clock reading each.
struct Lap(Instant);

impl Lap {
    fn start() -> Lap {
        Lap(Instant::now())
    }

    /// The time since the previous step ended, which this one ends.
    fn next(&mut self) -> Duration {
        let now = Instant::now();
        let elapsed = now - self.0;
        self.0 = now;
        elapsed
    }
}

/// Reuses `message`'s buffers for the next job, as the module sees it.
fn fill_message(message: &mut Message, received: &Received, selected: &Selected) {
    message.topic.clone_from(&received.inbound.topic);
    message.payload.clear();
    message
        .payload
        .extend_from_slice(&selected.to_bytes(received.raw()));
    message.received_at_ms = received.inbound.received_at_ms;
    message.qos = received.inbound.qos;
    message.user_properties.clear();
    message
        .user_properties
        .extend(
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

/// Sends deliveries that the sinks gave up on to their rule's error action:
/// the report takes the failed delivery's place in the outbox. Ends when the
/// sinks have shut down and closed `failures`.
pub(super) async fn report_failed_deliveries(
    mut failures: mpsc::Receiver<FailedDelivery>,
    rules: watch::Receiver<RuleList>,
    settler: FailureSettler,
) {
    while let Some(failed) = failures.recv().await {
        let report = failure_report(&failed, &rules.borrow());
        if let Err(error) = settler.settle(&failed, report) {
            log_lost_report(&failed.delivery.rule, &error);
        }
    }
}

/// Counts and logs `failed` against its rule, and builds the report for the
/// rule's error action: the sink and the delivery, when there is one.
fn failure_report(failed: &FailedDelivery, running: &RuleList) -> Option<(String, Delivery)> {
    // The rule's running version: the one that produced the delivery may
    // have been replaced since.
    let Some(rule) = running
        .iter()
        .find(|rule| *rule.name == *failed.delivery.rule)
    else {
        tracing::error!(
            rule = &*failed.delivery.rule,
            sink = failed.sink,
            "failed delivery of an unknown rule: {}",
            failed.cause
        );
        return None;
    };
    rule.counters.error();
    tracing::error!(
        rule = &*rule.name,
        sink = failed.sink,
        attempts = failed.attempts,
        "delivery failed for good: {}",
        failed.cause
    );
    let action = rule.error_action.as_ref()?;
    if action.sink == failed.sink {
        // Reporting a sink's failure through the same sink would loop.
        return None;
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
    Some((action.sink.clone(), delivery))
}

fn log_lost_report(rule: &str, error: &SubmitError) {
    tracing::error!(
        rule,
        "could not hand the failure to the error action: {error}"
    );
}

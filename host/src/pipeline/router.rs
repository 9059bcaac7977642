//! The router: takes each inbound message, finds the rules whose `FROM`
//! matches, evaluates their SQL and queues what they select for their workers.
//! Between two batches of messages it applies a [`Swap`]: it starts workers
//! for new rule versions, closes the queues of replaced and removed ones, and
//! publishes the new rule list.

use super::worker::{self, Actions, WorkerExit};
use super::{
    IntakeCounters, Job, PipelineSettings, Received, RuleChange, RuleList, rule::CompiledRule,
};
use crate::actions::Sinks;
use crate::mqtt::Inbound;
use rulegate_sql::{Payload, PayloadFields, TopicIndex};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// Inbound messages taken at once, at most. Taking several frees as many
/// places in the intake channel at once, so a sender waiting for room is woken
/// once for them all instead of once per message.
const INTAKE_BATCH: usize = 64;

/// A new rule set, and the signal that the router routes by it.
pub(super) struct Swap {
    pub(super) changes: Vec<RuleChange>,
    pub(super) applied: oneshot::Sender<()>,
}

/// A running rule: its compiled form, its worker's queue, and its worker's end.
struct Route {
    rule: Arc<CompiledRule>,
    queue: mpsc::Sender<Job>,
    exit: WorkerExit,
}

#[derive(Default)]
struct RouteTable {
    routes: Vec<Route>,
    /// Topic filter → position in `routes`.
    index: TopicIndex<usize>,
    /// What of a payload any of the rules reads: all a message's payload is
    /// parsed for, since it is parsed once for every rule it reaches.
    payload_fields: PayloadFields,
}

pub(super) struct Router {
    table: RouteTable,
    /// Every worker that may still run, the replaced ones included: shutdown
    /// waits for them all.
    exits: Vec<WorkerExit>,
    published: watch::Sender<RuleList>,
    intake: Arc<IntakeCounters>,
    settings: PipelineSettings,
    sinks: Arc<Sinks>,
    runtime: tokio::runtime::Handle,
}

impl Router {
    pub(super) fn new(
        settings: PipelineSettings,
        intake: Arc<IntakeCounters>,
        sinks: Arc<Sinks>,
        published: watch::Sender<RuleList>,
    ) -> Router {
        Router {
            table: RouteTable::default(),
            exits: Vec::new(),
            published,
            intake,
            settings,
            sinks,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Routes until `inbound` closes, then lets every worker finish its queue.
    pub(super) async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut swaps: mpsc::Receiver<Swap>,
    ) {
        let mut matched = Vec::new();
        let mut messages = Vec::with_capacity(INTAKE_BATCH);
        loop {
            tokio::select! {
                biased;
                Some(swap) = swaps.recv() => {
                    self.swap(swap.changes);
                    let _ = swap.applied.send(());
                }
                taken = inbound.recv_many(&mut messages, INTAKE_BATCH) => {
                    if taken == 0 {
                        break;
                    }
                    for message in messages.drain(..) {
                        self.route(message, &mut matched).await;
                    }
                }
            }
        }
        // Closing the queues lets each worker finish what it holds, then end.
        self.table = RouteTable::default();
        for exit in self.exits {
            exit.wait().await;
        }
    }

    fn swap(&mut self, changes: Vec<RuleChange>) {
        let mut running: HashMap<Arc<str>, Route> = std::mem::take(&mut self.table.routes)
            .into_iter()
            .map(|route| (route.rule.name.clone(), route))
            .collect();
        let mut table = RouteTable::default();
        for change in changes {
            let route = match change {
                RuleChange::Keep(name) => match running.remove(name.as_str()) {
                    Some(route) => route,
                    None => {
                        tracing::error!(rule = name, "asked to keep a rule that does not run");
                        continue;
                    }
                },
                RuleChange::Start(prepared) => {
                    // Dropping the previous version's route closes its queue.
                    let previous = running.remove(prepared.name()).map(|route| route.exit);
                    self.start(prepared, previous)
                }
            };
            table
                .index
                .insert(route.rule.statement.topic_filter(), table.routes.len());
            table.payload_fields.add(&route.rule.payload_fields);
            table.routes.push(route);
        }
        // What is left was removed: its queues close here, its workers drain.
        drop(running);
        self.exits.retain(|exit| !exit.ended());
        self.published.send_replace(
            table
                .routes
                .iter()
                .map(|route| route.rule.clone())
                .collect(),
        );
        self.table = table;
    }

    /// Starts the worker of a new rule version, after `previous` has ended.
    fn start(&mut self, prepared: Box<super::PreparedRule>, previous: Option<WorkerExit>) -> Route {
        let (queue, jobs) = mpsc::channel(self.settings.rule_queue);
        let rule = Arc::new(prepared.rule);
        let actions = Actions {
            rule: rule.clone(),
            sinks: self.sinks.clone(),
        };
        let exit = match prepared.instance {
            Some(instance) => {
                worker::spawn_module_worker(instance, jobs, actions, previous, self.runtime.clone())
            }
            None => worker::spawn_sql_worker(jobs, actions, previous),
        };
        self.exits.push(exit.clone());
        Route { rule, queue, exit }
    }

    async fn route(&self, message: Inbound, matched: &mut Vec<usize>) {
        self.intake.received();
        if message.payload.len() > self.settings.max_payload_bytes {
            self.intake.oversized();
            tracing::warn!(
                topic = message.topic,
                size = message.payload.len(),
                limit = self.settings.max_payload_bytes,
                "payload over gateway.max_payload_bytes: message refused"
            );
            return;
        }
        matched.clear();
        let table = &self.table;
        table
            .index
            .for_each_match(&message.topic, |&rule| matched.push(rule));
        if matched.is_empty() {
            return;
        }
        let payload = Payload::parse_fields(&message.payload, &table.payload_fields);
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
        for &position in matched.iter() {
            let route = &table.routes[position];
            let rule = &route.rule;
            rule.counters.matched();
            // The index matched the topic against the rule's `FROM`.
            let Some(selected) = rule.statement.evaluate_matched(&context) else {
                continue;
            };
            rule.counters.selected();
            let job = Job {
                received: received.clone(),
                selected,
            };
            // Waits while the rule's queue is full: backpressure to intake.
            if route.queue.send(job).await.is_err() {
                tracing::error!(
                    rule = &*rule.name,
                    "rule worker has stopped; message not processed"
                );
                rule.counters.error();
            }
        }
    }
}

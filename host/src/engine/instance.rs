//! One running instance of a rule: calls `on-message` under the rule's limits
//! and replaces itself after any failure that may have left it in a bad state.

use super::bindings::{Rule, types};
use super::error::{LoadError, RunError, RunErrorKind};
use super::host_api::{RuleConfig, RuleState};
use super::limits::{MemoryLimitExceeded, MemoryLimiter, RuleLimits};
use super::{EpochClock, RuleModule};
use crate::message::{Message, Output, Property, QoS};
use std::sync::Arc;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap};

/// An instance of a rule module with its own store, reused across messages.
///
/// After a trap, a time-out or a memory-limit breach the store is dropped and the
/// next message gets a fresh instance (its `init` runs again); a rule error that
/// the guest returned leaves the instance in place.
pub struct RuleInstance {
    module: RuleModule,
    rule: Arc<str>,
    config: Arc<RuleConfig>,
    limits: RuleLimits,
    deadline_ticks: u64,
    live: Option<Live>,
    /// The lowered message, kept to reuse its allocations across calls.
    scratch: types::Message,
}

struct Live {
    store: Store<RuleState>,
    bindings: Rule,
}

impl RuleInstance {
    pub(super) fn start(
        module: RuleModule,
        rule: &str,
        config: RuleConfig,
        limits: RuleLimits,
    ) -> Result<Self, LoadError> {
        let mut instance = RuleInstance {
            module,
            rule: Arc::from(rule),
            config: Arc::new(config),
            limits,
            deadline_ticks: EpochClock::ticks_for(limits.time()),
            live: None,
            scratch: empty_message(),
        };
        let live = instance.instantiate().map_err(|reason| LoadError::Init {
            rule: rule.to_owned(),
            path: instance.module.path().to_owned(),
            reason,
        })?;
        instance.live = Some(live);
        Ok(instance)
    }

    /// The module this instance runs.
    pub fn module(&self) -> &RuleModule {
        &self.module
    }

    /// Runs the rule on one message.
    pub fn on_message(&mut self, message: &Message) -> Result<Vec<Output>, RunError> {
        self.call(message).map_err(|kind| RunError {
            rule: self.rule.to_string(),
            topic: message.topic.clone(),
            kind,
        })
    }

    fn call(&mut self, message: &Message) -> Result<Vec<Output>, RunErrorKind> {
        let mut live = match self.live.take() {
            Some(live) => live,
            None => self.instantiate().map_err(RunErrorKind::Restart)?,
        };
        lower_message(message, &mut self.scratch);
        live.store.set_epoch_deadline(self.deadline_ticks);
        let returned = match live
            .bindings
            .call_on_message(&mut live.store, &self.scratch)
        {
            Ok(returned) => returned,
            // The instance may be mid-way through anything: never reuse it.
            Err(error) => return Err(self.classify(&error)),
        };
        self.live = Some(live);
        let outputs: Vec<Output> = returned
            .map_err(rule_error_kind)?
            .into_iter()
            .map(lift_output)
            .collect();
        let size = outputs.iter().map(Output::size).sum();
        if size > self.limits.output_bytes {
            return Err(RunErrorKind::OutputTooLarge {
                size,
                limit: self.limits.output_bytes,
            });
        }
        Ok(outputs)
    }

    /// A fresh store and instance, with `init` run. The error is the reason text.
    fn instantiate(&self) -> Result<Live, String> {
        let state = RuleState::new(
            self.rule.clone(),
            self.config.clone(),
            MemoryLimiter {
                max_bytes: self.limits.memory_bytes,
            },
        );
        let pre = &self.module.inner.pre;
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(self.deadline_ticks);
        let bindings = pre
            .instantiate(&mut store)
            .map_err(|error| self.instantiation_failure(&error))?;
        match bindings.call_init(&mut store) {
            Ok(Ok(())) => Ok(Live { store, bindings }),
            Ok(Err(error)) => Err(rule_error_kind(error).to_string()),
            Err(error) => Err(self.classify(&error).to_string()),
        }
    }

    /// Why wasmtime could not create the instance; a full pool is the
    /// engine's sizing, not the rule's fault, and is said so.
    fn instantiation_failure(&self, error: &wasmtime::Error) -> String {
        match error.downcast_ref::<PoolConcurrencyLimitError>() {
            Some(full) => format!(
                "no free instance slot ({full}): the engine's `max_instances` \
                 counts every rule instance that exists at once"
            ),
            None => self.classify(error).to_string(),
        }
    }

    fn classify(&self, error: &wasmtime::Error) -> RunErrorKind {
        if error.downcast_ref::<MemoryLimitExceeded>().is_some() {
            return RunErrorKind::MemoryLimit(self.limits.memory_bytes);
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => RunErrorKind::TimeLimit(self.limits.time()),
            _ => RunErrorKind::Trap(format!("{error:#}")),
        }
    }
}

fn rule_error_kind(error: types::RuleError) -> RunErrorKind {
    match error {
        types::RuleError::InvalidMessage(reason) => RunErrorKind::InvalidMessage(reason),
        types::RuleError::InvalidConfig(reason) => RunErrorKind::InvalidConfig(reason),
        types::RuleError::Failed(reason) => RunErrorKind::Failed(reason),
    }
}

fn empty_message() -> types::Message {
    types::Message {
        topic: String::new(),
        payload: Vec::new(),
        client_id: None,
        received_at_ms: 0,
        qos: types::Qos::AtMostOnce,
        user_properties: Vec::new(),
    }
}

/// Copies `message` into the WIT form, reusing `into`'s buffers.
fn lower_message(message: &Message, into: &mut types::Message) {
    into.topic.clear();
    into.topic.push_str(&message.topic);
    into.payload.clear();
    into.payload.extend_from_slice(&message.payload);
    into.client_id.clone_from(&message.client_id);
    into.received_at_ms = message.received_at_ms;
    into.qos = lower_qos(message.qos);
    into.user_properties.clear();
    into.user_properties.extend(
        message
            .user_properties
            .iter()
            .map(|property| types::Property {
                key: property.key.clone(),
                value: property.value.clone(),
            }),
    );
}

fn lower_qos(qos: QoS) -> types::Qos {
    match qos {
        QoS::AtMostOnce => types::Qos::AtMostOnce,
        QoS::AtLeastOnce => types::Qos::AtLeastOnce,
        QoS::ExactlyOnce => types::Qos::ExactlyOnce,
    }
}

fn lift_qos(qos: types::Qos) -> QoS {
    match qos {
        types::Qos::AtMostOnce => QoS::AtMostOnce,
        types::Qos::AtLeastOnce => QoS::AtLeastOnce,
        types::Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn lift_properties(properties: Vec<types::Property>) -> Vec<Property> {
    properties
        .into_iter()
        .map(|property| Property {
            key: property.key,
            value: property.value,
        })
        .collect()
}

fn lift_output(output: types::Output) -> Output {
    match output {
        types::Output::Emit(emit) => Output::Emit {
            payload: emit.payload,
            attributes: lift_properties(emit.attributes),
        },
        types::Output::Publish(publish) => Output::Publish {
            topic: publish.topic,
            payload: publish.payload,
            qos: lift_qos(publish.qos),
            retain: publish.retain,
            user_properties: lift_properties(publish.user_properties),
        },
        types::Output::Drop(reason) => Output::Drop { reason },
    }
}

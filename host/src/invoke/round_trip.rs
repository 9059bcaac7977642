//! The MQTT round trip of an invocation: publish the request into the device's
//! topic space, wait for the answer that carries the same message id, or time
//! out. Answers that come after their caller gave up are counted, never handed
//! to another caller.
//!
//! Topics (the device subscribes to `<target>/#`):
//! - request: `<target>/<method>/<client_prefix>/<message id>`, payload the
//!   request text;
//! - answer: the request topic with `/ack` appended. MQTT 5 requests also carry
//!   it as their response topic, with the message id's 16 bytes as correlation
//!   data, which the answer echoes.

use super::InvokeConfig;
use crate::message::QoS;
use crate::mqtt::{Egress, Inbound, ResponseRoute};
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Message ids of invocations that gave up, remembered so that a late answer is
/// told apart from a stray one.
const EXPIRED_MEMORY: usize = 65_536;

/// One call for a device, checked by the HTTP layer.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub target: String,
    pub method: String,
    pub request: String,
    pub timeout: Duration,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Answered { response: Bytes, elapsed: Duration },
    TimedOut { elapsed: Duration },
}

/// Counters of the invocation service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvokeStats {
    pub invoked: u64,
    pub answered: u64,
    pub timed_out: u64,
    /// Answers that arrived after their invocation had timed out; dropped.
    pub late_answers: u64,
    /// Answers that match no invocation (unknown id, or the wrong device); dropped.
    pub unmatched_answers: u64,
    /// Requests that could not be handed to the MQTT connection.
    pub publish_failures: u64,
}

/// Sends invocations and matches their answers. Shared by every HTTP request.
pub struct Invoker {
    link: Egress,
    client_prefix: String,
    max_in_flight: usize,
    pending: Mutex<HashMap<Uuid, Waiter>>,
    expired: Mutex<ExpiredIds>,
    counters: Counters,
}

/// The caller waiting for a message id, and the device it asked.
struct Waiter {
    target: String,
    answer: oneshot::Sender<Bytes>,
}

#[derive(Default)]
struct Counters {
    invoked: AtomicU64,
    answered: AtomicU64,
    timed_out: AtomicU64,
    late_answers: AtomicU64,
    unmatched_answers: AtomicU64,
    publish_failures: AtomicU64,
}

/// Why an invocation could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("{0} invocations are already waiting for their devices; try again shortly")]
    Busy(usize),
    #[error("the request could not be sent to the broker: {0}")]
    Publish(String),
}

impl Invoker {
    pub(super) fn new(link: Egress, config: &InvokeConfig) -> Self {
        Invoker {
            link,
            client_prefix: config.client_prefix.clone(),
            max_in_flight: config.max_in_flight,
            pending: Mutex::default(),
            expired: Mutex::new(ExpiredIds::default()),
            counters: Counters::default(),
        }
    }

    /// Publishes the request and waits for the device's answer until the
    /// invocation's timeout, counted from `started`.
    pub async fn invoke(
        &self,
        call: &Invocation,
        started: Instant,
    ) -> Result<Outcome, InvokeError> {
        let id = Uuid::new_v4();
        let (answer, mut answered) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= self.max_in_flight {
                return Err(InvokeError::Busy(pending.len()));
            }
            pending.insert(
                id,
                Waiter {
                    target: call.target.clone(),
                    answer,
                },
            );
        }
        // From here on the id is released however this future ends, also when
        // the HTTP caller goes away mid-wait.
        let _waiting = Waiting { invoker: self, id };
        self.counters.invoked.fetch_add(1, Ordering::Relaxed);

        let topic = request_topic(&call.target, &call.method, &self.client_prefix, &id);
        let reply_to = answer_topic(&topic);
        let route = ResponseRoute {
            topic: &reply_to,
            correlation: id.as_bytes(),
        };
        let payload = Bytes::copy_from_slice(call.request.as_bytes());
        if let Err(error) = self
            .link
            .request(&topic, payload, QoS::AtLeastOnce, &route)
            .await
        {
            self.counters
                .publish_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err(InvokeError::Publish(error));
        }

        let deadline = started + call.timeout;
        let response = match tokio::time::timeout_at(deadline.into(), &mut answered).await {
            Ok(Ok(response)) => Some(response),
            // The sender is only dropped with the whole invoker.
            Ok(Err(_)) => None,
            // The answer may have been matched in the instant the timer fired.
            Err(_) => answered.try_recv().ok(),
        };
        let elapsed = started.elapsed();
        Ok(match response {
            Some(response) => {
                self.counters.answered.fetch_add(1, Ordering::Relaxed);
                Outcome::Answered { response, elapsed }
            }
            None => {
                self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
                Outcome::TimedOut { elapsed }
            }
        })
    }

    /// Hands an answer from the broker to the invocation waiting for it.
    pub(super) fn on_answer(&self, answer: &Inbound) {
        let Some((target, topic_id)) = parse_answer_topic(&answer.topic, &self.client_prefix)
        else {
            self.counters
                .unmatched_answers
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        // MQTT 5 devices echo the correlation data; it must agree with the topic.
        let echoed = answer.properties.correlation_data.as_deref();
        if echoed.is_some_and(|echoed| echoed != topic_id.as_bytes()) {
            tracing::warn!(topic = %answer.topic, "answer's correlation data disagrees with its topic; dropped");
            self.counters
                .unmatched_answers
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let waiter = {
            let mut pending = lock(&self.pending);
            match pending.get(&topic_id) {
                Some(waiter) if waiter.target == target => pending.remove(&topic_id),
                _ => None,
            }
        };
        match waiter {
            // The caller may have left in between; then nobody is told.
            Some(waiter) => drop(waiter.answer.send(answer.payload.clone())),
            None if lock(&self.expired).contains(&topic_id) => {
                tracing::debug!(topic = %answer.topic, "answer after the invocation timed out; dropped");
                self.counters.late_answers.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                tracing::debug!(topic = %answer.topic, "answer to no known invocation; dropped");
                self.counters
                    .unmatched_answers
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> InvokeStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &self.counters;
        InvokeStats {
            invoked: read(&counters.invoked),
            answered: read(&counters.answered),
            timed_out: read(&counters.timed_out),
            late_answers: read(&counters.late_answers),
            unmatched_answers: read(&counters.unmatched_answers),
            publish_failures: read(&counters.publish_failures),
        }
    }
}

/// Releases an invocation's message id when its wait ends, for whatever reason;
/// an id still pending then was given up, so its answer will be late.
struct Waiting<'a> {
    invoker: &'a Invoker,
    id: Uuid,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if lock(&self.invoker.pending).remove(&self.id).is_some() {
            lock(&self.invoker.expired).insert(self.id);
        }
    }
}

/// A bounded memory of message ids, forgetting the oldest first.
#[derive(Default)]
struct ExpiredIds {
    order: VecDeque<Uuid>,
    ids: HashSet<Uuid>,
}

impl ExpiredIds {
    fn insert(&mut self, id: Uuid) {
        if self.order.len() == EXPIRED_MEMORY
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.order.push_back(id);
        self.ids.insert(id);
    }

    fn contains(&self, id: &Uuid) -> bool {
        self.ids.contains(id)
    }
}

/// The maps are only touched for a moment and never across an `.await`, so a
/// panic while one is held is a bug elsewhere; the data stays usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The topic a request for `target` is published on.
pub fn request_topic(target: &str, method: &str, client_prefix: &str, id: &Uuid) -> String {
    format!("{target}/{method}/{client_prefix}/{}", id.hyphenated())
}

/// The topic the device answers a request on.
pub fn answer_topic(request_topic: &str) -> String {
    format!("{request_topic}/ack")
}

/// The filter that catches every answer to this gateway's requests.
pub fn answer_filter(client_prefix: &str) -> String {
    format!("+/+/{client_prefix}/+/ack")
}

/// The target and message id of an answer topic.
fn parse_answer_topic<'a>(topic: &'a str, client_prefix: &str) -> Option<(&'a str, Uuid)> {
    let mut levels = topic.split('/');
    let (target, _method, prefix, id, ack) = (
        levels.next()?,
        levels.next()?,
        levels.next()?,
        levels.next()?,
        levels.next()?,
    );
    if prefix != client_prefix || ack != "ack" || levels.next().is_some() {
        return None;
    }
    Some((target, Uuid::parse_str(id).ok()?))
}

/// A device id, method or prefix must be one plain topic level.
pub(super) fn check_topic_level(level: &str) -> Result<(), String> {
    if level.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(bad) = level.chars().find(|c| matches!(c, '/' | '+' | '#' | '\0')) {
        return Err(format!(
            "must be a single MQTT topic level; `{bad}` is not allowed"
        ));
    }
    if level.starts_with('$') {
        return Err("must not start with `$` (reserved by brokers)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_topic_round_trips_target_and_id() {
        let id = Uuid::new_v4();
        let request = request_topic("Device001", "unlock", "rulegate", &id);
        assert_eq!(
            request,
            format!("Device001/unlock/rulegate/{}", id.hyphenated())
        );
        let answer = answer_topic(&request);
        assert_eq!(
            parse_answer_topic(&answer, "rulegate"),
            Some(("Device001", id))
        );
        assert_eq!(parse_answer_topic(&answer, "other"), None);
        assert_eq!(parse_answer_topic(&request, "rulegate"), None);
        assert_eq!(parse_answer_topic(&format!("{answer}/x"), "rulegate"), None);
        assert_eq!(
            parse_answer_topic("Device001/unlock/rulegate/not-an-id/ack", "rulegate"),
            None
        );
    }

    #[test]
    fn topic_levels_refuse_separators_wildcards_and_system_topics() {
        assert!(check_topic_level("Device001").is_ok());
        for bad in ["", "a/b", "a+", "#", "$SYS"] {
            assert!(check_topic_level(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expired_ids_forget_the_oldest_beyond_their_bound() {
        let mut expired = ExpiredIds::default();
        let first = Uuid::new_v4();
        expired.insert(first);
        for _ in 0..EXPIRED_MEMORY {
            expired.insert(Uuid::new_v4());
        }
        assert!(!expired.contains(&first));
        assert_eq!(expired.ids.len(), EXPIRED_MEMORY);
    }
}

//! One sink's queue and workers: a bounded queue (submitters wait for room),
//! `concurrency` workers each taking the deliveries of their ordering keys in
//! order, and the retry loop with exponential backoff and jitter.

use super::config::{DeliveryPolicy, SinkKind};
use super::destination::{DeliveryError, Destination};
use super::stats::{SinkCounters, SinkStats};
use super::{Delivery, FailedDelivery, SubmitError};
use rand::Rng as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A running sink: where [`super::Sinks`] queues its deliveries.
pub(crate) struct SinkLane {
    kind: SinkKind,
    /// One permit per delivery the sink may hold; a permit is returned when its
    /// delivery is finished, which bounds memory however slow the service is.
    room: Arc<Semaphore>,
    /// The queue of each worker. They are unbounded channels, but together
    /// never hold more than `room` allows.
    workers: Vec<mpsc::UnboundedSender<Job>>,
    handles: Vec<JoinHandle<()>>,
    counters: Arc<SinkCounters>,
    name: Arc<str>,
}

/// A delivery waiting for, or in, a worker.
struct Job {
    delivery: Delivery,
    submitted_at: Instant,
    _room: OwnedSemaphorePermit,
}

impl SinkLane {
    pub fn start(
        name: &str,
        kind: SinkKind,
        destination: Destination,
        policy: DeliveryPolicy,
        failures: mpsc::Sender<FailedDelivery>,
    ) -> Self {
        let name: Arc<str> = name.into();
        let destination = Arc::new(destination);
        let counters = Arc::new(SinkCounters::default());
        let (workers, handles) = (0..policy.concurrency)
            .map(|_| {
                let (queue, jobs) = mpsc::unbounded_channel();
                let worker = Worker {
                    sink: Arc::clone(&name),
                    destination: Arc::clone(&destination),
                    policy,
                    counters: Arc::clone(&counters),
                    failures: failures.clone(),
                };
                (queue, tokio::spawn(worker.run(jobs)))
            })
            .unzip();
        SinkLane {
            kind,
            room: Arc::new(Semaphore::new(policy.queue_capacity)),
            workers,
            handles,
            counters,
            name,
        }
    }

    pub fn kind(&self) -> SinkKind {
        self.kind
    }

    pub fn stats(&self) -> SinkStats {
        self.counters.snapshot()
    }

    /// Waits for room, then hands `delivery` to the worker of its ordering key.
    pub async fn submit(&self, delivery: Delivery) -> Result<(), SubmitError> {
        let room = Arc::clone(&self.room)
            .acquire_owned()
            .await
            .map_err(|_| self.stopped())?;
        self.enqueue(room, delivery)
    }

    /// Hands `delivery` over only if there is room now; never waits.
    pub fn try_submit(&self, delivery: Delivery) -> Result<(), SubmitError> {
        let room = Arc::clone(&self.room)
            .try_acquire_owned()
            .map_err(|error| match error {
                TryAcquireError::Closed => self.stopped(),
                TryAcquireError::NoPermits => SubmitError::Full {
                    sink: self.name.to_string(),
                },
            })?;
        self.enqueue(room, delivery)
    }

    fn enqueue(&self, room: OwnedSemaphorePermit, delivery: Delivery) -> Result<(), SubmitError> {
        // `workers` is never empty: `concurrency` is validated to be at least 1.
        let index = delivery.ordering_key % self.workers.len() as u64;
        let queue = &self.workers[index as usize];
        self.counters.queued();
        let job = Job {
            delivery,
            submitted_at: Instant::now(),
            _room: room,
        };
        queue.send(job).map_err(|_| {
            self.counters.withdrawn();
            self.stopped()
        })
    }

    fn stopped(&self) -> SubmitError {
        SubmitError::Stopped {
            sink: self.name.to_string(),
        }
    }

    /// Stops taking work; the returned future finishes with the final
    /// counters once the workers have delivered everything queued.
    pub fn close(self) -> impl Future<Output = SinkStats> {
        let SinkLane {
            workers,
            handles,
            counters,
            name,
            ..
        } = self;
        drop(workers);
        async move {
            for handle in handles {
                if let Err(error) = handle.await {
                    tracing::error!(sink = %name, %error, "a sink worker ended abnormally");
                }
            }
            counters.snapshot()
        }
    }
}

/// Delivers the jobs of some ordering keys, one at a time.
struct Worker {
    sink: Arc<str>,
    destination: Arc<Destination>,
    policy: DeliveryPolicy,
    counters: Arc<SinkCounters>,
    failures: mpsc::Sender<FailedDelivery>,
}

impl Worker {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = jobs.recv().await {
            self.deliver(job).await;
        }
    }

    /// Tries `job` until it is delivered, cannot succeed, or has used its
    /// attempts; then reports a failure. The job's queue room is held until
    /// the end, so a failing sink slows its submitters instead of piling up.
    async fn deliver(&self, job: Job) {
        let Job {
            delivery,
            submitted_at,
            _room,
        } = job;
        let mut attempt = 1;
        loop {
            let error = match self.attempt(&delivery).await {
                Ok(()) => {
                    self.counters.delivered(submitted_at.elapsed());
                    return;
                }
                Err(error) => error,
            };
            if error.retryable && attempt < self.policy.attempts {
                tracing::warn!(
                    rule = %delivery.rule, sink = %self.sink, attempt, cause = %error.cause,
                    "delivery failed; retrying"
                );
                self.counters.retried();
                tokio::time::sleep(backoff(&self.policy, attempt)).await;
                attempt += 1;
                continue;
            }
            tracing::error!(
                rule = %delivery.rule, sink = %self.sink, attempt, cause = %error.cause,
                "delivery failed; handing it to the rule's error action"
            );
            self.counters.failed();
            let failed = FailedDelivery {
                sink: self.sink.to_string(),
                delivery,
                cause: error.cause,
                attempts: attempt,
            };
            if self.failures.send(failed).await.is_err() {
                tracing::error!(sink = %self.sink, "nobody handles failed deliveries any more; dropped one");
            }
            return;
        }
    }

    /// One attempt, bounded by the sink's timeout so that a hung service
    /// cannot hold a worker forever.
    async fn attempt(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let timeout = self.policy.timeout;
        tokio::time::timeout(timeout, self.destination.deliver(delivery))
            .await
            .unwrap_or_else(|_| {
                Err(DeliveryError::transient(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                )))
            })
    }
}

/// The wait after failed attempt `attempt` (1-based): the initial backoff
/// doubled per attempt, capped, with "equal jitter" — half of it fixed, half
/// random — so that retries from many workers spread out yet never shrink to
/// nothing.
fn backoff(policy: &DeliveryPolicy, attempt: u32) -> Duration {
    let doubling = 2u32.saturating_pow(attempt.saturating_sub(1));
    let capped = policy
        .initial_backoff
        .saturating_mul(doubling)
        .min(policy.max_backoff);
    let half = capped / 2;
    let half_micros = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
    half + Duration::from_micros(rand::rng().random_range(0..=half_micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(initial_ms: u64, max_ms: u64) -> DeliveryPolicy {
        DeliveryPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(initial_ms),
            max_backoff: Duration::from_millis(max_ms),
            timeout: Duration::from_secs(1),
            queue_capacity: 1,
            concurrency: 1,
        }
    }

    #[test]
    fn backoff_doubles_per_attempt_within_half_jitter_and_stops_at_the_cap() {
        let policy = policy(200, 1_000);
        for (attempt, full_ms) in [(1, 200), (2, 400), (3, 800), (4, 1_000), (30, 1_000)] {
            let full = Duration::from_millis(full_ms);
            for _ in 0..100 {
                let wait = backoff(&policy, attempt);
                assert!(
                    wait >= full / 2 && wait <= full,
                    "attempt {attempt}: {wait:?} outside {:?}..={full:?}",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn backoff_survives_huge_attempt_counts_and_settings() {
        let policy = policy(u64::MAX / 4, u64::MAX / 2);
        let wait = backoff(&policy, u32::MAX);
        assert!(wait <= policy.max_backoff);
    }
}

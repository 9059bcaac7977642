//! One sink's reader and workers: the reader takes the sink's deliveries
//! from the outbox in order (once caught up, as the outbox writer hands them
//! over), as far as the sink has room, and hands each to the worker of its
//! ordering key; `concurrency` workers deliver, with retries
//! (exponential backoff and jitter), and settle each delivery in the outbox.
//! An mqtt sink's worker keeps several publishes in flight, as a connection
//! brings them to the broker in order; it settles each on its acknowledgement.

use super::config::{DeliveryPolicy, SinkKind};
use super::destination::{DeliveryError, Destination, Retry, Sent};
use super::stats::{SinkCounters, SinkStats};
use super::{Confirmation, Delivery, FailedDelivery};
use crate::outbox::{Outbox, SinkId};
use rand::Rng as _;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Publishes one worker has queued on its connection and awaits the broker's
/// acknowledgement of, at most (an mqtt sink's; the others' attempts end when
/// the service has the delivery).
const IN_FLIGHT_PER_WORKER: usize = 32;
/// Deliveries read from the outbox at once, at most.
const READ_BATCH: usize = 256;
/// The wait before reading the outbox again after a read failed.
const RETRY_READ_AFTER: Duration = Duration::from_secs(1);

/// A running sink.
pub(crate) struct SinkLane {
    kind: SinkKind,
    lane: Lane,
    reader: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

/// A delivery in a worker's queue or under way.
struct Job {
    /// Its id in the outbox.
    id: u64,
    delivery: Arc<Delivery>,
    taken_at: Instant,
    /// Held until the delivery is settled: bounds what the sink holds in memory.
    _room: OwnedSemaphorePermit,
}

/// What a sink's reader and workers share.
#[derive(Clone)]
struct Lane {
    sink: Arc<str>,
    id: SinkId,
    outbox: Outbox,
    counters: Arc<SinkCounters>,
}

impl SinkLane {
    /// Starts reading sink `id`'s deliveries from `outbox`. Once `closing`
    /// turns true the sink ends as soon as the outbox holds nothing more for
    /// any sink, so failure reports of the last deliveries still go out.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        name: &str,
        kind: SinkKind,
        id: SinkId,
        destination: Destination,
        policy: DeliveryPolicy,
        outbox: Outbox,
        closing: watch::Receiver<bool>,
        failures: mpsc::Sender<FailedDelivery>,
    ) -> Self {
        let lane = Lane {
            sink: name.into(),
            id,
            outbox,
            counters: Arc::new(SinkCounters::default()),
        };
        let destination = Arc::new(destination);
        let (queues, workers) = (0..policy.concurrency)
            .map(|_| {
                let (queue, jobs) = mpsc::unbounded_channel();
                let worker = Worker {
                    lane: lane.clone(),
                    destination: Arc::clone(&destination),
                    policy,
                    failures: failures.clone(),
                };
                (queue, tokio::spawn(worker.run(jobs)))
            })
            .unzip();
        let room = Arc::new(Semaphore::new(policy.queue_capacity));
        let reader = Reader {
            lane: lane.clone(),
            room,
            queues,
        };
        let reader = tokio::spawn(reader.run(closing));
        SinkLane {
            kind,
            lane,
            reader,
            workers,
        }
    }

    pub fn kind(&self) -> SinkKind {
        self.kind
    }

    pub fn id(&self) -> SinkId {
        self.lane.id
    }

    pub fn stats(&self) -> SinkStats {
        self.lane.counters.snapshot()
    }

    /// Resolves with the final counters once the reader has ended (see
    /// [`SinkLane::start`]) and the workers have finished their queues, or at
    /// `deadline`, when what is still under way is stopped: it stays in the
    /// outbox, for the next start.
    pub async fn finish(self, deadline: Instant) -> SinkStats {
        let name = &self.lane.sink;
        for mut handle in std::iter::once(self.reader).chain(self.workers) {
            let ended = match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(ended) => ended,
                Err(_) => {
                    handle.abort();
                    handle.await
                }
            };
            match ended {
                Err(error) if !error.is_cancelled() => {
                    tracing::error!(sink = %name, %error, "a sink task ended abnormally");
                }
                _ => {}
            }
        }
        self.lane.counters.snapshot()
    }
}

/// The sink's reader: takes its deliveries in id order while it has room,
/// and queues each for the worker of its ordering key.
struct Reader {
    lane: Lane,
    room: Arc<Semaphore>,
    queues: Vec<mpsc::UnboundedSender<Job>>,
}

impl Reader {
    async fn run(self, mut closing: watch::Receiver<bool>) {
        let lane = &self.lane;
        let mut stored = lane.outbox.records();
        let mut handed = lane.outbox.follow(lane.id);
        // The id of the last delivery taken.
        let mut after = 0;
        // Whether everything committed so far has been read.
        let mut caught_up = false;
        loop {
            if !caught_up {
                let limit = self.room.available_permits().clamp(1, READ_BATCH);
                let batch = match lane.outbox.read(lane.id, after, limit).await {
                    Ok(batch) => batch,
                    Err(error) => {
                        tracing::error!(sink = %lane.sink, "reading the outbox: {error:#}; trying again in {RETRY_READ_AFTER:?}");
                        tokio::time::sleep(RETRY_READ_AFTER).await;
                        continue;
                    }
                };
                caught_up = batch.is_empty();
                for (id, delivery) in batch {
                    after = id;
                    if !self.queue(id, delivery.map(Arc::new)).await {
                        return;
                    }
                }
                continue;
            }
            let closing_now = *closing.borrow();
            if closing_now && *stored.borrow_and_update() == 0 {
                return;
            }
            // Every arm but a delivery handed over in step leads to reading
            // the outbox again.
            tokio::select! {
                () = lane.outbox.stored(lane.id) => caught_up = false,
                Some(handed) = handed.recv() => {
                    // Otherwise it was read already, or one before it was
                    // not handed over: the next commit's read finds them.
                    if handed.after == after {
                        after = handed.id;
                        if !self.queue(handed.id, Ok(handed.delivery)).await {
                            return;
                        }
                    }
                }
                // In a block: the guard `wait_for` gives is not `Send`.
                gone = async { closing.wait_for(|&closing| closing).await.is_err() }, if !closing_now => {
                    if gone {
                        // The sinks were dropped without a shutdown: nobody
                        // waits for this reader, and what is stored stays.
                        return;
                    }
                    caught_up = false;
                }
                _ = stored.changed(), if closing_now => caught_up = false,
            }
        }
    }

    /// Queues delivery `id` for its worker once the sink has room; false when
    /// the sink is stopping.
    async fn queue(&self, id: u64, delivery: Result<Arc<Delivery>, String>) -> bool {
        let lane = &self.lane;
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(cause) => {
                tracing::error!(sink = %lane.sink, id, "an outbox record cannot be read ({cause}): removed");
                lane.counters.unreadable();
                lane.settle(id, None);
                return true;
            }
        };
        let Ok(room) = self.room.clone().acquire_owned().await else {
            return false;
        };
        lane.counters.queued();
        // `queues` is never empty: `concurrency` is validated to be at least 1.
        let queue = &self.queues[(delivery.ordering_key % self.queues.len() as u64) as usize];
        let job = Job {
            id,
            delivery,
            taken_at: Instant::now(),
            _room: room,
        };
        if queue.send(job).is_err() {
            tracing::error!(sink = %lane.sink, "a sink worker has stopped");
            return false;
        }
        true
    }
}

impl Lane {
    /// Removes delivery `id` from the outbox, storing `replacement` instead.
    fn settle(&self, id: u64, replacement: Option<(SinkId, Delivery)>) {
        if self.outbox.settle(self.id, id, replacement).is_err() {
            // Stays stored: delivered again after the next start.
            tracing::error!(sink = %self.sink, id, "the outbox has stopped; the delivery stays stored");
        }
    }
}

/// Delivers the jobs of some ordering keys, one after another.
struct Worker {
    lane: Lane,
    destination: Arc<Destination>,
    policy: DeliveryPolicy,
    failures: mpsc::Sender<FailedDelivery>,
}

/// A job whose first attempt is queued on a connection, awaiting the service's
/// confirmation.
struct InFlight {
    job: Job,
    confirmation: Confirmation,
    /// When the attempt counts as unanswered.
    deadline: Instant,
}

impl Worker {
    /// Takes jobs in order and sends each. A job whose attempt is only queued
    /// (an mqtt publish) waits for its confirmation in the worker's window,
    /// while the next ones are sent; any other is concluded at once.
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut window = VecDeque::new();
        loop {
            let room = window.len() < IN_FLIGHT_PER_WORKER;
            let next = tokio::select! {
                biased;
                confirmed = front_confirmed(&mut window, &self.policy), if !window.is_empty() => {
                    Next::Confirmed(confirmed)
                }
                job = jobs.recv(), if room => Next::Job(job),
            };
            let job = match next {
                Next::Confirmed(confirmed) => {
                    let front = window.pop_front().expect("the front was confirmed");
                    self.conclude(front.job, confirmed).await;
                    continue;
                }
                Next::Job(Some(job)) => job,
                Next::Job(None) => break,
            };
            let deadline = Instant::now() + self.policy.timeout;
            match self.send(&job, deadline).await {
                Ok(Sent::Done) => self.conclude(job, Ok(())).await,
                Ok(Sent::Queued(confirmation)) => window.push_back(InFlight {
                    job,
                    confirmation,
                    deadline,
                }),
                Err(error) => self.conclude(job, Err(error)).await,
            }
        }
        // The queue has closed: what is in flight is still settled.
        while !window.is_empty() {
            let confirmed = front_confirmed(&mut window, &self.policy).await;
            let front = window.pop_front().expect("the window is not empty");
            self.conclude(front.job, confirmed).await;
        }
    }

    /// Settles `job` when its first attempt succeeded; otherwise tries it again
    /// until it is delivered, cannot succeed, or has used its attempts, then
    /// settles it, or reports the failure, whose handler settles it. The job's
    /// room is held until the end, so a failing sink reads no further ahead.
    async fn conclude(&self, job: Job, first_attempt: Result<(), DeliveryError>) {
        let (sink, counters) = (&self.lane.sink, &self.lane.counters);
        // Attempts the service answered, which the sink's `attempts` bound;
        // every failed try, which sets the backoff.
        let (mut attempt, mut tries) = (1, 1);
        let mut outcome = first_attempt;
        loop {
            let error = match outcome {
                Ok(()) => {
                    counters.delivered(job.taken_at.elapsed());
                    self.lane.settle(job.id, None);
                    return;
                }
                Err(error) => error,
            };
            let delivery = &job.delivery;
            let again = match error.retry {
                Retry::WhenReachable => true,
                Retry::WithinAttempts => attempt < self.policy.attempts,
                Retry::Never => false,
            };
            if again {
                tracing::warn!(
                    rule = %delivery.rule, sink = %sink, attempt, cause = %error.cause,
                    "delivery failed; retrying"
                );
                counters.retried();
                tokio::time::sleep(backoff(&self.policy, tries)).await;
                tries += 1;
                if error.retry == Retry::WithinAttempts {
                    attempt += 1;
                }
                outcome = self.attempt(&job).await;
                continue;
            }
            tracing::error!(
                rule = %delivery.rule, sink = %sink, attempt, cause = %error.cause,
                "delivery failed; handing it to the rule's error action"
            );
            counters.failed();
            let failed = FailedDelivery {
                sink: sink.to_string(),
                id: job.id,
                // Still shared only while the writer has yet to store it.
                delivery: Arc::unwrap_or_clone(job.delivery),
                cause: error.cause,
                attempts: attempt,
            };
            if self.failures.send(failed).await.is_err() {
                tracing::error!(sink = %sink, id = job.id, "nobody handles failed deliveries any more; it stays stored");
            }
            return;
        }
    }

    /// One whole attempt: sent, and confirmed when it was only queued.
    async fn attempt(&self, job: &Job) -> Result<(), DeliveryError> {
        let deadline = Instant::now() + self.policy.timeout;
        match self.send(job, deadline).await? {
            Sent::Done => Ok(()),
            Sent::Queued(mut confirmation) => {
                confirmed(&mut confirmation, deadline, &self.policy).await
            }
        }
    }

    /// Sends `job`'s delivery, bounded by `deadline` so that a hung service
    /// cannot hold a worker forever.
    async fn send(&self, job: &Job, deadline: Instant) -> Result<Sent, DeliveryError> {
        let name = self.lane.outbox.delivery_name(job.id);
        tokio::time::timeout_at(deadline, self.destination.send(&job.delivery, name))
            .await
            .unwrap_or_else(|_| Err(unanswered(&self.policy)))
    }
}

/// What a worker turns to next.
enum Next {
    /// The front of its window was confirmed, or failed.
    Confirmed(Result<(), DeliveryError>),
    /// A job came, or (`None`) the queue closed.
    Job(Option<Job>),
}

/// Resolves once the front of `window` is confirmed (never for an empty window).
async fn front_confirmed(
    window: &mut VecDeque<InFlight>,
    policy: &DeliveryPolicy,
) -> Result<(), DeliveryError> {
    match window.front_mut() {
        Some(front) => confirmed(&mut front.confirmation, front.deadline, policy).await,
        None => std::future::pending().await,
    }
}

/// Waits for `confirmation` until `deadline`.
async fn confirmed(
    confirmation: &mut Confirmation,
    deadline: Instant,
    policy: &DeliveryPolicy,
) -> Result<(), DeliveryError> {
    match tokio::time::timeout_at(deadline, confirmation).await {
        Ok(confirmed) => confirmed.map_err(DeliveryError::transient),
        Err(_) => Err(unanswered(policy)),
    }
}

fn unanswered(policy: &DeliveryPolicy) -> DeliveryError {
    DeliveryError::unreachable(format!(
        "no answer within {} ms",
        policy.timeout.as_millis()
    ))
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

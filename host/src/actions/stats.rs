//! Per-sink counters: updated by the sink's queue and workers without locks,
//! read as a plain [`SinkStats`] snapshot by the process (logs, metrics).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One sink's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Deliveries that reached the service.
    pub delivered: u64,
    /// Attempts that failed and were tried again.
    pub retried: u64,
    /// Deliveries handed back as failed after their last attempt.
    pub failed: u64,
    /// Deliveries taken from the outbox and not yet finished: waiting for a
    /// worker or under way.
    pub queued: u64,
    /// Time from entering the queue to successful delivery (queueing and
    /// retries included), summed over `latency_count` deliveries; their
    /// quotient is the mean latency.
    pub latency_total: Duration,
    /// How many deliveries `latency_total` covers.
    pub latency_count: u64,
}

/// The live counters behind [`SinkStats`].
#[derive(Debug, Default)]
pub(crate) struct SinkCounters {
    delivered: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    queued: AtomicU64,
    latency_total_micros: AtomicU64,
}

impl SinkCounters {
    pub fn queued(&self) {
        self.queued.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
    }

    /// A delivery succeeded `latency` after it was submitted.
    pub fn delivered(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_total_micros
            .fetch_add(micros, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    /// A stored delivery could not be decoded, so it was never queued.
    pub fn unreadable(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SinkStats {
        let delivered = self.delivered.load(Ordering::Relaxed);
        SinkStats {
            delivered,
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            latency_total: Duration::from_micros(self.latency_total_micros.load(Ordering::Relaxed)),
            // Every delivery is measured.
            latency_count: delivered,
        }
    }
}

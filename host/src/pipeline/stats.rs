//! Counters of the pipeline, per rule and for intake: updated with relaxed
//! atomics on the hot path, read as plain snapshots by the log summary, the
//! demo and the admin API. A rule's counters outlive its versions: a reload
//! hands them to the rule's next version.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Live counters of one rule.
#[derive(Debug, Default)]
pub struct RuleCounters {
    matched: AtomicU64,
    selected: AtomicU64,
    outputs: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    busy_micros: AtomicU64,
    latency: LatencyHistogram,
}

/// A copy of one rule's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RuleStats {
    /// Messages whose topic matched the rule's `FROM`.
    pub matched: u64,
    /// Messages the SQL selected (`WHERE` true).
    pub selected: u64,
    /// Outputs handed to actions.
    pub outputs: u64,
    /// Messages a module dropped on purpose.
    pub dropped: u64,
    /// Rule failures and failed deliveries.
    pub errors: u64,
    /// Time spent processing selected messages (module and action hand-off), in µs.
    pub busy_micros: u64,
}

impl RuleCounters {
    pub(crate) fn matched(&self) {
        self.matched.fetch_add(1, Relaxed);
    }

    pub(crate) fn selected(&self) {
        self.selected.fetch_add(1, Relaxed);
    }

    pub(crate) fn outputs(&self, count: usize) {
        self.outputs.fetch_add(count as u64, Relaxed);
    }

    pub(crate) fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// Records the time one selected message took.
    pub(crate) fn busy(&self, elapsed: Duration) {
        let micros = elapsed.as_micros() as u64;
        self.busy_micros.fetch_add(micros, Relaxed);
        self.latency.record(micros);
    }

    /// How long each selected message took.
    pub fn latency(&self) -> LatencySnapshot {
        self.latency.snapshot()
    }

    pub fn snapshot(&self) -> RuleStats {
        RuleStats {
            matched: self.matched.load(Relaxed),
            selected: self.selected.load(Relaxed),
            outputs: self.outputs.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            errors: self.errors.load(Relaxed),
            busy_micros: self.busy_micros.load(Relaxed),
        }
    }
}

/// Live counters of the intake.
#[derive(Debug, Default)]
pub struct IntakeCounters {
    received: AtomicU64,
    oversized: AtomicU64,
    not_json: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IntakeStats {
    /// Messages that came in from the broker.
    pub received: u64,
    /// Messages refused for a payload over `gateway.max_payload_bytes`.
    pub oversized: u64,
    /// Messages routed to a rule whose payload is not JSON (malformed, binary,
    /// nested too deep); the SQL sees them as binary, as AWS IoT does.
    pub not_json: u64,
}

impl IntakeCounters {
    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Relaxed);
    }

    pub(crate) fn oversized(&self) {
        self.oversized.fetch_add(1, Relaxed);
    }

    pub(crate) fn not_json(&self) {
        self.not_json.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> IntakeStats {
        IntakeStats {
            received: self.received.load(Relaxed),
            oversized: self.oversized.load(Relaxed),
            not_json: self.not_json.load(Relaxed),
        }
    }
}

/// Upper bounds of the latency buckets, in µs; a last bucket takes the rest.
/// Roughly 1-2.5-5 per decade, as Prometheus histograms usually are.
pub const LATENCY_BOUNDS_MICROS: [u64; 19] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
    250_000, 1_000_000, 5_000_000,
];

/// A histogram of processing times with fixed buckets: one relaxed increment
/// per message, no lock, and the same buckets for `/metrics` and percentiles.
#[derive(Debug, Default)]
struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_MICROS.len() + 1],
}

impl LatencyHistogram {
    fn record(&self, micros: u64) {
        let bucket = LATENCY_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: self.buckets.each_ref().map(|count| count.load(Relaxed)),
        }
    }
}

/// Bucket counts of a [`LatencyHistogram`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Messages per bucket: `counts[i]` took at most `LATENCY_BOUNDS_MICROS[i]`
    /// µs (and more than the bound before); the last took longer than all bounds.
    pub counts: [u64; LATENCY_BOUNDS_MICROS.len() + 1],
}

impl LatencySnapshot {
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket that holds quantile `q` (0 < q ≤ 1), in
    /// µs: an estimate no lower than the true value. `None` without samples,
    /// `Some(u64::MAX)` when it lies beyond the last bound.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (position, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(
                    LATENCY_BOUNDS_MICROS
                        .get(position)
                        .copied()
                        .unwrap_or(u64::MAX),
                );
            }
        }
        Some(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_the_upper_bounds_of_their_buckets() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.snapshot().quantile_upper_bound(0.5), None);
        for _ in 0..98 {
            histogram.record(7);
        }
        histogram.record(300);
        histogram.record(9_000_000);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.total(), 100);
        assert_eq!(snapshot.quantile_upper_bound(0.5), Some(10));
        assert_eq!(snapshot.quantile_upper_bound(0.99), Some(500));
        assert_eq!(snapshot.quantile_upper_bound(1.0), Some(u64::MAX));
    }

    #[test]
    fn a_sample_on_a_bound_counts_in_that_bound_s_bucket() {
        let histogram = LatencyHistogram::default();
        histogram.record(5);
        histogram.record(0);
        let counts = histogram.snapshot().counts;
        assert_eq!(counts[0], 1, "0 µs is within the first bound");
        assert_eq!(counts[2], 1, "5 µs belongs to the `le 5` bucket");
    }
}

//! Counters of the pipeline, per rule and for intake: updated with relaxed
//! atomics on the hot path, read as plain snapshots by the log summary, the
//! demo and (later) the admin API.

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

    pub(crate) fn busy(&self, elapsed: Duration) {
        self.busy_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
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

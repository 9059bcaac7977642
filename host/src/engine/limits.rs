//! Per-rule resource limits and the memory limiter that enforces them.

use serde::Deserialize;
use std::time::Duration;

/// What one rule instance may use. Defaults suit a sensor rule on a Raspberry Pi;
/// the gateway configuration overrides them per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleLimits {
    /// Wall-clock time one `on-message` call may run, in milliseconds.
    pub time_ms: u64,
    /// Linear memory the instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Total size of the outputs of one call, in bytes.
    pub output_bytes: usize,
}

impl Default for RuleLimits {
    fn default() -> Self {
        RuleLimits {
            time_ms: 100,
            memory_bytes: 32 << 20,
            output_bytes: 1 << 20,
        }
    }
}

impl RuleLimits {
    pub fn time(&self) -> Duration {
        Duration::from_millis(self.time_ms)
    }
}

/// Refuses memory growth beyond the rule's limit with an error the engine
/// recognises, so a memory bomb is reported as such rather than as the guest's
/// own allocation-failure abort.
pub(crate) struct MemoryLimiter {
    pub(crate) max_bytes: usize,
}

/// The error a guest's `memory.grow` traps with when it passes its limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (asked for {desired} bytes)")]
pub(crate) struct MemoryLimitExceeded {
    pub(crate) limit: usize,
    pub(crate) desired: usize,
}

/// Tables hold function references; no sane rule needs more than this.
pub(super) const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.max_bytes,
                desired,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

//! Sizes wasmtime's pooling instance allocator from the engine options, so that
//! creating a rule instance reuses a preallocated slot instead of mapping and
//! unmapping memory each time. Used only by `settings::wasmtime_config`. The pool
//! does not change the generated code, so artifacts do not depend on its size.

use super::EngineOptions;
use super::limits::MAX_TABLE_ELEMENTS;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Core instances one rule component may hold: its own module plus the shims
/// that `wasm-component-ld` adds (three in all for the example rules).
const CORE_INSTANCES_PER_RULE: u32 = 16;
/// Tables one rule component may hold: the module's function table and the
/// shims' indirect-call tables.
const TABLES_PER_RULE: u32 = 8;

/// Configures `config` to allocate every instance from a pool with room for
/// `options.max_instances` rules of up to `options.max_memory_bytes` each.
///
/// Each memory slot keeps wasmtime's default reservation (4 GiB plus a 32 MiB
/// guard on 64-bit hosts), which is address space, not memory: it is what lets
/// Cranelift leave out bounds checks. A reservation of only the memory limit
/// made each `on-message` call of humidity-alert 23% dearer (callgrind). A
/// kernel with a 39-bit user address space (512 GiB) still holds about a
/// hundred slots.
pub(super) fn configure(config: &mut Config, options: &EngineOptions) {
    let instances = options.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_RULE))
        .max_core_instances_per_component(CORE_INSTANCES_PER_RULE)
        .total_memories(instances)
        .max_memories_per_component(1)
        .max_memory_size(options.max_memory_bytes)
        .total_tables(instances.saturating_mul(TABLES_PER_RULE))
        .max_tables_per_component(TABLES_PER_RULE)
        .table_elements(MAX_TABLE_ELEMENTS);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
}

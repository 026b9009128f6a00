//! The one `wasmtime::Engine` a pipeline compiles and runs its stages with.

mod cache;
pub(crate) mod memory;

pub(crate) use cache::CompileCache;

use crate::limits::{EPOCH_TICK, MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Which engine-wide instrumentation the pipeline's limits need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Instrumentation {
    /// Fuel: per-message budgets, and the periodic yields that keep a
    /// CPU-bound stage from starving the others.
    pub(crate) fuel: bool,
    /// Epochs: per-message wall-clock deadlines.
    pub(crate) epochs: bool,
}

/// The pooling allocator's size: how many instances of stages can be alive at
/// once, and how large any one memory may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pool {
    /// Stage instances alive at once, across the pipeline.
    pub(crate) instances: u32,
    /// The largest memory cap of any stage, in bytes.
    pub(crate) max_memory: usize,
}

impl Pool {
    /// Slots for every memory, table and stack `instances` stage instances can
    /// use at once. Memories and tables are reserved as virtual memory, up
    /// front; they are backed by physical memory only when used.
    fn config(self) -> PoolingAllocationConfig {
        // Most components have one memory, and one table per core module.
        // Interpreted guests (Python, JavaScript) link a dozen core modules
        // sharing one memory. Headroom for that, within the per-store caps
        // that `StageLimiter` enforces anyway.
        let n = self.instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(MAX_INSTANCES as u32))
            .total_memories(n.saturating_mul(4))
            .total_tables(n.saturating_mul(MAX_TABLES as u32 / 4))
            .total_stacks(n)
            .max_memories_per_module(MAX_MEMORIES as u32)
            .max_tables_per_module(MAX_TABLES as u32)
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_memory_size(self.max_memory.min(4 << 30));
        pool
    }
}

/// Builds the engine all stages of a pipeline share: with the pooling
/// allocator if `pool` is given. With epochs on, a background thread ticks it
/// every [`EPOCH_TICK`] for as long as it lives.
pub(crate) fn new_engine(inst: Instrumentation, pool: Option<Pool>) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    if let Some(pool) = pool {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool.config()));
    }
    config.wasm_component_model(true);
    // WASIp3 async features are not used; with it on, every call costs about twice as much
    // (measured on wasmtime 48: 572 ns vs 1086 ns for a 100-byte call).
    config.concurrency_support(false);
    config.consume_fuel(inst.fuel);
    config.epoch_interruption(inst.epochs);
    let engine = Engine::new(&config)?;
    if inst.epochs {
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                // Ends once every clone of the engine (stages, stores) is gone.
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| wasmtime::Error::msg(format!("cannot start the epoch thread: {e}")))?;
    }
    Ok(engine)
}

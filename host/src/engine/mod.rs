//! The one `wasmtime::Engine` a pipeline compiles and runs its stages with.

mod cache;
pub(crate) mod memory;

pub(crate) use cache::CompileCache;

use crate::limits::{EPOCH_TICK, MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Bytes of a freed memory slot that stay mapped, reset in place, for the
/// next instance (see [`Pool::config`]): at most this much resident memory
/// per idle slot.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;
/// The same for a freed table slot (8 bytes an element).
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

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
        // Isolation (`isolate = true`) makes and drops an instance for every
        // message, so dropping one must be cheap. By default wasmtime resets a
        // freed slot with `madvise`: a system call, a TLB shootdown on every
        // core running the process, and a page fault for each page the next
        // instance touches. Kept resident, a slot is reset in place instead:
        // tables are zeroed (only the part in use, so the `memset` is small);
        // memories get the memory image copied back over the pages the
        // instance wrote, which the kernel finds for us (`PAGEMAP_SCAN`, Linux
        // 6.7+), and the rest is released as before. Either way the next
        // instance starts from the pristine image: nothing a message leaves in
        // memory or tables survives its instance. Without the scan, keeping
        // memory resident would `memset` all of it on every drop, which costs
        // more than it saves, so memories are then released as by default.
        pool.table_keep_resident(KEEP_RESIDENT_TABLE);
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(Enabled::Yes).linear_memory_keep_resident(KEEP_RESIDENT_MEMORY);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Instance, Module, Store};

    /// A module with a 2-page memory, exported as `mem`, whose first bytes
    /// are `pristine` (a data segment: the memory image).
    const MODULE: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x05, 0x03, 0x01, 0x00, 0x02, // memory section: one memory, min 2 pages
        0x07, 0x07, 0x01, 0x03, b'm', b'e', b'm', 0x02, 0x00, // export "mem" = memory 0
        0x0b, 0x0e, 0x01, 0x00, 0x41, 0x00, 0x0b, 0x08, // data section: at i32.const 0, 8 bytes:
        b'p', b'r', b'i', b's', b't', b'i', b'n', b'e',
    ];

    /// Whatever an instance writes, inside the memory image, outside it, or
    /// in pages it grew, the next instance in the same (reused) slot starts
    /// from the pristine image, also when freed slots keep their pages.
    #[test]
    fn a_freed_slot_keeps_nothing_an_instance_wrote() {
        let pool = Pool { instances: 1, max_memory: 1 << 20 };
        let engine = new_engine(Instrumentation { fuel: false, epochs: false }, Some(pool)).unwrap();
        let module = Module::new(&engine, MODULE).unwrap();
        let page = 64 << 10;
        for round in 0..3 {
            let mut store = Store::new(&engine, ());
            let instance = Instance::new(&mut store, &module, &[]).unwrap();
            let memory = instance.get_memory(&mut store, "mem").unwrap();
            assert_eq!(memory.size(&store), 2, "round {round}: the memory is back to its initial size");
            let data = memory.data(&store);
            assert_eq!(&data[..8], b"pristine", "round {round}: the image is restored");
            assert!(data[8..].iter().all(|&b| b == 0), "round {round}: a byte written last time survived");
            memory.grow(&mut store, 1).unwrap();
            let data = memory.data_mut(&mut store);
            data[..8].copy_from_slice(b"scribble"); // in the image
            data[page + 17] = 0xaa; // outside it
            data[2 * page + 3] = 0xbb; // in a page grown since
        }
        // With one instance slot, every round reused the same memory slot. Where
        // the kernel can scan for written pages, the freed slot kept them
        // resident: the path that resets them in place was the one tested.
        let metrics = engine.pooling_allocator_metrics().unwrap();
        assert_eq!(metrics.unused_warm_memories(), 1);
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            assert!(metrics.unused_memory_bytes_resident() > 0, "the freed slot kept no page resident");
        }
    }
}

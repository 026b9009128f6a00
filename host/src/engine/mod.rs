//! The one `wasmtime::Engine` a pipeline compiles and runs its stages with.

mod cache;

pub(crate) use cache::CompileCache;

use crate::limits::EPOCH_TICK;
use wasmtime::{Config, Engine};

/// Which engine-wide instrumentation the pipeline's limits need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Instrumentation {
    /// Fuel: per-message budgets, and the periodic yields that keep a
    /// CPU-bound stage from starving the others.
    pub(crate) fuel: bool,
    /// Epochs: per-message wall-clock deadlines.
    pub(crate) epochs: bool,
}

/// Builds the engine all stages of a pipeline share. With epochs on, a
/// background thread ticks it every [`EPOCH_TICK`] for as long as it lives.
pub(crate) fn new_engine(inst: Instrumentation) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
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

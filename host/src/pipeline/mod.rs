//! A pipeline: built from its config (every stage compiled, linked and
//! initialised once), then run as tasks joined by bounded channels.

mod applied;
mod batch_size;
mod builder;
mod checkpoint;
mod connectors;
mod dead_letter;
mod error;
mod events;
mod halt;
mod in_flight;
mod job;
mod loader;
mod reload;
mod runner;
mod running;
mod sink;
mod slots;
mod source;
mod stage_task;
mod stats;
mod tap;
mod task;

pub use builder::{CompiledStage, compile};
pub use dead_letter::Kind as DeadLetterErrorKind;
pub use error::{BuildError, RunError, StageLoadError};
pub use events::LiveStats;
pub use reload::{Plugin, ReloadError, Reloaded, Reloader};
pub use stats::{DeadLetterCounts, RunReport, StageReport, StageStats, Stats, Summary};
pub use tap::{DEFAULT_TAP_RATE, MAX_TAP_RATE, TAP_VALUE_BYTES, TapError, TapListener, TappedMessage, Taps};

use crate::config::PipelineConfig;
use crate::connect::{MemorySink, MemorySource};
use crate::stage::StageInstance;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// A pipeline ready to run. See the crate docs for an example.
pub struct Pipeline {
    config: PipelineConfig,
    stages: Vec<BuiltStage>,
    events: events::Events,
    /// The stages' state, if any stage keeps state.
    state: Option<Arc<crate::state::StateStore>>,
    /// Connectors handed over in code, in place of the config's.
    given: connectors::Given,
    /// One tap point per stage, for `sluice tap`.
    taps: tap::Taps,
    reloader: Reloader,
}

struct BuiltStage {
    runner: runner::Runner,
    exec: crate::config::Execution,
    /// The instance made at build time to check `init`; the run starts with it.
    first: Option<StageInstance>,
    /// Where a reloaded component comes to replace this one.
    swaps: Option<tokio::sync::mpsc::Receiver<reload::Swap>>,
}

impl Pipeline {
    /// Reads a pipeline file and builds it.
    pub async fn from_file(path: impl AsRef<Path>) -> Result<Self, BuildError> {
        let config = PipelineConfig::from_file(path)?;
        Self::build(config).await
    }

    /// Checks the config, then loads, links and initialises every stage.
    /// Reports every stage that failed, not just the first.
    pub async fn build(config: PipelineConfig) -> Result<Self, BuildError> {
        builder::build(config).await
    }

    /// The run's counters: take a [`LiveStats::snapshot`] while
    /// [`Pipeline::run`] goes on (for progress, or an exporter).
    pub fn stats(&self) -> LiveStats {
        LiveStats(self.events.clone())
    }

    /// What swaps a stage's component while [`Pipeline::run`] goes on.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The stages' taps: [`Taps::listen`] samples what leaves a stage while
    /// [`Pipeline::run`] goes on.
    pub fn taps(&self) -> Taps {
        self.taps.clone()
    }

    /// The config this pipeline was built from.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Reads messages from `source` instead of the source the config names.
    pub fn with_source(mut self, source: MemorySource) -> Self {
        self.given.source = Some(source);
        self
    }

    /// Writes outputs to `sink` instead of the sink the config names.
    pub fn with_sink(mut self, sink: MemorySink) -> Self {
        self.given.sink = Some(sink);
        self
    }

    /// Writes dead letters to `sink` instead of the dead-letter file.
    pub fn with_dead_letters(mut self, sink: MemorySink) -> Self {
        self.given.dead_letters = Some(sink);
        self
    }

    /// Runs the pipeline to the end of its input. Output files appear, whole,
    /// only if the run succeeds.
    pub async fn run(self) -> Result<RunReport, RunError> {
        running::run(self, std::future::pending()).await
    }

    /// Like [`Pipeline::run`], but when `shutdown` completes the source stops
    /// reading and the messages already read drain through the pipeline
    /// (within `shutdown_timeout`). The report then says where the input
    /// stopped ([`RunReport::stopped_after`]), so a rerun can resume.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<RunReport, RunError> {
        running::run(self, shutdown).await
    }
}

/// Why [`run_blocking`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The run failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Builds and runs a pipeline, blocking the calling thread until it ends.
///
/// Works from a plain `fn main` and from inside a running tokio runtime (even
/// a single-threaded one, e.g. in `#[tokio::test]` or a notebook kernel): the
/// pipeline gets its own runtime on its own thread, so there is never a
/// "Cannot start a runtime from within a runtime".
pub fn run_blocking(config: PipelineConfig) -> Result<RunReport, Error> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| BuildError::Engine(format!("cannot start the async runtime: {e}")))?;
                runtime.block_on(async {
                    let pipeline = Pipeline::build(config).await?;
                    Ok(pipeline.run().await?)
                })
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

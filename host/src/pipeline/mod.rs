//! A pipeline: built from its config (every stage compiled, linked and
//! initialised once), then run as tasks joined by bounded channels.

mod builder;
mod dead_letter;
mod error;
mod running;
mod stage_task;
mod stats;

pub use error::{BuildError, RunError, StageLoadError};
pub use stats::{RunReport, StageReport, Stats};

use crate::config::PipelineConfig;
use crate::stage::{StageInstance, StagePre};
use std::path::Path;
use std::sync::Arc;

/// A pipeline ready to run. See the crate docs for an example.
pub struct Pipeline {
    config: PipelineConfig,
    stages: Vec<BuiltStage>,
    stats: Arc<Stats>,
}

struct BuiltStage {
    pre: Arc<StagePre>,
    exec: crate::config::Execution,
    /// The instance made at build time to check `init`; the run starts with it.
    first: StageInstance,
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

    /// Live counters, readable while [`Pipeline::run`] goes on (for progress).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The config this pipeline was built from.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Runs the pipeline to the end of its input. Output files appear, whole,
    /// only if the run succeeds.
    pub async fn run(self) -> Result<RunReport, RunError> {
        running::run(self).await
    }
}

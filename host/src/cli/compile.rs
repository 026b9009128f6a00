use anyhow::Result;
use sluice::PipelineConfig;
use std::path::PathBuf;
use std::time::Instant;

/// Compile every stage of a pipeline into the compile cache, so that the next
/// `sluice run` starts without compiling. Runs no guest code.
#[derive(clap::Args)]
pub(crate) struct CompileCommand {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
}

impl CompileCommand {
    pub(crate) async fn execute(self) -> Result<()> {
        let config = PipelineConfig::from_file(&self.pipeline)?;
        let started = Instant::now();
        let stages = sluice::compile(&config).await?;
        for stage in &stages {
            let how = if stage.from_cache { "already cached" } else { "compiled" };
            stderr!("{}: {how} ({})", stage.stage, stage.plugin.display());
        }
        let compiled = stages.iter().filter(|s| !s.from_cache).count();
        let noun = if stages.len() == 1 { "stage" } else { "stages" };
        stderr!(
            "{}: {} {noun} ready, {compiled} compiled, in {:.2?}",
            self.pipeline.display(),
            stages.len(),
            started.elapsed()
        );
        Ok(())
    }
}

use anyhow::Result;
use sluice::{Pipeline, PipelineConfig};
use std::path::PathBuf;

/// Check a pipeline file and load every stage, without reading any input.
#[derive(clap::Args)]
pub(crate) struct CheckCommand {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
}

impl CheckCommand {
    pub(crate) async fn execute(self) -> Result<()> {
        let config = PipelineConfig::from_file(&self.pipeline)?;
        let pipeline = Pipeline::build(config).await?;
        let names: Vec<&str> = pipeline.config().stages().iter().map(|s| s.name()).collect();
        eprintln!("{}: ok ({} stages: {})", self.pipeline.display(), names.len(), names.join(" → "));
        Ok(())
    }
}

use anyhow::{Context, Result};
use sluice::{Pipeline, PipelineConfig, Stats};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Run a pipeline over its input.
///
/// Output and dead-letter files are written whole when the run completes; a
/// failed run leaves them untouched.
#[derive(clap::Args)]
pub(crate) struct RunCommand {
    /// The pipeline file (TOML).
    pipeline: PathBuf,

    /// Read messages from this file instead of the pipeline's source (`-` for stdin).
    #[arg(long, short)]
    input: Option<PathBuf>,

    /// Write messages to this file instead of the pipeline's sink (`-` for stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,

    /// Write dead letters to this file instead of the pipeline's.
    #[arg(long)]
    dead_letter: Option<PathBuf>,

    /// Also write the run's report as JSON to this file.
    #[arg(long)]
    report_json: Option<PathBuf>,

    /// Seconds between progress lines on long runs (0: none).
    #[arg(long, default_value_t = 10)]
    progress: u64,
}

impl RunCommand {
    pub(crate) async fn execute(self) -> Result<()> {
        let mut config = PipelineConfig::from_file(&self.pipeline)?;
        // Paths on the command line are relative to where the command runs.
        if let Some(input) = &self.input {
            config.set_input(from_cwd(input)?);
        }
        if let Some(output) = &self.output {
            config.set_output(from_cwd(output)?);
        }
        if let Some(dead) = &self.dead_letter {
            config.set_dead_letter(from_cwd(dead)?);
        }
        let dead_letter_path = config.dead_letter_path();

        let pipeline = Pipeline::build(config).await?;
        let progress = (self.progress > 0).then(|| tokio::spawn(report_progress(pipeline.stats(), self.progress)));
        let result = pipeline.run().await;
        if let Some(p) = progress {
            p.abort();
        }
        let report = result?;

        eprint!("{report}");
        if report.dead_lettered > 0 {
            eprintln!("{} dead letters written to {}", report.dead_lettered, dead_letter_path.display());
        }
        if let Some(path) = &self.report_json {
            let json = serde_json::to_vec_pretty(&report)?;
            std::fs::write(path, json).with_context(|| format!("writing the report to {}", path.display()))?;
        }
        Ok(())
    }
}

fn from_cwd(path: &Path) -> Result<PathBuf> {
    if path.as_os_str() == "-" {
        return Ok(path.to_path_buf());
    }
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

async fn report_progress(stats: Arc<Stats>, every: u64) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(every));
    tick.tick().await;
    loop {
        tick.tick().await;
        let read = stats.read.load(Relaxed);
        tracing::info!(
            "progress: {read} read, {} written, {} dead-lettered ({:.0} messages/s)",
            stats.written.load(Relaxed),
            stats.dead_lettered.load(Relaxed),
            read as f64 / started.elapsed().as_secs_f64()
        );
    }
}

use anyhow::{Result, bail};
use sluice::PipelineConfig;
use std::io::Write;
use std::path::PathBuf;

/// Print the state stages have committed, as JSON lines: one per entry, with
/// the stage, the partition (message key) for keyed stages, the key and the
/// value (as text when it is UTF-8, else as hex).
#[derive(clap::Args)]
pub(crate) struct StateCommand {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// Only this stage.
    #[arg(long)]
    stage: Option<String>,
}

impl StateCommand {
    pub(crate) async fn execute(self) -> Result<()> {
        let config = PipelineConfig::from_file(&self.pipeline)?;
        if config.state().backend == sluice::StateBackend::Memory {
            bail!("{}: the state backend is `memory`: nothing is kept after a run", self.pipeline.display());
        }
        let stages: Vec<_> =
            config.stages().iter().filter(|s| self.stage.as_deref().is_none_or(|n| n == s.name())).collect();
        if let (Some(name), true) = (&self.stage, stages.is_empty()) {
            let names: Vec<_> = config.stages().iter().map(|s| s.name()).collect();
            bail!("{}: no stage `{name}` (stages: {})", self.pipeline.display(), names.join(", "));
        }
        let path = config.state_path().expect("a pipeline read from a file has a state path");
        let mut out = std::io::stdout().lock();
        for stage in stages {
            let keyed = stage.execution().partition_by.is_some();
            for entry in sluice::state::read_state(&path, stage.name(), keyed)? {
                let mut line =
                    serde_json::json!({ "stage": stage.name(), "key": text(&entry.key), "value": text(&entry.value) });
                if let Some(partition) = &entry.partition {
                    line["partition"] = text(partition);
                }
                writeln!(out, "{line}")?;
            }
        }
        match sluice::state::read_checkpoint(&path)? {
            Some(c) if !c.complete => eprintln!(
                "{}: an unfinished run checkpointed after input line {}; `sluice run` resumes from there",
                path.display(),
                c.line
            ),
            _ => {}
        }
        Ok(())
    }
}

/// Bytes as a JSON string when they are UTF-8, else `{"hex": "..."}`.
fn text(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => serde_json::json!({ "hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
    }
}

use super::outcome::BadArgument;
use anyhow::{Result, bail};
use sluice::PipelineConfig;
use std::io::Write;
use std::path::PathBuf;

/// Print the state stages have committed, as JSON lines: one per entry, with
/// the stage, the partition (message key) for keyed stages, the key and the
/// value (as text when it is UTF-8, else as hex). With `--clear`, remove it.
#[derive(clap::Args)]
pub(crate) struct StateCommand {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// Only this stage.
    #[arg(long)]
    stage: Option<String>,
    /// Remove the committed state. With `--stage`, that stage's only: an
    /// unfinished run's checkpoint is kept and the stage resumes from it
    /// empty. Without, every stage's and the checkpoint: the next run starts
    /// from the beginning. The pipeline must not be running.
    #[arg(long)]
    clear: bool,
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
            // The argument is wrong, as `sluice tap` with a stage not there.
            let message = format!("{}: no stage `{name}` (stages: {})", self.pipeline.display(), names.join(", "));
            return Err(BadArgument(message).into());
        }
        let path = config.state_path().expect("a pipeline read from a file has a state path");
        if self.clear {
            return clear(&path, self.stage.as_deref());
        }
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
        for stopped in sluice::state::read_stopped_inputs(&path)? {
            let input = stopped.input.path.as_ref().map_or("standard input".into(), |p| p.display().to_string());
            stderr!(
                "{}: a run over {input} was interrupted after input line {}; to resume it, run it again with \
                 --skip-lines {} --append",
                path.display(),
                stopped.line,
                stopped.line
            );
        }
        match sluice::state::read_checkpoint(&path)? {
            Some(c) if c.interrupted.is_some() => stderr!(
                "{}: a run was interrupted after input line {}; to resume it, run it again with --skip-lines {} \
                 --append",
                path.display(),
                c.source,
                c.source
            ),
            Some(c) if !c.complete => {
                let over = match c.input.as_ref().and_then(|i| i.path.as_ref()) {
                    Some(input) => format!(" over {}", input.display()),
                    None => String::new(),
                };
                stderr!(
                    "{}: an unfinished run{over} checkpointed after input line {}; `sluice run` resumes from there",
                    path.display(),
                    c.source
                )
            }
            _ => {}
        }
        Ok(())
    }
}

fn clear(path: &std::path::Path, stage: Option<&str>) -> Result<()> {
    let cleared = sluice::state::clear_state(path, stage)?;
    let whose = stage.map_or_else(|| "every stage".to_string(), |s| format!("stage `{s}`"));
    println!(
        "{}: removed {} state entries ({}) of {whose}",
        path.display(),
        cleared.entries,
        bytesize::ByteSize(cleared.bytes).display().iec()
    );
    if let Some(c) = cleared.checkpoint {
        println!(
            "removed the checkpoint of an unfinished run (after input line {}): the next `sluice run` starts from the \
             beginning of the input",
            c.source
        );
    }
    Ok(())
}

/// Bytes as a JSON string when they are UTF-8, else `{"hex": "..."}`.
fn text(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => serde_json::json!({ "hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
    }
}

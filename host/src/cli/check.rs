use super::outcome::{Decided, Outcome};
use anyhow::Result;
use sluice::{Pipeline, PipelineConfig};
use std::path::{Path, PathBuf};

/// Check a pipeline file, load every stage, and check the files a run opens:
/// the source can be read, and the output, dead-letter and state files can be
/// created. Reads no input. Exits 78 for anything it finds wrong, 1 if the
/// engine or the state store fails.
#[derive(clap::Args)]
pub(crate) struct CheckCommand {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
}

impl CheckCommand {
    pub(crate) async fn execute(self) -> Result<()> {
        let config = PipelineConfig::from_file(&self.pipeline)?;
        let pipeline = build(config, &FromFlags::default()).await.map_err(|e| {
            let outcome = Outcome::of_error(&e);
            anyhow::Error::from(Decided { outcome, message: e.to_string() })
        })?;
        let names: Vec<&str> = pipeline.config().stages().iter().map(|s| s.name()).collect();
        let stages = if names.len() == 1 { "stage" } else { "stages" };
        let ok = format!("{}: ok ({} {stages}: {})", self.pipeline.display(), names.len(), names.join(" → "));
        super::logging::tell(tracing::Level::INFO, &ok);
        Ok(())
    }
}

/// Builds the pipeline of `config` once its files are checked
/// ([`check_files`]), as `sluice check` and `sluice run` both do: every
/// problem at once, the files' and the stages'. Like `vector validate`, a
/// file the pipeline names that cannot be opened is a config error, as the
/// pipeline cannot run as it is; only a failure of sluice's own machinery
/// (alone) is not.
pub(crate) async fn build(config: PipelineConfig, flags: &FromFlags) -> Result<Pipeline> {
    let mut problems = check_files(&config, flags);
    let built = Pipeline::build(config).await;
    if problems.is_empty() {
        return Ok(built?);
    }
    if let Err(e) = built {
        problems.push(e.to_string());
    }
    Err(Decided { outcome: Outcome::ConfigError, message: problems.join("\n") }.into())
}

/// Which of a run's files were given on the command line rather than by the
/// pipeline file, so that a problem names the flag that set it.
#[derive(Default)]
pub(crate) struct FromFlags {
    pub(crate) input: bool,
    pub(crate) output: bool,
    pub(crate) dead_letter: bool,
}

/// What `sluice run` would fail to open, each named with its file and the
/// pipeline key (or the flag in `flags`) that sets it. `sluice run` checks
/// these before building too. (The state file's directory is checked when
/// the pipeline is built, and only if a stage keeps state.)
pub(crate) fn check_files(config: &PipelineConfig, flags: &FromFlags) -> Vec<String> {
    let file = config.file().map_or_else(String::new, |f| format!("{}: ", f.display()));
    let setting =
        |key: &str, flag: &str, from_flag: bool| if from_flag { flag.to_string() } else { format!("{file}{key}") };
    let mut problems = Vec::new();
    if let Some(input) = config.input_path()
        && let Some(reason) = cannot_read(&input)
    {
        let setting = setting("[source] path", "--input", flags.input);
        problems.push(format!("{setting}: cannot read {}: {reason}", input.display()));
    }
    let outputs = [
        (setting("[sink] path", "--output", flags.output), config.output_path()),
        (setting("[dead_letter] path", "--dead-letter", flags.dead_letter), config.dead_letter_path()),
    ];
    for (setting, path) in outputs {
        let Some(path) = path else { continue };
        if let Some(reason) = sluice::cannot_create(&path) {
            problems.push(format!("{setting}: cannot write {}: {reason}", path.display()));
        }
    }
    problems
}

/// Why the source at `path` could not be read. A FIFO or device is not
/// opened: that could wait for a writer.
fn cannot_read(path: &Path) -> Option<String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some("it does not exist".into()),
        Err(e) => return Some(e.to_string()),
    };
    if meta.is_dir() {
        return Some("it is a directory".into());
    }
    if !meta.is_file() {
        return None;
    }
    std::fs::File::open(path).err().map(|e| e.to_string())
}

use crate::config::{ConfigErrors, StagePart};
use crate::stage::LoadError;
use std::path::{Path, PathBuf};

/// A stage that could not be loaded, with where it is declared.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}stage `{stage}`: {error}{}",
    if location.is_empty() { String::new() } else { format!("{location}: ") },
    hint.as_ref().map(|h| format!(". {h}")).unwrap_or_default()
)]
pub struct StageLoadError {
    /// The stage's name.
    pub stage: String,
    /// `file:line:column` of the stage in the pipeline file.
    pub location: String,
    /// What went wrong.
    pub error: LoadError,
    /// What to try, when there is more to say than the error.
    pub hint: Option<String>,
}

impl StageLoadError {
    /// Stage `index` of `config` could not be loaded.
    pub(crate) fn new(config: &crate::config::PipelineConfig, index: usize, error: LoadError) -> Self {
        StageLoadError {
            stage: config.stages()[index].name().to_string(),
            location: config.stage_location(index, part_at_fault(&error)),
            error,
            hint: None,
        }
    }

    /// Stage `index` of `config`, which keeps state, failed in `init`: its
    /// state may be what makes it fail.
    pub(crate) fn init_with_state(config: &crate::config::PipelineConfig, index: usize, error: LoadError) -> Self {
        let mut e = Self::new(config, index, error);
        if matches!(e.error, LoadError::InitRefused(_) | LoadError::InitTrapped(_)) {
            e.hint = Some(restart_hint(&e.stage, config.file()));
        }
        e
    }
}

/// The setting a load error is about: the plugin file, or the config the
/// stage refused; else the stage as a whole.
fn part_at_fault(error: &LoadError) -> StagePart {
    match error {
        LoadError::Read { .. }
        | LoadError::NotAFile { .. }
        | LoadError::NotWasm { .. }
        | LoadError::CoreModule { .. }
        | LoadError::Invalid { .. }
        | LoadError::WrongWorld { .. }
        | LoadError::UnknownImport { .. } => StagePart::Plugin,
        LoadError::InitRefused(_) => StagePart::Config,
        _ => StagePart::Name,
    }
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The pipeline file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The WebAssembly engine could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    /// The state store could not be opened.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The stages' instances together could use more memory than the budget.
    #[error(transparent)]
    MemoryBudget(#[from] crate::engine::memory::OverBudget),
    /// One or more stages could not be loaded.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Stages(Vec<StageLoadError>),
}

/// Why a run failed. Output files are not written when a run fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The input could not be opened or read.
    #[error("cannot read input {}: {error}", path.display())]
    Input {
        /// The input file (`-` for stdin).
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// An output (sink or dead-letter file) could not be written.
    #[error("cannot write {}: {error}", path.display())]
    Output {
        /// The file (`-` for stdout).
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A fresh instance of a stage (after a trap, for more concurrency, or
    /// for an isolated message) could not be made.
    #[error(
        "stage `{stage}` cannot make a new instance: {error}. The run stopped, writing nothing; running it again \
         resumes from its last checkpoint (from the start if it took none). {}",
        restart_hint(stage, None)
    )]
    Restart {
        /// The stage's name.
        stage: String,
        /// Why the new instance failed.
        error: LoadError,
    },
    /// A stage failed too many messages in a row: the circuit breaker stopped the run.
    #[error(
        "stage `{stage}` failed {failures} messages in a row (limits.max_consecutive_failures), so the pipeline \
         stopped; the last failure: {last}. Fix the stage or its input, or raise the limit"
    )]
    CircuitOpen {
        /// The stage's name.
        stage: String,
        /// Failures in a row.
        failures: u32,
        /// The last failure's reason.
        last: String,
    },
    /// After a shutdown signal, messages did not finish within `shutdown_timeout`.
    #[error(
        "{}, but the messages already read did not finish within shutdown_timeout ({timeout}); {}. Rerun, or \
         raise shutdown_timeout",
        match stopped_after {
            Some(input) => format!("stopped reading after {input}"),
            None => "stopped after the whole input was read".to_string(),
        },
        if *broker {
            "what was delivered and acknowledged stays, and what was not is delivered again"
        } else {
            "no output was written"
        }
    )]
    DrainTimeout {
        /// The last input read, in words ("input line 7"), if the signal
        /// stopped the source before the end of its input.
        stopped_after: Option<String>,
        /// The configured timeout, for the message.
        timeout: String,
        /// Whether the source is a broker, whose outputs were published as
        /// they came (and stay), not written at the end.
        broker: bool,
    },
    /// The run would read again, into the same state, lines of its input
    /// that an interrupted run already applied to it.
    #[error(
        "a run over {} was interrupted after input line {line}, and the state holds what lines 1 to {line} \
         did: reading them again would apply them twice. To resume where it stopped, run the same command with \
         --skip-lines {line} --append (as it said); to start over, clear the state first (`sluice state {} \
         --clear`)",
        input.display(),
        pipeline.as_deref().map_or("PIPELINE".into(), Path::to_string_lossy)
    )]
    ReadAgain {
        /// The input file.
        input: PathBuf,
        /// The pipeline file, for the command that clears the state.
        pipeline: Option<PathBuf>,
        /// The last line the interrupted run read.
        line: u64,
    },
    /// An unfinished run's checkpoint would be resumed over another input
    /// than the one it was reading.
    #[error(
        "the last run, over {}, did not finish: its last checkpoint is after input line {line}, and resuming from it \
         here would skip the first {line} lines of {}. {}; to start over, clear the state first (`sluice state {} \
         --clear`)",
        was.display(),
        now.display(),
        if was == now {
            format!("{} has been replaced since", was.display())
        } else {
            format!("To finish that run, run it again over {} (it resumes after line {line})", was.display())
        },
        pipeline.as_deref().map_or("PIPELINE".into(), Path::to_string_lossy)
    )]
    OtherInput {
        /// The input the unfinished run was reading.
        was: PathBuf,
        /// The input of this run.
        now: PathBuf,
        /// The pipeline file, for the command that clears the state.
        pipeline: Option<PathBuf>,
        /// The last line of its checkpoint.
        line: u64,
    },
    /// An output could not be flushed and synced for a checkpoint.
    #[error("cannot sync {what} for a checkpoint: {error}")]
    Checkpoint {
        /// Which output.
        what: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The state store failed (e.g. committing a checkpoint).
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// A pipeline task ended abnormally (a bug in sluice).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What to try when a stage can no longer start an instance.
pub(crate) fn restart_hint(stage: &str, pipeline: Option<&std::path::Path>) -> String {
    let pipeline = pipeline.map_or_else(|| "PIPELINE".to_string(), |p| p.display().to_string());
    format!(
        "If the stage's state makes `init` fail, `sluice state {pipeline} --stage {stage}` shows it and \
         `sluice state --clear --stage {stage} {pipeline}` removes it; `limits.init_timeout` bounds `init`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CLI prints errors with `{:#}`, which appends each `source()`: a
    /// wrapper that also formats what it wraps would print it twice.
    #[test]
    fn a_wrapped_error_is_printed_once_with_its_causes() {
        let state = || crate::state::StateError { path: "s.redb".into(), reason: "No space left on device".into() };
        let config = ConfigErrors(vec![crate::config::ConfigError::new(None, None, None, "bad")]);
        let cases = [
            (anyhow::Error::from(BuildError::State(state())), "state store s.redb: No space left on device"),
            (anyhow::Error::from(RunError::State(state())), "state store s.redb: No space left on device"),
            (anyhow::Error::from(crate::Error::Build(BuildError::Config(config))), "bad"),
        ];
        for (error, text) in cases {
            assert_eq!(format!("{error:#}"), text);
        }
    }
}

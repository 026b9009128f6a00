//! How a command ended, and the exit status that tells a script so (README,
//! "Exit codes"). Read from the error's type, never from its text.

use sluice::{BuildError, RunError};

/// How a command ended. The numbers are a promise to scripts: never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done: the whole input was read, and every output written.
    Success,
    /// Something outside the pipeline file failed: the input, an output,
    /// the disk, the state store, the engine.
    Failed,
    /// The circuit breaker (`limits.max_consecutive_failures`) stopped the
    /// run: a stage failed message after message.
    CircuitOpen,
    /// A stage could no longer start an instance. What was finished is
    /// written (or checkpointed), and the run can be resumed.
    StoppedEarly,
    /// The pipeline file, a stage's plugin or config, or a command-line
    /// argument is wrong: running it again as it is will fail again.
    ConfigError,
    /// A signal stopped the run; what was read was finished and written.
    Interrupted,
    /// A second signal stopped the run without writing its outputs.
    Aborted,
    /// `sluice build` lacks a toolchain that needs system packages; the
    /// message names the command that installs them.
    Unavailable,
}

impl Outcome {
    /// The process's exit status.
    ///
    /// 78 is sysexits' `EX_CONFIG`, as vector uses it. 130 is what a shell
    /// reports for a command stopped by SIGINT (128 + 2). 3 and 4 are below
    /// the sysexits range (64..=78) and clap's 2 for usage, so they mean
    /// only this: the circuit breaker is a stage (or its input) failing
    /// everything, to be fixed before a rerun; a stage that could no longer
    /// start is often a passing shortage (memory, a stuck `init`), and the
    /// run resumes where it stopped.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Failed => 1,
            Outcome::CircuitOpen => 3,
            Outcome::StoppedEarly => 4,
            Outcome::ConfigError => 78,
            Outcome::Unavailable => 69,
            Outcome::Interrupted | Outcome::Aborted => 130,
        }
    }

    /// Its name in the report (`"outcome"`) and in JSON logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::CircuitOpen => "circuit_open",
            Outcome::StoppedEarly => "stopped_early",
            Outcome::ConfigError => "config_error",
            Outcome::Interrupted => "interrupted",
            Outcome::Aborted => "aborted",
            Outcome::Unavailable => "unavailable",
        }
    }

    /// The outcome of a command that failed with `error`: from the first
    /// error in its chain whose type says.
    pub(crate) fn of_error(error: &anyhow::Error) -> Self {
        error.chain().find_map(of_cause).unwrap_or(Outcome::Failed)
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

fn of_cause(cause: &(dyn std::error::Error + 'static)) -> Option<Outcome> {
    if cause.is::<sluice::ConfigErrors>() || cause.is::<BadArgument>() || cause.is::<ReportClash>() {
        return Some(Outcome::ConfigError);
    }
    if let Some(e) = cause.downcast_ref::<sluice::Error>() {
        return Some(match e {
            sluice::Error::Build(e) => of_build(e),
            sluice::Error::Run(e) => of_run(e),
        });
    }
    if let Some(e) = cause.downcast_ref::<BuildError>() {
        return Some(of_build(e));
    }
    if let Some(e) = cause.downcast_ref::<RunError>() {
        return Some(of_run(e));
    }
    if cause.is::<StoppedEarly>() {
        return Some(Outcome::StoppedEarly);
    }
    if cause.is::<Unavailable>() {
        return Some(Outcome::Unavailable);
    }
    if cause.is::<Aborted>() {
        return Some(Outcome::Aborted);
    }
    if let Some(e) = cause.downcast_ref::<Decided>() {
        return Some(e.outcome);
    }
    None
}

/// What `sluice check` finds is a config error too: the pipeline cannot be
/// built from what its file says.
pub(crate) fn of_build(error: &BuildError) -> Outcome {
    match error {
        BuildError::Config(_) | BuildError::Stages(_) | BuildError::MemoryBudget(_) => Outcome::ConfigError,
        _ => Outcome::Failed,
    }
}

fn of_run(error: &RunError) -> Outcome {
    match error {
        RunError::CircuitOpen { .. } => Outcome::CircuitOpen,
        // With checkpoints, a stage that cannot start fails the run rather
        // than stopping it: the same cause, and a rerun resumes as well.
        RunError::Restart { .. } => Outcome::StoppedEarly,
        // Running it again as it is would be refused again.
        RunError::ReadAgain { .. } | RunError::OtherInput { .. } => Outcome::ConfigError,
        _ => Outcome::Failed,
    }
}

/// A toolchain that needs system packages is missing: what, and the command
/// that installs it. Exits 69 (`EX_UNAVAILABLE`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unavailable(pub(crate) String);

/// `--report-json` names a file the run reads or writes: the run does not
/// start, and no report is written (it would replace that file).
#[derive(Debug, thiserror::Error)]
#[error("--report-json {}: {what} is that file: give the report another path", report.display())]
pub(crate) struct ReportClash {
    pub(crate) report: std::path::PathBuf,
    pub(crate) what: &'static str,
}

/// A command-line argument that cannot be used (a `--report-json` path that
/// cannot be written, say): a config error, as a wrong pipeline file is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadArgument(pub(crate) String);

/// A stage could no longer start an instance, so the run stopped before
/// the end of its input (what it finished is written).
#[derive(Debug, thiserror::Error)]
#[error(
    "the run did not finish: a stage could no longer start (see above for why, and how to resume if input was left unread)"
)]
pub(crate) struct StoppedEarly;

/// Problems whose outcome the command weighed itself (`sluice check`
/// reports several at once).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Decided {
    pub(crate) outcome: Outcome,
    pub(crate) message: String,
}

/// A second signal stopped the run at once.
#[derive(Debug, thiserror::Error)]
#[error("aborted by a second signal: no output was written")]
pub(crate) struct Aborted;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_comes_from_the_error_type_wrapped_or_not() {
        let circuit = || RunError::CircuitOpen { stage: "s".into(), failures: 3, last: "bad".into() };
        let config = || BuildError::Config(sluice::ConfigErrors(Vec::new()));
        let cases = [
            (anyhow::Error::from(circuit()), Outcome::CircuitOpen),
            (anyhow::Error::from(circuit()).context("running p.toml"), Outcome::CircuitOpen),
            (anyhow::Error::from(sluice::Error::Run(circuit())), Outcome::CircuitOpen),
            (anyhow::Error::from(config()), Outcome::ConfigError),
            (anyhow::Error::from(sluice::Error::Build(config())), Outcome::ConfigError),
            (anyhow::Error::from(sluice::ConfigErrors(Vec::new())), Outcome::ConfigError),
            (anyhow::Error::from(BadArgument("--report-json x: no".into())), Outcome::ConfigError),
            (anyhow::Error::from(BuildError::Engine("no memory".into())), Outcome::Failed),
            (anyhow::Error::from(RunError::Internal("bug".into())), Outcome::Failed),
            (anyhow::Error::from(StoppedEarly), Outcome::StoppedEarly),
            (anyhow::Error::from(Aborted), Outcome::Aborted),
            (anyhow::anyhow!("the circuit breaker limits.max_consecutive_failures"), Outcome::Failed),
        ];
        for (error, outcome) in cases {
            assert_eq!(Outcome::of_error(&error), outcome, "{error:#}");
        }
    }
}

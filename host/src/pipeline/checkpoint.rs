//! Checkpoints: every `checkpoint_every` messages or `checkpoint_interval`,
//! the source stops reading, waits until every input read so far is done
//! (its outputs written, filtered out or dead-lettered), has the sink and the
//! dead-letter sink flush (a file is synced), and commits the stages' state
//! together with the source's position and the sinks' positions, in one
//! transaction. Then it reads on.
//!
//! After a crash the next run resumes from there: the source skips the
//! input up to its position, the file sinks are cut back to theirs (their
//! lengths), and the stages start from
//! the committed state. Nothing read before the checkpoint is lost or
//! repeated in the output files; what was being processed after it runs again
//! (at-least-once for a stage's side effects, such as HTTP calls, and for a
//! stdout sink, which cannot be cut back).

use super::error::RunError;
use crate::state::{AppliedRecord, Checkpoint, InputId, StateError, StateStore, StoppedInput};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Asks a sink task to flush; the answer is the sink's position.
pub(super) type Flush = oneshot::Sender<std::io::Result<u64>>;

/// What the source needs to take checkpoints.
pub(super) struct Checkpoints {
    pub(super) store: Arc<StateStore>,
    pub(super) sink: mpsc::Sender<Flush>,
    pub(super) dead: mpsc::Sender<Flush>,
    pub(super) every: u64,
    pub(super) interval: Duration,
    /// The input read (a file or standard input), recorded in each checkpoint.
    pub(super) input: Option<InputId>,
    /// Input lines since the last checkpoint.
    pub(super) since: u64,
    pub(super) last: Instant,
}

impl Checkpoints {
    /// Whether one is due: input was read since the last, enough of it or
    /// long enough ago, and state was written. With nothing to commit, the
    /// count starts again instead of asking the store on every line. Also
    /// as soon as the uncommitted state passes half its budget
    /// (`state.max_pending_bytes`), so that the messages still in flight
    /// while the pipeline drains have the other half.
    pub(super) fn due(&mut self) -> bool {
        if self.since == 0 {
            return false;
        }
        if self.store.pending_past_mark() {
            return true;
        }
        if self.since < self.every && self.last.elapsed() < self.interval {
            return false;
        }
        if self.store.has_pending() {
            return true;
        }
        self.since = 0;
        self.last = Instant::now();
        false
    }

    /// Takes a checkpoint after the source's `position`, once every input
    /// read is done ([`crate::envelope::Acks::drain`]): flushes the sinks
    /// and commits, with the record of a broker's inputs it releases.
    pub(super) async fn commit(&mut self, position: u64, applied: Option<AppliedRecord>) -> Result<(), RunError> {
        let sink = flush(&self.sink, "the sink").await?;
        let dead_letters = flush(&self.dead, "the dead-letter sink").await?;
        let input = self.input.clone();
        let checkpoint = Checkpoint { source: position, sink, dead_letters, applied, input, ..Checkpoint::default() };
        commit(&self.store, Some(checkpoint)).await?;
        tracing::debug!(position, sink, dead_letters, "checkpoint");
        self.since = 0;
        self.last = Instant::now();
        Ok(())
    }
}

/// What a run starts from: the checkpoint to resume from, if an earlier run
/// died; and the record of inputs from a broker whose state is committed
/// though the broker may deliver them again.
#[derive(Default)]
pub(super) struct Recovered {
    pub(super) resume: Option<Checkpoint>,
    pub(super) applied: Option<AppliedRecord>,
    /// The inputs signals stopped earlier runs over.
    pub(super) stopped_inputs: Vec<StoppedInput>,
}

/// Before a run with durable state: where it starts from. An earlier run
/// that finished but died while moving its outputs into place (or telling a
/// broker its last inputs are done) gets that finished first. `input`: what
/// this run reads, if lines of a file or standard input, checked against
/// what earlier runs read into the state.
pub(super) async fn recover(
    store: &Arc<StateStore>,
    config: &crate::config::PipelineConfig,
    input: Option<&InputId>,
) -> Result<Recovered, RunError> {
    let reading = store.clone();
    let (checkpoint, applied, mut stopped_inputs) = tokio::task::spawn_blocking(move || {
        Ok::<_, StateError>((reading.checkpoint()?, reading.applied()?, reading.stopped_inputs()?))
    })
    .await
    .map_err(|e| RunError::Internal(format!("reading the checkpoint panicked: {e}")))??;
    // An older version kept the one input a signal stopped in the
    // checkpoint: it moves to the record (before the checkpoint goes).
    if let Some(Checkpoint { interrupted: Some(input), source, .. }) = &checkpoint {
        if !stopped_inputs.iter().any(|s| s.input.is(input)) {
            stopped_inputs.push(StoppedInput { input: input.clone(), line: *source });
        }
        let (writing, stopped) = (store.clone(), stopped_inputs.clone());
        tokio::task::spawn_blocking(move || writing.record_stopped_inputs(&stopped))
            .await
            .map_err(|e| RunError::Internal(format!("recording the stopped inputs panicked: {e}")))??;
    }
    let resume = match checkpoint {
        Some(c) if c.complete || c.interrupted.is_some() => {
            if c.complete {
                super::connectors::complete_interrupted(config)?;
            }
            commit(store, None).await?;
            None
        }
        Some(c) => {
            if let Some(now) = input {
                resumed_over_its_input(config, now, &c)?;
            }
            Some(c)
        }
        None => None,
    };
    if let Some(now) = input {
        for stopped in &stopped_inputs {
            not_read_again(config, now, stopped)?;
        }
    }
    Ok(Recovered { resume, applied, stopped_inputs })
}

/// Before resuming an unfinished run from its checkpoint `c` over `now`:
/// the input must be the one it was reading, or its first lines would be
/// skipped as if read. Standard input cannot be recognised: resuming with
/// it on either side is warned about.
fn resumed_over_its_input(
    config: &crate::config::PipelineConfig,
    now: &InputId,
    c: &Checkpoint,
) -> Result<(), RunError> {
    let Some(was) = &c.input else { return Ok(()) };
    match (&was.path, &now.path) {
        (Some(was_path), Some(now_path)) if !was.is(now) => Err(RunError::OtherInput {
            was: was_path.clone(),
            now: now_path.clone(),
            pipeline: config.file().map(Into::into),
            line: c.source,
        }),
        (Some(_), Some(_)) | (None, None) => Ok(()),
        (was_path, now_path) => {
            let named = |path: &Option<std::path::PathBuf>| {
                path.as_ref().map_or_else(|| "standard input".to_string(), |p| p.display().to_string())
            };
            tracing::warn!(
                "resuming the unfinished run over {} after its line {line}: this run reads {}, whose first {line} \
                 lines are skipped as read. If it is not what that run read, stop now (Ctrl-C) and clear the state",
                named(was_path),
                named(now_path),
                line = c.source,
            );
            Ok(())
        }
    }
}

/// After a run over `stopped.input` that a signal stopped: refuses to read
/// the same file (`now`) from a line the state has already seen, which
/// would apply those lines to it twice. Standard input cannot be
/// recognised: it is warned about.
fn not_read_again(
    config: &crate::config::PipelineConfig,
    now: &InputId,
    stopped: &StoppedInput,
) -> Result<(), RunError> {
    let (was, line) = (&stopped.input, stopped.line);
    if config.source().skip_lines >= line {
        return Ok(());
    }
    match &was.path {
        Some(path) if was.is(now) => {
            Err(RunError::ReadAgain { input: path.clone(), pipeline: config.file().map(Into::into), line })
        }
        None if now.path.is_none() => {
            tracing::warn!(
                "the last run, reading standard input, was interrupted after line {line}, and the state holds what \
                 lines 1 to {line} did: if this is the same input, stop now (Ctrl-C) and run it again with \
                 --skip-lines {line} --append"
            );
            Ok(())
        }
        // Another input: new lines for the state.
        _ => Ok(()),
    }
}

/// Commits pending state with `checkpoint` (or clears it), off the runtime.
pub(super) async fn commit(store: &Arc<StateStore>, checkpoint: Option<Checkpoint>) -> Result<(), RunError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.commit(checkpoint))
        .await
        .map_err(|e| RunError::Internal(format!("committing state panicked: {e}")))??;
    Ok(())
}

async fn flush(task: &mpsc::Sender<Flush>, what: &str) -> Result<u64, RunError> {
    let (reply, answer) = oneshot::channel();
    let gone = || RunError::Internal(format!("{what} ended before a checkpoint"));
    task.send(reply).await.map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?.map_err(|error| RunError::Checkpoint { what: what.to_string(), error })
}

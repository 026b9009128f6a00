//! Checkpoints: every `checkpoint_every` messages or `checkpoint_interval`,
//! the source stops reading, waits until everything read so far has left the
//! pipeline (written, filtered out or dead-lettered), has the sink and the
//! dead-letter writer flush and sync their files, and commits the stages'
//! state together with the input line and the files' lengths, in one
//! transaction. Then it reads on.
//!
//! After a crash the next run resumes from there: it skips the input up to
//! that line, cuts the output files back to those lengths, and starts from
//! the committed state. Nothing read before the checkpoint is lost or
//! repeated in the output files; what was being processed after it runs again
//! (at-least-once for a stage's side effects, such as HTTP calls, and for a
//! stdout sink, which cannot be cut back).

use super::error::RunError;
use crate::state::{Checkpoint, StateStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::AcqRel};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

/// Messages in the pipeline: read (or produced by a stage) but not yet
/// written, filtered out or dead-lettered. A stage adds its outputs before it
/// removes their input, so it only reaches zero when the pipeline is empty.
#[derive(Default)]
pub(crate) struct Settle {
    unsettled: AtomicI64,
    empty: Notify,
}

impl Settle {
    /// Records `delta` messages entering (positive) or leaving (negative).
    pub(crate) fn change(&self, delta: i64) {
        if delta != 0 && self.unsettled.fetch_add(delta, AcqRel) + delta == 0 {
            self.empty.notify_waiters();
        }
    }

    /// Waits until the pipeline is empty.
    async fn empty(&self) {
        loop {
            let notified = self.empty.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.unsettled.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Asks an output task to flush and sync its file; the answer is its length.
pub(super) type Flush = oneshot::Sender<std::io::Result<u64>>;

/// What the source needs to take checkpoints.
pub(super) struct Checkpoints {
    pub(super) settle: Arc<Settle>,
    pub(super) store: Arc<StateStore>,
    pub(super) sink: mpsc::Sender<Flush>,
    pub(super) dead: mpsc::Sender<Flush>,
    pub(super) every: u64,
    pub(super) interval: Duration,
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

    /// Takes a checkpoint after input line `line`: waits for the pipeline to
    /// empty, syncs the outputs and commits.
    pub(super) async fn take(&mut self, line: u64) -> Result<(), RunError> {
        self.settle.empty().await;
        let sink_bytes = flush(&self.sink, "the sink").await?;
        let dead_bytes = flush(&self.dead, "the dead-letter file").await?;
        commit(
            &self.store,
            Some(Checkpoint { source: line, sink: sink_bytes, dead_letters: dead_bytes, complete: false }),
        )
        .await?;
        tracing::debug!(line, sink_bytes, dead_bytes, "checkpoint");
        self.since = 0;
        self.last = Instant::now();
        Ok(())
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

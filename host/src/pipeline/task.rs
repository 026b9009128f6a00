//! What every pipeline task shares: how one ends when not normally, and the
//! dead-letter channel every task can send to.

use super::dead_letter::{DeadLetter, Kind};
use super::error::RunError;
use crate::bindings::Message;
use crate::envelope::Origin;
use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;

/// How a task ended, when not normally.
pub(super) enum TaskError {
    /// The next task stopped taking messages: it failed, and says why itself.
    Closed,
    Failed(RunError),
}

impl From<RunError> for TaskError {
    fn from(e: RunError) -> Self {
        TaskError::Failed(e)
    }
}

pub(super) type Task<T> = JoinHandle<Result<T, TaskError>>;

/// Waits for a task; a panic in it is an internal error.
pub(super) async fn join<T>(task: Task<T>) -> Result<T, TaskError> {
    task.await.unwrap_or_else(|e| Err(TaskError::Failed(RunError::Internal(format!("pipeline task failed: {e}")))))
}

/// Sends a message to the dead letters: `stage` (or `source`, `sink`)
/// could not take it, for `reason`.
pub(super) async fn send_dead(
    dead: &Sender<DeadLetter>,
    stage: &str,
    kind: Kind,
    reason: String,
    origin: Origin,
    message: Message,
) -> Result<(), TaskError> {
    let letter = DeadLetter { stage: stage.to_string(), kind, reason, origin, message };
    dead.send(letter).await.map_err(|_| TaskError::Closed)
}

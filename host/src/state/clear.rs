//! `sluice state --clear`: removing committed state, for a stage whose state
//! makes it fail (in `init`, say) or that should start over.

use super::{Checkpoint, StateError, namespace, redb::Redb};
use std::path::Path;

/// What [`clear_state`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleared {
    /// Entries removed.
    pub entries: u64,
    /// Their bytes (keys as stored, and values).
    pub bytes: u64,
    /// The checkpoint of an unfinished run, removed with every stage's state
    /// (it pointed at a position whose state is gone, so the next run starts
    /// from the beginning of the input). Clearing one stage keeps it: the
    /// other stages' state belongs to that position, and the cleared stage
    /// starts empty from there.
    pub checkpoint: Option<Checkpoint>,
}

/// Removes the committed state of `stage` (of every stage with `None`) from
/// the store file at `path` in one transaction; with every stage's, also the
/// checkpoint of an unfinished run. A finished run's checkpoint (its outputs are being moved into
/// place) does not depend on the state and is kept. Fails if the pipeline is
/// running: the file is then open in its process.
pub fn clear_state(path: &Path, stage: Option<&str>) -> Result<Cleared, StateError> {
    if !path.exists() {
        return Err(StateError { path: path.into(), reason: super::NO_STATE_FILE.into() });
    }
    let prefix = stage.map(|s| namespace(s, None)).unwrap_or_default();
    Redb::new(path).clear(&prefix, stage.is_none())
}

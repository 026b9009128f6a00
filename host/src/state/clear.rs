//! `sluice state --clear`: removing committed state, for a stage whose state
//! makes it fail (in `init`, say) or that should start over.

use super::{CHECKPOINT, Checkpoint, META, STATE, StateError, namespace};
use redb::ReadableTable;
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
    let error = |e: &dyn std::fmt::Display| StateError { path: path.into(), reason: e.to_string() };
    if !path.exists() {
        return Err(error(&super::NO_STATE_FILE));
    }
    let db = redb::Database::open(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            error(&"it is open in another process: is the pipeline running? Stop it first, then clear its state")
        }
        e => error(&e),
    })?;
    let txn = db.begin_write().map_err(|e| error(&e))?;
    let mut cleared = Cleared { entries: 0, bytes: 0, checkpoint: None };
    {
        let mut table = txn.open_table(STATE).map_err(|e| error(&e))?;
        let prefix = stage.map(|s| namespace(s, None)).unwrap_or_default();
        // An empty prefix is every key: `..` from the first.
        let removed = table
            .extract_from_if::<&[u8], _>(prefix.as_slice().., |k, _| k.starts_with(&prefix))
            .map_err(|e| error(&e))?;
        for entry in removed {
            let (k, v) = entry.map_err(|e| error(&e))?;
            cleared.entries += 1;
            cleared.bytes += (k.value().len() + v.value().len()) as u64;
        }
        let mut meta = txn.open_table(META).map_err(|e| error(&e))?;
        let checkpoint = match meta.get(CHECKPOINT).map_err(|e| error(&e))? {
            Some(record) => Some(
                serde_json::from_slice::<Checkpoint>(record.value())
                    .map_err(|e| error(&format!("bad checkpoint record: {e}")))?,
            ),
            None => None,
        };
        if let Some(checkpoint) = checkpoint.filter(|c| !c.complete && stage.is_none()) {
            meta.remove(CHECKPOINT).map_err(|e| error(&e))?;
            cleared.checkpoint = Some(checkpoint);
        }
    }
    txn.commit().map_err(|e| error(&e))?;
    Ok(cleared)
}

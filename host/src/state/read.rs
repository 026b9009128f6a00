//! Reading a store file outside a run: `sluice state`.

use super::{Backend, Checkpoint, StateError, namespace, redb::Redb};
use std::path::Path;

/// One entry of a stage's state, for `sluice state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    /// The message key that owns it, for keyed stages.
    pub partition: Option<Vec<u8>>,
    /// The key the stage used.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// Why there is no store file: it is created at the first state write, so a
/// pipeline that ran but whose stages keep no state has none either.
pub(crate) const NO_STATE_FILE: &str =
    "no such file: no stage has committed state (the file is created when a stage first writes state)";

/// Reads the committed state of `stage` from the store file at `path`:
/// what the last checkpoint (or finished run) left. `keyed` says how the
/// stage's keys are laid out (`partition_by = "key"`).
pub fn read_state(path: &Path, stage: &str, keyed: bool) -> Result<Vec<StateEntry>, StateError> {
    if !path.exists() {
        return Err(StateError { path: path.into(), reason: NO_STATE_FILE.into() });
    }
    let prefix = namespace(stage, None);
    let entries = Redb::new(path).scan(&prefix, usize::MAX)?;
    Ok(entries
        .into_iter()
        .map(|(k, value)| {
            let rest = &k[prefix.len()..];
            match keyed.then(|| split_partition(rest)).flatten() {
                Some((partition, key)) => StateEntry { partition: Some(partition.to_vec()), key: key.to_vec(), value },
                None => StateEntry { partition: None, key: rest.to_vec(), value },
            }
        })
        .collect())
}

/// The checkpoint of an unfinished run in the store file at `path`, if any.
pub fn read_checkpoint(path: &Path) -> Result<Option<Checkpoint>, StateError> {
    Redb::new(path).checkpoint()
}

/// The inputs that signals stopped runs over, in the store file at `path`.
pub fn read_stopped_inputs(path: &Path) -> Result<Vec<super::StoppedInput>, StateError> {
    Redb::new(path).stopped_inputs()
}

fn split_partition(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let partition = rest.get(4..4 + len)?;
    Some((partition, &rest[4 + len..]))
}

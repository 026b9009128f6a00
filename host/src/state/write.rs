//! Writing entries into a store file outside a run: the state a `sluice
//! test` case starts from.

use super::{Backend, StateEntry, StateError, Writes, namespace, redb::Redb};
use std::path::Path;

/// Writes `entries` into the state of `stage` in the store file at `path`
/// (created if need be) in one transaction, over any entry with the same
/// key: the next run of the pipeline starts from them. An entry with a
/// `partition` belongs to that message key of a keyed stage
/// (`partition_by = "key"`), as [`read_state`](super::read_state) returns
/// them. The checkpoint of an unfinished run is kept as it is. Fails if the
/// pipeline is running: the file is then open in its process.
pub fn write_state(path: &Path, stage: &str, entries: &[StateEntry]) -> Result<(), StateError> {
    let writes: Writes = entries
        .iter()
        .map(|e| {
            let mut key = namespace(stage, e.partition.as_deref());
            key.extend_from_slice(&e.key);
            (key, Some(e.value.clone()))
        })
        .collect();
    let store = Redb::new(path);
    // A commit writes the checkpoint too: write back the one there is, in
    // the same open database, so no run can slip in between.
    let checkpoint = store.checkpoint()?;
    store.commit(writes, checkpoint)
}

//! Durable key-value state for stages, and the checkpoints that commit it
//! together with the source position.
//!
//! Stages write into `pending`, an in-memory overlay that reads see at once.
//! A checkpoint moves the overlay into the backend in one transaction, with
//! the source's and the sinks' positions: after a crash, the state and the
//! position it belongs to come back together. Backends: the store file
//! (`redb.rs`) and a map for runs that keep nothing (`memory.rs`); the
//! overlay and the quota accounting are in `pending.rs`.
//!
//! Keys are namespaced: `stage name, 0, [partition], key`. A stage with
//! `partition_by = "key"` gets the message key as its partition
//! (length-prefixed), so each key's state has one owner.
//!
//! Quotas, checked on every write so that a breach ends the call that made
//! it: the size of a key and of a value, and the bytes (keys and values) a
//! scope holds, committed and pending together. A scope is a stage, or one
//! message key of a keyed stage. Each scope's byte count is computed from the
//! store the first time a run writes to it (a scan of its prefix), then kept
//! up to date as calls' writes are kept. The pending overlay has a budget of
//! its own (`state.max_pending_bytes`): past half of it a checkpoint is due,
//! and a write that would pass it is a breach. The memory backend has no
//! overlay (writes go straight to its map): its bound is the quotas.

mod clear;
mod memory;
mod pending;
mod read;
mod redb;
mod scope;
mod write;

pub use clear::{Cleared, clear_state};
pub(crate) use pending::WriteError;
pub(crate) use read::NO_STATE_FILE;
pub use read::{StateEntry, read_checkpoint, read_state, read_stopped_inputs};
pub(crate) use scope::StateScope;
pub use write::write_state;

use pending::Overlay;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Writes by full key: `None` is a deletion.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
/// Entries (key, value) in key order.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
#[error("state store {}: {reason}", path.display())]
pub struct StateError {
    /// The store's file (`<memory>` for the in-memory store).
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// Where a run had got to at its last checkpoint: every input up to the
/// source's position was processed, its state committed, its outputs in the
/// sinks up to theirs. Positions are the connectors' own (for a file source
/// the input line, for a file sink its length in bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The source's position: the last input settled.
    #[serde(alias = "line")]
    pub source: u64,
    /// The sink's position.
    #[serde(alias = "sink_bytes")]
    pub sink: u64,
    /// The dead-letter sink's position.
    #[serde(alias = "dead_bytes")]
    pub dead_letters: u64,
    /// The run finished: its outputs are being moved into place.
    #[serde(default)]
    pub complete: bool,
    /// A signal stopped the run after `source`, everything it read finished
    /// and its outputs in place: the input it was reading. The state holds
    /// what those lines did, so the next run must not read them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<InputId>,
    /// The input an unfinished run was reading (a file, or standard input),
    /// so that a run over another is not resumed at its position. `None`
    /// from a broker, and in checkpoints of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputId>,
    /// What of a broker's input this commit's state holds, kept apart from
    /// the checkpoint (a run's end clears its checkpoint, not this); `None`
    /// leaves the record as it was.
    #[serde(skip)]
    pub applied: Option<AppliedRecord>,
    /// The inputs that signals stopped runs over, whose first lines the
    /// state holds: kept apart from the checkpoint, so that runs over other
    /// inputs in between (and their checkpoints) leave them. `None` leaves
    /// them as they were.
    #[serde(skip)]
    pub stopped_inputs: Option<Vec<StoppedInput>>,
}

/// An input that a signal stopped a run over: the state holds what its
/// lines 1 to `line` did, so a run that reads them again is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoppedInput {
    /// The input.
    pub input: InputId,
    /// The last line the stopped run read.
    pub line: u64,
}

/// Inputs from a broker whose state is committed but whose acknowledgement
/// the broker may not have had: a run that died between the commit and the
/// broker hearing would have them delivered again and applied twice. The
/// next run acknowledges them, delivered again, without running them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AppliedRecord {
    /// The source they came from (a broker's stream and consumer): the
    /// record of another is ignored.
    pub source: String,
    /// Their positions, in groups each kept until a time.
    pub groups: Vec<AppliedGroup>,
}

/// Positions, kept until a time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AppliedGroup {
    /// When the group may be forgotten, in ms since the Unix epoch.
    pub until_ms: u64,
    /// Ranges of positions, both ends included, sorted.
    pub positions: Vec<(u64, u64)>,
}

/// An input file as a later run can recognise it: its path, device, inode
/// and creation time (a new file renamed into its path is new input, even
/// where it reuses the inode; one appended to, or rewritten in place, is
/// the same). `None` for standard input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputId {
    /// The file, or `None` for standard input.
    pub path: Option<std::path::PathBuf>,
    /// Its device, inode, and creation time in nanoseconds since the epoch
    /// (0 where the filesystem does not keep it).
    pub file: Option<(u64, u64, u128)>,
}

impl InputId {
    /// The input at `path` (`None`: standard input) as it is now.
    pub fn of(path: Option<&std::path::Path>) -> Self {
        use std::os::unix::fs::MetadataExt;
        let file = path.and_then(|p| std::fs::metadata(p).ok()).map(|m| {
            let created = m.created().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            (m.dev(), m.ino(), created.map_or(0, |d| d.as_nanos()))
        });
        InputId { path: path.map(crate::fs::canonical), file }
    }

    /// Whether this is the input `other` is: the same file (device, inode
    /// and creation time, wherever both have them; else the same path), or
    /// both standard input.
    pub fn is(&self, other: &InputId) -> bool {
        match (&self.file, &other.file) {
            (Some(a), Some(b)) => a == b,
            _ => match (&self.path, &other.path) {
                (Some(a), Some(b)) => crate::fs::same_file(a, b),
                (a, b) => a.is_none() && b.is_none(),
            },
        }
    }
}

/// Where committed state lives: what the store needs of it.
trait Backend: Send + Sync {
    /// Whether it survives the process: runs checkpoint into it, and writes
    /// wait in the overlay for a commit. One that does not takes each kept
    /// call's writes at once.
    fn is_durable(&self) -> bool;
    /// Whether an earlier run committed state to it.
    fn has_committed(&self) -> bool;
    /// The committed value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// The length of the committed value of `key`.
    fn value_len(&self, key: &[u8]) -> Result<Option<usize>, StateError>;
    /// Up to `limit` committed entries whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Entries, StateError>;
    /// Commits `writes` and, in the same transaction, `checkpoint` (or
    /// removes the checkpoint when `None`: the run is complete).
    fn commit(&self, writes: Writes, checkpoint: Option<Checkpoint>) -> Result<(), StateError>;
    /// The last checkpoint of an unfinished run, if any.
    fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError>;
    /// The record of a broker's inputs committed last, if any.
    fn applied(&self) -> Result<Option<AppliedRecord>, StateError> {
        Ok(None)
    }
    /// The inputs signals stopped runs over.
    fn stopped_inputs(&self) -> Result<Vec<StoppedInput>, StateError> {
        Ok(Vec::new())
    }
    /// Replaces the record of stopped inputs, outside a commit.
    fn record_stopped_inputs(&self, _: &[StoppedInput]) -> Result<(), StateError> {
        Ok(())
    }
}

/// The state of every stage of a pipeline: the pending overlay over the backend.
pub(crate) struct StateStore {
    backend: Box<dyn Backend>,
    pending: Overlay,
}

impl StateStore {
    /// The store file at `path`, opened when first needed.
    /// `max_pending`: bytes of uncommitted writes held in memory at most.
    pub(crate) fn open(path: &Path, max_pending: usize) -> Self {
        StateStore { backend: Box::new(redb::Redb::new(path)), pending: Overlay::new(max_pending) }
    }

    /// A store that lives as long as the pipeline: for tests and throwaway runs.
    pub(crate) fn memory() -> Self {
        StateStore { backend: Box::new(memory::Memory::default()), pending: Overlay::new(usize::MAX) }
    }

    /// Whether it survives the process (a file), so runs checkpoint into it.
    pub(crate) fn is_durable(&self) -> bool {
        self.backend.is_durable()
    }

    /// Whether an earlier run committed state to the store's file.
    pub(crate) fn has_committed(&self) -> bool {
        self.backend.has_committed()
    }

    /// Whether stages wrote anything since the last commit.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether the pending writes passed half their budget: a checkpoint
    /// is due, before writes start failing.
    pub(crate) fn pending_past_mark(&self) -> bool {
        self.pending.past_mark()
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self.pending.get(key, |v| v.cloned()) {
            Some(pending) => Ok(pending),
            None => self.backend.get(key),
        }
    }

    /// The length of `key`'s value as stages see it (pending over
    /// committed). Committed lengths are remembered in `memo`: they do not
    /// change while calls run (checkpoints wait for the pipeline to empty).
    fn value_len(&self, key: &[u8], memo: &mut HashMap<Vec<u8>, Option<usize>>) -> Result<Option<usize>, StateError> {
        if let Some(pending) = self.pending.get(key, |v| v.map(Vec::len)) {
            return Ok(pending);
        }
        if let Some(len) = memo.get(key) {
            return Ok(*len);
        }
        let len = self.backend.value_len(key)?;
        // Only keys the store holds: those are bounded by the quota, while a
        // call may ask about any number of keys it does not hold.
        if self.is_durable() && len.is_some() {
            memo.insert(key.to_vec(), len);
        }
        Ok(len)
    }

    /// Bytes (keys after `prefix`, and values) the scope `prefix` holds,
    /// committed and pending: counted from the store the first time.
    fn scope_total(&self, prefix: &[u8]) -> Result<u64, StateError> {
        self.pending.scope_total(prefix, || {
            let entries = self.scan(prefix, usize::MAX, &BTreeMap::new())?;
            Ok(entries.iter().map(|(k, v)| (k.len() - prefix.len() + v.len()) as u64).sum())
        })
    }

    /// Bytes of uncommitted writes held, and the most allowed.
    fn pending_bytes(&self) -> (usize, usize) {
        self.pending.bytes()
    }

    /// Adds a call's writes to scope `prefix` (see [`Overlay::keep`]).
    fn keep(&self, prefix: &[u8], writes: Writes, memo: &HashMap<Vec<u8>, Option<usize>>) {
        self.pending.keep(prefix, writes, memo, &*self.backend);
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order:
    /// `overlay` (a call's own writes) over pending writes over committed ones.
    pub(crate) fn scan(&self, prefix: &[u8], limit: usize, overlay: &Writes) -> Result<Entries, StateError> {
        let (pending, ours) = (self.pending.range(prefix), pending::in_range(overlay, prefix));
        // Each deletion over a committed key can hide one of them: read that
        // many more committed entries than asked for.
        let wanted = limit.saturating_add(pending.len() + ours.len());
        let committed = self.backend.scan(prefix, wanted)?;
        let mut merged: Writes = committed.into_iter().map(|(k, v)| (k, Some(v))).collect();
        merged.extend(pending);
        merged.extend(ours);
        Ok(merged.into_iter().filter_map(|(k, v)| Some((k, v?))).take(limit).collect())
    }

    /// Commits the pending writes and, in the same transaction, `checkpoint`
    /// (or removes the checkpoint when `None`: the run is complete).
    pub(crate) fn commit(&self, checkpoint: Option<Checkpoint>) -> Result<(), StateError> {
        self.backend.commit(self.pending.take(), checkpoint)
    }

    /// The last checkpoint of an unfinished run, if any.
    pub(crate) fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        self.backend.checkpoint()
    }

    /// The record of a broker's inputs committed last, if any.
    pub(crate) fn applied(&self) -> Result<Option<AppliedRecord>, StateError> {
        self.backend.applied()
    }

    /// The inputs signals stopped runs over.
    pub(crate) fn stopped_inputs(&self) -> Result<Vec<StoppedInput>, StateError> {
        self.backend.stopped_inputs()
    }

    /// Replaces the record of stopped inputs, outside a commit.
    pub(crate) fn record_stopped_inputs(&self, stopped: &[StoppedInput]) -> Result<(), StateError> {
        self.backend.record_stopped_inputs(stopped)
    }
}

/// `stage, 0, [len(partition) as u32 BE, partition]`.
fn namespace(stage: &str, partition: Option<&[u8]>) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(stage.len() + 1);
    prefix.extend_from_slice(stage.as_bytes());
    prefix.push(0);
    if let Some(p) = partition {
        prefix.extend_from_slice(&(p.len() as u32).to_be_bytes());
        prefix.extend_from_slice(p);
    }
    prefix
}

#[cfg(test)]
mod tests;

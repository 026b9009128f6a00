//! Durable key-value state for stages, and the checkpoints that commit it
//! together with the source position.
//!
//! Stages write into `pending`, an in-memory overlay that reads see at once.
//! A checkpoint moves the overlay into the backend in one transaction, with
//! the source position and the output files' lengths: after a crash, the
//! state and the position it belongs to come back together.
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
mod read;
mod scope;

pub use clear::{Cleared, clear_state};
pub(crate) use read::NO_STATE_FILE;
pub use read::{StateEntry, read_checkpoint, read_state};
pub(crate) use scope::StateScope;

use crate::limits::{Breach, Limits};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub(super) const STATE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("state");
pub(super) const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
pub(super) const CHECKPOINT: &str = "checkpoint";
/// What the host holds for a pending entry beyond its key and value bytes
/// (two `Vec` headers and a share of a B-tree node), so that a flood of
/// empty values is not free.
const PENDING_ENTRY_OVERHEAD: usize = 64;
/// Scopes whose byte counts are kept across a checkpoint; past this many
/// (a keyed stage seeing many message keys) the counts are dropped at the
/// checkpoint and computed again when next needed.
const MAX_KEPT_TOTALS: usize = 10_000;
/// The default `state.max_pending_bytes`, for stores made in code.
pub(crate) const DEFAULT_MAX_PENDING: usize = 256 << 20;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// The state of every stage of a pipeline.
pub(crate) struct StateStore {
    backend: Backend,
    path: PathBuf,
    /// Writes since the last commit, and the scopes' byte counts.
    pending: Mutex<Pending>,
    /// The most bytes `pending` may hold.
    max_pending: usize,
}

#[derive(Default)]
struct Pending {
    /// Writes since the last commit: `None` is a deletion.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// What `writes` holds, by [`pending_size`].
    bytes: usize,
    /// Bytes (keys and values) each scope holds, committed and pending, by
    /// scope prefix: for the scopes written to since they were last counted.
    totals: HashMap<Vec<u8>, u64>,
    /// Calls whose writes were kept, to tell whether a count taken without
    /// the lock is still good.
    kept: u64,
}

/// Bytes a pending entry holds in memory.
fn pending_size(key: &[u8], value: Option<&Vec<u8>>) -> usize {
    key.len() + value.map_or(0, Vec::len) + PENDING_ENTRY_OVERHEAD
}

/// A scope's quotas, from its stage's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    pub(crate) max_key: usize,
    pub(crate) max_value: usize,
    pub(crate) max_total: u64,
}

impl From<&Limits> for Quota {
    fn from(l: &Limits) -> Self {
        Quota { max_key: l.max_state_key_bytes, max_value: l.max_state_value_bytes, max_total: l.max_state_bytes }
    }
}

/// Why a write was refused.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// It breaks a quota: the call ends with this breach.
    Limit(Breach),
    /// The store failed.
    Store(StateError),
}

impl From<StateError> for WriteError {
    fn from(e: StateError) -> Self {
        WriteError::Store(e)
    }
}

enum Backend {
    Memory(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>),
    /// Opened on first use, and created only when something is committed:
    /// a pipeline whose stages could use state (Python and JavaScript
    /// components import every capability) but never do leaves no file.
    Redb(Mutex<Option<Arc<redb::Database>>>),
}

impl StateStore {
    /// The store file at `path`, opened when first needed.
    /// `max_pending`: bytes of uncommitted writes held in memory at most.
    pub(crate) fn open(path: &Path, max_pending: usize) -> Self {
        StateStore {
            backend: Backend::Redb(Mutex::default()),
            path: path.into(),
            pending: Mutex::default(),
            max_pending,
        }
    }

    /// The database, opened (and with `create`, created) if need be; `None`
    /// if there is no file and `create` is false.
    fn db(
        &self,
        slot: &Mutex<Option<Arc<redb::Database>>>,
        create: bool,
    ) -> Result<Option<Arc<redb::Database>>, StateError> {
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = &*slot {
            return Ok(Some(db.clone()));
        }
        if !create && !self.path.exists() {
            return Ok(None);
        }
        let db = redb::Database::create(&self.path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                self.error("it is open in another process (is the pipeline running?)")
            }
            e => self.error(e),
        })?;
        Ok(Some(slot.insert(Arc::new(db)).clone()))
    }

    /// A store that lives as long as the pipeline: for tests and throwaway runs.
    pub(crate) fn memory() -> Self {
        StateStore {
            backend: Backend::Memory(Mutex::default()),
            path: PathBuf::from("<memory>"),
            pending: Mutex::default(),
            max_pending: usize::MAX,
        }
    }

    /// Whether it survives the process (a file), so runs checkpoint into it.
    pub(crate) fn is_durable(&self) -> bool {
        matches!(self.backend, Backend::Redb(_))
    }

    /// Whether an earlier run committed state to the store's file.
    pub(crate) fn has_committed(&self) -> bool {
        self.is_durable() && self.path.exists()
    }

    fn error(&self, e: impl std::fmt::Display) -> StateError {
        StateError { path: self.path.clone(), reason: e.to_string() }
    }

    /// Whether stages wrote anything since the last commit.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending().writes.is_empty()
    }

    /// Whether the pending writes passed half their budget: a checkpoint
    /// is due, before writes start failing.
    pub(crate) fn pending_past_mark(&self) -> bool {
        self.pending().bytes > self.max_pending / 2
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(pending) = self.pending().writes.get(key) {
            return Ok(pending.clone());
        }
        self.committed(key, |v| v.to_vec())
    }

    /// `f` of the committed value of `key`, if any.
    fn committed<T>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>, StateError> {
        match &self.backend {
            Backend::Memory(map) => Ok(map.lock().unwrap_or_else(|e| e.into_inner()).get(key).map(|v| f(v))),
            Backend::Redb(slot) => Ok(self
                .read(slot, STATE, |table| Ok(table.get(key).map_err(|e| self.error(e))?.map(|v| f(v.value()))))?
                .flatten()),
        }
    }

    /// The length of `key`'s value as stages see it (pending over
    /// committed). Committed lengths are remembered in `memo`: they do not
    /// change while calls run (checkpoints wait for the pipeline to empty).
    fn value_len(&self, key: &[u8], memo: &mut HashMap<Vec<u8>, Option<usize>>) -> Result<Option<usize>, StateError> {
        if let Some(pending) = self.pending().writes.get(key) {
            return Ok(pending.as_ref().map(Vec::len));
        }
        if let Some(len) = memo.get(key) {
            return Ok(*len);
        }
        let len = self.committed(key, <[u8]>::len)?;
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
        loop {
            let kept = {
                let pending = self.pending();
                if let Some(total) = pending.totals.get(prefix) {
                    return Ok(*total);
                }
                pending.kept
            };
            // Counted without holding the lock (the scan takes it): if a
            // call kept writes meanwhile, they may be missing, so count again.
            let entries = self.scan(prefix, usize::MAX, &BTreeMap::new())?;
            let total = entries.iter().map(|(k, v)| (k.len() - prefix.len() + v.len()) as u64).sum();
            let mut pending = self.pending();
            if pending.kept == kept {
                return Ok(*pending.totals.entry(prefix.to_vec()).or_insert(total));
            }
        }
    }

    /// Bytes of uncommitted writes held, and the most allowed.
    fn pending_bytes(&self) -> (usize, usize) {
        (self.pending().bytes, self.max_pending)
    }

    /// Reads `table` in a read transaction; `None` if there is no file or
    /// no such table yet.
    fn read<K: redb::Key + 'static, V: redb::Value + 'static, T>(
        &self,
        slot: &Mutex<Option<Arc<redb::Database>>>,
        table: redb::TableDefinition<K, V>,
        f: impl FnOnce(redb::ReadOnlyTable<K, V>) -> Result<T, StateError>,
    ) -> Result<Option<T>, StateError> {
        let Some(db) = self.db(slot, false)? else { return Ok(None) };
        let txn = db.begin_read().map_err(|e| self.error(e))?;
        match txn.open_table(table) {
            Ok(table) => f(table).map(Some),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Adds a call's writes to scope `prefix`, under one lock, and counts
    /// them into its byte count (if counted) and the pending bytes. `memo`
    /// holds committed value lengths the call already read. The memory
    /// backend writes straight into its map: it commits nothing.
    fn keep(&self, prefix: &[u8], writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>, memo: &HashMap<Vec<u8>, Option<usize>>) {
        let mut guard = self.pending();
        let pending = &mut *guard;
        pending.kept += 1;
        let mut delta: i64 = 0;
        let entry = |k: &[u8], len: Option<usize>| len.map_or(0, |l| (k.len() - prefix.len() + l) as i64);
        match &self.backend {
            Backend::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                for (k, v) in writes {
                    let new = entry(&k, v.as_ref().map(Vec::len));
                    let old = match v {
                        Some(v) => map.insert(k.clone(), v),
                        None => map.remove(&k),
                    };
                    delta += new - entry(&k, old.as_ref().map(Vec::len));
                }
            }
            Backend::Redb(_) => {
                for (k, v) in writes {
                    let old = match pending.writes.get(&k) {
                        Some(old) => {
                            pending.bytes -= pending_size(&k, old.as_ref());
                            old.as_ref().map(Vec::len)
                        }
                        // The call's `set` looked it up: committed values do
                        // not change while calls run. Should the store fail
                        // here, count the value as new: a count too high
                        // refuses writes early, never lets one past.
                        None => match memo.get(&k) {
                            Some(len) => *len,
                            None => self.committed(&k, <[u8]>::len).unwrap_or_else(|e| {
                                tracing::warn!("counting state bytes: {e}");
                                None
                            }),
                        },
                    };
                    delta += entry(&k, v.as_ref().map(Vec::len)) - entry(&k, old);
                    pending.bytes += pending_size(&k, v.as_ref());
                    pending.writes.insert(k, v);
                }
            }
        }
        if let Some(total) = pending.totals.get_mut(prefix) {
            *total = total.saturating_add_signed(delta);
        }
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order:
    /// `overlay` (a call's own writes) over pending writes over committed ones.
    pub(crate) fn scan(
        &self,
        prefix: &[u8],
        limit: usize,
        overlay: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        let range = (Bound::Included(prefix.to_vec()), Bound::Unbounded);
        let in_range = |map: &BTreeMap<Vec<u8>, Option<Vec<u8>>>| -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
            map.range::<Vec<u8>, _>(range.clone())
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let (pending, ours) = (in_range(&self.pending().writes), in_range(overlay));
        // Each deletion over a committed key can hide one of them: read that
        // many more committed entries than asked for.
        let wanted = limit.saturating_add(pending.len() + ours.len());
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        match &self.backend {
            Backend::Memory(map) => {
                let map = map.lock().unwrap_or_else(|e| e.into_inner());
                let committed = map.range::<Vec<u8>, _>(range.clone()).take_while(|(k, _)| k.starts_with(prefix));
                merged.extend(committed.take(wanted).map(|(k, v)| (k.clone(), Some(v.clone()))));
            }
            Backend::Redb(slot) => {
                self.read(slot, STATE, |table| {
                    for entry in table.range::<&[u8]>(prefix..).map_err(|e| self.error(e))?.take(wanted) {
                        let (k, v) = entry.map_err(|e| self.error(e))?;
                        if !k.value().starts_with(prefix) {
                            break;
                        }
                        merged.insert(k.value().to_vec(), Some(v.value().to_vec()));
                    }
                    Ok(())
                })?;
            }
        }
        merged.extend(pending);
        merged.extend(ours);
        Ok(merged.into_iter().filter_map(|(k, v)| Some((k, v?))).take(limit).collect())
    }

    /// Commits the pending writes and, in the same transaction, `checkpoint`
    /// (or removes the checkpoint when `None`: the run is complete).
    pub(crate) fn commit(&self, checkpoint: Option<Checkpoint>) -> Result<(), StateError> {
        let pending = {
            let mut pending = self.pending();
            pending.bytes = 0;
            if pending.totals.len() > MAX_KEPT_TOTALS {
                pending.totals.clear();
            }
            std::mem::take(&mut pending.writes)
        };
        match &self.backend {
            Backend::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                for (k, v) in pending {
                    match v {
                        Some(v) => map.insert(k, v),
                        None => map.remove(&k),
                    };
                }
                Ok(())
            }
            Backend::Redb(slot) => {
                // Nothing was ever written: no file (Python and JavaScript
                // stages import `state` whether they use it or not).
                if pending.is_empty() && !self.path.exists() {
                    return Ok(());
                }
                let db = self.db(slot, true)?.expect("created");
                let txn = db.begin_write().map_err(|e| self.error(e))?;
                {
                    let mut table = txn.open_table(STATE).map_err(|e| self.error(e))?;
                    for (k, v) in &pending {
                        match v {
                            Some(v) => table.insert(k.as_slice(), v.as_slice()).map(drop),
                            None => table.remove(k.as_slice()).map(drop),
                        }
                        .map_err(|e| self.error(e))?;
                    }
                    let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
                    match checkpoint {
                        Some(c) => {
                            let json = serde_json::to_vec(&c).expect("a checkpoint serialises");
                            meta.insert(CHECKPOINT, json.as_slice()).map(drop)
                        }
                        None => meta.remove(CHECKPOINT).map(drop),
                    }
                    .map_err(|e| self.error(e))?;
                }
                txn.commit().map_err(|e| self.error(e))
            }
        }
    }

    /// The last checkpoint of an unfinished run, if any.
    pub(crate) fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        let Backend::Redb(slot) = &self.backend else { return Ok(None) };
        let record = self.read(slot, META, |meta| {
            let Some(value) = meta.get(CHECKPOINT).map_err(|e| self.error(e))? else { return Ok(None) };
            serde_json::from_slice(value.value()).map_err(|e| self.error(format!("bad checkpoint record: {e}")))
        })?;
        Ok(record.flatten())
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

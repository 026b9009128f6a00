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

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const STATE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("state");
const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
const CHECKPOINT: &str = "checkpoint";

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
#[error("state store {}: {reason}", path.display())]
pub struct StateError {
    /// The store's file (`<memory>` for the in-memory store).
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// Where a run had got to at its last checkpoint: every input line up to
/// `line` was processed, its state committed, its outputs written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last input line processed.
    pub line: u64,
    /// Bytes of the sink file written by then.
    pub sink_bytes: u64,
    /// Bytes of the dead-letter file written by then.
    pub dead_bytes: u64,
    /// The run finished: its outputs are being moved into place.
    #[serde(default)]
    pub complete: bool,
}

/// The state of every stage of a pipeline.
pub(crate) struct StateStore {
    backend: Backend,
    path: PathBuf,
    /// Writes since the last commit: `None` is a deletion.
    pending: Mutex<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
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
    pub(crate) fn open(path: &Path) -> Self {
        StateStore { backend: Backend::Redb(Mutex::default()), path: path.into(), pending: Mutex::default() }
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
        }
    }

    /// Whether it survives the process (a file), so runs checkpoint into it.
    pub(crate) fn is_durable(&self) -> bool {
        matches!(self.backend, Backend::Redb(_))
    }

    fn error(&self, e: impl std::fmt::Display) -> StateError {
        StateError { path: self.path.clone(), reason: e.to_string() }
    }

    /// Whether stages wrote anything since the last commit.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending().is_empty()
    }

    fn pending(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Option<Vec<u8>>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(pending) = self.pending().get(key) {
            return Ok(pending.clone());
        }
        match &self.backend {
            Backend::Memory(map) => Ok(map.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()),
            Backend::Redb(slot) => Ok(self
                .read(slot, STATE, |table| Ok(table.get(key).map_err(|e| self.error(e))?.map(|v| v.value().to_vec())))?
                .flatten()),
        }
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

    /// Adds writes to the pending ones, under one lock.
    pub(crate) fn set_all(&self, writes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>) {
        self.pending().extend(writes);
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
        let (pending, ours) = (in_range(&self.pending()), in_range(overlay));
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
        let pending = std::mem::take(&mut *self.pending());
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

/// One instance's view of the store: its stage's namespace, the partition of
/// the message being processed (for keyed stages), and the writes of the
/// current call, which reach the store only if the call is kept (not if it
/// traps or fails `transient` and is retried).
#[derive(Clone)]
pub(crate) struct StateScope {
    store: Arc<StateStore>,
    stage: Arc<str>,
    keyed: bool,
    /// The namespace of the current call: `stage, 0, [partition]`.
    prefix: Vec<u8>,
    /// This call's writes, by full key: `None` is a deletion.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl StateScope {
    pub(crate) fn new(store: Arc<StateStore>, stage: Arc<str>, keyed: bool) -> Self {
        let prefix = namespace(&stage, None);
        StateScope { store, stage, keyed, prefix, writes: BTreeMap::new() }
    }

    /// The call succeeded: its writes go to the store.
    pub(crate) fn keep_writes(&mut self) {
        if !self.writes.is_empty() {
            self.store.set_all(std::mem::take(&mut self.writes));
        }
    }

    /// The call failed and will be retried, or trapped: its writes never happened.
    pub(crate) fn drop_writes(&mut self) {
        self.writes.clear();
    }

    /// Scopes the next call to `key`'s partition (keyed stages only).
    pub(crate) fn enter(&mut self, key: Option<&[u8]>) {
        if self.keyed {
            self.prefix = namespace(&self.stage, Some(key.unwrap_or_default()));
        }
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), key].concat()
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let key = self.key(key);
        match self.writes.get(&key) {
            Some(written) => Ok(written.clone()),
            None => self.store.get(&key),
        }
    }

    pub(crate) fn set(&mut self, key: &[u8], value: Option<Vec<u8>>) {
        let key = self.key(key);
        self.writes.insert(key, value);
    }

    pub(crate) fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StateError> {
        let entries = self.store.scan(&self.key(prefix), limit, &self.writes)?;
        let strip = self.prefix.len();
        Ok(entries.into_iter().map(|(k, v)| (k[strip..].to_vec(), v)).collect())
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

/// Reads the committed state of `stage` from the store file at `path`:
/// what the last checkpoint (or finished run) left. `keyed` says how the
/// stage's keys are laid out (`partition_by = "key"`).
pub fn read_state(path: &Path, stage: &str, keyed: bool) -> Result<Vec<StateEntry>, StateError> {
    if !path.exists() {
        return Err(StateError { path: path.into(), reason: "no such file: the pipeline has not run yet".into() });
    }
    let store = StateStore::open(path);
    let prefix = namespace(stage, None);
    let entries = store.scan(&prefix, usize::MAX, &BTreeMap::new())?;
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
    StateStore::open(path).checkpoint()
}

fn split_partition(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let partition = rest.get(4..4 + len)?;
    Some((partition, &rest[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(store: &Arc<StateStore>, stage: &str, keyed: bool) -> StateScope {
        StateScope::new(store.clone(), stage.into(), keyed)
    }

    #[test]
    fn reads_see_pending_writes_and_commits_make_them_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Arc::new(StateStore::open(&path));
            let mut s = scope(&store, "count", false);
            s.set(b"a", Some(b"1".to_vec()));
            s.set(b"b", Some(b"2".to_vec()));
            assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()), "the call sees its own writes");
            s.keep_writes();
            assert_eq!(scope(&store, "count", false).get(b"a").unwrap(), Some(b"1".to_vec()), "visible before commit");
            store.commit(Some(Checkpoint { line: 7, sink_bytes: 10, dead_bytes: 0, complete: false })).unwrap();
            s.set(b"b", None);
            s.set(b"c", Some(b"3".to_vec()));
            s.keep_writes();
            // Not committed: lost with the process.
        }
        let store = Arc::new(StateStore::open(&path));
        let s = scope(&store, "count", false);
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(b"b").unwrap(), Some(b"2".to_vec()), "the deletion was never committed");
        assert_eq!(s.get(b"c").unwrap(), None);
        assert_eq!(
            store.checkpoint().unwrap(),
            Some(Checkpoint { line: 7, sink_bytes: 10, dead_bytes: 0, complete: false })
        );
        store.commit(None).unwrap();
        assert_eq!(store.checkpoint().unwrap(), None, "a finished run clears its checkpoint");
    }

    #[test]
    fn stages_and_partitions_do_not_see_each_others_keys() {
        let store = Arc::new(StateStore::memory());
        let (mut a, mut keyed) = (scope(&store, "a", false), scope(&store, "k", true));
        a.set(b"x", Some(b"a".to_vec()));
        a.keep_writes();
        keyed.enter(Some(b"user-1"));
        keyed.set(b"x", Some(b"1".to_vec()));
        keyed.keep_writes();
        keyed.enter(Some(b"user-2"));
        assert_eq!(keyed.get(b"x").unwrap(), None);
        keyed.set(b"x", Some(b"2".to_vec()));
        keyed.keep_writes();
        keyed.enter(Some(b"user-1"));
        assert_eq!(keyed.get(b"x").unwrap(), Some(b"1".to_vec()));
        assert_eq!(scope(&store, "b", false).get(b"x").unwrap(), None);
        assert_eq!(a.get(b"x").unwrap(), Some(b"a".to_vec()));
    }

    #[test]
    fn scan_merges_pending_over_committed_in_key_order() {
        let store = Arc::new(StateStore::memory());
        let mut s = scope(&store, "s", false);
        for k in ["p1", "p2", "p3", "q1"] {
            s.set(k.as_bytes(), Some(k.as_bytes().to_vec()));
        }
        s.keep_writes();
        store.commit(None).unwrap();
        s.set(b"p2", None);
        s.keep_writes();
        s.set(b"p0", Some(b"new".to_vec()));
        let keys: Vec<Vec<u8>> = s.scan(b"p", 10).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [b"p0".to_vec(), b"p1".to_vec(), b"p3".to_vec()]);
        assert_eq!(s.scan(b"p", 2).unwrap().len(), 2);
        s.drop_writes();
        assert_eq!(s.get(b"p0").unwrap(), None, "a dropped call's writes are gone");
    }
}

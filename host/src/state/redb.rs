//! The store file: a redb database with the stages' entries in one table and
//! the checkpoint in another, committed together.

use super::{AppliedRecord, Backend, Checkpoint, Cleared, Entries, StateError, StoppedInput, Writes};
use crate::fs::{dir_of, sync_dir_of};
use ::redb::{ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const CHECKPOINT: &str = "checkpoint";
const APPLIED: &str = "applied";
/// The inputs signals stopped runs over.
const STOPPED_INPUTS: &str = "stopped_inputs";

/// The store file at `path`. Opened on first use, and created only when
/// something is committed: a pipeline whose stages could use state (Python
/// and JavaScript components import every capability) but never do leaves
/// no file.
pub(super) struct Redb {
    path: PathBuf,
    db: Mutex<Option<Arc<::redb::Database>>>,
}

impl Redb {
    pub(super) fn new(path: &Path) -> Self {
        Redb { path: path.into(), db: Mutex::default() }
    }

    fn error(&self, e: impl std::fmt::Display) -> StateError {
        StateError { path: self.path.clone(), reason: e.to_string() }
    }

    /// The database, opened if need be; `None` if there is no file.
    fn db(&self) -> Result<Option<Arc<::redb::Database>>, StateError> {
        let mut slot = self.db.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = &*slot {
            return Ok(Some(db.clone()));
        }
        if !self.path.exists() {
            return Ok(None);
        }
        let db = ::redb::Database::create(&self.path).map_err(|e| match e {
            ::redb::DatabaseError::DatabaseAlreadyOpen => {
                self.error("it is open in another process (is the pipeline running?)")
            }
            e => self.error(e),
        })?;
        Ok(Some(slot.insert(Arc::new(db)).clone()))
    }

    /// Reads `table` in a read transaction; `None` if there is no file or
    /// no such table yet.
    fn read<K: ::redb::Key + 'static, V: ::redb::Value + 'static, T>(
        &self,
        table: TableDefinition<K, V>,
        f: impl FnOnce(::redb::ReadOnlyTable<K, V>) -> Result<T, StateError>,
    ) -> Result<Option<T>, StateError> {
        let Some(db) = self.db()? else { return Ok(None) };
        let txn = db.begin_read().map_err(|e| self.error(e))?;
        match txn.open_table(table) {
            Ok(table) => f(table).map(Some),
            Err(::redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// `f` of the committed value of `key`, if any.
    fn value<T>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> T) -> Result<Option<T>, StateError> {
        let value = self.read(STATE, |table| Ok(table.get(key).map_err(|e| self.error(e))?.map(|v| f(v.value()))))?;
        Ok(value.flatten())
    }

    fn decode(&self, record: &[u8]) -> Result<Checkpoint, StateError> {
        serde_json::from_slice(record).map_err(|e| self.error(format!("bad checkpoint record: {e}")))
    }

    /// Removes, in one transaction, the entries whose key starts with
    /// `prefix` (every entry for an empty one) and, with `checkpoint`, the
    /// checkpoint of an unfinished run. Opens the file only if it is there,
    /// and fails if another process has it open.
    pub(super) fn clear(&self, prefix: &[u8], checkpoint: bool) -> Result<Cleared, StateError> {
        let db = ::redb::Database::open(&self.path).map_err(|e| match e {
            ::redb::DatabaseError::DatabaseAlreadyOpen => self
                .error("it is open in another process: is the pipeline running? Stop it first, then clear its state"),
            e => self.error(e),
        })?;
        let txn = db.begin_write().map_err(|e| self.error(e))?;
        let mut cleared = Cleared { entries: 0, bytes: 0, checkpoint: None };
        {
            let mut table = txn.open_table(STATE).map_err(|e| self.error(e))?;
            // An empty prefix is every key: `..` from the first.
            let removed =
                table.extract_from_if::<&[u8], _>(prefix.., |k, _| k.starts_with(prefix)).map_err(|e| self.error(e))?;
            for entry in removed {
                let (k, v) = entry.map_err(|e| self.error(e))?;
                cleared.entries += 1;
                cleared.bytes += (k.value().len() + v.value().len()) as u64;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            let found = match meta.get(CHECKPOINT).map_err(|e| self.error(e))? {
                Some(record) => Some(self.decode(record.value())?),
                None => None,
            };
            if let Some(found) = found.filter(|c| !c.complete && checkpoint) {
                meta.remove(CHECKPOINT).map_err(|e| self.error(e))?;
                cleared.checkpoint = Some(found);
            }
            // What the state held of a broker's inputs: not once it is gone.
            if checkpoint {
                meta.remove(APPLIED).map_err(|e| self.error(e))?;
                meta.remove(STOPPED_INPUTS).map_err(|e| self.error(e))?;
            }
        }
        txn.commit().map_err(|e| self.error(e))?;
        Ok(cleared)
    }
}

impl Backend for Redb {
    fn is_durable(&self) -> bool {
        true
    }

    fn has_committed(&self) -> bool {
        self.path.exists()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.value(key, <[u8]>::to_vec)
    }

    fn value_len(&self, key: &[u8]) -> Result<Option<usize>, StateError> {
        self.value(key, <[u8]>::len)
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Entries, StateError> {
        let entries = self.read(STATE, |table| {
            let mut entries = Vec::new();
            for entry in table.range::<&[u8]>(prefix..).map_err(|e| self.error(e))?.take(limit) {
                let (k, v) = entry.map_err(|e| self.error(e))?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                entries.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(entries)
        })?;
        Ok(entries.unwrap_or_default())
    }

    fn commit(&self, writes: Writes, checkpoint: Option<Checkpoint>) -> Result<(), StateError> {
        // Nothing was ever written: no file (Python and JavaScript stages
        // import `state` whether they use it or not).
        if writes.is_empty() && !self.path.exists() {
            return Ok(());
        }
        // A new file is made beside the path, under a name of its own, and
        // linked into place once its first commit is durable: a process
        // killed while creating it (even `kill -9`) leaves no file at the
        // path rather than one that cannot be opened, and a file at the path
        // always holds a commit.
        let (db, fresh) = match self.db()? {
            Some(db) => (db, None),
            None => {
                let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let dir = dir_of(&self.path);
                let fresh = tempfile::Builder::new()
                    .prefix(&format!(".{name}."))
                    .suffix(".new")
                    .tempfile_in(dir)
                    .map_err(|e| self.error(format!("creating a new store file in {}: {e}", dir.display())))?
                    .into_temp_path();
                // redb makes a database of an empty file.
                let db = ::redb::Database::create(&fresh).map_err(|e| self.error(e))?;
                (Arc::new(db), Some(fresh))
            }
        };
        let txn = db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = txn.open_table(STATE).map_err(|e| self.error(e))?;
            for (k, v) in &writes {
                match v {
                    Some(v) => table.insert(k.as_slice(), v.as_slice()).map(drop),
                    None => table.remove(k.as_slice()).map(drop),
                }
                .map_err(|e| self.error(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            if let Some(applied) = checkpoint.as_ref().and_then(|c| c.applied.as_ref()) {
                let json = serde_json::to_vec(applied).expect("a record serialises");
                meta.insert(APPLIED, json.as_slice()).map_err(|e| self.error(e))?;
            }
            if let Some(stopped) = checkpoint.as_ref().and_then(|c| c.stopped_inputs.as_ref()) {
                put_stopped_inputs(&mut meta, stopped).map_err(|e| self.error(e))?;
            }
            match checkpoint {
                Some(c) => {
                    let json = serde_json::to_vec(&c).expect("a checkpoint serialises");
                    meta.insert(CHECKPOINT, json.as_slice()).map(drop)
                }
                None => meta.remove(CHECKPOINT).map(drop),
            }
            .map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))?;
        if let Some(fresh) = fresh {
            // A link, not a rename: it never replaces a file another process
            // made at the path meanwhile. The new name goes with `fresh`.
            match std::fs::hard_link(&fresh, &self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(self.error("another process created it meanwhile (is the pipeline running twice?)"));
                }
                // A file system without hard links.
                Err(_) => std::fs::rename(&fresh, &self.path)
                    .map_err(|e| self.error(format!("renaming {}: {e}", fresh.display())))?,
            }
            drop(fresh);
            sync_dir_of(&self.path).map_err(|e| self.error(e))?;
            *self.db.lock().unwrap_or_else(|e| e.into_inner()) = Some(db);
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        let record = self.read(META, |meta| match meta.get(CHECKPOINT).map_err(|e| self.error(e))? {
            Some(record) => self.decode(record.value()).map(Some),
            None => Ok(None),
        })?;
        Ok(record.flatten())
    }

    fn record_stopped_inputs(&self, stopped: &[StoppedInput]) -> Result<(), StateError> {
        let Some(db) = self.db()? else { return Ok(()) };
        let txn = db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            put_stopped_inputs(&mut meta, stopped).map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))
    }

    fn stopped_inputs(&self) -> Result<Vec<StoppedInput>, StateError> {
        let record = self.read(META, |meta| match meta.get(STOPPED_INPUTS).map_err(|e| self.error(e))? {
            Some(record) => serde_json::from_slice(record.value()).map_err(|e| {
                self.error(format!(
                    "the record of inputs that signals stopped runs over cannot be read ({e}); `sluice state \
                     --clear` removes it with the state"
                ))
            }),
            None => Ok(Vec::new()),
        })?;
        Ok(record.unwrap_or_default())
    }

    fn applied(&self) -> Result<Option<AppliedRecord>, StateError> {
        let record = self.read(META, |meta| match meta.get(APPLIED).map_err(|e| self.error(e))? {
            // One that cannot be read only risks inputs applied twice.
            Some(record) => Ok(serde_json::from_slice(record.value())
                .inspect_err(|e| {
                    tracing::warn!("{}: ignoring a bad record of applied inputs: {e}", self.path.display())
                })
                .ok()),
            None => Ok(None),
        })?;
        Ok(record.flatten())
    }
}

/// Writes the record of stopped inputs (none: removes it).
fn put_stopped_inputs(
    meta: &mut ::redb::Table<&str, &[u8]>,
    stopped: &[StoppedInput],
) -> Result<(), ::redb::StorageError> {
    if stopped.is_empty() {
        meta.remove(STOPPED_INPUTS)?;
    } else {
        let json = serde_json::to_vec(stopped).expect("a record serialises");
        meta.insert(STOPPED_INPUTS, json.as_slice())?;
    }
    Ok(())
}

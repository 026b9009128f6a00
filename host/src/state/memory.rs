//! A store that lives as long as the pipeline, in a map: for tests and
//! throwaway runs. It keeps no checkpoint: nothing of it survives the process.

use super::{Backend, Checkpoint, Entries, StateError, Writes};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
pub(super) struct Memory {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Memory {
    fn map(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for Memory {
    fn is_durable(&self) -> bool {
        false
    }

    fn has_committed(&self) -> bool {
        false
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.map().get(key).cloned())
    }

    fn value_len(&self, key: &[u8]) -> Result<Option<usize>, StateError> {
        Ok(self.map().get(key).map(Vec::len))
    }

    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Entries, StateError> {
        let map = self.map();
        let entries = map.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded));
        Ok(entries
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, writes: Writes, _: Option<Checkpoint>) -> Result<(), StateError> {
        let mut map = self.map();
        for (k, v) in writes {
            match v {
                Some(v) => map.insert(k, v),
                None => map.remove(&k),
            };
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        Ok(None)
    }
}

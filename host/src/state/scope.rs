//! A stage's view of the state store: its namespace (and message key, when
//! keyed), and the writes of the current call, checked against the quotas.

use super::pending::{Quota, WriteError, pending_size};
use super::{StateError, StateStore, namespace};
use crate::limits::Breach;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One instance's view of the store: its stage's namespace, the partition of
/// the message being processed (for keyed stages), and the writes of the
/// current call, which reach the store only if the call is kept (not if it
/// traps or fails `transient` and is retried).
#[derive(Clone)]
pub(crate) struct StateScope {
    store: Arc<StateStore>,
    stage: Arc<str>,
    keyed: bool,
    quota: Quota,
    /// The namespace of the current call: `stage, 0, [partition]`.
    prefix: Vec<u8>,
    /// This call's writes, by full key: `None` is a deletion.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// How much this call's writes change the scope's byte count.
    delta: i64,
    /// What this call's writes will add to the pending ones, at most.
    pending: usize,
    /// Committed value lengths this call looked up.
    memo: HashMap<Vec<u8>, Option<usize>>,
}

impl StateScope {
    pub(crate) fn new(store: Arc<StateStore>, stage: Arc<str>, keyed: bool, quota: Quota) -> Self {
        let prefix = namespace(&stage, None);
        StateScope {
            store,
            stage,
            keyed,
            quota,
            prefix,
            writes: BTreeMap::new(),
            delta: 0,
            pending: 0,
            memo: HashMap::new(),
        }
    }

    /// The call succeeded: its writes go to the store.
    pub(crate) fn keep_writes(&mut self) {
        let writes = std::mem::take(&mut self.writes);
        if !writes.is_empty() {
            self.store.keep(&self.prefix, writes, &self.memo);
        }
        self.drop_writes();
    }

    /// The call failed and will be retried, or trapped: its writes never happened.
    pub(crate) fn drop_writes(&mut self) {
        self.writes.clear();
        self.memo.clear();
        (self.delta, self.pending) = (0, 0);
    }

    /// Whether the current call has written (or deleted) anything.
    pub(crate) fn has_writes(&self) -> bool {
        !self.writes.is_empty()
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

    /// Sets (`None`: deletes) `key`, or refuses a write that breaks a
    /// quota. Growing a scope past its quota is refused; shrinking one that
    /// is over it (after the quota was lowered) is not.
    pub(crate) fn set(&mut self, key: &[u8], value: Option<Vec<u8>>) -> Result<(), WriteError> {
        let q = self.quota;
        if key.len() > q.max_key {
            return Err(WriteError::Limit(Breach::StateKey { limit: q.max_key, len: key.len() }));
        }
        if let Some(v) = value.as_ref().filter(|v| v.len() > q.max_value) {
            return Err(WriteError::Limit(Breach::StateValue { limit: q.max_value, len: v.len() }));
        }
        let full = self.key(key);
        let entry = |len: Option<usize>| len.map_or(0, |l| (key.len() + l) as i64);
        let stored = self.store.value_len(&full, &mut self.memo)?;
        let old = match self.writes.get(&full) {
            Some(written) => entry(written.as_ref().map(Vec::len)),
            None => entry(stored),
        };
        let new = entry(value.as_ref().map(Vec::len));
        if new > old {
            let total = (self.store.scope_total(&self.prefix)? as i64 + self.delta + new - old).max(0) as u64;
            if total > q.max_total {
                return Err(WriteError::Limit(Breach::StateBytes { limit: q.max_total, total, keyed: self.keyed }));
            }
        }
        // Deleting what the store does not hold is no write at all: a call
        // cannot pile up deletions of keys that never existed.
        let noop = value.is_none() && stored.is_none();
        let size = pending_size(&full, value.as_ref());
        let (pending, max_pending) = self.store.pending_bytes();
        let would = pending.saturating_add(self.pending).saturating_add(size);
        if !noop && self.store.is_durable() && would > max_pending {
            return Err(WriteError::Limit(Breach::StatePending { limit: max_pending, pending: would }));
        }
        let previous = if noop {
            self.writes.remove(&full)
        } else {
            self.pending += size;
            self.writes.insert(full.clone(), value)
        };
        if let Some(previous) = previous {
            self.pending -= pending_size(&full, previous.as_ref());
        }
        self.delta += new - old;
        Ok(())
    }

    pub(crate) fn scan(&self, prefix: &[u8], limit: usize) -> Result<super::Entries, StateError> {
        let entries = self.store.scan(&self.key(prefix), limit, &self.writes)?;
        let strip = self.prefix.len();
        Ok(entries.into_iter().map(|(k, v)| (k[strip..].to_vec(), v)).collect())
    }
}

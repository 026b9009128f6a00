//! The pending overlay (the writes of kept calls since the last commit) and
//! the quota accounting: each scope's byte count and the overlay's own.

use super::{Backend, StateError, Writes};
use crate::limits::{Breach, Limits};
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

/// What the host holds for a pending entry beyond its key and value bytes
/// (two `Vec` headers and a share of a B-tree node), so that a flood of
/// empty values is not free.
pub(super) const PENDING_ENTRY_OVERHEAD: usize = 64;
/// Scopes whose byte counts are kept across a checkpoint; past this many
/// (a keyed stage seeing many message keys) the counts are dropped at the
/// checkpoint and computed again when next needed.
const MAX_KEPT_TOTALS: usize = 10_000;

/// Bytes a pending entry holds in memory.
pub(super) fn pending_size(key: &[u8], value: Option<&Vec<u8>>) -> usize {
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

/// Writes since the last commit, which reads see at once, and the scopes'
/// byte counts.
pub(super) struct Overlay {
    pending: Mutex<Pending>,
    /// The most bytes `writes` may hold.
    max_bytes: usize,
}

#[derive(Default)]
struct Pending {
    /// Writes since the last commit: `None` is a deletion.
    writes: Writes,
    /// What `writes` holds, by [`pending_size`].
    bytes: usize,
    /// Bytes (keys and values) each scope holds, committed and pending, by
    /// scope prefix: for the scopes written to since they were last counted.
    totals: HashMap<Vec<u8>, u64>,
    /// Calls whose writes were kept, to tell whether a count taken without
    /// the lock is still good.
    kept: u64,
}

impl Overlay {
    pub(super) fn new(max_bytes: usize) -> Self {
        Overlay { pending: Mutex::default(), max_bytes }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `f` of the pending write of `key`, if there is one (`None` in it is a
    /// deletion).
    pub(super) fn get<T>(&self, key: &[u8], f: impl FnOnce(Option<&Vec<u8>>) -> T) -> Option<T> {
        self.lock().writes.get(key).map(|v| f(v.as_ref()))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lock().writes.is_empty()
    }

    /// Whether the writes passed half their budget: a checkpoint is due,
    /// before writes start failing.
    pub(super) fn past_mark(&self) -> bool {
        self.lock().bytes > self.max_bytes / 2
    }

    /// Bytes of writes held, and the most allowed.
    pub(super) fn bytes(&self) -> (usize, usize) {
        (self.lock().bytes, self.max_bytes)
    }

    /// The writes to keys that start with `prefix`, in key order.
    pub(super) fn range(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        in_range(&self.lock().writes, prefix)
    }

    /// The writes, for a commit: the overlay starts again empty.
    pub(super) fn take(&self) -> Writes {
        let mut pending = self.lock();
        pending.bytes = 0;
        if pending.totals.len() > MAX_KEPT_TOTALS {
            pending.totals.clear();
        }
        std::mem::take(&mut pending.writes)
    }

    /// Bytes (keys after `prefix`, and values) the scope `prefix` holds,
    /// committed and pending: `count` (which reads through the overlay)
    /// counts them the first time.
    pub(super) fn scope_total(
        &self,
        prefix: &[u8],
        count: impl Fn() -> Result<u64, StateError>,
    ) -> Result<u64, StateError> {
        loop {
            let kept = {
                let pending = self.lock();
                if let Some(total) = pending.totals.get(prefix) {
                    return Ok(*total);
                }
                pending.kept
            };
            // Counted without holding the lock (the count takes it): if a
            // call kept writes meanwhile, they may be missing, so count again.
            let total = count()?;
            let mut pending = self.lock();
            if pending.kept == kept {
                return Ok(*pending.totals.entry(prefix.to_vec()).or_insert(total));
            }
        }
    }

    /// Adds a call's writes to scope `prefix`, under one lock, and counts
    /// them into its byte count (if counted) and the pending bytes. `memo`
    /// holds committed value lengths the call already read. A backend that
    /// is not durable takes the writes straight away: it commits nothing.
    pub(super) fn keep(
        &self,
        prefix: &[u8],
        writes: Writes,
        memo: &HashMap<Vec<u8>, Option<usize>>,
        backend: &dyn Backend,
    ) {
        let mut guard = self.lock();
        let pending = &mut *guard;
        pending.kept += 1;
        let mut delta: i64 = 0;
        let entry = |k: &[u8], len: Option<usize>| len.map_or(0, |l| (k.len() - prefix.len() + l) as i64);
        // Should the store fail here, count the value as new: a count too
        // high refuses writes early, never lets one past.
        let committed = |k: &[u8]| {
            backend.value_len(k).unwrap_or_else(|e| {
                tracing::warn!("counting state bytes: {e}");
                None
            })
        };
        if !backend.is_durable() {
            for (k, v) in &writes {
                delta += entry(k, v.as_ref().map(Vec::len)) - entry(k, committed(k));
            }
            if let Err(e) = backend.commit(writes, None) {
                tracing::warn!("keeping state writes: {e}");
            }
        } else {
            for (k, v) in writes {
                let old = match pending.writes.get(&k) {
                    Some(old) => {
                        pending.bytes -= pending_size(&k, old.as_ref());
                        old.as_ref().map(Vec::len)
                    }
                    // The call's `set` looked it up: committed values do
                    // not change while calls run.
                    None => memo.get(&k).copied().unwrap_or_else(|| committed(&k)),
                };
                delta += entry(&k, v.as_ref().map(Vec::len)) - entry(&k, old);
                pending.bytes += pending_size(&k, v.as_ref());
                pending.writes.insert(k, v);
            }
        }
        if let Some(total) = pending.totals.get_mut(prefix) {
            *total = total.saturating_add_signed(delta);
        }
    }
}

/// The entries of `map` whose key starts with `prefix`, in key order.
pub(super) fn in_range(map: &Writes, prefix: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let range = map.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded));
    range.take_while(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

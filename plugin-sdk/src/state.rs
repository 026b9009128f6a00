//! Key-value state that lasts across messages and runs (`sluice:pipeline/state`).
//!
//! Each stage has its own state; a stage with `partition_by = "key"` has
//! separate state per message key, so the calls below only ever see the
//! entries of the message being processed. Writes are visible to later reads
//! at once, and the host makes them durable with the source position at each
//! checkpoint. Keys and values are bytes; [`get_u64`] and [`set_u64`] store
//! counters as decimal text, so `sluice state` shows them readably.
//!
//! ```no_run
//! use sluice_sdk::state;
//!
//! let seen = state::get_u64(b"seen")?.unwrap_or(0) + 1;
//! state::set_u64(b"seen", seen);
//! for (key, value) in state::scan(b"user/", 100) {
//!     // every entry whose key starts with `user/`, in key order
//! }
//! # Ok::<(), sluice_sdk::StageError>(())
//! ```
//!
//! Outside a component (native unit tests of a stage), state is an in-memory
//! map private to the current thread, so each `#[test]` starts with empty
//! state; [`clear`] empties it within a test.

use crate::StageError;

/// The value stored under `key`, if any.
pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    imp::get(key)
}

/// Stores `value` under `key`, replacing what was there.
pub fn set(key: &[u8], value: &[u8]) {
    imp::set(key, value)
}

/// Removes `key`, if present.
pub fn delete(key: &[u8]) {
    imp::delete(key)
}

/// Up to `limit` entries whose key starts with `prefix`, in key order. An
/// empty prefix matches every key.
pub fn scan(prefix: &[u8], limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    imp::scan(prefix, limit)
}

/// The number stored under `key` by [`set_u64`], if any.
///
/// A value that is not a decimal `u64` (written by [`set`], say) is an
/// [`StageError::Invalid`] naming the key, so `?` dead-letters the message
/// rather than silently restarting the count.
pub fn get_u64(key: &[u8]) -> Result<Option<u64>, StageError> {
    let Some(value) = get(key) else { return Ok(None) };
    std::str::from_utf8(&value).ok().and_then(|text| text.parse().ok()).map(Some).ok_or_else(|| {
        StageError::invalid(format!(
            "state under key `{}` is not a decimal number: `{}`",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(&value)
        ))
    })
}

/// Stores `value` under `key` as decimal text (`42` is the bytes `b"42"`).
pub fn set_u64(key: &[u8], value: u64) {
    set(key, value.to_string().as_bytes())
}

/// Empties this thread's state. Only outside a component, for unit tests.
#[cfg(not(target_arch = "wasm32"))]
pub fn clear() {
    imp::MAP.with(|map| map.borrow_mut().clear())
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::bindings::sluice::pipeline::state as host;

    pub(super) fn get(key: &[u8]) -> Option<Vec<u8>> {
        host::get(key)
    }

    pub(super) fn set(key: &[u8], value: &[u8]) {
        host::set(key, value)
    }

    pub(super) fn delete(key: &[u8]) {
        host::delete(key)
    }

    pub(super) fn scan(prefix: &[u8], limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        host::scan(prefix, limit)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        pub(super) static MAP: RefCell<BTreeMap<Vec<u8>, Vec<u8>>> = const { RefCell::new(BTreeMap::new()) };
    }

    pub(super) fn get(key: &[u8]) -> Option<Vec<u8>> {
        MAP.with(|map| map.borrow().get(key).cloned())
    }

    pub(super) fn set(key: &[u8], value: &[u8]) {
        MAP.with(|map| map.borrow_mut().insert(key.to_vec(), value.to_vec()));
    }

    pub(super) fn delete(key: &[u8]) {
        MAP.with(|map| map.borrow_mut().remove(key));
    }

    pub(super) fn scan(prefix: &[u8], limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        MAP.with(|map| {
            map.borrow()
                .range(prefix.to_vec()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .take(limit as usize)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_delete() {
        assert_eq!(get(b"a"), None);
        set(b"a", b"1");
        set(b"a", b"2");
        assert_eq!(get(b"a"), Some(b"2".to_vec()));
        delete(b"a");
        delete(b"a");
        assert_eq!(get(b"a"), None);
    }

    #[test]
    fn scan_takes_the_prefix_in_key_order_up_to_the_limit() {
        for key in ["u/b", "u/a", "u", "v/a", "t/z", "u/c"] {
            set(key.as_bytes(), key.to_uppercase().as_bytes());
        }
        let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| {
            entries.into_iter().map(|(k, _)| String::from_utf8(k).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(keys(scan(b"u/", 10)), ["u/a", "u/b", "u/c"]);
        assert_eq!(keys(scan(b"u", 2)), ["u", "u/a"]);
        assert_eq!(scan(b"u/a", 1), [(b"u/a".to_vec(), b"U/A".to_vec())]);
        assert_eq!(keys(scan(b"", 100)).len(), 6);
        assert!(scan(b"w", 10).is_empty());
        assert!(scan(b"u", 0).is_empty());
        clear();
        assert!(scan(b"", 100).is_empty());
    }

    #[test]
    fn counters_are_decimal_text() {
        assert_eq!(get_u64(b"n"), Ok(None));
        set_u64(b"n", 42);
        assert_eq!(get(b"n"), Some(b"42".to_vec()));
        assert_eq!(get_u64(b"n"), Ok(Some(42)));
        set(b"n", b"forty-two");
        assert_eq!(get_u64(b"n"), Err(StageError::invalid("state under key `n` is not a decimal number: `forty-two`")));
    }
}

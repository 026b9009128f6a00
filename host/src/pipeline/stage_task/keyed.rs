//! The keys of a keyed stage (`partition_by = "key"`): one message per key
//! in flight at a time, later messages of a busy key queued behind it in
//! order, different keys in parallel.

use crate::bindings::Message;
use crate::envelope::Envelope;
use std::collections::{HashMap, VecDeque};

/// The keys with a message in flight, each with the messages waiting
/// behind it.
#[derive(Default)]
pub(super) struct Keys {
    busy: HashMap<Vec<u8>, VecDeque<Envelope>>,
    /// Messages waiting behind a busy key (not yet in flight).
    waiting: usize,
}

impl Keys {
    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    /// A message arrives: returned if its key is free (it runs now, and the
    /// key is busy until [`Keys::next`]), else it waits behind its key.
    pub(super) fn arrive(&mut self, envelope: Envelope) -> Option<Envelope> {
        let key = key_of(&envelope.message);
        match self.busy.get_mut(&key) {
            Some(queue) => {
                queue.push_back(envelope);
                self.waiting += 1;
                None
            }
            None => {
                self.busy.insert(key, VecDeque::new());
                Some(envelope)
            }
        }
    }

    /// The message of `key` in flight is done: the next one of that key, to
    /// run now (the key stays busy), or none (the key is free).
    pub(super) fn next(&mut self, key: &[u8]) -> Option<Envelope> {
        match self.busy.get_mut(key).and_then(VecDeque::pop_front) {
            Some(next) => {
                self.waiting -= 1;
                Some(next)
            }
            None => {
                self.busy.remove(key);
                None
            }
        }
    }

    /// The message of `key` in flight is done, and no job will run for that
    /// key again (the stage is stuck): every message waiting behind it, and
    /// the key freed.
    pub(super) fn take_all(&mut self, key: &[u8]) -> Vec<Envelope> {
        let queued: Vec<Envelope> = self.busy.remove(key).unwrap_or_default().into();
        self.waiting -= queued.len();
        queued
    }
}

/// The partition of a keyed message: its key; messages without one share a partition.
pub(super) fn key_of(message: &Message) -> Vec<u8> {
    message.key.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Origin;

    fn message(key: Option<&str>, value: &str) -> Envelope {
        let message = Message {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.into(),
            headers: Vec::new(),
            timestamp: None,
        };
        Envelope { message, origin: Origin::at(0) }
    }

    fn value(envelope: Option<Envelope>) -> Option<String> {
        envelope.map(|e| String::from_utf8(e.message.value).unwrap())
    }

    #[test]
    fn one_message_per_key_at_a_time_in_order() {
        let mut keys = Keys::default();
        assert_eq!(value(keys.arrive(message(Some("a"), "a1"))), Some("a1".into()));
        assert_eq!(value(keys.arrive(message(Some("b"), "b1"))), Some("b1".into()), "another key runs at once");
        assert!(keys.arrive(message(Some("a"), "a2")).is_none());
        assert!(keys.arrive(message(Some("a"), "a3")).is_none());
        assert_eq!(keys.waiting(), 2);
        assert_eq!(value(keys.next(b"a")), Some("a2".into()));
        assert_eq!(value(keys.next(b"a")), Some("a3".into()));
        assert_eq!(value(keys.next(b"a")), None);
        assert_eq!(keys.waiting(), 0);
        assert_eq!(value(keys.arrive(message(Some("a"), "a4"))), Some("a4".into()), "the key was freed");
    }

    #[test]
    fn messages_without_a_key_share_one_partition() {
        let mut keys = Keys::default();
        assert!(keys.arrive(message(None, "1")).is_some());
        assert!(keys.arrive(message(None, "2")).is_none());
        assert!(keys.arrive(message(Some(""), "3")).is_none(), "an empty key is no key");
        let all: Vec<_> = keys.take_all(b"").into_iter().map(|e| value(Some(e)).unwrap()).collect();
        assert_eq!(all, ["2", "3"]);
        assert_eq!(keys.waiting(), 0);
        assert!(keys.arrive(message(None, "4")).is_some(), "the key was freed");
    }
}

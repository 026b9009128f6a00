//! Entry fields and messages: which field of an entry holds a message's
//! value, key and timestamp (every other field a header), and the message an
//! entry's fields make, or why they make none.

use crate::bindings::{Header, Message};
use crate::connect::Read;

/// The fields an entry's message parts are in.
#[derive(Clone)]
pub(super) struct Fields {
    pub(super) value: String,
    pub(super) key: String,
    pub(super) timestamp: String,
}

impl Fields {
    pub(super) fn value_of(&self, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        fields.iter().find(|(name, _)| *name == self.value.as_bytes()).map(|(_, v)| v.clone()).unwrap_or_default()
    }

    /// The message an entry holds, or why it holds none.
    pub(super) fn read(&self, id: &str, id_ms: u64, fields: Vec<(Vec<u8>, Vec<u8>)>) -> Read {
        let (mut value, mut key, mut timestamp) = (None, None, None);
        let mut headers = Vec::new();
        for (name, field) in fields {
            if value.is_none() && name == self.value.as_bytes() {
                value = Some(field);
            } else if key.is_none() && name == self.key.as_bytes() {
                key = Some(field);
            } else if timestamp.is_none() && name == self.timestamp.as_bytes() {
                timestamp = Some(field);
            } else {
                headers.push(Header { name: String::from_utf8_lossy(&name).into_owned(), value: field });
            }
        }
        // Checked once every field is seen, so that the dead letter keeps
        // the value, whichever comes first in the entry.
        let timestamp = match timestamp {
            None => None,
            Some(field) => match std::str::from_utf8(&field).ok().and_then(|t| t.trim().parse::<i64>().ok()) {
                Some(ms) => Some(ms),
                None => {
                    return Read::Unreadable {
                        head: value.unwrap_or_default(),
                        reason: format!(
                            "entry {id}: field `{}` (timestamp_field in [source.redis]) is {:?}, not whole \
                             milliseconds since the Unix epoch: fix the producer, or set timestamp_field to a \
                             field that holds them",
                            self.timestamp,
                            String::from_utf8_lossy(&field)
                        ),
                    };
                }
            },
        };
        let Some(value) = value else {
            return Read::Unreadable {
                head: Vec::new(),
                reason: format!(
                    "entry {id} has no field `{}`, which holds the message (value_field in [source.redis])",
                    self.value
                ),
            };
        };
        let timestamp = timestamp.or(i64::try_from(id_ms).ok());
        Read::Message(Message { key, value, headers, timestamp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_maps_onto_a_message_field_by_field() {
        let fields = Fields { value: "value".into(), key: "key".into(), timestamp: "timestamp".into() };
        let entry = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect::<Vec<_>>()
        };
        let read =
            fields.read("7-0", 7, entry(&[("b", "2"), ("value", "v"), ("key", "k"), ("a", "1"), ("timestamp", "42")]));
        let Read::Message(m) = read else { panic!("a message") };
        assert_eq!((m.value, m.key, m.timestamp), (b"v".to_vec(), Some(b"k".to_vec()), Some(42)));
        let headers: Vec<(&str, &[u8])> = m.headers.iter().map(|h| (h.name.as_str(), &h.value[..])).collect();
        assert_eq!(headers, [("b", &b"2"[..]), ("a", b"1")]);
        // Without a timestamp field: the id's milliseconds.
        let Read::Message(m) = fields.read("7-0", 7, entry(&[("value", "v")])) else { panic!("a message") };
        assert_eq!((m.timestamp, m.key), (Some(7), None));
        // Without a value: unreadable, naming the field.
        let Read::Unreadable { reason, .. } = fields.read("7-0", 7, entry(&[("v", "x")])) else { panic!("unreadable") };
        assert!(reason.contains("`value`") && reason.contains("value_field"), "{reason}");
        // A bad timestamp, before or after the value: unreadable, keeping the value.
        for pairs in [[("timestamp", "soon"), ("value", "v")], [("value", "v"), ("timestamp", "soon")]] {
            let Read::Unreadable { head, reason } = fields.read("7-0", 7, entry(&pairs)) else { panic!("unreadable") };
            assert_eq!(head, b"v");
            assert!(reason.contains("\"soon\"") && reason.contains("timestamp_field"), "{reason}");
        }
    }
}

//! Server replies taken apart: the entries of an `XREADGROUP` or
//! `XAUTOCLAIM` reply, whichever protocol version the server speaks, and the
//! items, bytes and text of a reply value.

use redis::Value;

/// A stream entry as read: `None` fields for an entry deleted while pending.
pub(super) struct Entry {
    pub(super) id: String,
    pub(super) fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// The entries of an `XREADGROUP` reply (of one stream), in order.
pub(super) fn streams_reply(reply: Value) -> Vec<Entry> {
    let streams: Vec<Value> = match reply {
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        other => into_items(other).into_iter().filter_map(|stream| into_items(stream).into_iter().nth(1)).collect(),
    };
    streams.into_iter().flat_map(entries).collect()
}

/// A list of entries: each `[id, [field, value, ...]]`, the fields nil for
/// an entry deleted while pending.
pub(super) fn entries(list: Value) -> Vec<Entry> {
    into_items(list)
        .into_iter()
        .filter_map(|entry| {
            let mut parts = into_items(entry).into_iter();
            let id = parts.next().and_then(text)?;
            let fields = match parts.next() {
                None | Some(Value::Nil) => None,
                Some(Value::Map(pairs)) => Some(pairs.into_iter().map(|(n, v)| (bytes(n), bytes(v))).collect()),
                Some(list) => {
                    let mut flat = into_items(list).into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                        pairs.push((bytes(name), bytes(value)));
                    }
                    Some(pairs)
                }
            };
            Some(Entry { id, fields })
        })
        .collect()
}

pub(super) fn into_items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

fn bytes(value: Value) -> Vec<u8> {
    match value {
        Value::BulkString(bytes) => bytes,
        Value::SimpleString(text) => text.into_bytes(),
        Value::Int(n) => n.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

pub(super) fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

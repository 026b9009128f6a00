//! Conveniences on [`Message`] for the common case of JSON values.

use crate::json::{FieldPath, SpliceError};
use crate::{Message, StageError};
use serde::Serialize;
use serde::de::DeserializeOwned;

impl Message {
    /// A message with this value and no key, headers or timestamp.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Message { key: None, value: value.into(), headers: Vec::new(), timestamp: None }
    }

    /// Parses the value as a JSON document.
    ///
    /// A value that is not JSON is the message's fault, so the error is
    /// [`StageError::Invalid`] and `?` dead-letters the message.
    pub fn json(&self) -> Result<serde_json::Value, StageError> {
        self.json_as()
    }

    /// Parses the value as JSON into `T`; a mismatch is [`StageError::Invalid`].
    pub fn json_as<T: DeserializeOwned>(&self) -> Result<T, StageError> {
        serde_json::from_slice(&self.value)
            .map_err(|e| StageError::invalid(format!("value is not the expected JSON: {e}")))
    }

    /// The field at `path` of the value parsed as JSON, without building the
    /// rest of the document ([`FieldPath::read`](crate::json::FieldPath::read)):
    /// for a stage that only reads a field. A value that is not JSON is
    /// [`StageError::Invalid`], as for [`json`](Self::json).
    pub fn json_field(&self, path: &FieldPath) -> Result<Option<serde_json::Value>, StageError> {
        path.read(&self.value).map_err(|e| StageError::invalid(format!("value is not the expected JSON: {e}")))
    }

    /// Sets the field at `path` of the value (a JSON document) to `value`,
    /// changing only the field's bytes: the document is not parsed into a
    /// [`Value`](serde_json::Value) and serialised again, so the other members
    /// keep their order and spelling, for a fraction of the work when a stage
    /// changes a field or two (each call scans the message again). As
    /// [`FieldPath::set`](crate::json::FieldPath::set) does on a parsed
    /// document, missing objects along the path are created, a `null` on it
    /// becomes an object, and a new member goes after the others (spaced like
    /// them). A key repeated along the path counts once, its last copy, as
    /// when the document is parsed: the earlier copies are removed.
    ///
    /// A value that is not JSON, a path through a scalar (`a.b` where `a` is a
    /// number) or past the end of an array is [`StageError::Invalid`]. The
    /// check is JSON's grammar: what it allows and a `Value` cannot hold (a
    /// number beyond `f64`, an unpaired surrogate escape, nesting deeper than
    /// 128) passes through unchanged, where [`json`](Self::json) refuses it.
    pub fn set_json_field(&mut self, path: &FieldPath, value: &serde_json::Value) -> Result<(), StageError> {
        self.value = path.write(&self.value, value).map_err(invalid)?;
        Ok(())
    }

    /// Removes the field at `path` from the value (a JSON document) and
    /// returns it, `None` if there is none; like
    /// [`set_json_field`](Self::set_json_field), only the field's member (and
    /// the earlier copies of a key repeated along the path, so that no copy of
    /// the field stays in the text) changes. An array element becomes `null`,
    /// as with [`FieldPath::remove`](crate::json::FieldPath::remove); a path
    /// through a scalar has no field.
    pub fn remove_json_field(&mut self, path: &FieldPath) -> Result<Option<serde_json::Value>, StageError> {
        let (text, field) = path.delete(&self.value).map_err(invalid)?;
        if let Some(text) = text {
            self.value = text;
        }
        Ok(field)
    }

    /// Moves the field at `from` to `to` (a rename), in the text as
    /// [`remove_json_field`](Self::remove_json_field) and
    /// [`set_json_field`](Self::set_json_field) do, the field's value kept
    /// as it was written: a number is never rounded through `f64`. Returns
    /// whether there was a field to move.
    pub fn move_json_field(&mut self, from: &FieldPath, to: &FieldPath) -> Result<bool, StageError> {
        match from.move_to(to, &self.value).map_err(invalid)? {
            Some(text) => {
                self.value = text;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Replaces the value with `doc` serialised as compact JSON.
    pub fn set_json<T: Serialize + ?Sized>(&mut self, doc: &T) -> Result<(), StageError> {
        self.value =
            serde_json::to_vec(doc).map_err(|e| StageError::invalid(format!("cannot serialise value as JSON: {e}")))?;
        Ok(())
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.name == name).map(|h| h.value.as_slice())
    }
}

/// An edit that failed: the message's fault either way.
fn invalid(error: SpliceError) -> StageError {
    match error {
        SpliceError::NotJson(e) => StageError::invalid(format!("value is not the expected JSON: {e}")),
        SpliceError::Path(reason) => StageError::invalid(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Header;

    #[test]
    fn json_round_trip_keeps_key_and_headers() {
        let mut m = Message::new(br#"{"a":1}"#.to_vec());
        m.key = Some(b"k".to_vec());
        m.headers.push(Header { name: "h".into(), value: b"v".to_vec() });
        let mut doc = m.json().unwrap();
        doc["b"] = 2.into();
        m.set_json(&doc).unwrap();
        assert_eq!(m.value, br#"{"a":1,"b":2}"#);
        assert_eq!(m.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(m.header("h"), Some(&b"v"[..]));
    }

    #[test]
    fn non_json_value_is_invalid_not_transient() {
        let m = Message::new(b"not json".to_vec());
        match m.json() {
            Err(StageError::Invalid(reason)) => assert!(reason.contains("expected JSON"), "{reason}"),
            other => panic!("expected invalid, got {other:?}"),
        }
    }
}

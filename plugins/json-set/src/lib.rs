//! `json-set`: sets fields of JSON messages to fixed values and renames fields.
//!
//! ```toml
//! [stages.config]
//! set = { "meta.pipeline" = "quickstart", reviewed = false }
//! rename = { amount = "amount_eur" }
//! ```
//!
//! Renames apply first, then sets. Nested objects are created as needed. A
//! value that is not JSON, or a path through a non-object, is `invalid`.

use serde::Deserialize;
use serde_json::Value;
use sluice_sdk::json::FieldPath;
use sluice_sdk::{Message, Stage, StageError};
use std::collections::BTreeMap;

/// The stage's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    set: BTreeMap<String, Value>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
}

/// Sets and renames fields.
#[derive(Debug)]
pub struct JsonSet {
    set: Vec<(FieldPath, Value)>,
    rename: Vec<(FieldPath, FieldPath)>,
}

impl Stage for JsonSet {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if c.set.is_empty() && c.rename.is_empty() {
            return Err("nothing to do: give `set` and/or `rename`".into());
        }
        let set = c.set.into_iter().map(|(k, v)| Ok((k.parse()?, v))).collect::<Result<_, String>>()?;
        let rename = c.rename.into_iter().map(|(k, v)| Ok((k.parse()?, v.parse()?))).collect::<Result<_, String>>()?;
        Ok(JsonSet { set, rename })
    }

    /// Edits the message's text, field by field: the rest of it stays as it
    /// came (key order, spacing, numbers beyond `f64`), as it would through
    /// Python's `json`, where parsing and serialising would sort its keys
    /// and round its large numbers.
    fn process(&mut self, mut message: Message) -> Result<Vec<Message>, StageError> {
        for (from, to) in &self.rename {
            message.move_json_field(from, to)?;
        }
        for (path, value) in &self.set {
            message.set_json_field(path, value)?;
        }
        Ok(vec![message])
    }
}

sluice_sdk::export_stage!(JsonSet);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stage(config: Value) -> JsonSet {
        JsonSet::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    #[test]
    fn renames_then_sets() {
        let mut s = stage(json!({"set": {"meta.by": "sluice"}, "rename": {"amount": "amount_eur"}}));
        let out = s.process(Message::new(br#"{"amount": 5}"#.to_vec())).unwrap();
        assert_eq!(out[0].json().unwrap(), json!({"amount_eur": 5, "meta": {"by": "sluice"}}));
    }

    #[test]
    fn the_rest_of_the_message_stays_as_it_came() {
        let mut s = stage(json!({"set": {"t": 1}, "rename": {"amount": "amount_eur"}}));
        let text = br#"{"id": 12345678901234567890123, "x": 1.5e3, "amount": -0, "z": 1}"#;
        let out = s.process(Message::new(text.to_vec())).unwrap();
        assert_eq!(
            String::from_utf8(out[0].value.clone()).unwrap(),
            r#"{"id": 12345678901234567890123, "x": 1.5e3, "z": 1, "amount_eur": -0, "t": 1}"#
        );
    }

    #[test]
    fn setting_inside_a_scalar_is_invalid() {
        let mut s = stage(json!({"set": {"a.b": 1}}));
        let err = s.process(Message::new(br#"{"a": 3}"#.to_vec())).unwrap_err();
        assert_eq!(err, StageError::invalid("cannot set `a.b`: its parent is a number"));
    }
}

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

    fn process(&mut self, mut message: Message) -> Result<Vec<Message>, StageError> {
        let mut doc = message.json()?;
        for (from, to) in &self.rename {
            if let Some(v) = from.remove(&mut doc) {
                to.set(&mut doc, v).map_err(StageError::invalid)?;
            }
        }
        for (path, value) in &self.set {
            path.set(&mut doc, value.clone()).map_err(StageError::invalid)?;
        }
        message.set_json(&doc)?;
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
    fn setting_inside_a_scalar_is_invalid() {
        let mut s = stage(json!({"set": {"a.b": 1}}));
        let err = s.process(Message::new(br#"{"a": 3}"#.to_vec())).unwrap_err();
        assert_eq!(err, StageError::invalid("cannot set `a.b`: its parent is a number"));
    }
}

//! `count-by-key`: counts JSON messages per key, in durable state, and
//! annotates each with its key's running count.
//!
//! ```toml
//! [[stages]]
//! name = "per-user"
//! plugin = "count-by-key.wasm"
//! config = { field = "user", every = 100 }   # `every` is optional
//! ```
//!
//! The key is the value of `field` (a dotted path): a string, or a number
//! rendered as text. Each message leaves with `"count": n` added, the number of
//! messages with its key so far, this one included. The counts live in the
//! stage's state (`sluice_sdk::state`, one entry per key, the count as decimal
//! text), so they carry on across runs.
//!
//! With `every = N`, when a key's count reaches a multiple of N the stage
//! first emits (`sluice_sdk::emit`) a summary `{"key": k, "count": n,
//! "window_end": true}`, then returns the annotated message: a windowed
//! aggregate streamed out while the message is being processed.
//!
//! Errors, all `invalid`: a value that is not a JSON object, a missing field,
//! a field that is not a string or a number. The count of a failed message's
//! key is left as it was.

use serde::Deserialize;
use serde_json::{Value, json};
use sluice_sdk::json::{FieldPath, kind};
use sluice_sdk::{Message, Stage, StageError, state};
use std::num::NonZeroU64;

/// The stage's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    field: FieldPath,
    #[serde(default)]
    every: Option<NonZeroU64>,
}

/// Counts messages per key.
#[derive(Debug)]
pub struct CountByKey {
    field: FieldPath,
    every: Option<NonZeroU64>,
}

impl CountByKey {
    /// The message's key: its field's value as text.
    fn key(&self, doc: &Value) -> Result<String, StageError> {
        match self.field.get(doc) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(other) => Err(StageError::invalid(format!(
                "field `{}` is a {}, but the key must be a string or a number",
                self.field,
                kind(other)
            ))),
            None => Err(StageError::invalid(format!("no field `{}`", self.field))),
        }
    }
}

impl Stage for CountByKey {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        Ok(CountByKey { field: c.field, every: c.every })
    }

    fn process(&mut self, mut message: Message) -> Result<Vec<Message>, StageError> {
        let mut doc = message.json()?;
        let key = self.key(&doc)?;
        let Value::Object(members) = &mut doc else {
            return Err(StageError::invalid(format!(
                "cannot add `count`: the value is a JSON {}, not an object",
                kind(&doc)
            )));
        };
        let count = state::get_u64(key.as_bytes())?.unwrap_or(0) + 1;
        members.insert("count".into(), count.into());
        message.set_json(&doc)?;

        if self.every.is_some_and(|every| count % every.get() == 0) {
            let mut summary = Message::new(Vec::new());
            summary.set_json(&json!({"key": key, "count": count, "window_end": true}))?;
            summary.key = message.key.clone();
            summary.timestamp = message.timestamp;
            sluice_sdk::emit(summary).map_err(|why| StageError::invalid(format!("emit failed: {why}")))?;
        }
        // Last, so that a message that fails leaves its key's count alone.
        state::set_u64(key.as_bytes(), count);
        Ok(vec![message])
    }
}

sluice_sdk::export_stage!(CountByKey);

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(config: Value) -> CountByKey {
        CountByKey::new(serde_json::from_value(config).unwrap()).unwrap()
    }

    fn run(s: &mut CountByKey, value: Value) -> Result<Value, StageError> {
        let out = s.process(Message::new(value.to_string()))?;
        assert_eq!(out.len(), 1);
        Ok(out[0].json().unwrap())
    }

    #[test]
    fn counts_per_key_in_state() {
        let mut s = stage(json!({"field": "user.id"}));
        assert_eq!(run(&mut s, json!({"user": {"id": "a"}})).unwrap()["count"], 1);
        assert_eq!(run(&mut s, json!({"user": {"id": 7}})).unwrap()["count"], 1);
        let out = run(&mut s, json!({"user": {"id": "a"}, "n": 1})).unwrap();
        assert_eq!(out, json!({"user": {"id": "a"}, "n": 1, "count": 2}));
        assert_eq!(run(&mut s, json!({"user": {"id": 7}})).unwrap()["count"], 2);
        // Numbers and strings with the same text are the same key.
        assert_eq!(run(&mut s, json!({"user": {"id": "7"}})).unwrap()["count"], 3);
        assert_eq!(state::get(b"a"), Some(b"2".to_vec()));
        assert_eq!(state::get(b"7"), Some(b"3".to_vec()));
        // A new instance (or a new run) carries on from the state.
        let mut again = stage(json!({"field": "user.id"}));
        assert_eq!(run(&mut again, json!({"user": {"id": "a"}})).unwrap()["count"], 3);
        assert!(sluice_sdk::take_emitted().is_empty());
    }

    #[test]
    fn every_n_emits_a_window_summary_first() {
        let mut s = stage(json!({"field": "user", "every": 2}));
        let mut m = Message::new(json!({"user": "a"}).to_string());
        m.key = Some(b"k".to_vec());
        m.timestamp = Some(5);
        s.process(m.clone()).unwrap();
        run(&mut s, json!({"user": "b"})).unwrap();
        assert!(sluice_sdk::take_emitted().is_empty());
        let out = s.process(m).unwrap();
        assert_eq!(out[0].json().unwrap()["count"], 2);
        let emitted = sluice_sdk::take_emitted();
        assert_eq!(emitted.len(), 1);
        assert_eq!(emitted[0].json().unwrap(), json!({"key": "a", "count": 2, "window_end": true}));
        assert_eq!(emitted[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(emitted[0].timestamp, Some(5));
        run(&mut s, json!({"user": "a"})).unwrap();
        assert!(sluice_sdk::take_emitted().is_empty());
        run(&mut s, json!({"user": "a"})).unwrap();
        assert_eq!(sluice_sdk::take_emitted()[0].json().unwrap()["count"], 4);
    }

    #[test]
    fn bad_messages_are_invalid_and_not_counted() {
        let mut s = stage(json!({"field": "user"}));
        assert_eq!(run(&mut s, json!({"id": 1})).unwrap_err(), StageError::invalid("no field `user`"));
        assert_eq!(
            run(&mut s, json!({"user": true})).unwrap_err(),
            StageError::invalid("field `user` is a boolean, but the key must be a string or a number")
        );
        let mut by_index = stage(json!({"field": "0"}));
        assert_eq!(
            run(&mut by_index, json!(["a"])).unwrap_err(),
            StageError::invalid("cannot add `count`: the value is a JSON array, not an object")
        );
        assert!(matches!(s.process(Message::new("not json")), Err(StageError::Invalid(_))));
        assert!(state::scan(b"", 10).is_empty());
    }

    #[test]
    fn config_is_checked() {
        let bad = |c: Value| serde_json::from_value::<Config>(c).unwrap_err().to_string();
        assert!(bad(json!({"field": "user", "every": 0})).contains("nonzero"));
        assert!(bad(json!({"field": "a..b"})).contains("not a field path"));
        assert!(bad(json!({"field": "user", "evry": 2})).contains("unknown field"));
    }
}

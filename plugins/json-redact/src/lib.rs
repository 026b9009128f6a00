//! `json-redact`: masks or removes named fields of JSON messages.
//!
//! ```toml
//! [stages.config]
//! fields = ["card", "user.email"]   # dotted paths
//! mode = "mask"                     # "mask" (default) or "drop"
//! mask = "****"                     # replacement text (default "****")
//! keep_last = 4                     # mask mode: keep this many trailing characters of strings
//! ```
//!
//! Missing fields are left alone. A value that is not JSON is `invalid`.

use serde::Deserialize;
use serde_json::Value;
use sluice_sdk::json::FieldPath;
use sluice_sdk::{Message, Stage, StageError};

/// What to do with a field.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Replace the value with the mask text.
    #[default]
    Mask,
    /// Remove the field.
    Drop,
}

/// The stage's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    fields: Vec<FieldPath>,
    #[serde(default)]
    mode: Mode,
    mask: Option<String>,
    #[serde(default)]
    keep_last: usize,
}

/// Masks or drops fields.
#[derive(Debug)]
pub struct JsonRedact {
    fields: Vec<FieldPath>,
    mode: Mode,
    mask: String,
    keep_last: usize,
}

impl Stage for JsonRedact {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if c.fields.is_empty() {
            return Err("`fields` is empty: name at least one field to redact".into());
        }
        if c.mode == Mode::Drop && (c.mask.is_some() || c.keep_last > 0) {
            return Err("`mask` and `keep_last` only apply to mode = \"mask\"".into());
        }
        Ok(JsonRedact {
            fields: c.fields,
            mode: c.mode,
            mask: c.mask.unwrap_or_else(|| "****".into()),
            keep_last: c.keep_last,
        })
    }

    /// Edits the message's text, field by field: the rest of it stays as it
    /// came (key order, spacing, numbers beyond `f64`).
    fn process(&mut self, mut message: Message) -> Result<Vec<Message>, StageError> {
        for field in &self.fields {
            match self.mode {
                Mode::Drop => {
                    message.remove_json_field(field)?;
                }
                Mode::Mask => match message.json_field(field)? {
                    Some(v) => {
                        message.set_json_field(field, &Value::String(self.masked(&v)))?;
                    }
                    // Not in the copy of a repeated key that counts: earlier
                    // copies (which may hold it) go, as setting it would do.
                    None => {
                        message.remove_json_field(field)?;
                    }
                },
            }
        }
        Ok(vec![message])
    }
}

impl JsonRedact {
    fn masked(&self, v: &Value) -> String {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return self.mask.clone(),
        };
        let chars: Vec<char> = text.chars().collect();
        // Never reveal a whole short value.
        let keep = if self.keep_last < chars.len() { self.keep_last } else { 0 };
        let tail: String = chars[chars.len() - keep..].iter().collect();
        format!("{}{tail}", self.mask)
    }
}

sluice_sdk::export_stage!(JsonRedact);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(config: Value, input: Value) -> Value {
        let mut s = JsonRedact::new(serde_json::from_value(config).unwrap()).unwrap();
        let out = s.process(Message::new(serde_json::to_vec(&input).unwrap())).unwrap();
        out[0].json().unwrap()
    }

    #[test]
    fn masks_keeping_the_tail() {
        let out = run(
            json!({"fields": ["card", "user.email", "missing"], "keep_last": 4}),
            json!({"card": "4111111111111111", "user": {"email": "ann@example.com"}, "n": 1}),
        );
        assert_eq!(out, json!({"card": "****1111", "user": {"email": "****.com"}, "n": 1}));
    }

    #[test]
    fn the_rest_of_the_message_stays_as_it_came() {
        let mut s = JsonRedact::new(serde_json::from_value(json!({"fields": ["card", "gone"]})).unwrap()).unwrap();
        let text = br#"{"id": 12345678901234567890123, "card": "4111", "x": 1.5e3}"#;
        let out = s.process(Message::new(text.to_vec())).unwrap();
        assert_eq!(
            String::from_utf8(out[0].value.clone()).unwrap(),
            r#"{"id": 12345678901234567890123, "card": "****", "x": 1.5e3}"#
        );
        // A repeated parent key: the field is in an earlier copy only.
        let out = s.process(Message::new(br#"{"card":{"x":1},"card":2}"#.to_vec())).unwrap();
        assert_eq!(String::from_utf8(out[0].value.clone()).unwrap(), r#"{"card":"****"}"#);
        let mut s = JsonRedact::new(serde_json::from_value(json!({"fields": ["u.email"]})).unwrap()).unwrap();
        let out = s.process(Message::new(br#"{"u":{"email":"secret"},"u":{"name":"x"}}"#.to_vec())).unwrap();
        let text = String::from_utf8(out[0].value.clone()).unwrap();
        assert!(!text.contains("secret"), "{text}");
        let err = s.process(Message::new(b"not json".to_vec())).unwrap_err();
        assert!(matches!(err, StageError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn short_values_are_masked_whole() {
        let out = run(json!({"fields": ["pin"], "keep_last": 4}), json!({"pin": 1234}));
        assert_eq!(out, json!({"pin": "****"}));
    }

    #[test]
    fn drop_removes_fields() {
        let out = run(json!({"fields": ["a.b"], "mode": "drop"}), json!({"a": {"b": 1, "c": 2}}));
        assert_eq!(out, json!({"a": {"c": 2}}));
    }

    #[test]
    fn drop_with_mask_settings_is_refused() {
        let c = serde_json::from_value(json!({"fields": ["a"], "mode": "drop", "keep_last": 2})).unwrap();
        assert!(JsonRedact::new(c).is_err());
    }
}

//! `json-filter`: keeps the JSON messages whose field satisfies a predicate and
//! drops the rest.
//!
//! ```toml
//! [stages.config]
//! field = "amount"   # dotted path into the message's JSON value
//! gte = 100          # exactly one of: equals, not_equals, in, exists, gt, gte, lt, lte, contains
//! ```
//!
//! A message whose value is not JSON, or whose field has the wrong type for an
//! ordering predicate (`gt` on a string), is `invalid` and goes to the
//! dead-letter sink. A missing field fails every predicate but
//! `exists = false` and `not_equals`.

use serde::Deserialize;
use serde_json::Value;
use sluice_sdk::json::{FieldPath, kind};
use sluice_sdk::{Message, Stage, StageError};
use std::cmp::Ordering;

/// The stage's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    field: FieldPath,
    equals: Option<Value>,
    not_equals: Option<Value>,
    #[serde(rename = "in")]
    one_of: Option<Vec<Value>>,
    exists: Option<bool>,
    gt: Option<f64>,
    gte: Option<f64>,
    lt: Option<f64>,
    lte: Option<f64>,
    contains: Option<String>,
}

#[derive(Debug)]
enum Predicate {
    Equals(Value),
    NotEquals(Value),
    OneOf(Vec<Value>),
    Exists(bool),
    Compare { op: &'static str, bound: f64, accept: fn(Ordering) -> bool },
    Contains(String),
}

/// Keeps messages whose `field` satisfies the predicate.
#[derive(Debug)]
pub struct JsonFilter {
    field: FieldPath,
    predicate: Predicate,
}

impl Stage for JsonFilter {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        let mut preds = Vec::new();
        if let Some(v) = c.equals {
            preds.push(Predicate::Equals(v));
        }
        if let Some(v) = c.not_equals {
            preds.push(Predicate::NotEquals(v));
        }
        if let Some(v) = c.one_of {
            preds.push(Predicate::OneOf(v));
        }
        if let Some(v) = c.exists {
            preds.push(Predicate::Exists(v));
        }
        let compares: [(&'static str, Option<f64>, fn(Ordering) -> bool); 4] = [
            ("gt", c.gt, Ordering::is_gt),
            ("gte", c.gte, Ordering::is_ge),
            ("lt", c.lt, Ordering::is_lt),
            ("lte", c.lte, Ordering::is_le),
        ];
        for (op, bound, accept) in compares {
            if let Some(bound) = bound {
                preds.push(Predicate::Compare { op, bound, accept });
            }
        }
        if let Some(v) = c.contains {
            preds.push(Predicate::Contains(v));
        }
        match preds.len() {
            1 => Ok(JsonFilter { field: c.field, predicate: preds.remove(0) }),
            0 => Err(format!(
                "no predicate for field `{}`: set one of equals, not_equals, in, exists, gt, gte, lt, lte, contains",
                c.field
            )),
            n => Err(format!("{n} predicates for field `{}`: set exactly one", c.field)),
        }
    }

    fn process(&mut self, message: Message) -> Result<Vec<Message>, StageError> {
        // Only the field is built; the rest of the document is checked, not kept.
        let field = message.json_field(&self.field)?;
        Ok(if self.keeps(field.as_ref())? { vec![message] } else { Vec::new() })
    }
}

impl JsonFilter {
    fn keeps(&self, field: Option<&Value>) -> Result<bool, StageError> {
        Ok(match (&self.predicate, field) {
            (Predicate::Exists(want), v) => v.is_some() == *want,
            (Predicate::NotEquals(x), v) => v != Some(x),
            (_, None) => false,
            (Predicate::Equals(x), Some(v)) => v == x,
            (Predicate::OneOf(xs), Some(v)) => xs.contains(v),
            (Predicate::Compare { op, bound, accept }, Some(v)) => {
                let n = v.as_f64().ok_or_else(|| {
                    StageError::invalid(format!("field `{}` is a {}, but `{op}` needs a number", self.field, kind(v)))
                })?;
                n.partial_cmp(bound).is_some_and(accept)
            }
            (Predicate::Contains(needle), Some(v)) => match v {
                Value::String(s) => s.contains(needle.as_str()),
                Value::Array(items) => items.iter().any(|i| i.as_str() == Some(needle)),
                other => {
                    return Err(StageError::invalid(format!(
                        "field `{}` is a {}, but `contains` needs a string or an array",
                        self.field,
                        kind(other)
                    )));
                }
            },
        })
    }
}

sluice_sdk::export_stage!(JsonFilter);

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(config: serde_json::Value) -> Result<JsonFilter, String> {
        JsonFilter::new(serde_json::from_value(config).map_err(|e| e.to_string())?)
    }

    fn kept(s: &mut JsonFilter, value: &str) -> Result<bool, StageError> {
        Ok(!s.process(Message::new(value.as_bytes().to_vec()))?.is_empty())
    }

    #[test]
    fn numeric_bounds() {
        let mut s = stage(serde_json::json!({"field": "amount", "gte": 100})).unwrap();
        assert!(kept(&mut s, r#"{"amount": 100}"#).unwrap());
        assert!(!kept(&mut s, r#"{"amount": 99.5}"#).unwrap());
        assert!(!kept(&mut s, r#"{"other": 1}"#).unwrap());
        let err = kept(&mut s, r#"{"amount": "lots"}"#).unwrap_err();
        assert_eq!(err, StageError::invalid("field `amount` is a string, but `gte` needs a number"));
    }

    #[test]
    fn equality_membership_and_contains() {
        let mut s = stage(serde_json::json!({"field": "user.country", "in": ["DE", "FR"]})).unwrap();
        assert!(kept(&mut s, r#"{"user": {"country": "FR"}}"#).unwrap());
        assert!(!kept(&mut s, r#"{"user": {"country": "US"}}"#).unwrap());
        let mut s = stage(serde_json::json!({"field": "tags", "contains": "vip"})).unwrap();
        assert!(kept(&mut s, r#"{"tags": ["new", "vip"]}"#).unwrap());
        let mut s = stage(serde_json::json!({"field": "status", "not_equals": "test"})).unwrap();
        assert!(kept(&mut s, r#"{}"#).unwrap());
        assert!(kept(&mut s, r#"{"status": "live"}"#).unwrap());
        assert!(!kept(&mut s, r#"{"status": "test"}"#).unwrap());
    }

    #[test]
    fn config_needs_exactly_one_predicate() {
        let err = stage(serde_json::json!({"field": "a"})).unwrap_err();
        assert!(err.starts_with("no predicate for field `a`"), "{err}");
        let err = stage(serde_json::json!({"field": "a", "gt": 1, "lt": 2})).unwrap_err();
        assert_eq!(err, "2 predicates for field `a`: set exactly one");
        let err = stage(serde_json::json!({"field": "a", "greater": 1})).unwrap_err();
        assert!(err.contains("unknown field `greater`"), "{err}");
    }

    #[test]
    fn non_json_is_invalid() {
        let mut s = stage(serde_json::json!({"field": "a", "exists": true})).unwrap();
        assert!(matches!(kept(&mut s, "nope"), Err(StageError::Invalid(_))));
    }
}

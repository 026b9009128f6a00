//! Addressing fields inside JSON values by a dotted path.
//!
//! `user.email` names the `email` member of the `user` object; a segment of
//! digits indexes an array (`items.0.sku`). Stages take paths in their config:
//!
//! ```
//! use sluice_sdk::json::FieldPath;
//! let path: FieldPath = "user.email".parse().unwrap();
//! let doc = serde_json::json!({"user": {"email": "a@b.c"}});
//! assert_eq!(path.get(&doc), Some(&serde_json::json!("a@b.c")));
//! ```

mod splice;

pub(crate) use splice::SpliceError;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// A dotted path to a field inside a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<String>,
}

impl FromStr for FieldPath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let segments: Vec<String> = text.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!("`{text}` is not a field path: use names separated by dots, e.g. `user.email`"));
        }
        Ok(FieldPath { text: text.to_string(), segments })
    }
}

impl<'de> serde::Deserialize<'de> for FieldPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn child<'a>(v: &'a Value, seg: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => a.get(seg.parse::<usize>().ok()?),
        _ => None,
    }
}

fn child_mut<'a>(v: &'a mut Value, seg: &str) -> Option<&'a mut Value> {
    match v {
        Value::Object(m) => m.get_mut(seg),
        Value::Array(a) => a.get_mut(seg.parse::<usize>().ok()?),
        _ => None,
    }
}

impl FieldPath {
    /// The field of the JSON document `text`, read without building the rest
    /// of the document: the whole text is still checked (a document that is
    /// not JSON is an error, as for `serde_json::from_slice`), but only the
    /// field becomes a [`Value`]. The same as parsing the document and
    /// [`get`](Self::get)ting the field, for a fraction of the work when a
    /// stage only reads. (A duplicate key's last value wins, as in a parsed
    /// document.)
    pub fn read(&self, text: &[u8]) -> Result<Option<Value>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(text);
        let field = Seek(&self.segments).deserialize(&mut de)?;
        de.end()?;
        Ok(field)
    }

    /// The field, if every segment of the path exists.
    pub fn get<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        self.segments.iter().try_fold(doc, |v, seg| child(v, seg))
    }

    /// The field, mutably, if every segment of the path exists.
    pub fn get_mut<'a>(&self, doc: &'a mut Value) -> Option<&'a mut Value> {
        self.segments.iter().try_fold(doc, |v, seg| child_mut(v, seg))
    }

    /// Removes the field and returns it, if it exists. Array elements are
    /// replaced by `null` rather than shifting their neighbours.
    pub fn remove(&self, doc: &mut Value) -> Option<Value> {
        let (last, parents) = self.segments.split_last()?;
        let parent = parents.iter().try_fold(doc, |v, seg| child_mut(v, seg))?;
        match parent {
            Value::Object(m) => m.remove(last),
            Value::Array(a) => a.get_mut(last.parse::<usize>().ok()?).map(Value::take),
            _ => None,
        }
    }

    /// Sets the field to `value`, creating missing objects along the path.
    /// Fails if the path runs through a value that is not an object (or an
    /// array, for a numeric segment that exists).
    pub fn set(&self, doc: &mut Value, value: Value) -> Result<(), String> {
        let (last, parents) = self.segments.split_last().expect("a path has at least one segment");
        let mut cur = doc;
        for seg in parents {
            if cur.is_null() {
                *cur = Value::Object(Map::new());
            }
            cur = match cur {
                Value::Object(m) => m.entry(seg.clone()).or_insert(Value::Null),
                Value::Array(a) => seg
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| a.get_mut(i))
                    .ok_or_else(|| format!("cannot set `{self}`: `{seg}` is not an index of the array"))?,
                other => return Err(format!("cannot set `{self}`: `{seg}` is inside a {}", kind(other))),
            };
        }
        if cur.is_null() {
            *cur = Value::Object(Map::new());
        }
        match cur {
            Value::Object(m) => {
                m.insert(last.clone(), value);
                Ok(())
            }
            Value::Array(a) => {
                let slot = last.parse::<usize>().ok().and_then(|i| a.get_mut(i));
                *slot.ok_or_else(|| format!("cannot set `{self}`: `{last}` is not an index of the array"))? = value;
                Ok(())
            }
            other => Err(format!("cannot set `{self}`: its parent is a {}", kind(other))),
        }
    }
}

/// Reads the value at the path `.0` below the value being deserialised,
/// skipping everything else unbuilt.
struct Seek<'p>(&'p [String]);

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        match self.0.split_first() {
            None => serde::Deserialize::deserialize(d).map(Some),
            Some((segment, rest)) => d.deserialize_any(Step { segment, rest }),
        }
    }
}

/// One segment of the path: a member of an object or an element of an
/// array; anything else has no such field.
struct Step<'p> {
    segment: &'p str,
    rest: &'p [String],
}

impl<'de> Visitor<'de> for Step<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        let mut found = None;
        while let Some(wanted) = map.next_key_seed(KeyIs(self.segment))? {
            if wanted {
                found = map.next_value_seed(Seek(self.rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Value>, A::Error> {
        let index = self.segment.parse::<usize>().ok();
        let mut found = None;
        for i in 0.. {
            if Some(i) == index {
                match seq.next_element_seed(Seek(self.rest))? {
                    Some(field) => found = field,
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
        }
        Ok(found)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Option<Value>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<Value>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<Value>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<Value>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<Value>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<Value>, E> {
        Ok(None)
    }
}

/// Whether an object's key is the segment, compared where it lies (no
/// copy of the key unless it has escapes).
struct KeyIs<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

/// The JSON type name of `v`, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> FieldPath {
        s.parse().unwrap()
    }

    #[test]
    fn get_walks_objects_and_arrays() {
        let doc = json!({"a": {"b": [10, {"c": true}]}});
        assert_eq!(p("a.b.0").get(&doc), Some(&json!(10)));
        assert_eq!(p("a.b.1.c").get(&doc), Some(&json!(true)));
        assert_eq!(p("a.x").get(&doc), None);
        assert_eq!(p("a.b.9").get(&doc), None);
    }

    #[test]
    fn set_creates_missing_objects_and_refuses_scalars() {
        let mut doc = json!({"a": 1});
        p("meta.source.name").set(&mut doc, json!("x")).unwrap();
        assert_eq!(doc, json!({"a": 1, "meta": {"source": {"name": "x"}}}));
        let err = p("a.b").set(&mut doc, json!(2)).unwrap_err();
        assert_eq!(err, "cannot set `a.b`: its parent is a number");
    }

    #[test]
    fn remove_returns_the_value() {
        let mut doc = json!({"user": {"email": "e", "name": "n"}});
        assert_eq!(p("user.email").remove(&mut doc), Some(json!("e")));
        assert_eq!(doc, json!({"user": {"name": "n"}}));
        assert_eq!(p("user.email").remove(&mut doc), None);
    }

    #[test]
    fn read_finds_what_get_finds_without_building_the_document() {
        let text = br#"{"a": {"b": [10, {"c": true}], "k\u0065y": "escaped"}, "a2": null, "n": 1.5, "d": 1, "d": 2}"#;
        let doc: Value = serde_json::from_slice(text).unwrap();
        for path in ["a", "a.b", "a.b.0", "a.b.1.c", "a.b.9", "a.x", "a.key", "a2", "a2.x", "n", "n.x", "d", "a.b.c"] {
            assert_eq!(p(path).read(text).unwrap().as_ref(), p(path).get(&doc), "{path}");
        }
        assert!(p("a").read(br#"{"a": 1,}"#).is_err(), "the whole document is checked");
        assert!(p("a").read(br#"{"a": 1} x"#).is_err(), "trailing text is an error, as for from_slice");
        assert!(p("a").read(br#"{"b": [1, 2"#).is_err());
    }

    #[test]
    fn empty_segments_are_rejected() {
        assert!("a..b".parse::<FieldPath>().is_err());
        assert!("".parse::<FieldPath>().is_err());
    }
}

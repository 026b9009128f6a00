//! Dead-letter records: one JSON line per message that did not make it, with
//! the stage, the reason and the message as it entered that stage.

use crate::bindings::Message;
use crate::connect::Locator;
use crate::envelope::Origin;
use serde::Serialize;
use serde_json::value::RawValue;

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// The stage returned `invalid`.
    Invalid,
    /// The stage returned `transient`.
    Transient,
    /// The stage crashed (panic, `unreachable`, bad memory access) on the message.
    Trap,
    /// The stage broke one of its limits (fuel, timeout, memory, stack, outputs).
    Limit,
    /// The source could not turn the input into a message (not JSON, too long).
    Input,
    /// The sink could not write the message in its format.
    Output,
}

pub(crate) struct DeadLetter {
    pub(crate) stage: String,
    pub(crate) kind: Kind,
    pub(crate) reason: String,
    pub(crate) origin: Origin,
    pub(crate) message: Message,
}

#[derive(Serialize)]
struct Record<'a> {
    stage: &'a str,
    error: Kind,
    reason: &'a str,
    input: serde_json::Value,
    message: MessageRecord<'a>,
}

/// A JSON value kept as written; one that spans lines (which would break the
/// JSON-lines framing of the dead-letter file) is put on one line.
#[derive(Serialize)]
#[serde(untagged)]
enum Json<'a> {
    Raw(&'a RawValue),
    OneLine(Box<RawValue>),
}

#[derive(Serialize)]
struct MessageRecord<'a> {
    /// The value as JSON when it is JSON...
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Json<'a>>,
    /// ...else as text when it is UTF-8...
    #[serde(skip_serializing_if = "Option::is_none")]
    value_text: Option<&'a str>,
    /// ...else as bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    value_bytes: Option<&'a [u8]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(&'a str, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
}

impl DeadLetter {
    /// The record as one line of JSON.
    pub(crate) fn to_json_line(&self, source: &Locator) -> Vec<u8> {
        let m = &self.message;
        let json = std::str::from_utf8(&m.value).ok().and_then(|s| match serde_json::from_str::<&RawValue>(s) {
            Ok(raw) if !s.contains(['\n', '\r']) => Some(Json::Raw(raw)),
            Ok(_) => {
                let mut one = s.as_bytes().to_vec();
                crate::connect::one_line_json(&mut one);
                String::from_utf8(one).ok().and_then(|one| RawValue::from_string(one).ok()).map(Json::OneLine)
            }
            Err(_) => None,
        });
        let is_json = json.is_some();
        let text = if is_json { None } else { std::str::from_utf8(&m.value).ok() };
        let record = Record {
            stage: &self.stage,
            error: self.kind,
            reason: &self.reason,
            input: source.input(self.origin.position),
            message: MessageRecord {
                value: json,
                value_text: text,
                value_bytes: if !is_json && text.is_none() { Some(&m.value) } else { None },
                key: m.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
                headers: m
                    .headers
                    .iter()
                    .map(|h| (h.name.as_str(), String::from_utf8_lossy(&h.value).into_owned()))
                    .collect(),
                timestamp: m.timestamp,
            },
        };
        serde_json::to_vec(&record).expect("dead-letter records always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> Locator {
        Locator { kind: "file", name: name.into(), position: "line", form: Default::default() }
    }

    fn letter(value: &[u8]) -> DeadLetter {
        DeadLetter {
            stage: "s".into(),
            kind: Kind::Invalid,
            reason: "bad".into(),
            origin: Origin::at(7),
            message: Message { key: None, value: value.to_vec(), headers: vec![], timestamp: None },
        }
    }

    #[test]
    fn json_values_are_embedded_as_json() {
        let line = letter(br#"{"a": 1}"#).to_json_line(&file("in.jsonl"));
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r#"{"stage":"s","error":"invalid","reason":"bad","input":{"file":"in.jsonl","line":7},"message":{"value":{"a": 1}}}"#
        );
    }

    #[test]
    fn multi_line_json_stays_on_one_line() {
        let line = letter(b"{\n  \"a\": 1\n}").to_json_line(&file("in.jsonl"));
        assert!(!line.contains(&b'\n'));
        assert!(String::from_utf8(line).unwrap().contains(r#""value":{   "a": 1 }"#), "kept as written, on one line");
    }

    #[test]
    fn other_values_are_text_or_bytes() {
        let text = String::from_utf8(letter(b"not json").to_json_line(&file("-"))).unwrap();
        assert!(text.contains(r#""value_text":"not json""#), "{text}");
        let bytes = String::from_utf8(letter(&[0xff, 0x00]).to_json_line(&file("-"))).unwrap();
        assert!(bytes.contains(r#""value_bytes":[255,0]"#), "{bytes}");
    }
}

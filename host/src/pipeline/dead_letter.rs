//! Dead-letter records: one JSON line per message that did not make it, with
//! the stage, the reason and the message as it entered that stage.

use crate::bindings::Message;
use crate::connect::Locator;
use crate::envelope::Origin;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Why a message was dead-lettered: a dead letter's `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
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

impl Kind {
    /// As a dead letter's `error` writes it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Invalid => "invalid",
            Kind::Transient => "transient",
            Kind::Trap => "trap",
            Kind::Limit => "limit",
            Kind::Input => "input",
            Kind::Output => "output",
        }
    }
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

/// A key or a header value: text when it is UTF-8, else its bytes (as a
/// value is `value_bytes`), so that nothing is lost.
#[derive(Serialize)]
#[serde(untagged)]
enum Bytes<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Bytes<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        std::str::from_utf8(bytes).map_or(Bytes::Bytes(bytes), Bytes::Text)
    }
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
    key: Option<Bytes<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(&'a str, Bytes<'a>)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
}

/// How much of a message's value, and of a reason, a dead-letter record
/// keeps when the whole record is more than its sink takes (as much as the
/// file source keeps of an over-long line).
pub(super) const CUT_KEPT: usize = 1024;

/// The first `max` bytes of `bytes`, ending at a character boundary when
/// they are text (text cut inside a character would no longer read as text).
fn head(bytes: &[u8], max: usize) -> &[u8] {
    let mut end = bytes.len().min(max);
    if let Err(e) = std::str::from_utf8(&bytes[..end])
        && e.error_len().is_none()
    {
        end = e.valid_up_to();
    }
    &bytes[..end]
}

impl DeadLetter {
    /// The record as one line of JSON.
    pub(crate) fn to_json_line(&self, source: &Locator) -> Vec<u8> {
        self.record(source, &self.reason, &self.message)
    }

    /// The record cut to fit a dead-letter sink that refuses the whole of
    /// it (`refusal`: larger than a broker takes): the stage, error and
    /// input as they are, the reason cut to its first [`CUT_KEPT`] bytes and
    /// the message's value to its first `keep`, and the message's key and
    /// headers left out when they are longer than that together; the reason
    /// says what was cut. Written whole, the record would fail the run, and
    /// every run after it, as its input is delivered again.
    pub(crate) fn to_cut_json_line(&self, source: &Locator, refusal: &str, keep: usize) -> Vec<u8> {
        let m = &self.message;
        let extras =
            m.key.as_ref().map_or(0, Vec::len) + m.headers.iter().map(|h| h.name.len() + h.value.len()).sum::<usize>();
        let keep_extras = extras <= keep;
        let cut = Message {
            value: head(&m.value, keep).to_vec(),
            key: m.key.clone().filter(|_| keep_extras),
            headers: if keep_extras { m.headers.clone() } else { Vec::new() },
            timestamp: m.timestamp,
        };
        let reason = String::from_utf8_lossy(head(self.reason.as_bytes(), CUT_KEPT));
        let reason = format!(
            "{reason}{} [cut: the dead-letter sink refused the whole record ({refusal}); the record keeps the first \
             {} of the message's {} bytes{}]",
            if reason.len() < self.reason.len() { "..." } else { "" },
            cut.value.len(),
            m.value.len(),
            if keep_extras { "" } else { ", and not its key and headers" }
        );
        self.record(source, &reason, &cut)
    }

    fn record(&self, source: &Locator, reason: &str, m: &Message) -> Vec<u8> {
        // JSON nested deeper than common readers take (jq, Python's json,
        // serde_json) is kept as text: as JSON it would stop them reading
        // the rest of the file.
        let readable = |s: &&str| !nested_deeper_than(s.as_bytes(), MAX_NESTING);
        let json = std::str::from_utf8(&m.value).ok().filter(readable).and_then(|s| {
            match serde_json::from_str::<&RawValue>(s) {
                Ok(raw) if !s.contains(['\n', '\r']) => Some(Json::Raw(raw)),
                Ok(_) => {
                    let mut one = s.as_bytes().to_vec();
                    crate::connect::one_line_json(&mut one);
                    String::from_utf8(one).ok().and_then(|one| RawValue::from_string(one).ok()).map(Json::OneLine)
                }
                Err(_) => None,
            }
        });
        let is_json = json.is_some();
        let text = if is_json { None } else { std::str::from_utf8(&m.value).ok() };
        let record = Record {
            stage: &self.stage,
            error: self.kind,
            reason,
            input: source.input(self.origin.position),
            message: MessageRecord {
                value: json,
                value_text: text,
                value_bytes: if !is_json && text.is_none() { Some(&m.value) } else { None },
                key: m.key.as_deref().map(Bytes::of),
                headers: m.headers.iter().map(|h| (h.name.as_str(), Bytes::of(&h.value))).collect(),
                timestamp: m.timestamp,
            },
        };
        serde_json::to_vec(&record).expect("dead-letter records always serialise")
    }
}

/// How deeply a message's value may nest to be written into its record as
/// JSON: with the record's own two levels, within serde_json's limit (128),
/// below jq's and Python's.
const MAX_NESTING: usize = 100;

/// Whether the arrays and objects of the JSON text `bytes` nest more than
/// `max` deep (brackets inside strings do not count).
fn nested_deeper_than(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> Locator {
        Locator { kind: "file", name: name.into(), position: "line", form: Default::default() }
    }

    #[test]
    fn a_value_nested_deeper_than_readers_take_is_kept_as_text() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let line = letter(deep.as_bytes()).to_json_line(&file("in"));
        let record: serde_json::Value = serde_json::from_slice(&line).expect("the record reads back");
        assert_eq!(record["message"]["value_text"].as_str(), Some(deep.as_str()));
        // As deep as they take, and brackets inside strings, stay JSON.
        let fine = format!("{}\"[[{{\\\"[\"{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        let line = letter(fine.as_bytes()).to_json_line(&file("in"));
        let record: serde_json::Value = serde_json::from_slice(&line).expect("the record reads back");
        assert!(record["message"]["value"].is_array(), "{record}");
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
    fn a_cut_record_keeps_the_head_of_the_message_and_says_so() {
        // 3 bytes a character: 1024 falls inside one.
        let mut big = letter("€".repeat(100_000).as_bytes());
        big.message.headers = vec![crate::bindings::Header { name: "h".into(), value: vec![b'x'; 5000] }];
        let line = big.to_cut_json_line(&file("in"), "too big", CUT_KEPT);
        assert!(line.len() < 3000, "{} bytes", line.len());
        let record: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(record["stage"], "s");
        assert_eq!(record["input"]["line"], 7);
        // Cut at a character boundary: still text.
        assert_eq!(record["message"]["value_text"], "€".repeat(341));
        assert!(record["message"].get("headers").is_none(), "{record}");
        assert_eq!(
            record["reason"],
            "bad [cut: the dead-letter sink refused the whole record (too big); the record keeps the first 1023 of \
             the message's 300000 bytes, and not its key and headers]"
        );
    }

    #[test]
    fn keys_and_header_values_are_text_or_bytes() {
        let mut binary = letter(b"v");
        binary.message.key = Some(vec![0xff, b'k']);
        binary.message.headers = vec![
            crate::bindings::Header { name: "t".into(), value: b"text".to_vec() },
            crate::bindings::Header { name: "b".into(), value: vec![0xc3, 0x28] },
        ];
        let line = String::from_utf8(binary.to_json_line(&file("-"))).unwrap();
        assert!(line.contains(r#""key":[255,107],"headers":[["t","text"],["b",[195,40]]]"#), "{line}");
    }

    #[test]
    fn other_values_are_text_or_bytes() {
        let text = String::from_utf8(letter(b"not json").to_json_line(&file("-"))).unwrap();
        assert!(text.contains(r#""value_text":"not json""#), "{text}");
        let bytes = String::from_utf8(letter(&[0xff, 0x00]).to_json_line(&file("-"))).unwrap();
        assert!(bytes.contains(r#""value_bytes":[255,0]"#), "{bytes}");
    }
}

//! The message format, a layer apart from the transport: what a `jsonl` or
//! `lines` source accepts as a message, and what a sink of either format
//! writes. The same checks apply whether the bytes came as a line of a file
//! or as one broker record.

use crate::config::Format;
use serde::de::IgnoredAny;

/// What the format makes of an input's bytes.
pub(crate) enum Decoded {
    /// A message.
    Message,
    /// Nothing: a blank line in JSON lines, skipped and counted as skipped.
    Blank,
    /// Not in the format: dead-lettered as an `input` error with the reason.
    Invalid(String),
}

/// Checks an input's bytes against the format.
pub(crate) fn decode(format: Format, bytes: &[u8]) -> Decoded {
    if format != Format::Jsonl {
        return Decoded::Message;
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Decoded::Blank;
    }
    // JSON text is UTF-8 (RFC 8259), but `from_slice` does not check the
    // strings it skips: without this, the first stage would get the blame
    // (as `invalid`) for bad input.
    let json = std::str::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 ({e})"))
        .and_then(|text| serde_json::from_str::<IgnoredAny>(text).map_err(|e| e.to_string()));
    match json {
        Ok(_) => Decoded::Message,
        // Windows tools start files with one; JSON text must not (RFC 8259).
        Err(_) if bytes.starts_with(BOM) => Decoded::Invalid(
            "not JSON: the line starts with a UTF-8 byte order mark (U+FEFF), as files saved by some Windows tools \
             do; save the file without it, e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`"
                .into(),
        ),
        Err(e) => Decoded::Invalid(format!("not JSON: {e}")),
    }
}

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Makes an output's value fit the format: in JSON lines, one JSON document
/// per line; in lines, one message per line. `Err` says why it cannot be
/// written (it is dead-lettered as an `output` error): what a sink writes
/// reads back as the messages it counted, as the source of the same format
/// would read them.
pub(crate) fn encode(format: Format, value: &mut [u8]) -> Result<(), String> {
    match format {
        // A line break would make one output several messages for whoever
        // reads the file (and the report would count one). `\r` alone
        // breaks no line.
        Format::Lines if value.contains(&b'\n') => {
            Err("the sink writes lines, one message per line, but this output holds a line break".into())
        }
        Format::Lines => Ok(()),
        Format::Jsonl => {
            // Checked as the source checks its input (UTF-8, then JSON, with
            // the cheap `IgnoredAny`): an output a `jsonl` source of the same
            // format would refuse is not written.
            let json = std::str::from_utf8(value)
                .map_err(|e| format!("not UTF-8 ({e})"))
                .and_then(|text| serde_json::from_str::<IgnoredAny>(text).map_err(|e| e.to_string()));
            if let Err(e) = json {
                return Err(format!("the sink writes JSON lines, but this output is not JSON: {e}"));
            }
            // In valid JSON a raw line break can only be whitespace between
            // tokens, so blanking it changes nothing else: no re-encoding,
            // key order and numbers stay.
            if value.iter().any(|&b| b == b'\n' || b == b'\r') {
                one_line_json(value);
            }
            Ok(())
        }
    }
}

/// `json`, a valid JSON document, on one line: raw line breaks in valid JSON
/// are whitespace between tokens (inside strings they must be escaped), so
/// they become spaces and nothing else changes.
pub(crate) fn one_line_json(json: &mut [u8]) {
    for b in json {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Decoded, Format, decode, encode};

    fn encoded(format: Format, value: &[u8]) -> Result<Vec<u8>, String> {
        let mut value = value.to_vec();
        encode(format, &mut value).map(|()| value)
    }

    #[test]
    fn a_jsonl_output_is_one_json_document_or_refused() {
        assert_eq!(encoded(Format::Jsonl, br#"{"a": 1}"#).unwrap(), br#"{"a": 1}"#);
        assert_eq!(encoded(Format::Jsonl, b"{\"a\":\n 1}\r\n").unwrap(), b"{\"a\":  1}  ");
        for bad in [&b"not json"[..], b"", b"{\"a\": 1} {\"b\": 2}", b"\"\xff\""] {
            let why = encoded(Format::Jsonl, bad).unwrap_err();
            assert!(why.starts_with("the sink writes JSON lines, but this output is not JSON"), "{why}");
        }
    }

    #[test]
    fn a_line_starting_with_a_byte_order_mark_is_refused_saying_so() {
        let Decoded::Invalid(why) = decode(Format::Jsonl, b"\xEF\xBB\xBF{\"a\": 1}") else { panic!("refused") };
        assert!(why.contains("byte order mark"), "{why}");
    }

    #[test]
    fn a_lines_output_is_one_line_or_refused() {
        assert_eq!(encoded(Format::Lines, b"a b\r\xff").unwrap(), b"a b\r\xff");
        assert!(encoded(Format::Lines, b"a\nb").unwrap_err().contains("holds a line break"));
    }
}

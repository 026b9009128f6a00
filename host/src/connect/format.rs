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
        Err(e) => Decoded::Invalid(format!("not JSON: {e}")),
    }
}

/// Makes an output's value fit the format: in JSON lines, one document per
/// line. `Err` says why it cannot be written (it is dead-lettered as an
/// `output` error).
pub(crate) fn encode(format: Format, value: &mut Vec<u8>) -> Result<(), String> {
    if format != Format::Jsonl || !value.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Ok(());
    }
    // In valid JSON a raw line break can only be whitespace between tokens,
    // so blanking it changes nothing else: no re-encoding, key order and
    // numbers stay.
    match serde_json::from_slice::<IgnoredAny>(value) {
        Ok(_) => {
            one_line_json(value);
            Ok(())
        }
        Err(e) => Err(format!("the sink writes JSON lines, but this output spans lines and is not JSON: {e}")),
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

//! Reading messages in and writing them out: files and standard streams.

mod lines;
mod output;
#[cfg(test)]
mod props;

pub(crate) use lines::{Line, LineReader};
pub use output::cannot_create;
pub(crate) use output::{Output, partial_path};

/// `json`, a valid JSON document, on one line: raw line breaks in valid JSON
/// are whitespace between tokens (inside strings they must be escaped), so
/// they become spaces and nothing else changes.
pub(crate) fn one_line_json(mut json: Vec<u8>) -> Vec<u8> {
    for b in &mut json {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    json
}

//! Property tests for the line codec: any bytes, read in any chunks, come out
//! as exactly the lines they hold, with over-long lines cut to a bounded head;
//! and JSON put on one line stays the same JSON.

use super::format::one_line_json;
use super::lines::{Line, LineReader};
use proptest::prelude::*;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

/// A reader that hands out its bytes in the chunks it is given, as a socket or
/// a pipe might: a line may end anywhere, a `\r\n` may be split.
struct Chunked {
    data: Vec<u8>,
    /// Where each chunk ends, increasing, the last one `data.len()`.
    ends: Vec<usize>,
    pos: usize,
}

impl Chunked {
    fn new(data: Vec<u8>, cuts: &[usize]) -> Self {
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).filter(|&c| c > 0).collect();
        ends.push(data.len());
        ends.sort_unstable();
        ends.dedup();
        Chunked { data, ends, pos: 0 }
    }
}

impl AsyncRead for Chunked {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        unreachable!("LineReader reads through AsyncBufRead")
    }
}

impl AsyncBufRead for Chunked {
    fn poll_fill_buf(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        let this = self.get_mut();
        let end = this.ends.iter().copied().find(|&e| e > this.pos).unwrap_or(this.data.len());
        Poll::Ready(Ok(&this.data[this.pos..end]))
    }

    fn consume(self: Pin<&mut Self>, n: usize) {
        let this = self.get_mut();
        assert!(this.pos + n <= this.data.len(), "consumed past the end");
        this.pos += n;
    }
}

/// What the reader must return, written the obvious way: split on `\n`; a
/// `\r` right before a `\n` belongs to the terminator; the bytes after the
/// last `\n`, if any, are a last line; content longer than `max` comes out as
/// its first `max` bytes, marked too long.
fn expected(input: &[u8], max: usize) -> Vec<Line> {
    let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let unterminated = pieces.pop().filter(|last| !last.is_empty());
    let terminated = pieces.into_iter().map(|p| p.strip_suffix(b"\r").unwrap_or(p));
    terminated
        .chain(unterminated)
        .map(
            |content| {
                if content.len() > max { Line::TooLong(content[..max].to_vec()) } else { Line::Text(content.to_vec()) }
            },
        )
        .collect()
}

fn read_all(input: &[u8], cuts: &[usize], max: usize) -> (Vec<Line>, u64) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut reader = LineReader::new(Chunked::new(input.to_vec(), cuts), max);
        let mut lines = Vec::new();
        while let Some(line) = reader.next().await.unwrap() {
            lines.push(line);
        }
        (lines, reader.line)
    })
}

/// Bytes rich in line breaks, `\r`s and lines near the limit.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'a'),
        2 => Just(b'\n'),
        2 => Just(b'\r'),
        1 => any::<u8>(),
    ];
    prop_oneof![
        proptest::collection::vec(byte, 0..200),
        // Long runs, so lines far over the limit span many chunks.
        proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..40), 0..3usize), 0..8).prop_map(|parts| {
            parts
                .into_iter()
                .flat_map(|(bytes, end)| {
                    let end: &[u8] = [&b"\n"[..], b"\r\n", b""][end];
                    bytes.into_iter().chain(end.iter().copied())
                })
                .collect()
        }),
    ]
}

/// Any JSON value, with awkward strings (line breaks, controls, unicode).
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[\\n\\r\\t\"\\\\ a]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn lines_come_out_exactly_whatever_the_chunks(
        input in input(),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        max in 1usize..24,
    ) {
        let (lines, count) = read_all(&input, &cuts, max);
        let want = expected(&input, max);
        prop_assert_eq!(count, want.len() as u64, "the line counter");
        prop_assert_eq!(lines, want);
    }

    #[test]
    fn json_on_one_line_is_the_same_json(
        value in json_value(),
        indent in "[ \\t\\r\\n]{0,3}",
    ) {
        // Pretty-printed with line breaks (`\n`, and `\r` when the indent has
        // one) between every token.
        let mut text = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
        let mut ser = serde_json::Serializer::with_formatter(&mut text, formatter);
        serde::Serialize::serialize(&value, &mut ser).unwrap();
        let before: serde_json::Value = serde_json::from_slice(&text).unwrap();

        let mut one = text.clone();
        one_line_json(&mut one);
        prop_assert!(!one.contains(&b'\n') && !one.contains(&b'\r'), "a raw line break is left");
        let after: serde_json::Value = serde_json::from_slice(&one)
            .map_err(|e| TestCaseError::fail(format!("no longer JSON: {e}")))?;
        prop_assert_eq!(after, before);
        prop_assert_eq!(one.len(), text.len());
    }
}

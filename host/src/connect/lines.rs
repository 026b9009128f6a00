//! Splitting a byte stream into lines without ever holding more than one
//! bounded line in memory.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line read from the input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A complete line without its terminator (`\n` or `\r\n`).
    Text(Vec<u8>),
    /// A line longer than the limit: its first `limit` bytes; the rest was skipped.
    TooLong(Vec<u8>),
}

pub(crate) struct LineReader<R> {
    inner: R,
    max: usize,
    /// 1-based number of the last line returned.
    pub(crate) line: u64,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        LineReader { inner, max, line: 0 }
    }

    /// The next line, or `None` at the end of the input.
    pub(crate) async fn next(&mut self) -> std::io::Result<Option<Line>> {
        let mut buf = Vec::new();
        let mut too_long = false;
        // Whether the line ended with `\n`: only then is a `\r` before it
        // part of the terminator. A `\r` ending the input is content.
        let mut terminated = false;
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                if buf.is_empty() && !too_long {
                    return Ok(None);
                }
                break;
            }
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(nl) => (nl + 1, true),
                None => (chunk.len(), false),
            };
            // One byte over the limit is allowed for a `\r` before the `\n`.
            let room = (self.max + 1).saturating_sub(buf.len());
            let content = &chunk[..if done { take - 1 } else { take }];
            if content.len() > room {
                too_long = true;
            }
            buf.extend_from_slice(&content[..content.len().min(room)]);
            self.inner.consume(take);
            if done {
                terminated = true;
                break;
            }
        }
        self.line += 1;
        if terminated && !too_long && buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if too_long || buf.len() > self.max {
            buf.truncate(self.max);
            return Ok(Some(Line::TooLong(buf)));
        }
        Ok(Some(Line::Text(buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], max: usize) -> Vec<Line> {
        let mut r = LineReader::new(tokio::io::BufReader::with_capacity(4, input), max);
        let mut out = Vec::new();
        while let Some(l) = r.next().await.unwrap() {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_across_buffer_boundaries() {
        let lines = all(b"hello\r\nworld\nlast", 100).await;
        assert_eq!(
            lines,
            vec![Line::Text(b"hello".to_vec()), Line::Text(b"world".to_vec()), Line::Text(b"last".to_vec())]
        );
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_the_next_line_survives() {
        let lines = all(b"0123456789abcdef\nok\n", 5).await;
        assert_eq!(lines, vec![Line::TooLong(b"01234".to_vec()), Line::Text(b"ok".to_vec())]);
    }

    #[tokio::test]
    async fn the_limit_counts_content_not_the_line_break() {
        let lines = all(b"abcde\r\nabcdef\r\n", 5).await;
        assert_eq!(lines, vec![Line::Text(b"abcde".to_vec()), Line::TooLong(b"abcde".to_vec())]);
    }

    #[tokio::test]
    async fn a_carriage_return_ending_the_input_is_content() {
        // Found by the property tests: only `\r\n` is a terminator.
        assert_eq!(all(b"a\r\nb\r", 5).await, vec![Line::Text(b"a".to_vec()), Line::Text(b"b\r".to_vec())]);
    }

    #[tokio::test]
    async fn empty_input_has_no_lines() {
        assert!(all(b"", 5).await.is_empty());
        assert_eq!(all(b"\n", 5).await, vec![Line::Text(vec![])]);
    }
}

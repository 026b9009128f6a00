//! Guest stdout and stderr: each line becomes a host log record tagged with
//! the stage's name, and the last lines of stderr are kept so that a trap can
//! be reported with what the guest said before it died (a Rust panic message,
//! a Python traceback).

use super::log::LogBudget;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line kept; longer output is emitted in pieces of this size.
const MAX_LINE_BYTES: usize = 4096;
/// How much recent stderr is kept for trap reports.
const TAIL_BYTES: usize = 2048;

/// Which guest stream a [`GuestOutput`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// A guest's stdout or stderr, as handed to its `WasiCtx`.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    stage: Arc<str>,
    stream: Stream,
    lines: Arc<Mutex<Lines>>,
    /// Complete lines written so far: read at every call, so kept outside the lock.
    written: Arc<AtomicU64>,
    budget: LogBudget,
}

#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
    /// Recent stderr lines with their sequence numbers.
    tail: VecDeque<(u64, String)>,
    tail_bytes: usize,
    /// Sequence number of the next complete line.
    next_line: u64,
}

impl GuestOutput {
    pub(crate) fn new(stage: Arc<str>, stream: Stream, budget: LogBudget) -> Self {
        GuestOutput { stage, stream, lines: Arc::default(), written: Arc::default(), budget }
    }

    /// A position in the output; [`GuestOutput::tail_since`] returns what
    /// was written after it.
    pub(crate) fn mark(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Recent stderr written since `mark` (complete lines, then any
    /// unfinished one), at most about 2 KiB, oldest first, joined by newlines.
    pub(crate) fn tail_since(&self, mark: u64) -> String {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<&str> = lines.tail.iter().filter(|(n, _)| *n >= mark).map(|(_, l)| l.as_str()).collect();
        let partial = String::from_utf8_lossy(&lines.partial);
        if !partial.is_empty() {
            out.push(&partial);
        }
        out.join("\n")
    }

    fn write(&self, mut buf: &[u8]) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(nl) = memchr(b'\n', buf) {
            lines.partial.extend_from_slice(&buf[..nl]);
            self.emit(&mut lines);
            buf = &buf[nl + 1..];
        }
        lines.partial.extend_from_slice(buf);
        while lines.partial.len() >= MAX_LINE_BYTES {
            let rest = lines.partial.split_off(MAX_LINE_BYTES);
            self.emit(&mut lines);
            lines.partial = rest;
        }
    }

    fn emit(&self, lines: &mut Lines) {
        lines.next_line += 1;
        self.written.store(lines.next_line, Ordering::Release);
        let raw = std::mem::take(&mut lines.partial);
        let text = String::from_utf8_lossy(&raw);
        let text = text.trim_end_matches('\r');
        // One line of the host's log per line of output: a stage cannot forge others.
        let logged = crate::limits::log_safe(text);
        let stage = &*self.stage;
        // Over budget, lines are not logged, but stderr still feeds the tail
        // that explains a trap.
        let log = self.budget.take();
        match self.stream {
            Stream::Stdout if log => tracing::info!(target: "sluice::stage", stage, stream = "stdout", "{logged}"),
            Stream::Stdout => {}
            Stream::Stderr => {
                if log {
                    tracing::warn!(target: "sluice::stage", stage, stream = "stderr", "{logged}");
                }
                lines.tail_bytes += text.len() + 1; // with the newline that joins it
                let n = lines.next_line - 1;
                lines.tail.push_back((n, text.to_string()));
                while lines.tail_bytes > TAIL_BYTES && lines.tail.len() > 1 {
                    let (_, old) = lines.tail.pop_front().expect("tail is not empty");
                    lines.tail_bytes -= old.len() + 1;
                }
            }
        }
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// A terminal, to the guest: libc then buffers stdout by line, not by block,
/// so each line a C or Zig stage prints is logged when printed, and none is
/// lost with a block still buffered when the instance is dropped. The host
/// reads the stream a line at a time either way.
impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        true
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_keeps_recent_lines_and_the_unfinished_one() {
        let out = GuestOutput::new("s".into(), Stream::Stderr, LogBudget::new(u32::MAX));
        out.write(b"before\n");
        let mark = out.mark();
        out.write(b"first\nsecond\r\nthird, unfinished");
        assert_eq!(out.tail_since(mark), "first\nsecond\nthird, unfinished");
    }

    #[test]
    fn stderr_tail_is_bounded() {
        let out = GuestOutput::new("s".into(), Stream::Stderr, LogBudget::new(u32::MAX));
        for i in 0..1000 {
            out.write(format!("line {i}\n").as_bytes());
        }
        let tail = out.tail_since(0);
        assert!(tail.len() <= TAIL_BYTES + 16, "{}", tail.len());
        assert!(tail.ends_with("line 999"));
    }

    #[test]
    fn lines_over_the_budget_are_dropped_and_counted() {
        let budget = LogBudget::new(2);
        let out = GuestOutput::new("s".into(), Stream::Stdout, budget.clone());
        out.write(b"1\n2\n3\n4\n");
        assert_eq!(budget.reset(10), 2);
        assert_eq!(budget.reset(10), 0);
    }

    #[test]
    fn long_lines_are_split() {
        let out = GuestOutput::new("s".into(), Stream::Stderr, LogBudget::new(u32::MAX));
        out.write(&vec![b'x'; MAX_LINE_BYTES * 2 + 10]);
        let lines = out.lines.lock().unwrap();
        assert_eq!(lines.tail.len(), 1, "only whole lines of MAX_LINE_BYTES are in the tail");
        assert_eq!(lines.partial.len(), 10);
    }
}

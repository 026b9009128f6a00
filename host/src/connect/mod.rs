//! Connectors: where messages come from (a [`Source`]) and where they go (a
//! [`Sink`]), behind one seam, so that the pipeline knows nothing of files,
//! lines or brokers.
//!
//! - A source yields inputs, each at a **position** that only the source
//!   interprets (a file's line number, a stream's sequence number). Resuming
//!   after a checkpoint and the report of an interrupted run are in
//!   positions.
//! - Every input is **done** once all the messages it led to have left the
//!   pipeline: filtered out, durably in the sink, or written as dead letters.
//!   A source that acknowledges (to a broker, to an embedder) hears of each,
//!   in the order they finish ([`crate::envelope::Acks`] also knows the
//!   contiguous position up to which all are done).
//! - A sink writes messages, flushes them (hands them on and makes them
//!   durable, as far as it can) and says where it is: its position, which a
//!   checkpoint records.
//! - The message format (`jsonl`, `lines`) is a layer of its own
//!   ([`format`]), applied by the pipeline whatever the transport.
//!
//! Adding a connector: a module here implementing [`Source`] or [`Sink`], and
//! one line where the pipeline opens the kinds (`pipeline/connectors.rs`).

mod file;
mod format;
mod lines;
mod memory;
mod nats;
mod output;
#[cfg(test)]
mod props;
mod redis;

pub(crate) use file::{FileOpening, FileSink, FileSource};
pub(crate) use format::{Decoded, decode, encode, one_line_json};
pub use memory::{Acknowledged, Delivered, MemorySink, MemorySource};
pub(crate) use nats::{NatsSink, NatsSource};
pub use output::cannot_create;
pub(crate) use output::partial_path;
pub(crate) use redis::{RedisSink, RedisSource};

use crate::bindings::Message;
use crate::envelope::{Done, Origin};
use std::future::Future;
use std::path::PathBuf;

/// A broker's count of messages not yet delivered to a source, as last
/// heard (shared: the source updates it, snapshots read it).
#[derive(Clone, Default)]
pub(crate) struct Backlog(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Backlog {
    /// Not yet heard.
    const UNKNOWN: u64 = u64::MAX;

    pub(crate) fn new() -> Self {
        Backlog(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(Self::UNKNOWN)))
    }

    pub(crate) fn set(&self, messages: u64) {
        self.0.store(messages.min(Self::UNKNOWN - 1), std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Option<u64> {
        Some(self.0.load(std::sync::atomic::Ordering::Relaxed)).filter(|&n| n != Self::UNKNOWN)
    }
}

/// What a source read at one position.
pub(crate) struct Input {
    pub(crate) position: u64,
    pub(crate) read: Read,
    /// The broker delivered it before (to this worker or another): only
    /// such an input can be one whose state a run that died committed.
    pub(crate) redelivered: bool,
}

pub(crate) enum Read {
    /// A message, checked against the format next.
    Message(Message),
    /// Input that cannot become a message (a line over `max_line_bytes`): it
    /// is dead-lettered as an `input` error with `reason`, keeping `head`.
    Unreadable { head: Vec<u8>, reason: String },
}

/// Where messages come from.
pub(crate) trait Source: Send + 'static {
    /// The next input, or `None` at the end of the input.
    fn next(&mut self) -> impl Future<Output = std::io::Result<Option<Input>>> + Send;

    /// How errors and dead letters name this source and its positions.
    fn locator(&self) -> Locator;

    /// Whether the source hears when each input is done ([`Source::done`]).
    /// Without it, the run tracks inputs only for checkpoints.
    fn acknowledges(&self) -> bool {
        false
    }

    /// An input is done: delivered, or given up on (the run failed), in
    /// which case a broker should deliver it again.
    fn done(&mut self, _done: Done) {}

    /// For a broker: the messages it holds for this source, not yet
    /// delivered, which the source keeps up to date.
    fn backlog(&self) -> Option<Backlog> {
        None
    }

    /// How many inputs the source lets the pipeline hold unacknowledged (a
    /// broker's `max_ack_pending`): a run that holds acknowledgements until
    /// a checkpoint takes one before it gets there.
    fn max_unacknowledged(&self) -> Option<u64> {
        None
    }

    /// For a broker: how long it waits before it delivers again an input
    /// it did not hear acknowledged (`ack_wait`, `claim_idle`).
    fn redelivers_after(&self) -> Option<std::time::Duration> {
        None
    }

    /// For a source that delivers an input again when it was not
    /// acknowledged (a broker): a name for what it reads that no source
    /// reading other input shares. With an input's position and an output's
    /// branch, it makes the id a broker sink gives each output, so that the
    /// outputs of an input delivered twice are dropped as duplicates.
    /// `None` for a source that does not redeliver (a file: the same line of
    /// another run is another message, not a duplicate).
    fn id(&self) -> Option<String> {
        None
    }

    /// The end of the run: whatever [`Source::done`] started telling (acks
    /// on their way to a broker) is sent.
    fn close(self) -> impl Future<Output = std::io::Result<()>> + Send
    where
        Self: Sized,
    {
        std::future::ready(Ok(()))
    }
}

/// Where messages go: the sink, and the dead-letter sink.
pub(crate) trait Sink: Send + 'static {
    /// Writes one message, which the sink may buffer. `origin` says which
    /// input it came from and which of its outputs it is, for sinks that
    /// pass that on.
    fn write(&mut self, message: Message, origin: &Origin) -> impl Future<Output = std::io::Result<()>> + Send;

    /// Why this sink cannot write `message` (a header a broker cannot
    /// carry), if it cannot: such a message is dead-lettered as an `output`
    /// error instead of failing the run.
    fn refuses(&self, _message: &Message) -> Option<String> {
        None
    }

    /// Hands on what is buffered and makes it durable as far as this sink
    /// can; returns the sink's position (for a file, its length), for a
    /// checkpoint.
    fn flush(&mut self) -> impl Future<Output = std::io::Result<u64>> + Send;

    /// Whether what is written is seen as it is written (standard output,
    /// a channel), so that the sink flushes whenever it runs out of work.
    fn is_live(&self) -> bool;

    /// The end of a successful run: everything written is made durable, and
    /// then made visible by [`Finished::commit`] (a file is renamed into
    /// place), after the state is committed.
    fn finish(self) -> impl Future<Output = std::io::Result<Finished>> + Send;
}

/// A sink whose every message is durable, waiting to be made visible.
pub(crate) struct Finished(Option<output::Finished>);

impl Finished {
    /// Nothing left to do: the sink's writes are already where they go.
    pub(crate) fn visible() -> Self {
        Finished(None)
    }

    /// Makes the sink's writes visible.
    pub(crate) async fn commit(self) -> std::io::Result<()> {
        match self.0 {
            Some(file) => file.commit().await,
            None => Ok(()),
        }
    }
}

/// How a source is named in errors and dead letters: a dead letter's
/// `"input"` is `{"<kind>": "<name>", "<position>": n}`, e.g.
/// `{"file": "in.jsonl", "line": 7}`.
#[derive(Debug, Clone)]
pub(crate) struct Locator {
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    pub(crate) position: &'static str,
    /// How a position is written for a user.
    pub(crate) form: PositionForm,
}

/// How a source's positions are written for a user.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) enum PositionForm {
    /// As the number it is (a line, a sequence number).
    #[default]
    Number,
    /// As the text a broker names it by (a Redis entry id, `1700000000000-3`).
    Text(fn(u64) -> String),
}

impl Locator {
    /// The source's name, for errors: a file's path.
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(&self.name)
    }

    /// Where dead letters say the input at `position` came from.
    pub(crate) fn input(&self, position: u64) -> serde_json::Value {
        let mut input = serde_json::Map::new();
        input.insert(self.kind.into(), self.name.clone().into());
        let position = match self.form {
            PositionForm::Number => position.into(),
            PositionForm::Text(text) => text(position).into(),
        };
        input.insert(self.position.into(), position);
        input.into()
    }

    /// A position in words, for messages: "input line 7".
    pub(crate) fn describe(&self, position: u64) -> String {
        match self.form {
            PositionForm::Number => format!("input {} {position}", self.position),
            PositionForm::Text(text) => format!("input {} {}", self.position, text(position)),
        }
    }
}

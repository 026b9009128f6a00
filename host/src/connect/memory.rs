//! In memory, for programs that embed a pipeline: messages from any Rust
//! `Stream` or iterator, outputs and dead letters on channels. No files.
//!
//! ```no_run
//! # async fn demo(config: sluice::PipelineConfig) -> anyhow::Result<()> {
//! use sluice::{MemorySink, MemorySource, Message, Pipeline};
//! let inputs = (0..3).map(|i| Message::from_value(format!(r#"{{"n":{i}}}"#)));
//! let (sink, mut outputs) = MemorySink::channel(64);
//! let (dead_letters, mut dead) = MemorySink::channel(64);
//! let pipeline = Pipeline::build(config).await?
//!     .with_source(MemorySource::from_iter(inputs))
//!     .with_sink(sink)
//!     .with_dead_letters(dead_letters);
//! let run = tokio::spawn(pipeline.run());
//! while let Some(out) = outputs.recv().await {
//!     println!("input {}: {}", out.input, String::from_utf8_lossy(&out.message.value));
//! }
//! while let Some(letter) = dead.recv().await {
//!     println!("dead letter: {}", String::from_utf8_lossy(&letter.message.value));
//! }
//! run.await??;
//! # Ok(())
//! # }
//! ```

use super::{Finished, Input, Locator, PositionForm, Read, Sink, Source};
use crate::bindings::Message;
use crate::envelope::{Done, Origin};
use futures_util::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::mpsc;

/// A source of messages from a Rust stream or iterator. The position of each
/// is its index, from 0, in the order given.
pub struct MemorySource {
    messages: BoxStream<'static, Message>,
    next: u64,
    acknowledged: Option<mpsc::UnboundedSender<Acknowledged>>,
}

/// An input of a [`MemorySource`] that is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Acknowledged {
    /// The input's index.
    pub input: u64,
    /// `true` once every output it led to is in the sink and every dead
    /// letter in the dead-letter sink; `false` if the run failed first.
    pub delivered: bool,
    /// Every input up to this index is done (this one or an earlier one
    /// may be the last of them): the offset to commit for a source that
    /// commits one.
    pub all_up_to: Option<u64>,
}

impl MemorySource {
    /// Messages from a stream, read as the pipeline has room for them.
    pub fn new(messages: impl Stream<Item = Message> + Send + 'static) -> Self {
        MemorySource { messages: messages.boxed(), next: 0, acknowledged: None }
    }

    /// Messages from an iterator, taken as the pipeline has room for them.
    pub fn from_iter<I>(messages: I) -> Self
    where
        I: IntoIterator<Item = Message>,
        I::IntoIter: Send + 'static,
    {
        Self::new(futures_util::stream::iter(messages))
    }

    /// Tells, on the channel returned, when each input is done, in the order
    /// they finish (not the order given, with unordered or keyed stages).
    /// Like a broker's acknowledgement: what an embedder that reads from a
    /// queue of its own needs to commit its offsets.
    pub fn acknowledged(&mut self) -> mpsc::UnboundedReceiver<Acknowledged> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.acknowledged = Some(tx);
        rx
    }
}

impl Source for MemorySource {
    async fn next(&mut self) -> std::io::Result<Option<Input>> {
        let Some(message) = self.messages.next().await else { return Ok(None) };
        let position = self.next;
        self.next += 1;
        Ok(Some(Input { position, read: Read::Message(message), redelivered: false }))
    }

    fn locator(&self) -> Locator {
        Locator { kind: "source", name: "memory".into(), position: "index", form: PositionForm::Number }
    }

    fn acknowledges(&self) -> bool {
        self.acknowledged.is_some()
    }

    fn done(&mut self, done: Done) {
        if let Some(tx) = &self.acknowledged {
            // The embedder may have stopped listening; the run goes on.
            let _ =
                tx.send(Acknowledged { input: done.position, delivered: done.delivered, all_up_to: done.all_up_to });
        }
    }
}

/// A sink that hands each message to a channel: a pipeline's outputs, or its
/// dead letters (whose `message.value` is the dead-letter record, the JSON
/// that a dead-letter file holds on each line).
pub struct MemorySink {
    tx: mpsc::Sender<Delivered>,
    sent: u64,
}

/// A message that left the pipeline through a [`MemorySink`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Delivered {
    /// The message: an output, or a dead-letter record.
    pub message: Message,
    /// The position of the input it came from (a [`MemorySource`]'s index).
    pub input: u64,
}

impl MemorySink {
    /// A sink and the channel its messages come out of. The channel holds at
    /// most `capacity`: a receiver that falls behind slows the pipeline.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<Delivered>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (MemorySink { tx, sent: 0 }, rx)
    }
}

impl Sink for MemorySink {
    async fn write(&mut self, message: Message, origin: &Origin) -> std::io::Result<()> {
        self.tx.send(Delivered { message, input: origin.position }).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the receiving end of the memory sink was dropped")
        })?;
        self.sent += 1;
        Ok(())
    }

    /// What is in the channel is handed on; its position is the count sent.
    async fn flush(&mut self) -> std::io::Result<u64> {
        Ok(self.sent)
    }

    fn is_live(&self) -> bool {
        true
    }

    async fn finish(self) -> std::io::Result<Finished> {
        Ok(Finished::visible())
    }
}

//! The sink and dead-letter tasks: what leaves the pipeline, written to its
//! sink, and handed on as soon as nothing more is ready (a live sink).
//!
//! A message written is done (its share of its input's acknowledgement is
//! settled) when the sink has made it durable: at the next flush when the
//! source acknowledges (a broker must not forget an input whose output could
//! still be lost), else at once, since a checkpoint flushes the sinks itself
//! before it commits.

use super::checkpoint::Flush;
use super::dead_letter::{CUT_KEPT, DeadLetter, Kind};
use super::error::RunError;
use super::events::{DeadLettered, Events, Written};
use super::task::{TaskError, send_dead};
use crate::bindings::Message;
use crate::config::Format;
use crate::connect::{Locator, Sink, encode};
use crate::envelope::{Envelope, Origin};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{Receiver, Sender};

/// Messages the sink takes from its channel at once.
const SINK_BATCH: usize = 256;
/// Written messages whose acknowledgement waits for a flush, at most: a
/// sink that is never idle still flushes this often.
const MAX_UNFLUSHED: usize = 4096;

/// A sink as its task runs it.
pub(super) struct SinkTask<S> {
    pub(super) sink: S,
    /// Its name in errors: a file's path, or `-`.
    pub(super) name: PathBuf,
    /// How often a busy live sink hands on what it holds, at least.
    pub(super) flush_interval: Duration,
    /// Whether acknowledgements wait for the sink to make writes durable.
    pub(super) ack_when_durable: bool,
    pub(super) events: Events,
    /// Checkpoints ask for flushes here.
    pub(super) flushes: Receiver<Flush>,
}

/// A sink task that ended well: the sink, and the origins of the messages it
/// wrote whose acknowledgement waits for the sink to be finished.
pub(super) struct Drained<S> {
    pub(super) sink: S,
    pub(super) unflushed: Vec<Origin>,
}

impl<S: Sink> SinkTask<S> {
    /// Writes messages as they come until the channel closes; messages the
    /// format cannot write go to the dead letters.
    pub(super) async fn outputs(
        self,
        mut rx: Receiver<Envelope>,
        format: Format,
        dead: Sender<DeadLetter>,
    ) -> Result<Drained<S>, TaskError> {
        let mut writer = Writer::new(self);
        let mut batch = Vec::with_capacity(SINK_BATCH);
        loop {
            tokio::select! {
                biased;
                received = rx.recv_many(&mut batch, SINK_BATCH) => if received == 0 { break },
                Some(reply) = writer.task.flushes.recv() => {
                    let _ = reply.send(writer.flush().await);
                    continue;
                }
            }
            let mut written = 0;
            for Envelope { mut message, origin } in batch.drain(..) {
                if let Err(reason) = encode(format, &mut message.value) {
                    send_dead(&dead, "sink", Kind::Output, reason, origin, message).await?;
                    continue;
                }
                if let Some(reason) = writer.task.sink.refuses(&message) {
                    send_dead(&dead, "sink", Kind::Output, reason, origin, message).await?;
                    continue;
                }
                writer.write(message, origin).await?;
                written += 1;
            }
            writer.task.events.emit(Written { messages: written });
            writer.hand_on(rx.is_empty()).await?;
        }
        Ok(writer.drained())
    }

    /// Writes dead letters as they come until the channel closes, each as
    /// its JSON record.
    pub(super) async fn dead_letters(
        self,
        mut rx: Receiver<DeadLetter>,
        locator: Locator,
    ) -> Result<Drained<S>, TaskError> {
        let mut writer = Writer::new(self);
        loop {
            let letter = tokio::select! {
                biased;
                letter = rx.recv() => match letter {
                    Some(letter) => letter,
                    None => break,
                },
                Some(reply) = writer.task.flushes.recv() => {
                    let _ = reply.send(writer.flush().await);
                    continue;
                }
            };
            let mut record = Message::from_value(letter.to_json_line(&locator));
            // A dead letter the sink would refuse (larger than a broker
            // takes) would fail the run: it is written cut to fit instead.
            if let Some(refusal) = writer.task.sink.refuses(&record) {
                record = Message::from_value(letter.to_cut_json_line(&locator, &refusal, CUT_KEPT));
                // Escaped, what is kept can be several times as long: then
                // without the message at all.
                if writer.task.sink.refuses(&record).is_some() {
                    record = Message::from_value(letter.to_cut_json_line(&locator, &refusal, 0));
                }
            }
            writer.write(record, letter.origin).await?;
            writer.task.events.emit(DeadLettered { kind: letter.kind });
            writer.hand_on(rx.is_empty()).await?;
        }
        Ok(writer.drained())
    }
}

/// What the two tasks share: writing, flushing, and settling once durable.
struct Writer<S> {
    task: SinkTask<S>,
    unflushed: Vec<Origin>,
    handed_on: Instant,
}

impl<S: Sink> Writer<S> {
    fn new(task: SinkTask<S>) -> Self {
        Writer { task, unflushed: Vec::new(), handed_on: Instant::now() }
    }

    async fn write(&mut self, message: Message, origin: Origin) -> Result<(), TaskError> {
        self.task.sink.write(message, &origin).await.map_err(|error| self.fail(error))?;
        match &origin.ack {
            Some(_) if self.task.ack_when_durable => self.unflushed.push(origin),
            _ => origin.settle(),
        }
        Ok(())
    }

    /// Hands on what is buffered when nothing more is coming right now
    /// (`idle`), or when the last hand-over is `flush_interval` old: a live
    /// consumer sees each output as soon as it is done, and a busy sink
    /// still writes in large blocks. The same for a sink holding
    /// acknowledgements, so that its source hears promptly.
    async fn hand_on(&mut self, idle: bool) -> Result<(), TaskError> {
        let waiting = !self.unflushed.is_empty();
        if !self.task.sink.is_live() && !waiting {
            return Ok(());
        }
        if idle || self.handed_on.elapsed() >= self.task.flush_interval || self.unflushed.len() >= MAX_UNFLUSHED {
            self.flush().await.map_err(|error| self.fail(error))?;
            self.handed_on = Instant::now();
        }
        Ok(())
    }

    /// Flushes the sink: what it wrote is durable, so its inputs' shares are settled.
    async fn flush(&mut self) -> std::io::Result<u64> {
        let position = self.task.sink.flush().await?;
        self.unflushed.drain(..).for_each(Origin::settle);
        Ok(position)
    }

    fn fail(&self, error: std::io::Error) -> TaskError {
        RunError::Output { path: self.task.name.clone(), error }.into()
    }

    fn drained(self) -> Drained<S> {
        Drained { sink: self.task.sink, unflushed: self.unflushed }
    }
}

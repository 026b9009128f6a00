//! The source task: reads inputs from the source, checks them against the
//! format, and sends them on, with checkpoints between them and the
//! acknowledgements of those that are done passed back to the source.

use super::applied::Applied;
use super::checkpoint::Checkpoints;
use super::dead_letter::{DeadLetter, Kind};
use super::events::{BlankSkipped, CheckpointTaken, Events, InputRead};
use super::task::{TaskError, send_dead};
use crate::config::Format;
use crate::connect::{Decoded, Input, Read, Source, decode};
use crate::envelope::{Acks, Done, Envelope, Origin};
use std::future::Future;
use std::time::Instant;
use tokio::sync::mpsc::Sender;

pub(super) struct SourceTask<S> {
    pub(super) source: S,
    pub(super) format: Format,
    pub(super) tx: Sender<Envelope>,
    pub(super) dead: Sender<DeadLetter>,
    pub(super) events: Events,
    /// The inputs not yet done, when the run tracks them: for checkpoints,
    /// or for a source that acknowledges.
    pub(super) acks: Option<Acks>,
    pub(super) checkpoints: Option<Checkpoints>,
    /// Every input up to this position has entered the pipeline (or was
    /// skipped): where a rerun resumes if the run stops now.
    pub(super) read_through: u64,
    /// Inputs from a broker whose state is committed, for checkpoints to
    /// record and for a run after a crash not to apply twice.
    pub(super) applied: Applied,
}

/// Where the inputs that are done go: to the source at once or, when the
/// run checkpoints state and the source acknowledges (to a broker), held
/// until the checkpoint that commits their state. An input acknowledged
/// before its state is committed would be lost to a crash: the broker would
/// not deliver it again, and the state would not hold it.
pub(super) struct Told {
    held: Option<Vec<Done>>,
}

impl Told {
    fn new(hold: bool) -> Self {
        Told { held: hold.then(Vec::new) }
    }

    pub(super) fn done(&mut self, source: &mut impl Source, done: Done) {
        match &mut self.held {
            // One given up on is told at once: the broker may redeliver it now.
            Some(held) if done.delivered => held.push(done),
            _ => source.done(done),
        }
    }

    /// Their state is committed: the held inputs are told.
    pub(super) fn committed(&mut self, source: &mut impl Source) {
        if let Some(held) = &mut self.held {
            held.drain(..).for_each(|done| source.done(done));
        }
    }

    /// The positions of the inputs held.
    pub(super) fn positions(&self) -> impl Iterator<Item = u64> + '_ {
        self.held.iter().flatten().map(|done| done.position)
    }

    /// How many inputs are held.
    fn waiting(&self) -> usize {
        self.held.as_ref().map_or(0, Vec::len)
    }

    /// The run failed before their state was committed: the held inputs
    /// are told as given up on, so that a broker delivers them again.
    pub(super) fn abandoned(&mut self, source: &mut impl Source) {
        if let Some(held) = &mut self.held {
            held.drain(..).for_each(|done| source.done(Done { delivered: false, all_up_to: None, ..done }));
        }
    }
}

/// How the source task ended.
pub(super) struct Stopped<S> {
    pub(super) source: S,
    pub(super) acks: Option<Acks>,
    pub(super) told: Told,
    pub(super) applied: Applied,
    /// `Some(position)` if a shutdown stopped it: every input up to and
    /// including `position` was sent on, none after.
    pub(super) after: Option<u64>,
}

impl<S: Source> SourceTask<S> {
    pub(super) async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Stopped<S>, TaskError> {
        let SourceTask {
            mut source,
            format,
            tx,
            dead,
            events,
            mut acks,
            mut checkpoints,
            mut read_through,
            mut applied,
        } = self;
        let mut shutdown = std::pin::pin!(shutdown);
        // Only a source that acknowledges is read with a select on its acks:
        // that needs a `next` that can be cancelled without losing input.
        let acknowledges = source.acknowledges();
        let mut told = Told::new(acknowledges && checkpoints.is_some());
        let hold_at_most = source.max_unacknowledged().map_or(u64::MAX, |n| (n / 2).max(1));
        loop {
            if let Some(acks) = acks.as_mut() {
                acks.take_done(|done| told.done(&mut source, done));
            }
            // Held inputs whose stages wrote no state since the last commit
            // need no checkpoint: their state (if any) is committed.
            if told.waiting() > 0 && checkpoints.as_ref().is_some_and(|c| !c.store.has_pending()) {
                told.committed(&mut source);
            }
            // A checkpoint after the last input read, once due by count or
            // time, or once the held inputs are half of what the broker lets
            // a worker hold (it would stop delivering). If a task fails
            // meanwhile, the pipeline never empties: stop.
            if let (Some(c), Some(acks)) = (checkpoints.as_mut(), acks.as_mut())
                && (c.due() || told.waiting() as u64 >= hold_at_most)
            {
                let since = Instant::now();
                let take = async {
                    acks.drain(|done| told.done(&mut source, done)).await;
                    c.commit(read_through, applied.record(told.positions())).await
                };
                tokio::select! {
                    taken = take => taken?,
                    () = tx.closed() => return Err(TaskError::Closed),
                    () = dead.closed() => return Err(TaskError::Closed),
                }
                told.committed(&mut source);
                events.emit(CheckpointTaken { took: since.elapsed() });
            }
            // Held acknowledgements wait for a checkpoint: one is due by time
            // even if no input comes (the broker may have stopped sending,
            // waiting for them).
            let due_at = checkpoints.as_ref().filter(|_| told.waiting() > 0).map(|c| c.last + c.interval);
            let input = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(Stopped { source, acks, told, applied, after: Some(read_through) }),
                () = sleep_until(due_at), if due_at.is_some() => continue,
                done = next_done(&mut acks), if acknowledges => {
                    told.done(&mut source, done);
                    continue;
                }
                input = source.next() => input.map_err(|error| super::RunError::Input {
                    path: source.locator().path(),
                    error,
                })?,
                // While no input is ready: a failed stage or sink closes its
                // input, so stop now, not at the next input (which, from
                // stdin or a broker, may never come).
                () = tx.closed() => return Err(TaskError::Closed),
                () = dead.closed() => return Err(TaskError::Closed),
            };
            let Some(Input { position, read, redelivered }) = input else {
                return Ok(Stopped { source, acks, told, applied, after: None });
            };
            // Its state committed, its outputs delivered, by a run that died
            // before the broker heard: done, without running again.
            if applied.holds(position, redelivered) {
                tracing::debug!(
                    "{} was delivered again: the state holds it already",
                    source.locator().describe(position)
                );
                enter(&mut acks, &mut checkpoints, position).settle();
                read_through = position;
                continue;
            }
            let message = match read {
                Read::Message(message) => message,
                Read::Unreadable { head, reason } => {
                    let origin = enter(&mut acks, &mut checkpoints, position);
                    // `head` may be cut short: the count is then a little low.
                    events.emit(InputRead { bytes: line_bytes(&head) });
                    send_dead(&dead, "source", Kind::Input, reason, origin, crate::bindings::Message::from_value(head))
                        .await?;
                    read_through = position;
                    continue;
                }
            };
            match decode(format, &message.value) {
                Decoded::Message => {}
                Decoded::Blank => {
                    events.emit(BlankSkipped { bytes: line_bytes(&message.value) });
                    // Done at once: a broker must hear of it like any other.
                    if acknowledges {
                        enter(&mut acks, &mut checkpoints, position).settle();
                    }
                    read_through = position;
                    continue;
                }
                Decoded::Invalid(reason) => {
                    let origin = enter(&mut acks, &mut checkpoints, position);
                    events.emit(InputRead { bytes: line_bytes(&message.value) });
                    send_dead(&dead, "source", Kind::Input, reason, origin, message).await?;
                    read_through = position;
                    continue;
                }
            }
            // A message waiting for room downstream when the signal comes counts as unread.
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(Stopped { source, acks, told, applied, after: Some(read_through) }),
                permit = tx.reserve() => permit.map_err(|_| TaskError::Closed)?,
            };
            let origin = enter(&mut acks, &mut checkpoints, position);
            let bytes = line_bytes(&message.value);
            permit.send(Envelope { message, origin });
            events.emit(InputRead { bytes });
            read_through = position;
        }
    }
}

/// The bytes a line took in its file: its value and the newline (one too
/// many for a last line without one; a `\r\n` line's `\r` is in the value).
fn line_bytes(value: &[u8]) -> u64 {
    value.len() as u64 + 1
}

/// An input enters the pipeline: its origin, tracked if the run tracks inputs.
fn enter(acks: &mut Option<Acks>, checkpoints: &mut Option<Checkpoints>, position: u64) -> Origin {
    if let Some(c) = checkpoints {
        c.since += 1;
    }
    match acks {
        Some(acks) => acks.origin(position),
        None => Origin::at(position),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn next_done(acks: &mut Option<Acks>) -> Done {
    match acks {
        Some(acks) => acks.next_done().await,
        None => std::future::pending().await,
    }
}

//! One stage at run time. It takes messages from its input channel and runs
//! them through instances of the stage, up to `concurrency` jobs at once
//! (see [`super::job`]). A job is one message, or a batch of messages that
//! were already waiting, in one `process-batch` call; how many it takes
//! adapts so that a call lasts about `batch_window`. Outputs go downstream
//! in the configured order, and failures to the dead-letter task.
//!
//! - ordered: results leave in input order (`FuturesOrdered` is the reorder
//!   buffer, bounded by `concurrency` plus `buffer`, which also holds the
//!   messages parked while they wait out a retry's backoff).
//! - unordered: results leave as they finish.
//! - keyed (`partition_by = "key"`): one message per key in flight at a
//!   time. Later messages of a busy key wait their turn (at most `buffer` of
//!   them), and different keys run in parallel.
//!
//! With `concurrency = 1` jobs run on this task itself (no hop between
//! threads); with more, each is spawned, so CPU-bound stages use every core.
//!
//! This file admits messages and schedules jobs; `outcome` finishes them,
//! `keyed` keeps a keyed stage's queues, `breaker` is the circuit breaker.

mod breaker;
mod keyed;
mod outcome;

use super::BuiltStage;
use super::batch_size::BatchSize;
use super::dead_letter::DeadLetter;
use super::error::RunError;
use super::events::{Queued, StageEvents, Started, Unqueued};
use super::halt::Halt;
use super::in_flight::{AbortOnDrop, InFlight, Job};
use super::job::{EmitPlan, JobPlan, job};
use super::reload::Swap;
use super::runner::Runner;
use super::slots::{Seat, Slot, Slots};
use super::tap::TapHandle;
use super::task::TaskError;
use crate::config::{EmitMode, Execution, Order, PartitionBy};
use crate::envelope::Envelope;
use breaker::Breaker;
use futures_util::FutureExt;
use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use keyed::{Keys, key_of};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use tokio::sync::mpsc::{Receiver, Sender};

pub(super) struct StageTask {
    runner: Runner,
    exec: Execution,
    events: StageEvents,
    dead: Sender<DeadLetter>,
    /// The stage's slots and idle instances.
    slots: Arc<Slots>,
    breaker: Breaker,
    /// Set when the run starts.
    emit: EmitPlan,
    /// Stops the run if this stage can no longer start an instance; `None`
    /// when the run checkpoints (it then fails, and resumes from its last
    /// checkpoint).
    halt: Option<Arc<Halt>>,
    /// Why this stage can no longer start an instance, once it cannot: it
    /// runs nothing more, and dead-letters what it gets with this reason.
    stuck: Option<String>,
    /// Bytes of outputs of finished jobs an ordered stage holds until the
    /// jobs before them finish (one waiting out a retry's backoff, say).
    held: Arc<AtomicUsize>,
    /// Where `sluice tap` samples what leaves the stage.
    tap: TapHandle,
    /// New components for this stage ([`super::Reloader`]).
    swaps: Option<Receiver<Swap>>,
}

impl StageTask {
    /// The task of a built stage: its events go to `events`, its dead
    /// letters to `dead`, and `halt` is where it stops the run if it can no
    /// longer start an instance (`None` when the run checkpoints).
    pub(super) fn new(
        built: BuiltStage,
        events: StageEvents,
        tap: TapHandle,
        dead: Sender<DeadLetter>,
        halt: Option<Arc<Halt>>,
    ) -> Self {
        let BuiltStage { runner, exec, first, swaps } = built;
        let slots = Slots::new(&runner, exec.concurrency, first, exec.isolate, exec.recycle_after, events.clone());
        StageTask {
            runner,
            exec,
            events,
            dead,
            slots,
            breaker: Breaker::default(),
            emit: EmitPlan::Unused,
            halt,
            stuck: None,
            held: Arc::default(),
            tap,
            swaps,
        }
    }

    /// Runs `swap`'s component from now on: the stage has nothing in
    /// flight. Its idle instances go with the old component.
    fn swap(&mut self, swap: Swap, tx: &Sender<Envelope>) -> BatchSize {
        let Swap { runner, exec, first, done } = swap;
        self.slots =
            Slots::new(&runner, exec.concurrency, Some(first), exec.isolate, exec.recycle_after, self.events.clone());
        self.runner = runner;
        self.exec = exec;
        self.emit = self.emit_plan(tx);
        // A stage stuck on instances that would not start gets a new chance.
        self.stuck = None;
        self.breaker = Breaker::default();
        let _ = done.send(());
        BatchSize::new(self.exec.batch, self.exec.batch_window)
    }

    /// Where emitted messages go: at once, unless that would break the
    /// stage's output order (ordered, several messages in flight).
    fn emit_plan(&self, tx: &Sender<Envelope>) -> EmitPlan {
        let exec = &self.exec;
        match &self.runner {
            Runner::Wasm(pre) if pre.uses_emit() => {
                let reorders = exec.concurrency > 1 && exec.order == Order::Ordered && exec.partition_by.is_none();
                if exec.emit == EmitMode::OnSuccess || reorders {
                    EmitPlan::Held
                } else {
                    EmitPlan::Now(tx.clone(), self.tap.point())
                }
            }
            _ => EmitPlan::Unused,
        }
    }

    /// Whether a message waiting out its backoff gives its slot back. Not
    /// when the stage emits at once and keeps input order: a later message
    /// would emit ahead of it.
    fn parks(&self) -> bool {
        let ordered = self.exec.order == Order::Ordered && self.exec.partition_by.is_none();
        !(ordered && matches!(self.emit, EmitPlan::Now(..)))
    }

    /// Messages enter a job (or are refused, by a stuck stage).
    fn count_in(&self, messages: usize) {
        self.events.emit(Started { messages: messages as u64 });
    }

    /// Starts a job in `seat`: on this task with `concurrency = 1`, else
    /// spawned. The caller counts its messages in flight.
    fn start(&self, seat: Seat, batch: Vec<Envelope>) -> Job {
        let plan = JobPlan { retry: self.exec.retries, emit: self.emit.clone() };
        let job = job(self.runner.clone(), seat, batch, plan);
        // An ordered stage counts what its finished jobs hold until their turn.
        let held = (self.exec.order == Order::Ordered && self.exec.partition_by.is_none()).then(|| self.held.clone());
        let job = async move {
            let mut ran = job.await;
            if let Some(held) = held {
                ran.held = ran.output_bytes();
                held.fetch_add(ran.held, Relaxed);
            }
            ran
        };
        if self.exec.concurrency == 1 {
            Box::pin(async move { Ok(job.await) })
        } else {
            Box::pin(AbortOnDrop(tokio::spawn(job)))
        }
    }

    fn seat(&self, slot: Option<Slot>) -> Seat {
        Seat::new(self.slots.clone(), slot, self.parks())
    }

    pub(super) async fn run(mut self, mut rx: Receiver<Envelope>, tx: Sender<Envelope>) -> Result<(), TaskError> {
        self.emit = self.emit_plan(&tx);
        let keyed = self.exec.partition_by == Some(PartitionBy::Key);
        let mut in_flight = match (keyed, self.exec.order) {
            (false, Order::Ordered) => InFlight::Ordered(FuturesOrdered::new()),
            _ => InFlight::Unordered(FuturesUnordered::new()),
        };
        // Keyed: the keys with a message in flight, and those waiting behind them.
        let mut keys = Keys::default();
        let mut input_open = true;
        let mut size = BatchSize::new(self.exec.batch, self.exec.batch_window);
        // Messages taken for the next job, waiting for a slot (not keyed).
        let mut next: Vec<Envelope> = Vec::new();
        // Messages of a batch in which the stage emitted, to run again one
        // per job before any other (they were counted in already).
        let mut again: std::collections::VecDeque<Envelope> = Default::default();
        // A new component waiting for the messages in flight to finish.
        let mut swap: Option<Swap> = None;
        loop {
            if swap.is_some() && in_flight.len() == 0 && next.is_empty() && again.is_empty() && keys.waiting() == 0 {
                size = self.swap(swap.take().expect("checked"), &tx);
            }
            let reorder_room = self.exec.concurrency + self.exec.buffer;
            // The reorder buffer is bounded in messages, and in the bytes its
            // finished jobs hold: no more than one input's output cap before
            // the stage stops taking input.
            let held = self.held.load(Relaxed) <= self.runner.limits().max_total_output_bytes;
            let room = in_flight.len() < reorder_room && held;
            // Keyed jobs take their slot themselves, so admission counts them.
            let keyed_room = in_flight.len() < self.exec.concurrency && keys.waiting() < self.exec.buffer;
            tokio::select! {
                // Finish before starting: frees slots, keeps the reorder buffer short.
                biased;
                Some(joined) = in_flight.next(), if in_flight.len() > 0 => {
                    let mut ran = joined
                        .map_err(|e| RunError::Internal(format!("stage `{}` job failed: {e}", self.runner.name())))?;
                    // Keyed jobs hold one message each.
                    let key = ran.done.first().map(|d| &d.envelope)
                        .or_else(|| ran.stuck.as_ref().and_then(|s| s.messages.first()))
                        .filter(|_| keyed)
                        .map(|e| key_of(&e.message));
                    let messages = ran.done.len();
                    let busy_for = ran.busy;
                    let emits = ran.emits;
                    // The batch's messages go first, one per job.
                    again.extend(std::mem::take(&mut ran.alone));
                    let requeue = self.finish_all(ran, &tx).await?;
                    if !requeue.is_empty() {
                        // Its outputs come next: ahead of every job started after it.
                        let seat = self.seat(None);
                        in_flight.push_front(self.start(seat, requeue));
                    }
                    size.observe(messages, busy_for);
                    if emits {
                        size = BatchSize::new(1, self.exec.batch_window);
                    }
                    if let Some(key) = key {
                        if self.stuck.is_some() {
                            // No job will run for this key again: all its queue goes.
                            let queued = keys.take_all(&key);
                            if !queued.is_empty() {
                                self.count_in_queued(queued.len());
                                self.refuse(queued).await?;
                            }
                        } else if let Some(next) = keys.next(&key) {
                            self.count_in_queued(1);
                            let seat = self.seat(None);
                            in_flight.push(self.start(seat, vec![next]));
                        }
                    }
                }
                // A message of a batch in which the stage emitted, alone.
                slot = self.slots.acquire(), if !again.is_empty() => {
                    let envelope = again.pop_front().expect("checked");
                    if self.stuck.is_some() {
                        drop(slot);
                        self.refuse(vec![envelope]).await?;
                        continue;
                    }
                    let seat = self.seat(Some(slot));
                    in_flight.push(self.start(seat, vec![envelope]));
                }
                // Not keyed: a slot for the messages taken, then whatever else
                // is waiting joins them, up to the batch size.
                slot = self.slots.acquire(), if !next.is_empty() && again.is_empty() => {
                    if self.stuck.is_some() {
                        drop(slot);
                        let batch = std::mem::take(&mut next);
                        self.count_in(batch.len());
                        self.refuse(batch).await?;
                        continue;
                    }
                    let job = self.start_batch(slot, &mut next, &mut rx, size.get());
                    in_flight.push(job);
                }
                received = rx.recv_many(&mut next, if keyed { 1 } else { size.get() }),
                    if input_open && swap.is_none() && next.is_empty() && again.is_empty()
                        && if keyed { keyed_room } else { room } =>
                {
                    match received {
                        0 => input_open = false,
                        _ if self.stuck.is_some() => {
                            let batch = std::mem::take(&mut next);
                            self.count_in(batch.len());
                            self.refuse(batch).await?;
                        }
                        _ if keyed => {
                            let envelope = next.pop().expect("one message received");
                            match keys.arrive(envelope) {
                                Some(envelope) => {
                                    self.count_in(1);
                                    let seat = self.seat(None);
                                    in_flight.push(self.start(seat, vec![envelope]));
                                }
                                None => self.events.emit(Queued),
                            }
                        }
                        // A free slot: start at once (the common case), else
                        // the messages wait for one in `next`.
                        _ => {
                            if let Some(slot) = self.slots.try_acquire() {
                                let job = self.start_batch(slot, &mut next, &mut rx, size.get());
                                in_flight.push(job);
                            }
                        }
                    }
                }
                // A new component: no more messages in until those in flight are out.
                Some(new) = next_swap(&mut self.swaps), if input_open && swap.is_none() => swap = Some(new),
                // A failure downstream stops this stage now, not at its next output.
                () = tx.closed(), if input_open || in_flight.len() > 0 => return Err(TaskError::Closed),
                else => break,
            }
        }
        Ok(())
    }

    /// Starts a job in `slot` with the messages taken in `next` and whatever
    /// else is waiting, up to `size`: taken in one go, as `recv_many` does
    /// (one lock, one wake-up of the sender), never waiting.
    fn start_batch(&self, slot: Slot, next: &mut Vec<Envelope>, rx: &mut Receiver<Envelope>, size: usize) -> Job {
        let more = size.saturating_sub(next.len());
        if more > 0 {
            let _ = rx.recv_many(next, more).now_or_never();
        }
        // `next` was taken at the size of its time, which may have dropped
        // since (a stage that emitted): the rest wait for the next slot.
        let batch = if next.len() > size { next.drain(..size).collect() } else { std::mem::take(next) };
        self.count_in(batch.len());
        let seat = self.seat(Some(slot));
        self.start(seat, batch)
    }

    /// Messages queued behind a busy key enter the flight count when they
    /// leave the queue (their input was counted when they arrived).
    fn count_in_queued(&self, messages: usize) {
        self.events.emit(Unqueued { messages: messages as u64 });
    }
}

async fn next_swap(swaps: &mut Option<Receiver<Swap>>) -> Option<Swap> {
    match swaps {
        Some(swaps) => swaps.recv().await,
        None => std::future::pending().await,
    }
}

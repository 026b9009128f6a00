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

use super::batch_size::BatchSize;
use super::dead_letter::{DeadLetter, Kind};
use super::error::RunError;
use super::halt::Halt;
use super::in_flight::{AbortOnDrop, InFlight, Job};
use super::job::{Done, EmitPlan, Failure, JobPlan, Ran, Runner, Stuck, job};
use super::slots::{Seat, Slot, Slots};
use super::stats::{StageCounters, Stats};
use super::task::{TaskError, send_dead};
use crate::bindings::Message;
use crate::config::{EmitMode, Execution, Order, PartitionBy};
use crate::envelope::Envelope;
use crate::limits::log_safe;
use futures_util::FutureExt;
use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::mpsc::{Receiver, Sender};

pub(super) struct StageTask {
    pub(super) runner: Runner,
    pub(super) exec: Execution,
    pub(super) stats: Arc<Stats>,
    pub(super) index: usize,
    pub(super) dead: Sender<DeadLetter>,
    /// The stage's slots and idle instances.
    pub(super) slots: Arc<Slots>,
    pub(super) failures_in_a_row: u32,
    /// Set when the run starts.
    pub(super) emit: EmitPlan,
    /// Messages in the pipeline, when it checkpoints.
    /// Stops the run if this stage can no longer start an instance; `None`
    /// when the run checkpoints (it then fails, and resumes from its last
    /// checkpoint).
    pub(super) halt: Option<Arc<Halt>>,
    /// Why this stage can no longer start an instance, once it cannot: it
    /// runs nothing more, and dead-letters what it gets with this reason.
    pub(super) stuck: Option<String>,
    /// Bytes of outputs of finished jobs an ordered stage holds until the
    /// jobs before them finish (one waiting out a retry's backoff, say).
    pub(super) held: Arc<AtomicUsize>,
}

impl StageTask {
    fn counters(&self) -> &StageCounters {
        &self.stats.stages[self.index]
    }

    /// Where emitted messages go: at once, unless that would break the
    /// stage's output order (ordered, several messages in flight).
    fn emit_plan(&self, tx: &Sender<Envelope>) -> EmitPlan {
        let exec = &self.exec;
        match &self.runner {
            Runner::Wasm(pre) if pre.uses_emit() => {
                let reorders = exec.concurrency > 1 && exec.order == Order::Ordered && exec.partition_by.is_none();
                if exec.emit == EmitMode::OnSuccess || reorders { EmitPlan::Held } else { EmitPlan::Now(tx.clone()) }
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

    fn count_in(&self, messages: usize) {
        let counters = self.counters();
        counters.input.fetch_add(messages as u64, Relaxed);
        counters.in_flight.fetch_add(messages as u64, Relaxed);
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
        // Keyed: the keys with a message in flight, each with the messages
        // waiting behind it (counted in `waiting`, not yet in flight).
        let mut busy: HashMap<Vec<u8>, VecDeque<Envelope>> = HashMap::new();
        let mut waiting = 0usize;
        let mut input_open = true;
        let mut size = BatchSize::new(self.exec.batch, self.exec.batch_window);
        // Messages taken for the next job, waiting for a slot (not keyed).
        let mut next: Vec<Envelope> = Vec::new();
        let reorder_room = self.exec.concurrency + self.exec.buffer;
        loop {
            // The reorder buffer is bounded in messages, and in the bytes its
            // finished jobs hold: no more than one input's output cap before
            // the stage stops taking input.
            let held = self.held.load(Relaxed) <= self.runner.limits().max_total_output_bytes;
            let room = in_flight.len() < reorder_room && held;
            // Keyed jobs take their slot themselves, so admission counts them.
            let keyed_room = in_flight.len() < self.exec.concurrency && waiting < self.exec.buffer;
            tokio::select! {
                // Finish before starting: frees slots, keeps the reorder buffer short.
                biased;
                Some(joined) = in_flight.next(), if in_flight.len() > 0 => {
                    let ran = joined
                        .map_err(|e| RunError::Internal(format!("stage `{}` job failed: {e}", self.runner.name())))?;
                    // Keyed jobs hold one message each.
                    let key = ran.done.first().map(|d| &d.envelope)
                        .or_else(|| ran.stuck.as_ref().and_then(|s| s.messages.first()))
                        .filter(|_| keyed)
                        .map(|e| key_of(&e.message));
                    let messages = ran.done.len();
                    let busy_for = ran.busy;
                    let requeue = self.finish_all(ran, &tx).await?;
                    if !requeue.is_empty() {
                        // Its outputs come next: ahead of every job started after it.
                        let seat = self.seat(None);
                        in_flight.push_front(self.start(seat, requeue));
                    }
                    size.observe(messages, busy_for);
                    if let Some(key) = key {
                        match busy.get_mut(&key).and_then(VecDeque::pop_front) {
                            Some(next) if self.stuck.is_some() => {
                                // No job will run for this key again: all its queue goes.
                                let queued: Vec<Envelope> =
                                    std::iter::once(next).chain(busy.remove(&key).unwrap_or_default()).collect();
                                waiting -= queued.len();
                                self.count_in_queued(queued.len());
                                self.refuse(queued).await?;
                            }
                            Some(next) => {
                                waiting -= 1;
                                self.count_in_queued(1);
                                let seat = self.seat(None);
                                in_flight.push(self.start(seat, vec![next]));
                            }
                            None => {
                                busy.remove(&key);
                            }
                        }
                    }
                }
                // Not keyed: a slot for the messages taken, then whatever else
                // is waiting joins them, up to the batch size.
                slot = self.slots.acquire(), if !next.is_empty() => {
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
                    if input_open && next.is_empty() && if keyed { keyed_room } else { room } =>
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
                            self.counters().input.fetch_add(1, Relaxed);
                            match busy.get_mut(&key_of(&envelope.message)) {
                                Some(queue) => {
                                    queue.push_back(envelope);
                                    waiting += 1;
                                }
                                None => {
                                    busy.insert(key_of(&envelope.message), VecDeque::new());
                                    self.counters().in_flight.fetch_add(1, Relaxed);
                                    let seat = self.seat(None);
                                    in_flight.push(self.start(seat, vec![envelope]));
                                }
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
        let batch = std::mem::take(next);
        self.count_in(batch.len());
        let seat = self.seat(Some(slot));
        self.start(seat, batch)
    }

    /// Messages queued behind a busy key enter the flight count when they
    /// leave the queue (their input was counted when they arrived).
    fn count_in_queued(&self, messages: usize) {
        self.counters().in_flight.fetch_add(messages as u64, Relaxed);
    }

    /// The stage could not make an instance: without checkpoints the run
    /// stops as an interrupt does (the source stops reading) and the messages
    /// this stage can no longer run are dead-lettered with the reason; with
    /// checkpoints, the run fails and resumes from its last checkpoint.
    async fn get_stuck(&mut self, Stuck { error, messages }: Stuck) -> Result<(), TaskError> {
        let stage = self.runner.name().to_string();
        let Some(halt) = &self.halt else {
            self.counters().in_flight.fetch_sub(messages.len() as u64, Relaxed);
            return Err(RunError::Restart { stage, error }.into());
        };
        let why = log_safe(&error.to_string()).into_owned();
        tracing::error!(stage, "cannot start a new instance, stopping the run: {why}");
        let reason = format!("stage `{stage}` cannot start a new instance: {why}");
        halt.stop(&reason);
        self.stuck = Some(format!("not processed: {reason}"));
        self.refuse(messages).await
    }

    /// Dead-letters messages this stage can no longer run (it cannot start),
    /// so that each input still ends as outputs or a dead letter.
    async fn refuse(&self, messages: Vec<Envelope>) -> Result<(), TaskError> {
        let reason = self.stuck.clone().expect("only a stuck stage refuses messages");
        let halt = self.halt.as_ref().expect("only a halting stage gets stuck");
        halt.unfinished(messages.len() as u64);
        let counters = self.counters();
        counters.in_flight.fetch_sub(messages.len() as u64, Relaxed);
        counters.dead_lettered.fetch_add(messages.len() as u64, Relaxed);
        for Envelope { message, origin } in messages {
            send_dead(&self.dead, self.runner.name(), Kind::Trap, reason.clone(), origin, message).await?;
        }
        Ok(())
    }

    /// Finishes a job's messages in order: the outputs of the whole job go
    /// downstream together, failures to the dead-letter task. Counters are
    /// updated once per job, not per message. Returns the job's messages
    /// that did not run (to run next, in a job of their own).
    async fn finish_all(&mut self, ran: Ran, tx: &Sender<Envelope>) -> Result<Vec<Envelope>, TaskError> {
        let Ran { done, stuck, busy: _, requeue, held } = ran;
        self.held.fetch_sub(held, Relaxed);
        let stats = self.stats.clone();
        let counters = &stats.stages[self.index];
        counters.in_flight.fetch_sub(done.len() as u64, Relaxed);
        // Messages of one batch share a latency: record it once for all.
        let mut same_latency: Option<(Duration, u64)> = None;
        let mut outputs = Vec::with_capacity(done.len());
        for done in done {
            match &mut same_latency {
                Some((latency, count)) if *latency == done.latency => *count += 1,
                _ => {
                    if let Some((latency, count)) = same_latency.replace((done.latency, 1)) {
                        counters.record_latency(latency, count);
                    }
                }
            }
            self.finish(done, &mut outputs).await?;
        }
        if let Some((latency, count)) = same_latency {
            counters.record_latency(latency, count);
        }
        counters.output.fetch_add(outputs.len() as u64, Relaxed);
        send_all(tx, outputs).await?;
        if let Some(stuck) = stuck {
            self.get_stuck(stuck).await?;
        }
        Ok(requeue)
    }

    /// Accounts for a finished message: its outputs join `outputs`, or it
    /// goes to the dead-letter task.
    async fn finish(&mut self, done: Done, outputs: &mut Vec<Envelope>) -> Result<(), TaskError> {
        let Done { envelope, sent, sent_last, result, retries, latency: _ } = done;
        let counters = &self.stats.stages[self.index];
        if retries > 0 {
            counters.retried.fetch_add(u64::from(retries), Relaxed);
        }
        if sent > 0 {
            counters.output.fetch_add(sent as u64, Relaxed);
        }
        let limits = *self.runner.limits();
        let (kind, reason) = match result {
            Ok(messages) => match sent_last.add_all(&messages, &limits.output_caps()) {
                Ok(_) => {
                    self.failures_in_a_row = 0;
                    if messages.is_empty() && sent == 0 {
                        counters.dropped.fetch_add(1, Relaxed);
                    }
                    let origin = envelope.origin;
                    outputs.extend(messages.into_iter().map(|message| Envelope { message, origin: origin.clone() }));
                    // The input is done here unless its outputs go on.
                    origin.settle();
                    return Ok(());
                }
                Err(breach) => (Kind::Limit, breach.to_string()),
            },
            Err(Failure::Rejected(kind, reason)) => (kind, reason),
            Err(Failure::Trapped(trap)) => {
                counters.trapped.fetch_add(1, Relaxed);
                let (kind, reason) = (if trap.limit { Kind::Limit } else { Kind::Trap }, trap.to_string());
                // Not `reason`: the guest's stderr in it is in the log already, line
                // by line as the guest wrote it (capabilities/stdio); the dead letter keeps both.
                tracing::warn!(
                    stage = &**self.runner.name(),
                    position = envelope.origin.position,
                    "{}",
                    log_safe(&trap.reason)
                );
                (kind, reason)
            }
        };
        self.failures_in_a_row += 1;
        let max = limits.max_consecutive_failures;
        if max > 0 && self.failures_in_a_row >= max {
            let stage = self.runner.name().to_string();
            return Err(RunError::CircuitOpen {
                stage,
                failures: self.failures_in_a_row,
                last: log_safe(&reason).into_owned(),
            }
            .into());
        }
        counters.dead_lettered.fetch_add(1, Relaxed);
        send_dead(&self.dead, self.runner.name(), kind, reason, envelope.origin, envelope.message).await?;
        Ok(())
    }
}

/// Sends `outputs` downstream in order, taking room in the channel for as
/// many at once as it can hold: one wait per batch rather than per message.
async fn send_all(tx: &Sender<Envelope>, outputs: Vec<Envelope>) -> Result<(), TaskError> {
    let mut left = outputs.len();
    let mut outputs = outputs.into_iter();
    while left > 0 {
        let room = left.min(tx.max_capacity());
        let permits = tx.reserve_many(room).await.map_err(|_| TaskError::Closed)?;
        for (permit, envelope) in permits.zip(outputs.by_ref()) {
            permit.send(envelope);
        }
        left -= room;
    }
    Ok(())
}

/// The partition of a keyed message: its key; messages without one share a partition.
fn key_of(message: &Message) -> Vec<u8> {
    message.key.clone().unwrap_or_default()
}

//! One stage at run time. It takes messages from its input channel and runs
//! them through instances of the stage, up to `concurrency` jobs at once. A
//! job is one message, or a batch of up to `batch` messages that were already
//! waiting, in one `process-batch` call. Outputs go downstream in the
//! configured order, and failures to the dead-letter task.
//!
//! A trap loses no batch-mate: after one, the batch's messages run again one
//! by one, each in a fresh instance if need be, so only the message that
//! traps is dead-lettered.
//!
//! - concurrency 1: jobs run one after another, inline.
//! - ordered: jobs run in parallel, results leave in input order
//!   (`FuturesOrdered` is the reorder buffer, bounded by `concurrency`).
//! - unordered: results leave as they finish.
//! - keyed (`partition_by = "key"`): one message per key in flight at a
//!   time. Later messages of a busy key wait their turn (at most `buffer` of
//!   them), and different keys run in parallel.

use super::checkpoint::Settle;
use super::dead_letter::{DeadLetter, Kind, Origin};
use super::error::{RunError, restart_hint};
use super::halt::Halt;
use super::running::{Envelope, TaskError, send_dead};
use super::stats::{StageCounters, Stats};
use crate::bindings::{Message, StageError};
use crate::capabilities::emit::{EmitTarget, Emitted};
use crate::config::{EmitMode, Execution, Order, PartitionBy, RetryConfig};
use crate::limits::{Breach, Limits, log_safe};
use crate::stage::{LoadError, NativeStage, StageInstance, StagePre, Trap};
use futures_util::StreamExt;
use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{Receiver, Sender};
use tokio::task::JoinHandle;

/// What runs a stage's messages.
#[derive(Clone)]
pub(super) enum Runner {
    /// A WebAssembly component, in instances from `StagePre`.
    Wasm(Arc<StagePre>),
    /// A Rust function (`StageConfig::native`).
    Native(NativeRunner),
}

#[derive(Clone)]
pub(super) struct NativeRunner {
    pub(super) name: Arc<str>,
    pub(super) limits: Limits,
    pub(super) stage: NativeStage,
}

impl Runner {
    fn name(&self) -> &Arc<str> {
        match self {
            Runner::Wasm(pre) => pre.name(),
            Runner::Native(native) => &native.name,
        }
    }

    fn limits(&self) -> &Limits {
        match self {
            Runner::Wasm(pre) => pre.limits(),
            Runner::Native(native) => &native.limits,
        }
    }
}

pub(super) struct StageTask {
    pub(super) runner: Runner,
    pub(super) exec: Execution,
    pub(super) stats: Arc<Stats>,
    pub(super) index: usize,
    pub(super) dead: Sender<DeadLetter>,
    /// Instances not running a message. At most `concurrency` exist at once.
    pub(super) idle: Vec<StageInstance>,
    pub(super) failures_in_a_row: u32,
    /// Set when the run starts.
    pub(super) emit: EmitPlan,
    /// Messages in the pipeline, when it checkpoints.
    pub(super) settle: Option<Arc<Settle>>,
    /// Stops the run if this stage can no longer start an instance; `None`
    /// when the run checkpoints (it then fails, and resumes from its last
    /// checkpoint).
    pub(super) halt: Option<Arc<Halt>>,
    /// Set once this stage could not start: it runs nothing more, and every
    /// message it gets is left for the resumed run.
    pub(super) stuck: bool,
}

/// A job's messages, and the instance they ran in: `None` if it trapped, or
/// if the stage isolates messages.
struct Ran {
    instance: Option<StageInstance>,
    done: Vec<Done>,
    /// Set if a fresh instance was needed and could not be made: why, and
    /// the job's messages that did not run.
    stuck: Option<Stuck>,
}

/// A job that could not go on: no instance could be made for it.
struct Stuck {
    error: LoadError,
    messages: Vec<Envelope>,
}

/// A message through the stage: what came of it.
struct Done {
    envelope: Envelope,
    /// Outputs the stage emitted and sent downstream at once, over every
    /// attempt (for the counters), and in the last one (for the caps).
    sent: usize,
    sent_last: Emitted,
    result: Result<Vec<Message>, Failure>,
    retries: u32,
    latency: Duration,
}

enum Failure {
    Rejected(Kind, String),
    Trapped(Trap),
}

type Job = AbortOnDrop<Ran>;

/// A spawned job that is cancelled if dropped: when a stage fails, or a
/// drain times out, its running jobs (and their host I/O) stop with it
/// instead of running on detached.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Running jobs, in input order or in completion order.
enum InFlight {
    Ordered(FuturesOrdered<Job>),
    Unordered(FuturesUnordered<Job>),
}

impl InFlight {
    fn push(&mut self, job: Job) {
        match self {
            InFlight::Ordered(f) => f.push_back(job),
            InFlight::Unordered(f) => f.push(job),
        }
    }

    fn len(&self) -> usize {
        match self {
            InFlight::Ordered(f) => f.len(),
            InFlight::Unordered(f) => f.len(),
        }
    }

    async fn next(&mut self) -> Option<Result<Ran, tokio::task::JoinError>> {
        match self {
            InFlight::Ordered(f) => f.next().await,
            InFlight::Unordered(f) => f.next().await,
        }
    }
}

/// Where a stage's emitted messages go.
#[derive(Clone)]
pub(super) enum EmitPlan {
    /// The stage does not emit.
    Unused,
    /// Downstream at once (counted into the pipeline, when it checkpoints).
    Now(Sender<Envelope>, Option<Arc<Settle>>),
    /// Held until the message succeeds.
    Held,
}

impl EmitPlan {
    fn target(&self, origin: Origin) -> Option<EmitTarget> {
        match self {
            EmitPlan::Unused => None,
            EmitPlan::Now(tx, settle) => Some(EmitTarget::Now { tx: tx.clone(), origin, settle: settle.clone() }),
            EmitPlan::Held => Some(EmitTarget::Held),
        }
    }
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
                if exec.emit == EmitMode::OnSuccess || reorders {
                    EmitPlan::Held
                } else {
                    EmitPlan::Now(tx.clone(), self.settle.clone())
                }
            }
            _ => EmitPlan::Unused,
        }
    }

    pub(super) async fn run(mut self, rx: Receiver<Envelope>, tx: Sender<Envelope>) -> Result<(), TaskError> {
        self.emit = self.emit_plan(&tx);
        if self.exec.concurrency == 1 { self.run_inline(rx, tx).await } else { self.run_parallel(rx, tx).await }
    }

    async fn run_inline(mut self, mut rx: Receiver<Envelope>, tx: Sender<Envelope>) -> Result<(), TaskError> {
        loop {
            // Whatever is waiting, up to a batch; or wait for input while
            // watching the output, so that a failure downstream stops this
            // stage now, not at its next output (from a quiet stdin that may
            // never come). Taken in one go: one lock, one wake-up.
            let mut batch = Vec::with_capacity(self.exec.batch);
            tokio::select! {
                biased;
                received = rx.recv_many(&mut batch, self.exec.batch) => if received == 0 { return Ok(()) },
                () = tx.closed() => return Err(TaskError::Closed),
            }
            self.count_in(batch.len());
            if self.stuck {
                self.leave(batch);
                continue;
            }
            let ran = job(self.runner.clone(), self.idle.pop(), batch, self.plan()).await;
            self.finish_all(ran, &tx).await?;
        }
    }

    fn count_in(&self, messages: usize) {
        let counters = self.counters();
        counters.input.fetch_add(messages as u64, Relaxed);
        counters.in_flight.fetch_add(messages as u64, Relaxed);
    }

    /// How this stage's jobs run.
    fn plan(&self) -> JobPlan {
        let exec = &self.exec;
        JobPlan {
            retry: exec.retries,
            isolate: exec.isolate,
            recycle_after: exec.recycle_after,
            emit: self.emit.clone(),
        }
    }

    /// The stage could not make an instance: without checkpoints the run
    /// stops as an interrupt does and `messages` are left for the resumed
    /// run; with them, the run fails and resumes from its last checkpoint.
    fn get_stuck(&mut self, Stuck { error, messages }: Stuck) -> Result<(), RunError> {
        let stage = self.runner.name().to_string();
        let Some(halt) = &self.halt else {
            self.counters().in_flight.fetch_sub(messages.len() as u64, Relaxed);
            return Err(RunError::Restart { stage, error });
        };
        let first = messages.iter().map(|e| e.origin.line).min().unwrap_or(u64::MAX);
        halt.stop(
            || {
                format!(
                    "stage `{stage}` cannot start a new instance: {error}. {}",
                    restart_hint(&stage, halt.pipeline.as_deref())
                )
            },
            first,
        );
        tracing::error!(stage, "cannot start a new instance, stopping the run: {}", log_safe(&error.to_string()));
        self.stuck = true;
        self.leave(messages);
        Ok(())
    }

    /// Messages this stage will not run (it cannot start): redone on resume.
    fn leave(&self, messages: Vec<Envelope>) {
        let halt = self.halt.as_ref().expect("only a halting stage leaves messages");
        self.counters().in_flight.fetch_sub(messages.len() as u64, Relaxed);
        if let Some(first) = messages.iter().map(|e| e.origin.line).min() {
            halt.unfinished(first, messages.len() as u64);
        }
    }

    async fn run_parallel(mut self, mut rx: Receiver<Envelope>, tx: Sender<Envelope>) -> Result<(), TaskError> {
        let keyed = self.exec.partition_by == Some(PartitionBy::Key);
        let mut in_flight = match (keyed, self.exec.order) {
            (false, Order::Ordered) => InFlight::Ordered(FuturesOrdered::new()),
            _ => InFlight::Unordered(FuturesUnordered::new()),
        };
        // Keyed: the keys with a message in flight, each with the messages
        // waiting behind it.
        let mut busy: HashMap<Vec<u8>, VecDeque<Envelope>> = HashMap::new();
        let mut waiting = 0usize;
        let mut input_open = true;
        // Keyed stages take one message at a time, to queue it behind its key.
        let take = if keyed { 1 } else { self.exec.batch };
        let mut batch = Vec::with_capacity(take);
        loop {
            let room = in_flight.len() < self.exec.concurrency && waiting < self.exec.buffer;
            tokio::select! {
                // Finish before starting: frees instances, keeps the reorder buffer short.
                biased;
                Some(joined) = in_flight.next(), if in_flight.len() > 0 => {
                    let ran = joined
                        .map_err(|e| RunError::Internal(format!("stage `{}` job failed: {e}", self.runner.name())))?;
                    // Keyed jobs hold one message each.
                    let key = ran.done.first().map(|d| &d.envelope)
                        .or_else(|| ran.stuck.as_ref().and_then(|s| s.messages.first()))
                        .filter(|_| keyed)
                        .map(|e| key_of(&e.message));
                    self.finish_all(ran, &tx).await?;
                    if let Some(key) = key {
                        match busy.get_mut(&key).and_then(VecDeque::pop_front) {
                            Some(next) if self.stuck => {
                                waiting -= 1;
                                // The rest of the key's queue follows when this entry is removed.
                                let rest: Vec<Envelope> = busy.remove(&key).into_iter().flatten().collect();
                                waiting -= rest.len();
                                self.leave(std::iter::once(next).chain(rest).collect());
                            }
                            Some(next) => {
                                waiting -= 1;
                                self.counters().in_flight.fetch_add(1, Relaxed);
                                in_flight.push(self.spawn(vec![next]));
                            }
                            None => {
                                busy.remove(&key);
                            }
                        }
                    }
                }
                received = rx.recv_many(&mut batch, take), if input_open && room => match received {
                    0 => input_open = false,
                    _ if self.stuck => {
                        self.count_in(batch.len());
                        self.leave(std::mem::take(&mut batch));
                    }
                    _ if keyed => {
                        let envelope = batch.pop().expect("one message received");
                        self.counters().input.fetch_add(1, Relaxed);
                        match busy.get_mut(&key_of(&envelope.message)) {
                            Some(queue) => {
                                queue.push_back(envelope);
                                waiting += 1;
                            }
                            None => {
                                busy.insert(key_of(&envelope.message), VecDeque::new());
                                self.counters().in_flight.fetch_add(1, Relaxed);
                                in_flight.push(self.spawn(vec![envelope]));
                            }
                        }
                    }
                    _ => {
                        self.count_in(batch.len());
                        let job = std::mem::replace(&mut batch, Vec::with_capacity(take));
                        in_flight.push(self.spawn(job));
                    }
                },
                // A failure downstream stops this stage now, not at its next output.
                () = tx.closed(), if input_open || in_flight.len() > 0 => return Err(TaskError::Closed),
                else => break,
            }
        }
        Ok(())
    }

    /// Starts a job on the runtime, so CPU-bound stages use every core. The
    /// caller counts its messages in flight.
    fn spawn(&mut self, batch: Vec<Envelope>) -> Job {
        AbortOnDrop(tokio::spawn(job(self.runner.clone(), self.idle.pop(), batch, self.plan())))
    }

    /// Takes back a job's instance, then finishes its messages in order: the
    /// outputs of the whole job go downstream together, failures to the
    /// dead-letter task. Counters are updated once per job, not per message.
    async fn finish_all(&mut self, ran: Ran, tx: &Sender<Envelope>) -> Result<(), TaskError> {
        if let Some(instance) = ran.instance {
            self.idle.push(instance);
        }
        if let Some(stuck) = ran.stuck {
            self.get_stuck(stuck)?;
        }
        let stats = self.stats.clone();
        let counters = &stats.stages[self.index];
        counters.in_flight.fetch_sub(ran.done.len() as u64, Relaxed);
        // Messages of one batch share a latency: record it once for all.
        let mut same_latency: Option<(Duration, u64)> = None;
        let mut outputs = Vec::with_capacity(ran.done.len());
        // Inputs that left the pipeline here (not dead-lettered: a dead letter
        // leaves it when written).
        let mut settled = 0i64;
        for done in ran.done {
            match &mut same_latency {
                Some((latency, count)) if *latency == done.latency => *count += 1,
                _ => {
                    if let Some((latency, count)) = same_latency.replace((done.latency, 1)) {
                        counters.record_latency(latency, count);
                    }
                }
            }
            if self.finish(done, &mut outputs).await? {
                settled += 1;
            }
        }
        if let Some((latency, count)) = same_latency {
            counters.record_latency(latency, count);
        }
        counters.output.fetch_add(outputs.len() as u64, Relaxed);
        if let Some(settle) = &self.settle {
            // Outputs counted in before their inputs are counted out.
            settle.change(outputs.len() as i64 - settled);
        }
        send_all(tx, outputs).await
    }

    /// Accounts for a finished message: its outputs join `outputs` (returns
    /// true), or it goes to the dead-letter task (false).
    async fn finish(&mut self, done: Done, outputs: &mut Vec<Envelope>) -> Result<bool, TaskError> {
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
            Ok(messages) => match check_outputs(&messages, sent_last, &limits) {
                None => {
                    self.failures_in_a_row = 0;
                    if messages.is_empty() && sent == 0 {
                        counters.dropped.fetch_add(1, Relaxed);
                    }
                    let origin = envelope.origin;
                    outputs.extend(messages.into_iter().map(|message| Envelope { message, origin }));
                    return Ok(true);
                }
                Some(breach) => (Kind::Limit, breach.to_string()),
            },
            Err(Failure::Rejected(kind, reason)) => (kind, reason),
            Err(Failure::Trapped(trap)) => {
                counters.trapped.fetch_add(1, Relaxed);
                let (kind, reason) = (if trap.limit { Kind::Limit } else { Kind::Trap }, trap.to_string());
                // Not `reason`: the guest's stderr in it is in the log already, line
                // by line as the guest wrote it (capabilities/stdio); the dead letter keeps both.
                tracing::warn!(
                    stage = &**self.runner.name(),
                    line = envelope.origin.line,
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
            return Err(RunError::CircuitOpen { stage, failures: self.failures_in_a_row, last: reason }.into());
        }
        counters.dead_lettered.fetch_add(1, Relaxed);
        send_dead(&self.dead, self.runner.name(), kind, reason, envelope.origin, envelope.message).await?;
        Ok(false)
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

/// Runs a job: a batch through one `process-batch` call, or one message
/// through `process`. Messages the batch call did not settle (a transient
/// error to retry, or all of them after a trap) run again alone.
async fn job(runner: Runner, instance: Option<StageInstance>, batch: Vec<Envelope>, plan: JobPlan) -> Ran {
    let JobPlan { retry, isolate, recycle_after, emit } = plan;
    let pre = match runner {
        Runner::Wasm(pre) => pre,
        Runner::Native(native) => return native_job(&native.stage, batch, retry).await,
    };
    let started = Instant::now();
    let messages = batch.len();
    let mut instance = match instance {
        Some(instance) => Some(instance),
        None => match pre.instantiate().await {
            Ok(instance) => Some(instance),
            Err(error) => {
                return Ran { instance: None, done: Vec::new(), stuck: Some(Stuck { error, messages: batch }) };
            }
        },
    };
    let mut done = Vec::with_capacity(messages);
    let mut stuck = None;
    if messages == 1 {
        let envelope = batch.into_iter().next().expect("one message");
        match single(&pre, instance.take(), envelope, retry, 0, &emit).await {
            Ok((back, one)) => {
                done.push(one);
                instance = back;
            }
            Err((error, envelope)) => stuck = Some(Stuck { error, messages: vec![envelope] }),
        }
    } else {
        let (messages, origins): (Vec<Message>, Vec<Origin>) = batch.into_iter().map(|e| (e.message, e.origin)).unzip();
        let outcomes = match instance.as_mut().expect("instance made above").process_batch(&messages).await {
            Ok(Some(outcomes)) => outcomes.into_iter().map(Some).collect(),
            Ok(None) => {
                tracing::warn!(
                    stage = &**pre.name(),
                    "process-batch did not return one outcome per message; running them one by one"
                );
                vec![None; messages.len()]
            }
            Err(trap) => {
                tracing::debug!(stage = &**pre.name(), "a batch trapped ({trap}); running its messages one by one");
                instance = None;
                vec![None; messages.len()]
            }
        };
        let latency = started.elapsed();
        // A message run again alone holds what it emits: sent now, it would
        // overtake the outputs of its batch-mates, which leave with the job.
        let emit = match emit {
            EmitPlan::Unused => EmitPlan::Unused,
            _ => EmitPlan::Held,
        };
        let mut rest = messages.into_iter().zip(origins).zip(outcomes);
        while let Some(((message, origin), outcome)) = rest.next() {
            let envelope = Envelope { message, origin };
            let mut retries = 0;
            let settled = match outcome {
                Some(Ok(outputs)) => Some(Ok(outputs)),
                Some(Err(StageError::Invalid(reason))) => Some(Err(Failure::Rejected(Kind::Invalid, reason))),
                // The batch was its first attempt: retried alone, after its backoff.
                Some(Err(StageError::Transient(reason))) => retry_after(&retry, &mut retries, reason).await.map(Err),
                // A trap or a wrong count: a first try alone.
                None => None,
            };
            match settled {
                Some(result) => {
                    done.push(Done { envelope, sent: 0, sent_last: Emitted::default(), result, retries, latency });
                }
                None => match single(&pre, instance.take(), envelope, retry, retries, &emit).await {
                    Ok((back, one)) => {
                        done.push(one);
                        instance = back;
                    }
                    Err((error, envelope)) => {
                        let left = rest.map(|((message, origin), _)| Envelope { message, origin });
                        stuck = Some(Stuck { error, messages: std::iter::once(envelope).chain(left).collect() });
                        break;
                    }
                },
            }
        }
    }
    // A worn-out instance (`recycle_after`, or leaking handles) is dropped
    // here: the next message gets a fresh one.
    let instance = instance.filter(|_| !isolate).and_then(|mut i| (!i.worn_out(recycle_after)).then_some(i));
    Ran { instance, done, stuck }
}

/// How a stage's jobs run: its settings, and where emitted messages go.
#[derive(Clone)]
struct JobPlan {
    retry: RetryConfig,
    isolate: bool,
    recycle_after: Option<u64>,
    emit: EmitPlan,
}

/// Runs a job through a native stage, message by message, with retries.
async fn native_job(stage: &NativeStage, batch: Vec<Envelope>, retry: RetryConfig) -> Ran {
    let mut done = Vec::with_capacity(batch.len());
    for envelope in batch {
        let started = Instant::now();
        let mut retries = 0;
        let result = loop {
            match stage.call(&envelope.message) {
                Ok(Ok(outputs)) => break Ok(outputs),
                Ok(Err(StageError::Transient(reason))) => match retry_after(&retry, &mut retries, reason).await {
                    None => continue,
                    Some(failure) => break Err(failure),
                },
                Ok(Err(StageError::Invalid(reason))) => break Err(Failure::Rejected(Kind::Invalid, reason)),
                Err(panic) => break Err(Failure::Trapped(Trap { limit: false, reason: panic, stderr: String::new() })),
            }
        };
        let sent_last = Emitted::default();
        done.push(Done { envelope, sent: 0, sent_last, result, retries, latency: started.elapsed() });
    }
    Ran { instance: None, done, stuck: None }
}

/// Runs one message through `instance` (a fresh one if `None`), retrying
/// transient errors with backoff. `retries` were already made (in a batch,
/// its backoff already waited).
/// Traps and timeouts are not retried. Returns the instance unless it trapped.
async fn single(
    pre: &StagePre,
    instance: Option<StageInstance>,
    envelope: Envelope,
    retry: RetryConfig,
    mut retries: u32,
    emit: &EmitPlan,
) -> Result<(Option<StageInstance>, Done), (LoadError, Envelope)> {
    let started = Instant::now();
    let mut instance = match instance {
        Some(instance) => instance,
        None => match pre.instantiate().await {
            Ok(instance) => instance,
            Err(error) => return Err((error, envelope)),
        },
    };
    // Emitted messages already sent downstream: in all, and in the last attempt.
    let (mut sent, mut sent_last) = (0, Emitted::default());
    let (instance, result) = loop {
        let (emitted, processed) = instance.process(&envelope.message, emit.target(envelope.origin)).await;
        if let EmitPlan::Now(..) = emit {
            sent += emitted.messages;
            sent_last = emitted;
        }
        match processed.map(|p| (p.outcome, p.held, p.refused)) {
            // An `emit` broke a cap: the message fails with it, whatever the stage did with the error.
            Ok((_, _, Some(breach))) => {
                break (Some(instance), Err(Failure::Rejected(Kind::Limit, breach.to_string())));
            }
            Ok((Ok(outputs), held, None)) if held.is_empty() => break (Some(instance), Ok(outputs)),
            Ok((Ok(outputs), mut held, None)) => {
                held.extend(outputs);
                break (Some(instance), Ok(held));
            }
            Ok((Err(StageError::Transient(reason)), _, None)) => {
                match retry_after(&retry, &mut retries, reason).await {
                    None => continue,
                    Some(failure) => break (Some(instance), Err(failure)),
                }
            }
            Ok((Err(StageError::Invalid(reason)), _, None)) => {
                break (Some(instance), Err(Failure::Rejected(Kind::Invalid, reason)));
            }
            // A trapped instance cannot be entered again: drop it.
            Err(trap) => break (None, Err(Failure::Trapped(trap))),
        }
    };
    Ok((instance, Done { envelope, sent, sent_last, result, retries, latency: started.elapsed() }))
}

/// After a `transient` error: waits out the backoff and returns `None` to try
/// again, or, once `retry.max` retries are spent, the failure to dead-letter.
async fn retry_after(retry: &RetryConfig, retries: &mut u32, reason: String) -> Option<Failure> {
    if *retries < retry.max {
        tokio::time::sleep(backoff(retry, *retries)).await;
        *retries += 1;
        return None;
    }
    let reason = if *retries > 0 { format!("{reason} (after {retries} retries)") } else { reason };
    Some(Failure::Rejected(Kind::Transient, reason))
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random,
/// so that retries of many messages spread out.
fn backoff(retry: &RetryConfig, attempt: u32) -> Duration {
    let exp = retry.backoff.saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX)).min(retry.max_backoff);
    let half = exp / 2;
    half + half.mul_f64(fastrand::f64())
}

/// The partition of a keyed message: its key; messages without one share a partition.
fn key_of(message: &Message) -> Vec<u8> {
    message.key.clone().unwrap_or_default()
}

/// The output caps: how many outputs one input may have, how big each may
/// be, and all of them together (`sent` were already emitted).
fn check_outputs(outputs: &[Message], sent: Emitted, limits: &Limits) -> Option<Breach> {
    if outputs.len() + sent.messages > limits.max_outputs {
        return Some(Breach::Outputs { limit: limits.max_outputs, produced: outputs.len() + sent.messages });
    }
    let mut total = sent.bytes;
    for (index, m) in outputs.iter().enumerate() {
        let size = crate::limits::message_bytes(m);
        if size > limits.max_output_bytes {
            return Some(Breach::OutputBytes { limit: limits.max_output_bytes, produced: size, index: index + 1 });
        }
        total = total.saturating_add(size);
    }
    (total > limits.max_total_output_bytes)
        .then_some(Breach::TotalOutputBytes { limit: limits.max_total_output_bytes, produced: total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let retry = RetryConfig { max: 10, backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(1) };
        for attempt in 0..4 {
            let full = Duration::from_millis(100 << attempt);
            let d = backoff(&retry, attempt);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(&retry, 30) <= Duration::from_secs(1));
    }
}

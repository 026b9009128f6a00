//! One stage at run time. It takes messages from its input channel and runs
//! each through an instance of the stage, up to `concurrency` at once. Outputs
//! go downstream in the configured order, and failures to the dead-letter
//! task.
//!
//! - concurrency 1: messages run one after another, inline.
//! - ordered: jobs run in parallel, results leave in input order
//!   (`FuturesOrdered` is the reorder buffer, bounded by `concurrency`).
//! - unordered: results leave as they finish.
//! - keyed (`partition_by = "key"`): one message per key in flight at a
//!   time. Later messages of a busy key wait their turn (at most `buffer` of
//!   them), and different keys run in parallel.

use super::dead_letter::{DeadLetter, Kind};
use super::error::RunError;
use super::running::{Envelope, TaskError, send_dead};
use super::stats::{StageCounters, Stats};
use crate::bindings::{Message, StageError};
use crate::config::{Execution, Order, PartitionBy, RetryConfig};
use crate::limits::{Breach, Limits};
use crate::stage::{StageInstance, StagePre, Trap};
use futures_util::StreamExt;
use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{Receiver, Sender};
use tokio::task::JoinHandle;

pub(super) struct StageTask {
    pub(super) pre: Arc<StagePre>,
    pub(super) exec: Execution,
    pub(super) stats: Arc<Stats>,
    pub(super) index: usize,
    pub(super) dead: Sender<DeadLetter>,
    /// Instances not running a message. At most `concurrency` exist at once.
    pub(super) idle: Vec<StageInstance>,
    pub(super) failures_in_a_row: u32,
}

/// A message through the stage: what came of it.
struct Done {
    /// The instance it ran in, unless it trapped.
    instance: Option<StageInstance>,
    envelope: Envelope,
    result: Result<Vec<Message>, Failure>,
    retries: u32,
    latency: Duration,
}

enum Failure {
    Rejected(Kind, String),
    Trapped(Trap),
}

type Job = AbortOnDrop<Result<Done, RunError>>;

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

    async fn next(&mut self) -> Option<Result<Result<Done, RunError>, tokio::task::JoinError>> {
        match self {
            InFlight::Ordered(f) => f.next().await,
            InFlight::Unordered(f) => f.next().await,
        }
    }
}

impl StageTask {
    fn counters(&self) -> &StageCounters {
        &self.stats.stages[self.index]
    }

    pub(super) async fn run(self, rx: Receiver<Envelope>, tx: Sender<Envelope>) -> Result<(), TaskError> {
        if self.exec.concurrency == 1 { self.run_inline(rx, tx).await } else { self.run_parallel(rx, tx).await }
    }

    async fn run_inline(mut self, mut rx: Receiver<Envelope>, tx: Sender<Envelope>) -> Result<(), TaskError> {
        loop {
            let envelope = match rx.try_recv() {
                Ok(envelope) => envelope,
                // Waiting for input: also watch the output, so that a failure
                // downstream stops this stage now, not at its next output
                // (from a quiet stdin that may never come).
                Err(_) => tokio::select! {
                    biased;
                    () = tx.closed() => return Err(TaskError::Closed),
                    received = rx.recv() => match received {
                        Some(envelope) => envelope,
                        None => return Ok(()),
                    },
                },
            };
            self.counters().input.fetch_add(1, Relaxed);
            self.counters().in_flight.fetch_add(1, Relaxed);
            let done = job(self.pre.clone(), self.idle.pop(), envelope, self.exec.retries).await;
            let done = self.ended(done)?;
            self.finish(done, &tx).await?;
        }
    }

    /// A job's result; on a fatal error, it is no longer in flight either.
    fn ended(&self, done: Result<Done, RunError>) -> Result<Done, RunError> {
        if done.is_err() {
            self.counters().in_flight.fetch_sub(1, Relaxed);
        }
        done
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
        loop {
            let room = in_flight.len() < self.exec.concurrency && waiting < self.exec.buffer;
            tokio::select! {
                // Finish before starting: frees instances, keeps the reorder buffer short.
                biased;
                Some(joined) = in_flight.next(), if in_flight.len() > 0 => {
                    let done = joined
                        .map_err(|e| RunError::Internal(format!("stage `{}` job failed: {e}", self.pre.name())))?;
                    let done = self.ended(done)?;
                    let key = keyed.then(|| key_of(&done.envelope.message));
                    self.finish(done, &tx).await?;
                    if let Some(key) = key {
                        match busy.get_mut(&key).and_then(VecDeque::pop_front) {
                            Some(next) => {
                                waiting -= 1;
                                in_flight.push(self.spawn(next));
                            }
                            None => {
                                busy.remove(&key);
                            }
                        }
                    }
                }
                received = rx.recv(), if input_open && room => match received {
                    Some(envelope) => {
                        self.counters().input.fetch_add(1, Relaxed);
                        if keyed {
                            match busy.get_mut(&key_of(&envelope.message)) {
                                Some(queue) => {
                                    queue.push_back(envelope);
                                    waiting += 1;
                                    continue;
                                }
                                None => {
                                    busy.insert(key_of(&envelope.message), VecDeque::new());
                                }
                            }
                        }
                        in_flight.push(self.spawn(envelope));
                    }
                    None => input_open = false,
                },
                // A failure downstream stops this stage now, not at its next output.
                () = tx.closed(), if input_open || in_flight.len() > 0 => return Err(TaskError::Closed),
                else => break,
            }
        }
        Ok(())
    }

    /// Starts a job on the runtime, so CPU-bound stages use every core.
    fn spawn(&mut self, envelope: Envelope) -> Job {
        self.counters().in_flight.fetch_add(1, Relaxed);
        AbortOnDrop(tokio::spawn(job(self.pre.clone(), self.idle.pop(), envelope, self.exec.retries)))
    }

    /// Accounts for a finished message and sends its outputs or dead letter.
    async fn finish(&mut self, done: Done, tx: &Sender<Envelope>) -> Result<(), TaskError> {
        let Done { instance, envelope, result, retries, latency } = done;
        let counters = &self.stats.stages[self.index];
        counters.in_flight.fetch_sub(1, Relaxed);
        counters.retried.fetch_add(u64::from(retries), Relaxed);
        counters.record_latency(latency);
        if let Some(instance) = instance {
            self.idle.push(instance);
        }
        let limits = *self.pre.limits();
        let (kind, reason) = match result {
            Ok(outputs) => match check_outputs(&outputs, &limits) {
                None => {
                    self.failures_in_a_row = 0;
                    if outputs.is_empty() {
                        counters.dropped.fetch_add(1, Relaxed);
                    }
                    for message in outputs {
                        counters.output.fetch_add(1, Relaxed);
                        let origin = envelope.origin;
                        tx.send(Envelope { message, origin }).await.map_err(|_| TaskError::Closed)?;
                    }
                    return Ok(());
                }
                Some(breach) => (Kind::Limit, breach.to_string()),
            },
            Err(Failure::Rejected(kind, reason)) => (kind, reason),
            Err(Failure::Trapped(trap)) => {
                counters.trapped.fetch_add(1, Relaxed);
                tracing::warn!(stage = &**self.pre.name(), line = envelope.origin.line, "{trap}");
                (if trap.limit { Kind::Limit } else { Kind::Trap }, trap.to_string())
            }
        };
        self.failures_in_a_row += 1;
        let max = limits.max_consecutive_failures;
        if max > 0 && self.failures_in_a_row >= max {
            let stage = self.pre.name().to_string();
            return Err(RunError::CircuitOpen { stage, failures: self.failures_in_a_row, last: reason }.into());
        }
        counters.dead_lettered.fetch_add(1, Relaxed);
        send_dead(&self.dead, self.pre.name(), kind, reason, envelope.origin, envelope.message).await
    }
}

/// Runs one message through an instance (a fresh one if none is idle),
/// retrying transient errors with backoff. Traps and timeouts are not retried.
async fn job(
    pre: Arc<StagePre>,
    instance: Option<StageInstance>,
    envelope: Envelope,
    retry: RetryConfig,
) -> Result<Done, RunError> {
    let started = Instant::now();
    let mut instance = match instance {
        Some(instance) => instance,
        None => pre.instantiate().await.map_err(|error| RunError::Restart { stage: pre.name().to_string(), error })?,
    };
    let mut retries = 0;
    let (instance, result) = loop {
        match instance.process(&envelope.message).await {
            Ok(Ok(outputs)) => break (Some(instance), Ok(outputs)),
            Ok(Err(StageError::Transient(reason))) => {
                if retries < retry.max {
                    tokio::time::sleep(backoff(&retry, retries)).await;
                    retries += 1;
                    continue;
                }
                let reason = if retries > 0 { format!("{reason} (after {retries} retries)") } else { reason };
                break (Some(instance), Err(Failure::Rejected(Kind::Transient, reason)));
            }
            Ok(Err(StageError::Invalid(reason))) => {
                break (Some(instance), Err(Failure::Rejected(Kind::Invalid, reason)));
            }
            // A trapped instance cannot be entered again: drop it.
            Err(trap) => break (None, Err(Failure::Trapped(trap))),
        }
    };
    Ok(Done { instance, envelope, result, retries, latency: started.elapsed() })
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

/// The output caps: how many outputs one input may have, and how big each may be.
fn check_outputs(outputs: &[Message], limits: &Limits) -> Option<Breach> {
    if outputs.len() > limits.max_outputs {
        return Some(Breach::Outputs { limit: limits.max_outputs, produced: outputs.len() });
    }
    outputs.iter().enumerate().find_map(|(index, m)| {
        let size = m.value.len()
            + m.key.as_ref().map_or(0, Vec::len)
            + m.headers.iter().map(|h| h.name.len() + h.value.len()).sum::<usize>();
        (size > limits.max_output_bytes).then_some(Breach::OutputBytes {
            limit: limits.max_output_bytes,
            produced: size,
            index: index + 1,
        })
    })
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

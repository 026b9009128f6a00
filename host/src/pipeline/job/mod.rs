//! A job: one message, or a batch of messages that were waiting, run
//! through an instance of a stage, with retries.
//!
//! A job holds one of the stage's `concurrency` slots, and an instance, only
//! while it runs the guest (`super::slots`). A message waiting out its retry
//! backoff gives both back (it is *parked*): the stage's other messages go
//! on meanwhile, and an ordered stage's reorder buffer holds their outputs
//! until the parked one is done.
//!
//! This file runs a job's messages; `retry` waits out a retry's backoff,
//! `port` is where emitted messages go, `runner` what runs a stage.

mod port;
mod retry;

pub(super) use port::{EmitPlan, JobPlan};

use super::dead_letter::Kind;
use super::runner::Runner;
use super::slots::Seat;
use crate::bindings::{Message, StageError};
use crate::capabilities::emit::Emitted;
use crate::config::RetryConfig;
use crate::envelope::{Envelope, Origin};
use crate::native::NativeStage;
use crate::stage::{Batch, LoadError, StagePre, Trap};
use retry::retry_after;
use std::time::{Duration, Instant};

/// What came of a job.
pub(super) struct Ran {
    /// Its messages, in input order.
    pub(super) done: Vec<Done>,
    /// Set if a fresh instance was needed and could not be made: why, and
    /// the job's messages that did not run.
    pub(super) stuck: Option<Stuck>,
    /// How long the job held a slot: what adapts the batch size.
    pub(super) busy: Duration,
    /// Messages of a batch left to run in a job of their own, right after
    /// this one: the outputs it holds reached the stage's
    /// `max_total_output_bytes` (a batch run again message by message must
    /// not make the host hold a batch's worth of inputs' outputs).
    pub(super) requeue: Vec<Envelope>,
    /// Bytes of its outputs, once counted as held in a reorder buffer.
    pub(super) held: usize,
    /// The stage emitted inside a batch: it gets one message per call from
    /// now on.
    pub(super) emits: bool,
    /// When it did, and its emitted messages go downstream at once: the
    /// batch's messages, each to run in a job of its own before any other
    /// (run here, one's emitted messages would overtake the outputs of the
    /// ones before it, which leave with the job).
    pub(super) alone: Vec<Envelope>,
}

impl Ran {
    /// A job's messages done (or stuck), with nothing left to run.
    fn of(done: Vec<Done>, stuck: Option<Stuck>, busy: Duration) -> Self {
        Ran { done, stuck, busy, requeue: Vec::new(), held: 0, emits: false, alone: Vec::new() }
    }

    /// Bytes of the outputs it carries, as the output caps count them.
    pub(super) fn output_bytes(&self) -> usize {
        let outputs = self.done.iter().filter_map(|d| d.result.as_ref().ok());
        outputs.flatten().map(crate::limits::message_bytes).sum()
    }
}

/// A job that could not go on: no instance could be made for it.
pub(super) struct Stuck {
    pub(super) error: LoadError,
    pub(super) messages: Vec<Envelope>,
}

/// A message through the stage: what came of it.
pub(super) struct Done {
    pub(super) envelope: Envelope,
    /// Outputs the stage emitted and sent downstream at once, over every
    /// attempt (for the counters), and in the last one (for the caps).
    pub(super) sent: usize,
    pub(super) sent_last: Emitted,
    pub(super) result: Result<Vec<Message>, Failure>,
    pub(super) retries: u32,
    pub(super) latency: Duration,
}

pub(super) enum Failure {
    Rejected(Kind, String),
    Trapped(Trap),
}

/// Runs a job: a batch through one `process-batch` call, or one message
/// through `process`. Messages the batch call did not settle (a transient
/// error to retry, or all of them after a trap, or when a transient error
/// undid the batch's state writes) run again alone.
pub(super) async fn job(runner: Runner, mut seat: Seat, batch: Vec<Envelope>, plan: JobPlan) -> Ran {
    let started = Instant::now();
    let pre = match runner {
        Runner::Wasm(pre) => pre,
        Runner::Native(native) => {
            let done = native_job(&native.stage, &mut seat, batch, plan.retry).await;
            let busy = started.elapsed().saturating_sub(seat.away);
            return Ran::of(done, None, busy);
        }
    };
    let messages = batch.len();
    let mut done: Vec<Done> = Vec::with_capacity(messages);
    let mut stuck = None;
    if messages == 1 {
        let envelope = batch.into_iter().next().expect("one message");
        match single(&pre, &mut seat, envelope, plan.retry, 0, &plan.emit).await {
            Ok(one) => done.push(one),
            Err((error, envelope)) => stuck = Some(Stuck { error, messages: vec![envelope] }),
        }
        return Ran::of(done, stuck, started.elapsed().saturating_sub(seat.away));
    }
    let instance = match seat.instance(&pre).await {
        Ok(instance) => instance,
        Err(error) => {
            let stuck = Some(Stuck { error, messages: batch });
            return Ran::of(done, stuck, Duration::ZERO);
        }
    };
    let (messages, origins): (Vec<Message>, Vec<Origin>) = batch.into_iter().map(|e| (e.message, e.origin)).unzip();
    let mut emits = false;
    let outcomes = match instance.process_batch(&messages).await {
        Ok(Batch::Settled(outcomes)) => outcomes.into_iter().map(Some).collect(),
        Ok(Batch::Miscounted { got }) => {
            tracing::warn!(
                stage = &**pre.name(),
                "process-batch returned {got} outcomes for {} messages; running them one by one",
                messages.len()
            );
            vec![None; messages.len()]
        }
        Ok(Batch::Emitted) => {
            tracing::debug!(
                stage = &**pre.name(),
                "the stage emitted inside a batch; running its messages, and the stage's from now on, one per call"
            );
            seat.trapped();
            emits = true;
            if let EmitPlan::Now(..) = plan.emit {
                let alone = messages.into_iter().zip(origins).map(|(message, origin)| Envelope { message, origin });
                let busy = started.elapsed().saturating_sub(seat.away);
                return Ran { emits, alone: alone.collect(), ..Ran::of(done, stuck, busy) };
            }
            vec![None; messages.len()]
        }
        Ok(Batch::Undone(outcomes)) => {
            tracing::debug!(
                stage = &**pre.name(),
                "a message of a batch that wrote state failed `transient`; running the batch's messages one by one"
            );
            // The `transient` ones had their first attempt: retried after
            // their backoff. The others run again as if for the first time.
            outcomes.into_iter().map(|o| matches!(o, Err(StageError::Transient(_))).then_some(o)).collect()
        }
        Err(trap) => {
            tracing::debug!(stage = &**pre.name(), "a batch trapped ({trap}); running its messages one by one");
            seat.trapped();
            vec![None; messages.len()]
        }
    };
    let latency = started.elapsed();
    // A message run again alone holds what it emits: sent now, it would
    // overtake the outputs of its batch-mates, which leave with the job.
    let emit = match plan.emit {
        EmitPlan::Unused => EmitPlan::Unused,
        _ => EmitPlan::Held,
    };
    let budget = pre.limits().max_total_output_bytes;
    let mut held = 0usize;
    let mut requeue = Vec::new();
    let mut rest = messages.into_iter().zip(origins).zip(outcomes);
    while let Some(((message, origin), outcome)) = rest.next() {
        if held > budget {
            // Run alone, each message's outputs could add up to many times
            // the cap: the rest go in a job of their own, once these are sent.
            requeue.push(Envelope { message, origin });
            requeue.extend(rest.map(|((message, origin), _)| Envelope { message, origin }));
            break;
        }
        let envelope = Envelope { message, origin };
        let mut retries = 0;
        let settled = match outcome {
            Some(Ok(outputs)) => Some(Ok(outputs)),
            Some(Err(StageError::Invalid(reason))) => Some(Err(Failure::Rejected(Kind::Invalid, reason))),
            // The batch was its first attempt: retried alone, after its backoff.
            Some(Err(StageError::Transient(reason))) => {
                retry_after(&plan.retry, &mut retries, reason, &mut seat).await.map(Err)
            }
            // A trap or a wrong count: a first try alone.
            None => None,
        };
        match settled {
            Some(result) => {
                done.push(Done { envelope, sent: 0, sent_last: Emitted::default(), result, retries, latency });
            }
            None => match single(&pre, &mut seat, envelope, plan.retry, retries, &emit).await {
                Ok(one) => {
                    if let Ok(outputs) = &one.result {
                        held += outputs.iter().map(crate::limits::message_bytes).sum::<usize>();
                    }
                    done.push(one);
                }
                Err((error, envelope)) => {
                    let left = rest.map(|((message, origin), _)| Envelope { message, origin });
                    stuck = Some(Stuck { error, messages: std::iter::once(envelope).chain(left).collect() });
                    break;
                }
            },
        }
    }
    Ran { requeue, emits, ..Ran::of(done, stuck, started.elapsed().saturating_sub(seat.away)) }
}

/// Runs a job through a native stage, message by message, with retries.
async fn native_job(stage: &NativeStage, seat: &mut Seat, batch: Vec<Envelope>, retry: RetryConfig) -> Vec<Done> {
    let mut done = Vec::with_capacity(batch.len());
    for envelope in batch {
        let started = Instant::now();
        let mut retries = 0;
        let result = loop {
            seat.slot().await;
            match stage.call(&envelope.message) {
                Ok(Ok(outputs)) => break Ok(outputs),
                Ok(Err(StageError::Transient(reason))) => match retry_after(&retry, &mut retries, reason, seat).await {
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
    done
}

/// Runs one message in the seat's instance (a fresh one if need be),
/// retrying transient errors with backoff. `retries` were already made (in a
/// batch, its backoff already waited). Traps and timeouts are not retried.
async fn single(
    pre: &StagePre,
    seat: &mut Seat,
    envelope: Envelope,
    retry: RetryConfig,
    mut retries: u32,
    emit: &EmitPlan,
) -> Result<Done, (LoadError, Envelope)> {
    let started = Instant::now();
    // Emitted messages already sent downstream: in all, and in the last attempt.
    let (mut sent, mut sent_last) = (0, Emitted::default());
    let result = loop {
        let instance = match seat.instance(pre).await {
            Ok(instance) => instance,
            Err(error) => return Err((error, envelope)),
        };
        let (emitted, processed) = instance.process(&envelope.message, emit.target(&envelope.origin)).await;
        if let EmitPlan::Now(..) = emit {
            sent += emitted.messages;
            sent_last = emitted;
        }
        match processed.map(|p| (p.outcome, p.held, p.refused)) {
            // An `emit` broke a cap: the message fails with it, whatever the stage did with the error.
            Ok((_, _, Some(breach))) => break Err(Failure::Rejected(Kind::Limit, breach.to_string())),
            Ok((Ok(outputs), held, None)) if held.is_empty() => break Ok(outputs),
            Ok((Ok(outputs), mut held, None)) => {
                held.extend(outputs);
                break Ok(held);
            }
            Ok((Err(StageError::Transient(reason)), _, None)) => {
                match retry_after(&retry, &mut retries, reason, seat).await {
                    None => continue,
                    Some(failure) => break Err(failure),
                }
            }
            Ok((Err(StageError::Invalid(reason)), _, None)) => break Err(Failure::Rejected(Kind::Invalid, reason)),
            // A trapped instance cannot be entered again: drop it.
            Err(trap) => {
                seat.trapped();
                break Err(Failure::Trapped(trap));
            }
        }
    };
    Ok(Done { envelope, sent, sent_last, result, retries, latency: started.elapsed() })
}

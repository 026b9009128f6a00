//! Finishing a stage's jobs: each message's outputs downstream, a job's
//! together, or the message to the dead letters; and what a stage that can
//! no longer start an instance does with the messages it can no longer run.

use super::StageTask;
use crate::envelope::Envelope;
use crate::limits::log_safe;
use crate::pipeline::dead_letter::Kind;
use crate::pipeline::error::RunError;
use crate::pipeline::events::{Abandoned, JobFinished, Refused};
use crate::pipeline::job::{Done, Failure, Ran, Stuck};
use crate::pipeline::task::{TaskError, send_dead};
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::mpsc::Sender;

impl StageTask {
    /// The stage could not make an instance: without checkpoints the run
    /// stops as an interrupt does (the source stops reading) and the messages
    /// this stage can no longer run are dead-lettered with the reason; with
    /// checkpoints, the run fails and resumes from its last checkpoint.
    async fn get_stuck(&mut self, Stuck { error, messages }: Stuck) -> Result<(), TaskError> {
        let stage = self.runner.name().to_string();
        let Some(halt) = &self.halt else {
            self.events.emit(Abandoned { messages: messages.len() as u64 });
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
    pub(super) async fn refuse(&self, messages: Vec<Envelope>) -> Result<(), TaskError> {
        let reason = self.stuck.clone().expect("only a stuck stage refuses messages");
        let halt = self.halt.as_ref().expect("only a halting stage gets stuck");
        halt.unfinished(messages.len() as u64);
        self.events.emit(Refused { messages: messages.len() as u64 });
        for Envelope { message, origin } in messages {
            send_dead(&self.dead, self.runner.name(), Kind::Trap, reason.clone(), origin, message).await?;
        }
        Ok(())
    }

    /// Finishes a job's messages in order: the outputs of the whole job go
    /// downstream together, failures to the dead-letter task. What came of
    /// them is tallied, and emitted once for the job. Returns the job's
    /// messages that did not run (to run next, in a job of their own).
    pub(super) async fn finish_all(&mut self, ran: Ran, tx: &Sender<Envelope>) -> Result<Vec<Envelope>, TaskError> {
        let Ran { done, stuck, busy: _, requeue, held, emits: _, alone: _ } = ran;
        self.held.fetch_sub(held, Relaxed);
        let mut job = JobFinished::new(done.len());
        let mut outputs = Vec::with_capacity(done.len());
        for done in done {
            // Messages of one batch share a latency: recorded once for all.
            if let Some(earlier) = job.took(done.latency) {
                self.events.emit(earlier);
            }
            self.finish(done, &mut outputs, &mut job).await?;
        }
        job.outputs += outputs.len() as u64;
        self.events.emit(job);
        self.tap.offer_all(&outputs);
        send_all(tx, outputs).await?;
        if let Some(stuck) = stuck {
            self.get_stuck(stuck).await?;
        }
        Ok(requeue)
    }

    /// Accounts for a finished message: its outputs join `outputs`, or it
    /// goes to the dead-letter task.
    async fn finish(
        &mut self,
        done: Done,
        outputs: &mut Vec<Envelope>,
        job: &mut JobFinished,
    ) -> Result<(), TaskError> {
        let Done { envelope, sent, sent_last, result, retries, latency: _ } = done;
        job.retried += u64::from(retries);
        job.outputs += sent as u64;
        let limits = *self.runner.limits();
        // The last attempt's emitted messages came first: the returned ones are numbered after them.
        let emitted = sent_last.messages;
        let (kind, reason) = match result {
            Ok(messages) => match sent_last.add_all(&messages, &limits.output_caps()) {
                Ok(_) => {
                    self.breaker.success();
                    if messages.is_empty() && sent == 0 {
                        job.dropped += 1;
                    }
                    let origin = envelope.origin;
                    let numbered = messages.into_iter().enumerate();
                    outputs
                        .extend(numbered.map(|(i, message)| Envelope { message, origin: origin.output(emitted + i) }));
                    // The input is done here unless its outputs go on.
                    origin.settle();
                    return Ok(());
                }
                Err(breach) => (Kind::Limit, breach.to_string()),
            },
            Err(Failure::Rejected(kind, reason)) => (kind, reason),
            Err(Failure::Trapped(trap)) => {
                job.trapped += 1;
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
        self.breaker.failure(self.runner.name(), limits.max_consecutive_failures, &reason)?;
        job.dead_lettered(kind);
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

//! The events of a stage: its task, its jobs, and its instances.

use super::StageEvent;
use super::counters::{KINDS, StageCounters, add, lock, micros, slot};
use crate::pipeline::dead_letter::Kind;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// `messages` entered a job (they are in flight).
pub(in crate::pipeline) struct Started {
    pub(in crate::pipeline) messages: u64,
}

impl StageEvent for Started {
    fn record(self, to: &StageCounters) {
        add(&to.flow.started, self.messages);
    }
}

/// A message of a keyed stage waits behind its busy key: received, not yet
/// in flight.
pub(in crate::pipeline) struct Queued;

impl StageEvent for Queued {
    fn record(self, to: &StageCounters) {
        to.flow.queued.fetch_add(1, Relaxed);
    }
}

/// `messages` that waited behind their key entered a job.
pub(in crate::pipeline) struct Unqueued {
    pub(in crate::pipeline) messages: u64,
}

impl StageEvent for Unqueued {
    fn record(self, to: &StageCounters) {
        // Started first: a snapshot in between sees one input twice, never none.
        add(&to.flow.started, self.messages);
        to.flow.queued.fetch_sub(self.messages, Relaxed);
    }
}

/// A job's messages are done: what came of them. The stage task tallies it
/// on the stack as it finishes them, and records it once for the job.
#[derive(Default)]
pub(in crate::pipeline) struct JobFinished {
    /// Messages the job ran to an outcome: its batch size.
    messages: u64,
    /// Outputs sent downstream (returned, or emitted at once).
    pub(in crate::pipeline) outputs: u64,
    /// Messages that gave no output.
    pub(in crate::pipeline) dropped: u64,
    /// Retries of `transient` errors.
    pub(in crate::pipeline) retried: u64,
    /// Messages that trapped their instance.
    pub(in crate::pipeline) trapped: u64,
    dead: [u64; KINDS],
    /// The latest run of messages with one latency: a batch shares one.
    latency: Option<(Duration, u64)>,
}

impl JobFinished {
    pub(in crate::pipeline) fn new(messages: usize) -> Self {
        JobFinished { messages: messages as u64, ..Default::default() }
    }

    /// A message was dead-lettered.
    pub(in crate::pipeline) fn dead_lettered(&mut self, kind: Kind) {
        self.dead[slot(kind)] += 1;
    }

    /// A message took `latency`, queueing not included. When the messages
    /// before it took another time (a batch-mate run again alone), returns
    /// them, to be emitted now.
    #[must_use]
    pub(in crate::pipeline) fn took(&mut self, latency: Duration) -> Option<Latency> {
        match &mut self.latency {
            Some((same, count)) if *same == latency => {
                *count += 1;
                None
            }
            run => run.replace((latency, 1)).map(|(took, messages)| Latency { took, messages }),
        }
    }
}

impl StageEvent for JobFinished {
    fn record(self, to: &StageCounters) {
        let flow = &to.flow;
        add(&flow.ended, self.messages);
        add(&flow.output, self.outputs);
        add(&flow.dropped, self.dropped);
        add(&flow.retried, self.retried);
        add(&flow.trapped, self.trapped);
        for (kind, &count) in self.dead.iter().enumerate() {
            add(&flow.dead.0[kind], count);
        }
        if self.messages > 0 || self.latency.is_some() {
            let mut timing = lock(&to.timing);
            if let Some((took, messages)) = self.latency {
                timing.latency.record(micros(took), messages);
            }
            if self.messages > 0 {
                timing.batch.record(self.messages, 1);
            }
        }
    }
}

/// `messages` of a job took `took` each (see [`JobFinished::took`]).
pub(in crate::pipeline) struct Latency {
    took: Duration,
    messages: u64,
}

impl StageEvent for Latency {
    fn record(self, to: &StageCounters) {
        lock(&to.timing).latency.record(micros(self.took), self.messages);
    }
}

/// A stage that can no longer start an instance dead-letters `messages` it
/// cannot run (the run stops early).
pub(in crate::pipeline) struct Refused {
    pub(in crate::pipeline) messages: u64,
}

impl StageEvent for Refused {
    fn record(self, to: &StageCounters) {
        add(&to.flow.ended, self.messages);
        to.flow.dead.add(Kind::Trap, self.messages);
    }
}

/// A stage that can no longer start an instance gives up `messages` as the
/// run fails (it resumes from its last checkpoint).
pub(in crate::pipeline) struct Abandoned {
    pub(in crate::pipeline) messages: u64,
}

impl StageEvent for Abandoned {
    fn record(self, to: &StageCounters) {
        add(&to.flow.ended, self.messages);
    }
}

/// A fresh instance was made (for a job, or ahead of one).
pub(in crate::pipeline) struct InstanceMade;

impl StageEvent for InstanceMade {
    fn record(self, to: &StageCounters) {
        to.instances.made.fetch_add(1, Relaxed);
    }
}

/// An instance was let go instead of going back to the idle ones.
pub(in crate::pipeline) enum InstanceDropped {
    /// It trapped: it cannot be entered again.
    Trapped,
    /// The stage isolates messages, or it is worn out (`recycle_after`,
    /// too many resource handles).
    Recycled,
}

impl StageEvent for InstanceDropped {
    fn record(self, to: &StageCounters) {
        let counter = match self {
            InstanceDropped::Trapped => &to.instances.trapped,
            InstanceDropped::Recycled => &to.instances.recycled,
        };
        counter.fetch_add(1, Relaxed);
    }
}

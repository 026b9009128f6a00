//! Typed internal events: what a run tells about itself as it goes.
//!
//! The logic emits an event where something happens (`events.emit(InputRead)`),
//! and this module alone turns events into the live counters and histograms:
//! no other code touches them. [`Stats`] snapshots are taken from them: the
//! run's report, the CLI's progress line and `SIGUSR1`, and an exporter.
//!
//! The hot path stays cheap. An event is a plain value, recorded with
//! relaxed atomic adds: no lock, no allocation. A stage tallies its
//! messages' outcomes on the stack and records them once per job
//! ([`JobFinished`]); the one lock, around a stage's histograms, is taken
//! once per job by the stage's own task, so only a snapshot ever contends
//! for it. Counters that different tasks write (the source, each stage, the
//! sinks, the jobs making instances) sit on cache lines of their own.

mod counters;
mod run;
mod stage;
#[cfg(test)]
mod tests;

pub(super) use run::{BlankSkipped, CheckpointTaken, DeadLettered, InputRead, Written};
pub(super) use stage::{Abandoned, InstanceDropped, InstanceMade, JobFinished, Queued, Refused, Started, Unqueued};

use super::stats::Stats;
use counters::{RunCounters, StageCounters};
use std::sync::Arc;

/// Something the source, the sinks or a checkpoint did.
pub(super) trait RunEvent {
    fn record(self, to: &RunCounters);
}

/// Something a stage did: its task, its jobs, or its instances.
pub(super) trait StageEvent {
    fn record(self, to: &StageCounters);
}

/// Where a run's events go: the source and sink tasks emit here, and each
/// stage through its own [`StageEvents`].
#[derive(Clone)]
pub(crate) struct Events(Arc<Recorder>);

struct Recorder {
    run: RunCounters,
    stages: Vec<Arc<StageCounters>>,
}

impl Events {
    pub(super) fn new(stage_names: impl IntoIterator<Item = String>) -> Self {
        let stages = stage_names.into_iter().map(|name| Arc::new(StageCounters::new(name))).collect();
        Events(Arc::new(Recorder { run: RunCounters::default(), stages }))
    }

    #[inline]
    pub(super) fn emit(&self, event: impl RunEvent) {
        event.record(&self.0.run);
    }

    /// A broker source's backlog, which snapshots report.
    pub(super) fn watch_backlog(&self, backlog: crate::connect::Backlog) {
        let _ = self.0.run.backlog.set(backlog);
    }

    /// The events of the stage at `index`, in pipeline order.
    pub(super) fn stage(&self, index: usize) -> StageEvents {
        StageEvents(self.0.stages[index].clone())
    }

    /// The counters as they are now.
    pub(super) fn snapshot(&self) -> Stats {
        self.0.run.snapshot(&self.0.stages)
    }
}

/// Where one stage's events go.
#[derive(Clone)]
pub(super) struct StageEvents(Arc<StageCounters>);

impl StageEvents {
    #[inline]
    pub(super) fn emit(&self, event: impl StageEvent) {
        event.record(&self.0);
    }

    /// The stage's count of fuel burned, which its instances keep.
    pub(super) fn watch_fuel(&self, fuel: std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let _ = self.0.fuel.set(fuel);
    }

    /// The channel in front of the stage, whose depth snapshots report.
    pub(super) fn watch_inbox(&self, inbox: tokio::sync::mpsc::WeakSender<crate::envelope::Envelope>) {
        let _ = self.0.inbox.set(inbox);
    }
}

/// The counters of a running pipeline, to take snapshots of while it runs
/// (for progress, or an exporter): [`Pipeline::stats`](crate::Pipeline::stats).
#[derive(Clone)]
pub struct LiveStats(pub(in crate::pipeline) Events);

impl LiveStats {
    /// The counters as they are now. Each is read on its own, so a snapshot
    /// taken while messages move may be a message or so apart between
    /// counts, never more.
    pub fn snapshot(&self) -> Stats {
        self.0.snapshot()
    }
}

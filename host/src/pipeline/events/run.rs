//! The events of the source, the sinks and checkpoints.

use super::RunEvent;
use super::counters::{RunCounters, add, lock, micros};
use crate::pipeline::dead_letter::Kind;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// An input entered the pipeline (those the source dead-letters too), of
/// `bytes` (a line's, with its newline): the progress bar's position.
pub(in crate::pipeline) struct InputRead {
    pub(in crate::pipeline) bytes: u64,
}

impl RunEvent for InputRead {
    fn record(self, to: &RunCounters) {
        to.source.read.fetch_add(1, Relaxed);
        to.source.bytes.fetch_add(self.bytes, Relaxed);
    }
}

/// A blank line of a `jsonl` source (of `bytes`): no document, so no message.
pub(in crate::pipeline) struct BlankSkipped {
    pub(in crate::pipeline) bytes: u64,
}

impl RunEvent for BlankSkipped {
    fn record(self, to: &RunCounters) {
        to.source.skipped.fetch_add(1, Relaxed);
        to.source.bytes.fetch_add(self.bytes, Relaxed);
    }
}

/// The sink wrote `messages` (one event per batch it takes).
pub(in crate::pipeline) struct Written {
    pub(in crate::pipeline) messages: u64,
}

impl RunEvent for Written {
    fn record(self, to: &RunCounters) {
        add(&to.written, self.messages);
    }
}

/// A dead letter was written.
pub(in crate::pipeline) struct DeadLettered {
    pub(in crate::pipeline) kind: Kind,
}

impl RunEvent for DeadLettered {
    fn record(self, to: &RunCounters) {
        to.dead.add(self.kind, 1);
    }
}

/// A checkpoint was committed, `took` after it fell due (the pipeline
/// drained, the sinks flushed, the state committed).
pub(in crate::pipeline) struct CheckpointTaken {
    pub(in crate::pipeline) took: Duration,
}

impl RunEvent for CheckpointTaken {
    fn record(self, to: &RunCounters) {
        lock(&to.checkpoints).record(micros(self.took), 1);
    }
}

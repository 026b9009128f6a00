//! The live counters and histograms, which only events write, and the
//! snapshots taken from them.

use crate::pipeline::dead_letter::Kind;
use crate::pipeline::stats::{DeadLetterCounts, StageStats, Stats, Summary};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Counters on a cache line of their own, so that a core bumping one does
/// not make another wait for the line (x86 prefetches lines in pairs).
#[derive(Default)]
#[repr(align(128))]
pub(super) struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[derive(Default)]
pub(in crate::pipeline) struct RunCounters {
    /// Written by the source task.
    pub(super) source: Line<SourceCounters>,
    /// Written by the sink task.
    pub(super) written: Line<AtomicU64>,
    /// Written by the dead-letter task.
    pub(super) dead: Line<PerKind>,
    /// Checkpoint durations (µs).
    pub(super) checkpoints: Mutex<Timing>,
    /// A broker source's backlog, which it updates itself.
    pub(super) backlog: std::sync::OnceLock<crate::connect::Backlog>,
}

impl RunCounters {
    pub(super) fn snapshot(&self, stages: &[Arc<StageCounters>]) -> Stats {
        let dead_letters = self.dead.load();
        Stats {
            read: self.source.read.load(Relaxed),
            skipped: self.source.skipped.load(Relaxed),
            bytes_read: self.source.bytes.load(Relaxed),
            written: self.written.load(Relaxed),
            dead_lettered: dead_letters.total(),
            dead_letters,
            checkpoint_us: lock(&self.checkpoints).summary(),
            source_backlog: self.backlog.get().and_then(crate::connect::Backlog::get),
            stages: stages.iter().map(|s| s.snapshot()).collect(),
        }
    }
}

#[derive(Default)]
pub(super) struct SourceCounters {
    pub(super) read: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) bytes: AtomicU64,
}

pub(in crate::pipeline) struct StageCounters {
    pub(super) name: String,
    /// Written by the stage's task.
    pub(super) flow: Line<Flow>,
    /// Written by its jobs, wherever they run.
    pub(super) instances: Line<Instances>,
    /// Written by the stage's task, once per job.
    pub(super) timing: Mutex<StageTiming>,
    /// The channel in front of the stage, once the run has started: its
    /// depth is read at each snapshot (a weak handle: it never keeps the
    /// channel open).
    pub(super) inbox: std::sync::OnceLock<tokio::sync::mpsc::WeakSender<crate::envelope::Envelope>>,
    /// Fuel the stage's instances burned, which they add to themselves.
    pub(super) fuel: std::sync::OnceLock<Arc<AtomicU64>>,
}

/// A stage's messages. Its input is what it started plus what waits behind
/// a busy key; in flight, what it started and has not ended.
#[derive(Default)]
pub(super) struct Flow {
    pub(super) started: AtomicU64,
    pub(super) ended: AtomicU64,
    pub(super) queued: AtomicU64,
    pub(super) output: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) trapped: AtomicU64,
    pub(super) dead: PerKind,
}

#[derive(Default)]
pub(super) struct Instances {
    pub(super) made: AtomicU64,
    pub(super) recycled: AtomicU64,
    pub(super) trapped: AtomicU64,
}

pub(super) struct StageTiming {
    /// Time per message (µs), retries included, queueing not.
    pub(super) latency: Timing,
    /// Messages per job.
    pub(super) batch: Timing,
}

impl StageCounters {
    pub(super) fn new(name: String) -> Self {
        StageCounters {
            name,
            flow: Line::default(),
            instances: Line::default(),
            timing: Mutex::new(StageTiming { latency: Timing::default(), batch: Timing::new(MAX_BATCH) }),
            inbox: std::sync::OnceLock::new(),
            fuel: std::sync::OnceLock::new(),
        }
    }

    fn snapshot(&self) -> StageStats {
        let flow = &self.flow;
        // Ended before started, queued before started: each count is read
        // no later than what it is taken from, so neither difference below
        // goes negative.
        let ended = flow.ended.load(Relaxed);
        let queued = flow.queued.load(Relaxed);
        let started = flow.started.load(Relaxed);
        let dead_letters = flow.dead.load();
        let timing = lock(&self.timing);
        StageStats {
            name: self.name.clone(),
            input: started + queued,
            output: flow.output.load(Relaxed),
            dropped: flow.dropped.load(Relaxed),
            dead_lettered: dead_letters.total(),
            dead_letters,
            trapped: flow.trapped.load(Relaxed),
            retried: flow.retried.load(Relaxed),
            in_flight: started.saturating_sub(ended),
            queued,
            waiting: self
                .inbox
                .get()
                .and_then(|inbox| inbox.upgrade())
                .map_or(0, |tx| (tx.max_capacity() - tx.capacity()) as u64),
            instances_made: self.instances.made.load(Relaxed),
            instances_recycled: self.instances.recycled.load(Relaxed),
            instances_trapped: self.instances.trapped.load(Relaxed),
            fuel_used: self.fuel.get().map_or(0, |f| f.load(Relaxed)),
            latency_us: timing.latency.summary(),
            batch_size: timing.batch.summary(),
        }
    }
}

/// How many kinds of dead letter there are.
pub(super) const KINDS: usize = 6;

/// A kind's counter. A `match`, not `kind as usize`: a new kind does not
/// compile until it has a place here and in [`DeadLetterCounts`].
pub(super) fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Invalid => 0,
        Kind::Transient => 1,
        Kind::Trap => 2,
        Kind::Limit => 3,
        Kind::Input => 4,
        Kind::Output => 5,
    }
}

/// Dead letters by kind.
#[derive(Default)]
pub(super) struct PerKind(pub(super) [AtomicU64; KINDS]);

impl PerKind {
    pub(super) fn add(&self, kind: Kind, count: u64) {
        add(&self.0[slot(kind)], count);
    }

    fn load(&self) -> DeadLetterCounts {
        let count = |kind| self.0[slot(kind)].load(Relaxed);
        DeadLetterCounts {
            invalid: count(Kind::Invalid),
            transient: count(Kind::Transient),
            trap: count(Kind::Trap),
            limit: count(Kind::Limit),
            input: count(Kind::Input),
            output: count(Kind::Output),
        }
    }
}

/// The largest value a [`Timing`] tells apart: 1 hour in µs.
const MAX_MICROS: u64 = 3_600_000_000;
/// The largest batch a [`Timing`] of batch sizes tells apart.
const MAX_BATCH: u64 = 1 << 20;

/// A distribution: an HDR histogram (2 significant digits; values beyond
/// its bounds count as its lowest or highest), and the exact sum.
pub(super) struct Timing {
    pub(super) histogram: Histogram<u64>,
    pub(super) sum: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing::new(MAX_MICROS)
    }
}

impl Timing {
    fn new(max: u64) -> Self {
        Timing { histogram: Histogram::new_with_bounds(1, max, 2).expect("valid bounds"), sum: 0 }
    }

    pub(super) fn record(&mut self, value: u64, count: u64) {
        self.sum = self.sum.saturating_add(value.saturating_mul(count));
        let _ = self.histogram.record_n(value.clamp(1, self.histogram.high()), count);
    }

    fn summary(&self) -> Summary {
        let h = &self.histogram;
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            sum: self.sum,
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Adds `n` unless it is 0: most of a job's counts are, and an atomic add
/// costs even then.
#[inline]
pub(super) fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Relaxed);
    }
}

/// A panic elsewhere while the lock was held leaves counts, not broken data.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

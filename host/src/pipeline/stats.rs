//! What a run tells about itself: [`Stats`], a snapshot of its counters
//! (taken from the live ones, [`super::events`], through `LiveStats`),
//! and [`RunReport`], what the run did, made from the last snapshot.

use std::time::Duration;

/// A snapshot of a run's counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Messages read from the source (those it dead-lettered too).
    pub read: u64,
    /// Blank lines of a `jsonl` source: no document, so no message.
    pub skipped: u64,
    /// Bytes the source read: each line with its newline (of a file or
    /// stdin; a broker message's value), lines skipped by `--skip-lines` not.
    pub bytes_read: u64,
    /// Messages written to the sink.
    pub written: u64,
    /// Messages written to the dead letters, from every stage, the source
    /// and the sink.
    pub dead_lettered: u64,
    /// Of those, by kind.
    pub dead_letters: DeadLetterCounts,
    /// Checkpoints committed, and the time each took from falling due to
    /// its commit, in microseconds.
    pub checkpoint_us: Summary,
    /// For a broker source, the messages the broker holds for this
    /// pipeline's consumer, not yet delivered (as last asked: every few
    /// seconds); `None` for other sources, or before the first answer.
    pub source_backlog: Option<u64>,
    /// One entry per stage, in pipeline order.
    pub stages: Vec<StageStats>,
}

/// A snapshot of one stage's counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct StageStats {
    /// The stage's name.
    pub name: String,
    /// Messages received.
    pub input: u64,
    /// Messages sent downstream (one input can give several, or none).
    pub output: u64,
    /// Inputs that gave no output (filtered out).
    pub dropped: u64,
    /// Inputs dead-lettered.
    pub dead_lettered: u64,
    /// Of those, by kind (only `invalid`, `transient`, `trap` and `limit`
    /// come from a stage).
    pub dead_letters: DeadLetterCounts,
    /// Inputs that trapped the instance.
    pub trapped: u64,
    /// Retries of transient errors.
    pub retried: u64,
    /// Messages being processed.
    pub in_flight: u64,
    /// Messages waiting behind a busy key (`partition_by = "key"`).
    pub queued: u64,
    /// Messages in the channel in front of the stage, not yet taken (at
    /// most its `buffer`): the queue depth.
    pub waiting: u64,
    /// Instances made during the run (the one made when the pipeline was
    /// built not counted).
    pub instances_made: u64,
    /// Instances let go after a message because the stage isolates
    /// messages, or worn out (`recycle_after`).
    pub instances_recycled: u64,
    /// Instances dropped because they trapped.
    pub instances_trapped: u64,
    /// Fuel its instances burned (WebAssembly instructions, roughly),
    /// `init` included; 0 unless fuel is metered (a stage of the pipeline
    /// has a `fuel` limit; the default is unlimited).
    pub fuel_used: u64,
    /// Time per message in microseconds, retries included, queueing not.
    pub latency_us: Summary,
    /// Messages per job (per guest call, but for messages run again
    /// alone); its `count` is the number of jobs.
    pub batch_size: Summary,
}

/// Dead letters by their `error` kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct DeadLetterCounts {
    /// The stage returned `invalid`.
    pub invalid: u64,
    /// The stage returned `transient`, and the retries were spent.
    pub transient: u64,
    /// The stage crashed, or could no longer start an instance.
    pub trap: u64,
    /// The stage broke one of its limits.
    pub limit: u64,
    /// The source could not make a message of the input.
    pub input: u64,
    /// The sink could not write the message in its format.
    pub output: u64,
}

impl DeadLetterCounts {
    /// Dead letters of every kind.
    pub fn total(&self) -> u64 {
        self.invalid + self.transient + self.trap + self.limit + self.input + self.output
    }
}

/// A distribution of values (in the unit its field names): how many, their
/// sum, and quantiles to two significant digits. All 0 when empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: u64,
    /// The median.
    pub p50: u64,
    /// The 99th percentile.
    pub p99: u64,
    /// The largest.
    pub max: u64,
}

impl Stats {
    /// The snapshot as a report of a run that took `elapsed`.
    pub fn report(&self, elapsed: Duration) -> RunReport {
        let ms = |us: u64| us as f64 / 1000.0;
        RunReport {
            read: self.read,
            skipped: self.skipped,
            written: self.written,
            dead_lettered: self.dead_lettered,
            elapsed,
            stages: self
                .stages
                .iter()
                .map(|s| StageReport {
                    name: s.name.clone(),
                    input: s.input,
                    output: s.output,
                    dropped: s.dropped,
                    dead_lettered: s.dead_lettered,
                    trapped: s.trapped,
                    retried: s.retried,
                    in_flight: s.in_flight,
                    latency_p50_ms: ms(s.latency_us.p50),
                    latency_p99_ms: ms(s.latency_us.p99),
                })
                .collect(),
            stopped_after: None,
            stop_reason: None,
        }
    }
}

/// What a run did, overall and per stage.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct RunReport {
    /// Messages read from the source.
    pub read: u64,
    /// Blank (empty or whitespace-only) lines of a `jsonl` source, skipped:
    /// not messages, so in no other count.
    pub skipped: u64,
    /// Messages written to the sink.
    pub written: u64,
    /// Messages written to the dead-letter file, from every stage, the source and the sink.
    pub dead_lettered: u64,
    /// Wall-clock time of the run.
    #[serde(serialize_with = "as_secs")]
    pub elapsed: Duration,
    /// Per stage, in pipeline order.
    pub stages: Vec<StageReport>,
    /// If a shutdown signal stopped the source: the position of the last
    /// input read (and fully processed); for a file source, its line.
    /// `None` when the whole input was read.
    pub stopped_after: Option<u64>,
    /// Why the run stopped early without a signal (a stage could no longer
    /// start an instance); `stopped_after` then says where to resume.
    pub stop_reason: Option<String>,
}

/// What one stage did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct StageReport {
    /// The stage's name.
    pub name: String,
    /// Messages received.
    pub input: u64,
    /// Messages sent downstream.
    pub output: u64,
    /// Inputs that gave no output.
    pub dropped: u64,
    /// Inputs dead-lettered.
    pub dead_lettered: u64,
    /// Inputs that trapped the stage.
    pub trapped: u64,
    /// Retries of transient errors.
    pub retried: u64,
    /// Messages in flight when the report was taken.
    pub in_flight: u64,
    /// Median time per message, in milliseconds.
    pub latency_p50_ms: f64,
    /// 99th-percentile time per message, in milliseconds.
    pub latency_p99_ms: f64,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let skipped = match self.skipped {
            0 => String::new(),
            1 => ", 1 blank line skipped".to_string(),
            n => format!(", {n} blank lines skipped"),
        };
        writeln!(
            f,
            "{} read, {} written, {} dead-lettered{skipped} in {secs:.2} s ({:.0} messages/s)",
            self.read,
            self.written,
            self.dead_lettered,
            self.read as f64 / secs.max(1e-9)
        )?;
        // A pipeline without stages (a bridge to or from a broker) has no table.
        if self.stages.is_empty() {
            return Ok(());
        }
        let width = self.stages.iter().map(|s| s.name.len()).max().unwrap_or(5).max(5);
        writeln!(
            f,
            "  {:<width$} {:>9} {:>9} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9}",
            "stage", "in", "out", "dropped", "dead", "trapped", "retried", "p50 ms", "p99 ms"
        )?;
        for s in &self.stages {
            writeln!(
                f,
                "  {:<width$} {:>9} {:>9} {:>8} {:>7} {:>7} {:>7} {:>9.2} {:>9.2}",
                s.name,
                s.input,
                s.output,
                s.dropped,
                s.dead_lettered,
                s.trapped,
                s.retried,
                s.latency_p50_ms,
                s.latency_p99_ms
            )?;
        }
        Ok(())
    }
}

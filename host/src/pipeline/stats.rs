//! Counters per stage, shared with whoever wants progress during a run.

use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Live counters of a running pipeline.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages read from the source.
    pub read: AtomicU64,
    /// Blank lines of a `jsonl` source: no document, so no message.
    pub skipped: AtomicU64,
    /// Messages written to the sink.
    pub written: AtomicU64,
    /// Messages written to the dead-letter file.
    pub dead_lettered: AtomicU64,
    /// One entry per stage, in pipeline order.
    pub stages: Vec<StageCounters>,
}

/// Live counters of one stage.
#[derive(Debug)]
pub struct StageCounters {
    /// The stage's name.
    pub name: String,
    /// Messages received.
    pub input: AtomicU64,
    /// Messages sent downstream (one input can give several, or none).
    pub output: AtomicU64,
    /// Inputs that gave no output (filtered out).
    pub dropped: AtomicU64,
    /// Inputs dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Of those, inputs that trapped the instance.
    pub trapped: AtomicU64,
    /// Retries of transient errors.
    pub retried: AtomicU64,
    /// Messages being processed right now.
    pub in_flight: AtomicU64,
    /// Time per message (µs), retries included, queueing not.
    latency: Mutex<Histogram<u64>>,
}

impl Default for StageCounters {
    fn default() -> Self {
        StageCounters {
            name: String::new(),
            input: AtomicU64::new(0),
            output: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            trapped: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            // 1 µs to 1 hour, 2 significant digits.
            latency: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds")),
        }
    }
}

impl StageCounters {
    /// Records `count` messages that each took `latency`.
    pub(crate) fn record_latency(&self, latency: Duration, count: u64) {
        let micros = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        let mut h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let _ = h.record_n(micros, count);
    }

    fn latency_ms(&self, quantile: f64) -> f64 {
        let h = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        if h.is_empty() { 0.0 } else { h.value_at_quantile(quantile) as f64 / 1000.0 }
    }
}

impl Stats {
    pub(crate) fn new(stage_names: impl IntoIterator<Item = String>) -> Self {
        Stats {
            stages: stage_names.into_iter().map(|name| StageCounters { name, ..Default::default() }).collect(),
            ..Default::default()
        }
    }

    /// A snapshot as a report.
    pub fn report(&self, elapsed: Duration) -> RunReport {
        RunReport {
            read: self.read.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            written: self.written.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            elapsed,
            stages: self
                .stages
                .iter()
                .map(|s| StageReport {
                    name: s.name.clone(),
                    input: s.input.load(Relaxed),
                    output: s.output.load(Relaxed),
                    dropped: s.dropped.load(Relaxed),
                    dead_lettered: s.dead_lettered.load(Relaxed),
                    trapped: s.trapped.load(Relaxed),
                    retried: s.retried.load(Relaxed),
                    in_flight: s.in_flight.load(Relaxed),
                    latency_p50_ms: s.latency_ms(0.5),
                    latency_p99_ms: s.latency_ms(0.99),
                })
                .collect(),
            stopped_after: None,
            stop_reason: None,
        }
    }
}

/// What a run did, overall and per stage.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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

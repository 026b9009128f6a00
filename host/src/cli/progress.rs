//! How far a run has got, as it goes: a progress bar on a terminal (percent
//! and ETA when the input is a file, the current rate, each stage's rate),
//! or a plain log line every `--progress` seconds otherwise.
//!
//! While the bar is shown, log lines are written through it
//! ([`LogWriter`]): it is cleared, the line written, the bar drawn again,
//! so neither garbles the other.

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use sluice::{LiveStats, Stats};
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// The bar being shown, if any: log lines are written around it.
static BAR: RwLock<Option<ProgressBar>> = RwLock::new(None);

/// Rates are over this last stretch of the run, not since its start: a run
/// that slows down shows it within seconds.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// How often the bar is redrawn.
const BAR_TICK: Duration = Duration::from_millis(250);

/// Shows progress until dropped: a bar when `bar` (stderr is a terminal and
/// logs are text) and `every` > 0, else a line every `every` seconds (none
/// for 0). `input` is the input file, whose size makes the bar's 100%.
pub(crate) struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub(crate) fn start(stats: LiveStats, every: u64, input: Option<&Path>, text_logs: bool) -> Progress {
        if every == 0 {
            return Progress { task: None, bar: None };
        }
        if !(text_logs && std::io::stderr().is_terminal()) {
            let total = input.and_then(file_size);
            let task = tokio::spawn(log_lines(stats, Duration::from_secs(every), total));
            return Progress { task: Some(task), bar: None };
        }
        let bar = match input.and_then(file_size) {
            Some(total) => ProgressBar::new(total).with_style(style(
                "{spinner} {elapsed_precise} [{wide_bar}] {percent:>3}% {bytes}/{total_bytes} ETA {eta} · {msg}",
            )),
            None => ProgressBar::new_spinner().with_style(style("{spinner} {elapsed_precise} {bytes} read · {msg}")),
        };
        bar.tick();
        *write(&BAR) = Some(bar.clone());
        let task = tokio::spawn(draw(stats, bar.clone()));
        Progress { task: Some(task), bar: Some(bar) }
    }
}

impl Drop for Progress {
    /// On every way out of a run: the report that follows is not drawn over.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        if let Some(bar) = &self.bar {
            *write(&BAR) = None;
            bar.finish_and_clear();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> ")
}

/// The size of a regular file; `None` for stdin, a FIFO, or one that cannot be read.
fn file_size(path: &Path) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then_some(meta.len())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

async fn draw(stats: LiveStats, bar: ProgressBar) {
    let mut rates = Rates::new(RATE_WINDOW);
    let mut tick = tokio::time::interval(BAR_TICK);
    loop {
        tick.tick().await;
        let now = stats.snapshot();
        // One byte too many is counted for a last line without a newline.
        bar.set_position(bar.length().map_or(now.bytes_read, |total| now.bytes_read.min(total)));
        bar.set_message(rates.update(&now));
    }
}

async fn log_lines(stats: LiveStats, every: Duration, total: Option<u64>) {
    let mut rates = Rates::new(every);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    rates.update(&stats.snapshot());
    loop {
        tick.tick().await;
        let now = stats.snapshot();
        let rate = rates.update(&now);
        // Counts first: `progress: 0 read` says the run is not under way
        // yet, whatever follows (a script waiting for it looks for that).
        let share = match total {
            Some(total) if total > 0 => {
                let percent = (now.bytes_read.min(total) as f64 / total as f64 * 100.0).floor();
                format!("{percent:.0}% of the input ({} of {}); ", HumanBytes(now.bytes_read), HumanBytes(total))
            }
            _ => String::new(),
        };
        tracing::info!(
            "progress: {} read, {} written, {} dead-lettered; {share}{rate}",
            now.read,
            now.written,
            now.dead_lettered
        );
    }
}

/// Message rates over the last `window`: the run's (messages read) and
/// each stage's (messages in).
struct Rates {
    window: Duration,
    /// When, messages read, and each stage's input; oldest first.
    samples: VecDeque<(Instant, u64, Vec<u64>)>,
}

impl Rates {
    fn new(window: Duration) -> Self {
        Rates { window, samples: VecDeque::new() }
    }

    /// Takes in a snapshot; returns the rates as text, e.g.
    /// `1.2k msg/s (parse 1.2k/s, enrich 900/s)`.
    fn update(&mut self, now: &Stats) -> String {
        let stages: Vec<(&str, u64)> = now.stages.iter().map(|s| (s.name.as_str(), s.input)).collect();
        self.update_at(Instant::now(), now.read, &stages)
    }

    /// [`Rates::update`] with the time, messages read, and each stage's name and input.
    fn update_at(&mut self, at: Instant, read: u64, stages: &[(&str, u64)]) -> String {
        self.samples.push_back((at, read, stages.iter().map(|s| s.1).collect()));
        // Keep one sample at least `window` old, so the rate spans the whole window.
        while self.samples.len() > 2 && at.duration_since(self.samples[1].0) >= self.window {
            self.samples.pop_front();
        }
        let (then, read_then, inputs_then) = &self.samples[0];
        let seconds = at.duration_since(*then).as_secs_f64();
        let rate = |now: u64, then: u64| if seconds > 0.0 { now.saturating_sub(then) as f64 / seconds } else { 0.0 };
        let stages: Vec<String> = stages
            .iter()
            .zip(inputs_then)
            .map(|((name, n), then)| format!("{name} {}/s", human(rate(*n, *then))))
            .collect();
        format!("{} msg/s ({})", human(rate(read, *read_then)), stages.join(", "))
    }
}

/// `950`, `12.3k`, `4.5M`.
fn human(rate: f64) -> String {
    match rate {
        r if r >= 1e6 => format!("{:.1}M", r / 1e6),
        r if r >= 1e4 => format!("{:.0}k", r / 1e3),
        r if r >= 1e3 => format!("{:.1}k", r / 1e3),
        r => format!("{r:.0}"),
    }
}

/// Where text log lines go: stderr, around the bar while one is shown.
/// `tracing_subscriber`'s fmt layer writes each event whole in one
/// `write_all`, so a line is never split across a redraw.
pub(crate) struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        suspended(|| std::io::stderr().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Runs `f` (which writes to stderr) with the bar, if one is shown, cleared.
pub(crate) fn suspended<R>(f: impl FnOnce() -> R) -> R {
    let bar = BAR.read().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_over_the_last_window_not_since_the_start() {
        let mut rates = Rates::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // 1000 messages a second for a minute, a sample a second...
        for s in 0..=60 {
            rates.update_at(at(s), s * 1000, &[("parse", s * 1000)]);
        }
        assert_eq!(rates.update_at(at(61), 61_000, &[("parse", 61_000)]), "1.0k msg/s (parse 1.0k/s)");
        // ...then 10 a second: 5 s later, only the slow stretch counts.
        for s in 62..=66 {
            rates.update_at(at(s), 61_000 + (s - 61) * 10, &[("parse", 61_000 + (s - 61) * 10)]);
        }
        assert_eq!(rates.update_at(at(67), 61_060, &[("parse", 61_060)]), "10 msg/s (parse 10/s)");
        assert!(rates.samples.len() <= 7, "old samples are dropped: {}", rates.samples.len());
    }

    #[test]
    fn rates_read_as_a_person_would_write_them() {
        assert_eq!(
            (human(950.4), human(1234.0), human(45_600.0), human(4_500_000.0)),
            ("950".to_string(), "1.2k".to_string(), "46k".to_string(), "4.5M".to_string())
        );
    }
}

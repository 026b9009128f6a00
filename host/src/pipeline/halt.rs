//! Stopping a run early when a stage can no longer start an instance (its
//! `init` now traps, times out or refuses, say because of its state): the
//! run ends as an interrupt does instead of losing what it finished.
//!
//! The stage that cannot start keeps the messages it could not process
//! ("unfinished") and reports the first of their input lines. The source
//! stops reading, everything else drains, and the writers drop what belongs
//! to input lines after the cut, since a resumed run reads those lines again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::sync::Notify;

/// Shared by the stage tasks, the source and the writers of one run.
pub(crate) struct Halt {
    /// Wakes the source.
    stop: Notify,
    /// Input lines after this one are redone on resume: their records are
    /// dropped. `u64::MAX` until a stage halts.
    cut: AtomicU64,
    why: Mutex<Option<Halted>>,
    /// The pipeline file, for the hint.
    pub(crate) pipeline: Option<std::path::PathBuf>,
}

/// Why a run stopped early, and how much it left undone.
#[derive(Debug, Clone)]
pub(crate) struct Halted {
    /// The stage that could not start, and why.
    pub(crate) reason: String,
    /// Messages that stage read but could not process.
    pub(crate) unfinished: u64,
}

impl Halt {
    pub(crate) fn new(pipeline: Option<&std::path::Path>) -> Self {
        Halt {
            stop: Notify::new(),
            cut: AtomicU64::new(u64::MAX),
            why: Mutex::default(),
            pipeline: pipeline.map(Into::into),
        }
    }

    /// Whether records of input line `line` are kept.
    pub(crate) fn keeps(&self, line: u64) -> bool {
        line <= self.cut.load(Relaxed)
    }

    /// The last input line the run finished, if a stage halted it.
    pub(crate) fn cut(&self) -> Option<u64> {
        Some(self.cut.load(Relaxed)).filter(|&c| c != u64::MAX)
    }

    pub(crate) fn halted(&self) -> Option<Halted> {
        self.why.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A stage cannot start: stop reading. Its first unfinished input line
    /// is `first`; the first reason given is kept.
    pub(crate) fn stop(&self, reason: impl FnOnce() -> String, first: u64) {
        self.unfinished(first, 0);
        let mut why = self.why.lock().unwrap_or_else(|e| e.into_inner());
        if why.is_none() {
            *why = Some(Halted { reason: reason(), unfinished: 0 });
            self.stop.notify_one();
        }
    }

    /// Messages of input line `line` and later were left undone: `count` more.
    pub(crate) fn unfinished(&self, line: u64, count: u64) {
        self.cut.fetch_min(line.saturating_sub(1), Relaxed);
        if let Some(why) = self.why.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            why.unfinished += count;
        }
    }

    /// Resolves once a stage has halted the run.
    pub(crate) async fn stopped(&self) {
        self.stop.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_is_before_the_first_unfinished_line() {
        let halt = Halt::new(None);
        assert!(halt.keeps(1_000_000) && halt.cut().is_none(), "nothing is cut until a stage halts");
        halt.stop(|| "stage `s` cannot start".into(), 10);
        halt.unfinished(10, 1);
        halt.unfinished(12, 1);
        halt.unfinished(7, 1);
        assert_eq!(halt.cut(), Some(6));
        assert!(halt.keeps(6) && !halt.keeps(7));
        let why = halt.halted().unwrap();
        assert_eq!((why.reason.as_str(), why.unfinished), ("stage `s` cannot start", 3));
    }
}

//! Stopping a run early when a stage can no longer start an instance (its
//! `init` now traps, times out or refuses): the run ends as an interrupt
//! does instead of losing what it finished.
//!
//! The source stops reading, everything already read drains, and the stage
//! that cannot start dead-letters the messages it can no longer run, with
//! the reason. So every input still ends as outputs or a dead letter, and a
//! resumed run (`--skip-lines`, where the source stopped) repeats nothing.

use std::sync::Mutex;
use tokio::sync::Notify;

/// Shared by the stage tasks and the source of one run.
pub(crate) struct Halt {
    /// Wakes the source.
    stop: Notify,
    why: Mutex<Option<Halted>>,
}

/// Why a run stopped early, and how much it left undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Halted {
    /// The stage that could not start, and why.
    pub(crate) reason: String,
    /// Messages that stage could not run, dead-lettered.
    pub(crate) unfinished: u64,
}

impl Halt {
    pub(crate) fn new() -> Self {
        Halt { stop: Notify::new(), why: Mutex::default() }
    }

    pub(crate) fn halted(&self) -> Option<Halted> {
        self.why.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A stage cannot start: stop reading. The first reason given is kept.
    pub(crate) fn stop(&self, reason: &str) {
        let mut why = self.why.lock().unwrap_or_else(|e| e.into_inner());
        if why.is_none() {
            *why = Some(Halted { reason: reason.to_string(), unfinished: 0 });
            self.stop.notify_one();
        }
    }

    /// `count` more messages could not be run.
    pub(crate) fn unfinished(&self, count: u64) {
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
    fn the_first_reason_is_kept_and_every_unfinished_message_counted() {
        let halt = Halt::new();
        assert_eq!(halt.halted(), None);
        halt.stop("stage `s` cannot start");
        halt.unfinished(2);
        halt.stop("stage `t` cannot start");
        halt.unfinished(1);
        assert_eq!(halt.halted(), Some(Halted { reason: "stage `s` cannot start".into(), unfinished: 3 }));
    }
}

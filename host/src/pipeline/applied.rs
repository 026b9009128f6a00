//! Inputs from a broker whose state is committed but whose acknowledgement
//! the broker may not have had. A checkpoint commits state, then
//! acknowledges: a run that dies in between would have those inputs
//! delivered again and applied to the state twice. So each checkpoint also
//! records the inputs it releases (and those the one before released, whose
//! acknowledgements may still be on their way), and the run that resumes
//! from it acknowledges such an input, delivered again, without running it.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Checkpoints whose released inputs are recorded: this one and the one
/// before.
const KEPT_CHECKPOINTS: usize = 2;

#[derive(Default)]
pub(super) struct Applied {
    /// Positions released by this run's last checkpoints, newest last.
    released: VecDeque<Vec<u64>>,
    /// From the checkpoint this run resumed from: inputs the broker may
    /// deliver again, whose state that checkpoint holds; sorted ranges.
    resumed: Vec<(u64, u64)>,
    /// When `resumed` is dropped: by then the broker has delivered again
    /// whatever it did not hear acknowledged.
    resumed_until: Option<Instant>,
    /// Inputs delivered again that `resumed` held.
    pub(super) held_again: u64,
}

impl Applied {
    /// After a run that died: the `ranges` its last checkpoint recorded,
    /// kept for `keep` (a while past the broker's redelivery time).
    pub(super) fn resumed(ranges: &[(u64, u64)], keep: Duration) -> Self {
        let resumed = union(ranges.to_vec());
        let resumed_until = (!resumed.is_empty()).then(|| Instant::now() + keep);
        Applied { resumed, resumed_until, ..Applied::default() }
    }

    /// Whether the input at `position` is one whose state is committed:
    /// delivered again after the run before died, it must not run again.
    pub(super) fn holds(&mut self, position: u64) -> bool {
        self.expire();
        let after = self.resumed.partition_point(|&(first, _)| first <= position);
        let holds = after > 0 && position <= self.resumed[after - 1].1;
        self.held_again += u64::from(holds);
        holds
    }

    /// A checkpoint is about to commit and then release the inputs at
    /// `releasing`: the ranges it records.
    pub(super) fn record(&mut self, releasing: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
        self.expire();
        if self.released.len() == KEPT_CHECKPOINTS {
            self.released.pop_front();
        }
        self.released.push_back(releasing.into_iter().collect());
        let points = self.released.iter().flatten().map(|&p| (p, p));
        union(points.chain(self.resumed.iter().copied()).collect())
    }

    fn expire(&mut self) {
        if self.resumed_until.is_some_and(|until| Instant::now() >= until) {
            self.resumed.clear();
            self.resumed_until = None;
        }
    }
}

/// Ranges (both ends included) as the fewest sorted ranges that cover the
/// same positions.
fn union(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges.into_iter().filter(|(first, last)| first <= last) {
        match merged.last_mut() {
            Some((_, end)) if first <= end.saturating_add(1) => *end = (*end).max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_records_what_it_and_the_one_before_released_as_ranges() {
        let mut applied = Applied::default();
        assert_eq!(applied.record([3, 1, 2, 7]), [(1, 3), (7, 7)]);
        assert_eq!(applied.record([8, 10]), [(1, 3), (7, 8), (10, 10)]);
        // The first checkpoint's acknowledgements have had a whole interval.
        assert_eq!(applied.record([]), [(8, 8), (10, 10)]);
        assert_eq!(applied.record([u64::MAX, 0]), [(0, 0), (u64::MAX, u64::MAX)]);
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_run_resumed_from_is_held_and_recorded_until_the_broker_has_delivered_it_again() {
        let mut applied = Applied::resumed(&[(9, 9), (5, 7), (6, 6)], Duration::from_secs(60));
        assert!(applied.holds(6) && applied.holds(9));
        assert!(!applied.holds(8) && !applied.holds(4));
        assert_eq!(applied.record([8]), [(5, 9)]);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!applied.holds(6));
        assert_eq!(applied.record([]), [(8, 8)]);
    }
}

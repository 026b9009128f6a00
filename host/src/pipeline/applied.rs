//! Inputs from a broker whose state is committed but whose acknowledgement
//! the broker may not have had. A checkpoint commits state, then
//! acknowledges: a run that dies in between (or whose acknowledgements are
//! lost on the way) would have those inputs delivered again and applied to
//! the state twice. So each checkpoint also records, apart from itself, the
//! inputs it releases and those the one before released, and a later run
//! acknowledges such an input, when the broker delivers it again, without
//! running it.
//!
//! Only an input the broker says it delivered before is taken for one
//! (never a new input that happens to have a recorded position: a stream
//! made anew numbers from 1 again), and only from the same source.

use crate::state::{AppliedGroup, AppliedRecord};
use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Checkpoints of this run whose released inputs are recorded: this one
/// and the one before, whose acknowledgements may still be on their way.
const KEPT_CHECKPOINTS: usize = 2;
/// How long a record is kept, in times the broker's redelivery time: the
/// broker delivers again what it did not hear acknowledged after that time
/// (counted from the dead worker's last word), but the input may then wait
/// behind others already pulled, and behind a restart.
const KEEP_PAST_REDELIVERY: u32 = 10;
/// And at least this long: a worker restarted by a supervisor that backs
/// off (up to minutes) is still covered.
const KEEP_AT_LEAST: Duration = Duration::from_secs(3600);

pub(super) struct Applied {
    /// The source's id; `None` for one that does not deliver again (a
    /// file): nothing is recorded.
    source: Option<String>,
    /// How long a group is kept.
    keep: Duration,
    /// Positions released by this run's last checkpoints, newest last, with
    /// when each group may be forgotten.
    released: VecDeque<AppliedGroup>,
    /// From the record an earlier run left.
    inherited: Vec<AppliedGroup>,
    /// Inputs delivered again that the record held.
    held_again: u64,
}

impl Applied {
    /// For a run reading the source `source` (its id), which delivers again
    /// after `redelivers_after`, with the `record` the store holds.
    pub(super) fn new(
        source: Option<String>,
        redelivers_after: Option<Duration>,
        record: Option<AppliedRecord>,
    ) -> Self {
        let (source, keep) = match (source, redelivers_after) {
            (Some(source), Some(after)) => {
                (Some(source), after.saturating_mul(KEEP_PAST_REDELIVERY).max(KEEP_AT_LEAST))
            }
            _ => (None, Duration::ZERO),
        };
        let inherited = match record {
            Some(record) if Some(&record.source) == source.as_ref() => record.groups,
            _ => Vec::new(),
        };
        let mut applied = Applied { source, keep, released: VecDeque::new(), inherited, held_again: 0 };
        applied.expire(now_ms());
        applied
    }

    /// Whether the input at `position`, which the broker says it
    /// `redelivered`, is one whose state is committed (by an earlier run,
    /// or by this one if the broker lost its acknowledgement): it must not
    /// run again.
    pub(super) fn holds(&mut self, position: u64, redelivered: bool) -> bool {
        if !redelivered || self.source.is_none() {
            return false;
        }
        self.expire(now_ms());
        let holds = self.inherited.iter().chain(&self.released).any(|group| contains(&group.positions, position));
        if holds && self.held_again == 0 {
            tracing::info!(
                "an input delivered again is one whose state is committed (a run died, or its acknowledgement was \
                 lost, before the broker heard): acknowledged without running again, as the next such ones are"
            );
        }
        self.held_again += u64::from(holds);
        holds
    }

    /// Inputs delivered again that the record held, so far.
    pub(super) fn held_again(&self) -> u64 {
        self.held_again
    }

    /// A checkpoint is about to commit and then release the inputs at
    /// `releasing`: the record it commits (`None` if nothing is recorded).
    pub(super) fn record(&mut self, releasing: impl IntoIterator<Item = u64>) -> Option<AppliedRecord> {
        self.record_at(releasing, now_ms())
    }

    fn record_at(&mut self, releasing: impl IntoIterator<Item = u64>, now: u64) -> Option<AppliedRecord> {
        let source = self.source.clone()?;
        self.expire(now);
        if self.released.len() == KEPT_CHECKPOINTS {
            self.released.pop_front();
        }
        let positions = union(releasing.into_iter().map(|p| (p, p)).collect());
        let until_ms = now.saturating_add(self.keep.as_millis() as u64);
        self.released.push_back(AppliedGroup { until_ms, positions });
        let groups = self.inherited.iter().chain(&self.released).filter(|g| !g.positions.is_empty()).cloned();
        Some(AppliedRecord { source, groups: groups.collect() })
    }

    fn expire(&mut self, now: u64) {
        self.inherited.retain(|group| group.until_ms > now);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Whether sorted ranges hold `position`.
fn contains(ranges: &[(u64, u64)], position: u64) -> bool {
    let after = ranges.partition_point(|&(first, _)| first <= position);
    after > 0 && position <= ranges[after - 1].1
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

    const MINUTE: Duration = Duration::from_secs(60);

    fn positions(record: &AppliedRecord) -> Vec<Vec<(u64, u64)>> {
        record.groups.iter().map(|g| g.positions.clone()).collect()
    }

    #[test]
    fn a_checkpoint_records_what_it_and_the_one_before_released_as_ranges() {
        let mut applied = Applied::new(Some("nats:IN/c".into()), Some(MINUTE), None);
        let record = applied.record([3, 1, 2, 7]).unwrap();
        assert_eq!(record.source, "nats:IN/c");
        assert_eq!(positions(&record), [vec![(1, 3), (7, 7)]]);
        assert_eq!(positions(&applied.record([8, 10]).unwrap()), [vec![(1, 3), (7, 7)], vec![(8, 8), (10, 10)]]);
        // The first checkpoint's acknowledgements have had a whole interval.
        assert_eq!(positions(&applied.record([]).unwrap()), [vec![(8, 8), (10, 10)]]);
        assert_eq!(positions(&applied.record([u64::MAX, 0]).unwrap()), [vec![(0, 0), (u64::MAX, u64::MAX)]]);
    }

    #[test]
    fn a_source_that_does_not_deliver_again_records_nothing() {
        let mut file = Applied::new(None, None, None);
        assert_eq!(file.record([1, 2]), None);
        assert!(!file.holds(1, true));
    }

    #[test]
    fn only_an_input_delivered_again_from_the_same_source_is_held_until_the_record_expires() {
        let now = now_ms();
        let group = |until_ms, positions: &[(u64, u64)]| AppliedGroup { until_ms, positions: positions.to_vec() };
        let record = AppliedRecord {
            source: "nats:IN/c".into(),
            groups: vec![group(now + 60_000, &[(5, 7), (9, 9)]), group(now - 1, &[(20, 30)])],
        };
        let mut applied = Applied::new(Some("nats:IN/c".into()), Some(MINUTE), Some(record.clone()));
        assert!(applied.holds(6, true) && applied.holds(9, true));
        // A new input with a recorded position (a stream made anew) runs.
        assert!(!applied.holds(6, false));
        assert!(!applied.holds(8, true) && !applied.holds(4, true));
        // An expired group is gone.
        assert!(!applied.holds(25, true));
        assert_eq!(applied.held_again(), 2);
        // Carried into this run's records until it expires.
        assert_eq!(positions(&applied.record_at([8], now).unwrap()), [vec![(5, 7), (9, 9)], vec![(8, 8)]]);
        assert_eq!(positions(&applied.record_at([], now + 60_001).unwrap()), [vec![(8, 8)]]);
        // This run's own, if the broker lost their acknowledgements.
        assert!(applied.holds(8, true) && !applied.holds(8, false));

        let mut other = Applied::new(Some("nats:IN/other".into()), Some(MINUTE), Some(record));
        assert!(!other.holds(6, true), "another source's record is ignored");
    }
}

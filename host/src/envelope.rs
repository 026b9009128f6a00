//! A message on its way through the pipeline, and the acknowledgement that
//! tells its source when it is done.
//!
//! Every input gets an [`Origin`]: its position in the source and, when the
//! run needs to know when inputs are done (a checkpoint, or a source that
//! acknowledges to a broker), an [`Ack`]. A stage's outputs share their
//! input's ack; each share is settled where its message leaves the pipeline
//! (filtered out by a stage, written and made durable by a sink, written to
//! the dead letters). When the last share is gone the input is reported done:
//! acknowledged if every share was settled, abandoned if any was dropped
//! without it (a failed or aborted run), so that a broker redelivers it. A
//! share forgotten on some path can only cause a redelivery, never a loss.

use crate::bindings::Message;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// A message and where it came from; outputs inherit their input's origin.
pub(crate) struct Envelope {
    pub(crate) message: Message,
    pub(crate) origin: Origin,
}

/// Where a message came from: its input's position in the source, and the
/// input's acknowledgement when the run asks for one.
#[derive(Clone)]
pub(crate) struct Origin {
    /// The source's own position of the input (for a file, its line number).
    pub(crate) position: u64,
    /// Which of its input's outputs this message is: 0 for the input, and
    /// for an output, a hash of its parent's branch and its index among the
    /// parent's outputs. The same for every run of a deterministic
    /// pipeline, whatever the scheduling, so that a sink can give an output
    /// an id that a redelivered input's outputs repeat (a broker then drops
    /// them as duplicates).
    pub(crate) branch: u64,
    pub(crate) ack: Option<Ack>,
}

impl Origin {
    /// An origin without acknowledgement.
    pub(crate) fn at(position: u64) -> Self {
        Origin { position, branch: 0, ack: None }
    }

    /// The origin of the `index`th output a stage made of this message (the
    /// messages it emits, then those it returns, counted from 0): a share of
    /// the same acknowledgement, on a branch of its own.
    pub(crate) fn output(&self, index: usize) -> Origin {
        Origin { position: self.position, branch: branch(self.branch, index), ack: self.ack.clone() }
    }

    /// This message left the pipeline as it should: filtered out, or
    /// written where it goes.
    pub(crate) fn settle(self) {
        if let Some(ack) = self.ack {
            ack.settle();
        }
    }
}

/// splitmix64's finaliser over the parent and the index: distinct outputs of
/// one input get distinct branches but for a 2^-64 chance.
fn branch(parent: u64, index: usize) -> u64 {
    let mut z = parent.rotate_left(29) ^ (index as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What became of an input, once every message it led to has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Done {
    /// The input's sequence number in this run (0, 1, 2, … in read order).
    pub(crate) seq: u64,
    /// Its position in the source.
    pub(crate) position: u64,
    /// Every output durably written and every dead letter too; `false` if
    /// the run gave up on some of them (it failed or was aborted).
    pub(crate) delivered: bool,
    /// Every input read up to this position is done and delivered (this one
    /// included or not): what a transport that acknowledges a contiguous
    /// offset needs. It never passes an input that was given up on.
    pub(crate) all_up_to: Option<u64>,
}

/// One share of an input's acknowledgement. Clone it for each message the
/// input leads to; settle each where its message leaves the pipeline.
pub(crate) struct Ack {
    input: Arc<Pending>,
    settled: bool,
}

struct Pending {
    done: Done,
    abandoned: AtomicBool,
    to: UnboundedSender<Done>,
}

impl Ack {
    /// The share's message left the pipeline as it should.
    pub(crate) fn settle(mut self) {
        self.settled = true;
    }
}

impl Clone for Ack {
    fn clone(&self) -> Self {
        Ack { input: self.input.clone(), settled: false }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.settled {
            self.input.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let done = Done { delivered: !*self.abandoned.get_mut(), ..self.done };
        // The source may have stopped listening (the run is over): nothing to tell.
        let _ = self.to.send(done);
    }
}

/// The acknowledgements of one run's inputs, in the order they were read.
/// Inputs finish out of order (unordered and keyed stages); this keeps
/// those not yet done and so knows the position up to which every input is
/// done (what a transport that acknowledges a contiguous offset needs), and
/// whether the pipeline is empty (what a checkpoint needs).
pub(crate) struct Acks {
    to: UnboundedSender<Done>,
    done: UnboundedReceiver<Done>,
    /// Inputs from the oldest not yet done on: position, and how it ended.
    open: VecDeque<(u64, Settled)>,
    /// Sequence number of `open`'s front.
    front: u64,
    /// Every input up to this position is done, and was delivered.
    done_up_to: Option<u64>,
    /// An input was given up on: `done_up_to` stays before it.
    gave_up: bool,
}

impl Acks {
    pub(crate) fn new() -> Self {
        let (to, done) = unbounded_channel();
        Acks { to, done, open: VecDeque::new(), front: 0, done_up_to: None, gave_up: false }
    }

    /// A new input at `position`: its origin, with the first share of its ack.
    pub(crate) fn origin(&mut self, position: u64) -> Origin {
        let seq = self.front + self.open.len() as u64;
        self.open.push_back((position, Settled::Open));
        let done = Done { seq, position, delivered: true, all_up_to: None };
        let input = Arc::new(Pending { done, abandoned: AtomicBool::new(false), to: self.to.clone() });
        Origin { position, branch: 0, ack: Some(Ack { input, settled: false }) }
    }

    /// Whether every input read is done.
    pub(crate) fn all_done(&self) -> bool {
        self.open.is_empty()
    }

    /// Takes in the inputs done since the last call, without waiting, and
    /// hands each to `each`.
    pub(crate) fn take_done(&mut self, mut each: impl FnMut(Done)) {
        while let Ok(done) = self.done.try_recv() {
            each(self.note(done));
        }
    }

    /// Waits for the next input to be done.
    pub(crate) async fn next_done(&mut self) -> Done {
        let done = self.done.recv().await.expect("Acks holds a sender, so the channel never closes");
        self.note(done)
    }

    /// Waits until every input read is done, handing each to `each`.
    pub(crate) async fn drain(&mut self, mut each: impl FnMut(Done)) {
        self.take_done(&mut each);
        while !self.all_done() {
            each(self.next_done().await);
        }
    }

    fn note(&mut self, mut done: Done) -> Done {
        if let Some(entry) = done.seq.checked_sub(self.front).and_then(|i| self.open.get_mut(i as usize)) {
            entry.1 = if done.delivered { Settled::Delivered } else { Settled::Abandoned };
        }
        while let Some(&(position, settled)) = self.open.front() {
            match settled {
                Settled::Open => break,
                Settled::Delivered => {}
                // An offset committed past it would lose it: the mark stays.
                Settled::Abandoned => self.gave_up = true,
            }
            self.open.pop_front();
            self.front += 1;
            if !self.gave_up {
                self.done_up_to = Some(position);
            }
        }
        done.all_up_to = self.done_up_to;
        done
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Open,
    Delivered,
    Abandoned,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(acks: &mut Acks) -> Vec<Done> {
        let mut taken = Vec::new();
        acks.take_done(|done| taken.push(done));
        taken
    }

    #[test]
    fn an_input_is_done_when_its_last_share_is_settled() {
        let mut acks = Acks::new();
        let origin = acks.origin(7);
        let outputs: Vec<Origin> = (0..3).map(|_| origin.clone()).collect();
        origin.settle();
        assert!(taken(&mut acks).is_empty(), "its outputs are still on their way");
        let mut outputs = outputs.into_iter();
        outputs.next().unwrap().settle();
        outputs.next().unwrap().settle();
        assert!(taken(&mut acks).is_empty());
        outputs.next().unwrap().settle();
        assert_eq!(taken(&mut acks), vec![Done { seq: 0, position: 7, delivered: true, all_up_to: Some(7) }]);
        assert!(acks.all_done());
    }

    #[test]
    fn a_share_dropped_unsettled_abandons_its_input() {
        let mut acks = Acks::new();
        let origin = acks.origin(1);
        let output = origin.clone();
        origin.settle();
        drop(output);
        assert_eq!(taken(&mut acks), vec![Done { seq: 0, position: 1, delivered: false, all_up_to: None }]);
        let next = acks.origin(2);
        next.settle();
        assert_eq!(taken(&mut acks)[0].all_up_to, None, "never past an input given up on");
    }

    #[test]
    fn outputs_get_distinct_branches_that_do_not_depend_on_order() {
        let input = Origin::at(3);
        let first: Vec<u64> = (0..1000).map(|i| input.output(i).branch).collect();
        let mut distinct = first.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), first.len(), "every output its own branch");
        assert!(!first.contains(&0), "no output on its input's branch");
        // A second run makes the same outputs in another order: same branches.
        let again: Vec<u64> = (0..1000).rev().map(|i| input.output(i).branch).collect();
        assert!(again.iter().rev().eq(first.iter()));
        // The first output of the first output is not the first output.
        assert_ne!(input.output(0).output(0).branch, input.output(0).branch);
    }

    #[test]
    fn done_up_to_waits_for_the_oldest_input() {
        let mut acks = Acks::new();
        let origins: Vec<Origin> = [10, 11, 13].into_iter().map(|p| acks.origin(p)).collect();
        let mut origins = origins.into_iter();
        let (first, second, third) = (origins.next().unwrap(), origins.next().unwrap(), origins.next().unwrap());
        third.settle();
        second.settle();
        let up_to: Vec<_> = taken(&mut acks).iter().map(|d| (d.position, d.all_up_to)).collect();
        assert_eq!(up_to, [(13, None), (11, None)], "10 is still open");
        first.settle();
        assert_eq!(taken(&mut acks)[0].all_up_to, Some(13));
        assert!(acks.all_done());
    }
}

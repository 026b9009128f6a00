//! A stage's `concurrency` slots, its idle instances, and the seat a job
//! holds them through: a job keeps a slot and an instance only while it
//! runs the guest, and gives both back while it waits out a retry's backoff.

use super::events::{InstanceDropped, InstanceMade, StageEvents};
use super::runner::Runner;
use crate::stage::{LoadError, StageInstance, StagePre};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A stage's `concurrency` slots and its idle instances. At most
/// `concurrency` instances are in use at once: only a slot's holder takes
/// one. A stage that isolates messages also has one made ahead, on another
/// task, while the current message runs: making an instance then costs the
/// message nothing where a core is free.
pub(super) struct Slots {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<StageInstance>>,
    /// A fresh instance for every message.
    isolate: bool,
    /// Replace an instance after this many messages.
    recycle_after: Option<u64>,
    /// Isolating wasm stages: what makes the next instance ahead, and
    /// whether it is being made.
    ahead: Option<(Arc<StagePre>, AtomicBool)>,
    events: StageEvents,
}

impl Slots {
    pub(super) fn new(
        runner: &Runner,
        concurrency: usize,
        first: Option<StageInstance>,
        isolate: bool,
        recycle_after: Option<u64>,
        events: StageEvents,
    ) -> Arc<Self> {
        let ahead = match runner {
            Runner::Wasm(pre) if isolate => Some((pre.clone(), AtomicBool::new(false))),
            _ => None,
        };
        Arc::new(Slots {
            permits: Arc::new(Semaphore::new(concurrency)),
            idle: Mutex::new(first.into_iter().collect()),
            isolate,
            recycle_after,
            ahead,
            events,
        })
    }

    /// Starts making the next instance, if this stage makes them ahead and
    /// none is idle or being made. A failure is left for the message that
    /// needs the instance to meet (and report) again.
    fn make_ahead(self: &Arc<Self>) {
        let Some((pre, making)) = &self.ahead else { return };
        if !self.idle().is_empty() || making.swap(true, AtomicOrdering::AcqRel) {
            return;
        }
        let (slots, pre) = (self.clone(), pre.clone());
        tokio::spawn(async move {
            if let Ok(instance) = pre.instantiate().await {
                slots.events.emit(InstanceMade);
                slots.idle().push(instance);
            }
            if let Some((_, making)) = &slots.ahead {
                making.store(false, AtomicOrdering::Release);
            }
        });
    }

    /// A slot, once one is free.
    pub(super) async fn acquire(self: &Arc<Self>) -> Slot {
        let permit = self.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        Slot { slots: self.clone(), _permit: permit, instance: None }
    }

    /// A slot, if one is free now.
    pub(super) fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(Slot { slots: self.clone(), _permit: permit, instance: None })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<StageInstance>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One of a stage's slots, and the instance its job runs in, if it has one.
/// Dropping it frees the slot and gives the instance back, unless the stage
/// isolates messages or the instance is worn out.
pub(super) struct Slot {
    slots: Arc<Slots>,
    _permit: OwnedSemaphorePermit,
    instance: Option<StageInstance>,
}

impl Slot {
    /// The slot's instance: an idle one, else a fresh one.
    async fn instance(&mut self, pre: &StagePre) -> Result<&mut StageInstance, LoadError> {
        if self.instance.is_none() {
            let idle = self.slots.idle().pop();
            self.instance = match idle {
                Some(instance) => Some(instance),
                None => {
                    let instance = pre.instantiate().await?;
                    self.slots.events.emit(InstanceMade);
                    Some(instance)
                }
            };
            self.slots.make_ahead();
        }
        Ok(self.instance.as_mut().expect("set above"))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(mut instance) = self.instance.take() {
            if !self.slots.isolate && !instance.worn_out(self.slots.recycle_after) {
                self.slots.idle().push(instance);
            } else {
                self.slots.events.emit(InstanceDropped::Recycled);
            }
        }
    }
}

/// Where a job runs: its slot while it has one.
pub(super) struct Seat {
    slots: Arc<Slots>,
    slot: Option<Slot>,
    /// Whether a message waiting out its backoff gives the slot back. Not
    /// when what it emits goes downstream at once in an ordered stage: a
    /// later message would then emit ahead of it.
    park: bool,
    /// Time spent without a slot (backoff, waiting for one): not the guest's.
    pub(super) away: Duration,
}

impl Seat {
    pub(super) fn new(slots: Arc<Slots>, slot: Option<Slot>, park: bool) -> Self {
        Seat { slots, slot, park, away: Duration::ZERO }
    }

    pub(super) async fn slot(&mut self) -> &mut Slot {
        if self.slot.is_none() {
            let since = Instant::now();
            self.slot = Some(self.slots.acquire().await);
            self.away += since.elapsed();
        }
        self.slot.as_mut().expect("set above")
    }

    pub(super) async fn instance(&mut self, pre: &StagePre) -> Result<&mut StageInstance, LoadError> {
        self.slot().await.instance(pre).await
    }

    /// The instance trapped: it cannot be entered again.
    pub(super) fn trapped(&mut self) {
        if let Some(slot) = &mut self.slot
            && slot.instance.take().is_some()
        {
            self.slots.events.emit(InstanceDropped::Trapped);
        }
    }

    /// Waits `delay` (a retry's backoff), parked if it may.
    pub(super) async fn wait(&mut self, delay: Duration) {
        if self.park {
            self.slot = None;
        }
        let since = Instant::now();
        tokio::time::sleep(delay).await;
        self.away += since.elapsed();
    }
}

//! One instance of a stage: a `Store` and the stage's exports in it, and the
//! calls into it, each under its budget (`budget`).

use super::budget::Budget;
use super::error::{LoadError, Trap, trap};
use super::store::StoreData;
use crate::bindings::{Message, Outcome, Plugin, StageError};
use crate::capabilities::emit::{CallEmits, EmitTarget, Emitted};
use crate::engine::Instrumentation;
use crate::limits::{Breach, Limits, MAX_REASON_BYTES, MAX_RESOURCES, RECYCLE_AT_RESOURCES, clamp_reason, log_safe};
use crate::state::StateScope;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use wasmtime::Store;

/// What came of a `process` call.
pub(crate) struct Processed {
    pub(crate) outcome: Outcome,
    /// Messages emitted and held until the call succeeded (`emit = "on-success"`).
    pub(crate) held: Vec<Message>,
    /// An output cap an `emit` broke: the message fails with it, whatever
    /// the stage returned.
    pub(crate) refused: Option<Breach>,
}

/// What came of a `process-batch` call that did not trap.
pub(crate) enum Batch {
    /// One outcome per message, in input order; the call's state writes kept.
    Settled(Vec<Outcome>),
    /// The stage broke the contract: `got` outcomes for another number of
    /// messages. Its state writes were dropped.
    Miscounted { got: usize },
    /// A message failed `transient` after the batch wrote state. Which
    /// writes were that message's is unknown, so all were dropped: each
    /// message runs again alone, and makes its own again (a `transient`
    /// message's writes must not stay behind for its retry to make twice).
    /// The outcomes say which failed `transient` (their attempt was made).
    Undone(Vec<Outcome>),
    /// The stage called `emit`: which message that belongs to is unknown,
    /// so the call was ended there, like a trap (nothing emitted left, its
    /// state writes were dropped, the instance must be dropped), and each
    /// message runs again alone. Such a stage runs one message per call
    /// from then on.
    Emitted,
}

pub(crate) struct StageInstance {
    store: Store<StoreData>,
    plugin: Plugin,
    limits: Limits,
    inst: Instrumentation,
    /// Messages this instance has processed (retries included), for `recycle_after`.
    messages: u64,
    /// The stage's count of fuel burned.
    fuel_used: Arc<AtomicU64>,
}

impl StageInstance {
    pub(super) fn new(
        store: Store<StoreData>,
        plugin: Plugin,
        limits: Limits,
        inst: Instrumentation,
        fuel_used: Arc<AtomicU64>,
    ) -> Self {
        StageInstance { store, plugin, limits, inst, messages: 0, fuel_used }
    }

    /// Runs the guest's `init` within `budget`.
    pub(super) async fn init(&mut self, config: &str, budget: Budget) -> Result<(), LoadError> {
        let mark = self.arm(budget);
        let call = self.plugin.sluice_pipeline_stage().call_init(&mut self.store, config);
        let result = budget.guard(call).await;
        self.report_dropped_logs();
        match self.ended(result, mark, budget) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refusal)) => Err(LoadError::InitRefused(log_safe(&clamp_reason(refusal)).into_owned())),
            Err(trap) => Err(LoadError::InitTrapped(trap)),
        }
    }

    /// A call's result, or the trap that ended it (a limit, or the guest).
    fn ended<T>(&mut self, result: Result<wasmtime::Result<T>, Breach>, mark: u64, budget: Budget) -> Result<T, Trap> {
        if self.inst.fuel {
            let left = self.store.get_fuel().unwrap_or(0);
            self.fuel_used.fetch_add(budget.fuel.unwrap_or(u64::MAX).saturating_sub(left), Relaxed);
        }
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(trap(&e, &mut self.store, mark, budget)),
            Err(breach) => Err(Trap::breach(breach)),
        }
    }

    /// Processes one message within the stage's limits; what it emits goes
    /// to `emit`. An `Err` means the instance trapped and must be dropped.
    ///
    /// The call's state writes are kept unless it fails `transient` (it will
    /// be retried) or traps. Messages emitted before a trap were still sent,
    /// so how many were emitted is returned either way.
    pub(crate) async fn process(
        &mut self,
        message: &Message,
        emit: Option<EmitTarget>,
    ) -> (Emitted, Result<Processed, Trap>) {
        let budget = Budget::message(&self.limits);
        self.messages += 1;
        let mark = self.arm(budget);
        let data = self.store.data_mut();
        data.emit.begin(emit);
        if let Some(scope) = &mut data.state.scope {
            scope.enter(message.key.as_deref());
        }
        let call = self.plugin.sluice_pipeline_stage().call_process(&mut self.store, message);
        let result = budget.guard(call).await;
        let CallEmits { held, emitted, breach } = self.store.data_mut().emit.end();
        if let (Ok(Err(_)), Some(breach)) = (&result, &breach) {
            // Ended for emitting past a cap: the trap is that cap.
            self.store.data_mut().limiter.breach = Some(breach.clone());
        }
        self.report_dropped_logs();
        let processed = self.ended(result, mark, budget).map(|mut outcome| {
            clamp_outcome(&mut outcome);
            Processed { outcome, held, refused: breach }
        });
        let keep =
            matches!(&processed, Ok(p) if p.refused.is_none() && !matches!(p.outcome, Err(StageError::Transient(_))));
        self.end_state(keep);
        (emitted, processed)
    }

    /// Keeps or drops the state writes of the call that just ended.
    fn end_state(&mut self, keep: bool) {
        if let Some(scope) = &mut self.store.data_mut().state.scope {
            if keep { scope.keep_writes() } else { scope.drop_writes() }
        }
    }

    /// Whether the instance should be replaced rather than given another
    /// message: it has processed `recycle_after` messages, or holds more
    /// resource handles than [`RECYCLE_AT_RESOURCES`], so that a guest that
    /// leaks them is replaced before the table fills and fails a message.
    pub(crate) fn worn_out(&mut self, recycle_after: Option<u64>) -> bool {
        if recycle_after.is_some_and(|n| self.messages >= n) {
            let stage = &*self.store.data().log.stage;
            tracing::debug!(stage, "replacing an instance after {} messages (recycle_after)", self.messages);
            return true;
        }
        let handles = self.store.data_mut().resources();
        if handles > RECYCLE_AT_RESOURCES {
            let stage = &*self.store.data().log.stage;
            tracing::debug!(
                stage,
                "replacing an instance holding {handles} resource handles, of {MAX_RESOURCES} allowed, after {} messages",
                self.messages
            );
            return true;
        }
        false
    }

    /// Gives the instance its stage's view of the state store.
    pub(crate) fn set_state(&mut self, scope: StateScope) {
        self.store.data_mut().state.scope = Some(scope);
    }

    /// Processes `messages` in one call, under the limits of that many
    /// messages (fuel, time and log records multiplied by their number).
    /// An `Err` means the instance trapped and must be dropped; which
    /// message caused it is unknown.
    ///
    /// The call's state writes are kept only if every message settled: the
    /// host cannot tell which message made which write, so when one fails
    /// `transient` (to be retried) after the batch wrote state, the batch's
    /// writes are dropped and each message runs again alone ([`Batch::Undone`]).
    pub(crate) async fn process_batch(&mut self, messages: &[Message]) -> Result<Batch, Trap> {
        let n = messages.len() as u32;
        self.messages += u64::from(n);
        let budget = Budget::batch(&self.limits, n);
        // The previous call's drops were reported when it ended.
        self.store.data().log.budget.reset(self.limits.max_log_records.saturating_mul(n));
        let mark = self.arm(budget);
        self.store.data_mut().emit.begin_batch();
        let call = self.plugin.sluice_pipeline_stage().call_process_batch(&mut self.store, messages);
        let result = budget.guard(call).await;
        let emitted = self.store.data_mut().emit.end_batch();
        self.report_dropped_logs();
        let ended = self.ended(result, mark, budget);
        if emitted {
            // The call was ended by the `emit` (a trap): what it returned is moot.
            self.end_state(false);
            return Ok(Batch::Emitted);
        }
        let batch = ended.map(|mut outcomes| {
            outcomes.iter_mut().for_each(clamp_outcome);
            let retried = outcomes.iter().any(|o| matches!(o, Err(StageError::Transient(_))));
            if outcomes.len() != messages.len() {
                Batch::Miscounted { got: outcomes.len() }
            } else if retried && self.wrote_state() {
                Batch::Undone(outcomes)
            } else {
                Batch::Settled(outcomes)
            }
        });
        self.end_state(matches!(batch, Ok(Batch::Settled(_))));
        batch
    }

    /// Whether the call that just ended wrote state.
    fn wrote_state(&self) -> bool {
        self.store.data().state.scope.as_ref().is_some_and(StateScope::has_writes)
    }

    /// Sets the call's fuel and deadline; returns the stderr mark. The log
    /// budget was set when the store was made and is reset after every call
    /// (`report_dropped_logs`).
    fn arm(&mut self, budget: Budget) -> u64 {
        budget.set(&mut self.store, self.inst);
        self.store.data().stderr.mark()
    }

    /// Logs how many log records the last call dropped, and resets the
    /// budget to one message's.
    fn report_dropped_logs(&self) {
        let log = &self.store.data().log;
        let dropped = log.budget.reset(self.limits.max_log_records);
        if dropped > 0 {
            tracing::warn!(
                stage = &*log.stage,
                "dropped {dropped} log records (limits.max_log_records = {} per message)",
                self.limits.max_log_records
            );
        }
    }
}

/// Cuts an error's reason to a bounded length: the host keeps it (dead
/// letter, log) however long the stage made it.
fn clamp_outcome(outcome: &mut Outcome) {
    if let Err(StageError::Invalid(reason) | StageError::Transient(reason)) = outcome {
        if reason.len() > MAX_REASON_BYTES {
            *reason = clamp_reason(std::mem::take(reason));
        }
    }
}

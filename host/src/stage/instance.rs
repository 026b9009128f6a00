//! One instance of a stage: a `Store` and the stage's exports in it, and the
//! limits every call into it runs under.

use super::load::{LoadError, root_cause};
use super::store::StoreData;
use crate::bindings::{Message, Outcome, Plugin, StageError};
use crate::capabilities::emit::{CallEmits, EmitTarget, Emitted};
use crate::engine::Instrumentation;
use crate::limits::{Breach, EPOCH_TICK, Limits, MAX_RESOURCES, RECYCLE_AT_RESOURCES, clamp_reason, log_safe};
use crate::state::StateScope;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};
use wasmtime::{Store, UpdateDeadline};

/// Why a call into a stage failed at the WebAssembly level. The instance it
/// happened in cannot be entered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap {
    /// Whether a limit (fuel, timeout, memory, stack) stopped the call, as
    /// opposed to the guest crashing (panic, `unreachable`, bad access).
    pub limit: bool,
    /// What happened.
    pub reason: String,
    /// What the guest wrote to stderr during the failed call (a panic
    /// message, a traceback), if anything.
    pub stderr: String,
}

impl Trap {
    pub(crate) fn breach(breach: Breach) -> Self {
        Trap { limit: true, reason: breach.to_string(), stderr: String::new() }
    }
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if !self.stderr.is_empty() {
            // The guest's text, on one line wherever a trap is printed (the
            // terminal, the log): its line breaks and escapes are shown, not sent.
            write!(f, "; guest stderr: {}", crate::limits::log_safe(&self.stderr))?;
        }
        Ok(())
    }
}

/// What came of a `process` call.
pub(crate) struct Processed {
    pub(crate) outcome: Outcome,
    /// Messages emitted and held until the call succeeded (`emit = "on-success"`).
    pub(crate) held: Vec<Message>,
    /// An output cap an `emit` broke: the message fails with it, whatever
    /// the stage returned.
    pub(crate) refused: Option<Breach>,
}

/// The budget of one call.
#[derive(Clone, Copy)]
pub(super) struct Budget {
    pub(super) fuel: Option<u64>,
    pub(super) timeout: Option<Duration>,
    /// Start-up (instantiation and `init`): its timeout is `limits.init_timeout`.
    pub(super) init: bool,
}

impl Budget {
    /// The breach of this budget's timeout.
    fn timed_out(self, timeout: Duration) -> Breach {
        if self.init { Breach::InitTimeout(timeout) } else { Breach::Timeout(timeout) }
    }
}

pub(crate) struct StageInstance {
    store: Store<StoreData>,
    plugin: Plugin,
    limits: Limits,
    inst: Instrumentation,
    /// Messages this instance has processed (retries included), for `recycle_after`.
    messages: u64,
}

impl StageInstance {
    /// Makes a store ready for instantiation: instantiation runs guest code,
    /// so the limits must be in force before it.
    pub(super) fn arm_store(store: &mut Store<StoreData>, inst: Instrumentation, budget: Budget) {
        store.limiter(|data| &mut data.limiter);
        if inst.epochs {
            // At every tick: stop the call if its deadline passed, else yield
            // to the runtime. tokio's `yield_now` reschedules the task only
            // after the runtime has polled its timers and I/O, so other tasks
            // get to run even on a single thread.
            store.epoch_deadline_callback(|mut ctx| {
                let data = ctx.data_mut();
                if let Some((at, breach)) = &data.deadline {
                    if Instant::now() >= *at {
                        data.limiter.breach = Some(breach.clone());
                        return Ok(UpdateDeadline::Interrupt);
                    }
                }
                Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
            });
        } else if inst.fuel {
            store.fuel_async_yield_interval(Some(crate::limits::YIELD_INTERVAL_FUEL)).expect("fuel is enabled");
        }
        Self::set_budget(store, inst, budget);
    }

    fn set_budget(store: &mut Store<StoreData>, inst: Instrumentation, budget: Budget) {
        if inst.fuel {
            store.set_fuel(budget.fuel.unwrap_or(u64::MAX)).expect("fuel is enabled");
        }
        if inst.epochs {
            store.set_epoch_deadline(1);
            store.data_mut().deadline = budget.timeout.map(|t| (Instant::now() + t, budget.timed_out(t)));
        }
    }

    pub(super) fn new(store: Store<StoreData>, plugin: Plugin, limits: Limits, inst: Instrumentation) -> Self {
        StageInstance { store, plugin, limits, inst, messages: 0 }
    }

    /// Runs the guest's `init` within `budget`.
    pub(super) async fn init(&mut self, config: &str, budget: Budget) -> Result<(), LoadError> {
        let mark = self.arm(budget);
        let call = self.plugin.sluice_pipeline_stage().call_init(&mut self.store, config);
        let result = guard(budget, call).await;
        self.report_dropped_logs();
        match self.ended(result, mark, budget) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refusal)) => Err(LoadError::InitRefused(log_safe(&clamp_reason(refusal)).into_owned())),
            Err(trap) => Err(LoadError::InitTrapped(trap)),
        }
    }

    /// A call's result, or the trap that ended it (a limit, or the guest).
    fn ended<T>(&mut self, result: Result<wasmtime::Result<T>, Breach>, mark: u64, budget: Budget) -> Result<T, Trap> {
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
        let budget = Budget { fuel: self.limits.fuel, timeout: self.limits.timeout, init: false };
        self.messages += 1;
        let mark = self.arm(budget);
        let data = self.store.data_mut();
        data.emit.begin(emit);
        if let Some(scope) = &mut data.state.scope {
            scope.enter(message.key.as_deref());
        }
        let call = self.plugin.sluice_pipeline_stage().call_process(&mut self.store, message);
        let result = guard(budget, call).await;
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
    /// Returns one outcome per message, or `None` if the stage broke the
    /// contract by returning another number. An `Err` means the instance
    /// trapped and must be dropped; which message caused it is unknown.
    pub(crate) async fn process_batch(&mut self, messages: &[Message]) -> Result<Option<Vec<Outcome>>, Trap> {
        let n = messages.len() as u32;
        self.messages += u64::from(n);
        let budget = Budget {
            fuel: self.limits.fuel.map(|f| f.saturating_mul(u64::from(n))),
            timeout: self.limits.timeout.map(|t| t.saturating_mul(n)),
            init: false,
        };
        // The previous call's drops were reported when it ended.
        self.store.data().log.budget.reset(self.limits.max_log_records.saturating_mul(n));
        let mark = self.arm(budget);
        let call = self.plugin.sluice_pipeline_stage().call_process_batch(&mut self.store, messages);
        let result = guard(budget, call).await;
        self.report_dropped_logs();
        let outcomes = self.ended(result, mark, budget).map(|mut o| {
            o.iter_mut().for_each(clamp_outcome);
            (o.len() == messages.len()).then_some(o)
        });
        // The batch's messages run again alone unless it answered for each.
        self.end_state(matches!(outcomes, Ok(Some(_))));
        outcomes
    }

    /// Sets the call's fuel and deadline; returns the stderr mark. The log
    /// budget was set when the store was made and is reset after every call
    /// (`report_dropped_logs`).
    fn arm(&mut self, budget: Budget) -> u64 {
        Self::set_budget(&mut self.store, self.inst, budget);
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
        if reason.len() > crate::limits::MAX_REASON_BYTES {
            *reason = clamp_reason(std::mem::take(reason));
        }
    }
}

/// Runs a call under the wall-clock limit. The epoch deadline stops guest
/// code; this also stops a call waiting on the host (I/O), a little later so
/// that the epoch, which leaves the store consistent, normally fires first.
async fn guard<T>(budget: Budget, call: impl Future<Output = T>) -> Result<T, Breach> {
    match budget.timeout {
        Some(t) => Deadline::new(call, t + 2 * EPOCH_TICK).await.map_err(|()| budget.timed_out(t)),
        None => Ok(call.await),
    }
}

pin_project_lite::pin_project! {
    /// `tokio::time::timeout`, except that the timer is only registered if the
    /// call suspends. Most calls finish in their first poll, and a timer per
    /// message per stage was the largest cost of the sandbox.
    struct Deadline<F> {
        #[pin]
        call: F,
        at: tokio::time::Instant,
        #[pin]
        timer: Option<tokio::time::Sleep>,
    }
}

impl<F> Deadline<F> {
    fn new(call: F, timeout: Duration) -> Self {
        Deadline { call, at: tokio::time::Instant::now() + timeout, timer: None }
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Result<F::Output, ()>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let mut this = self.project();
        if let std::task::Poll::Ready(v) = this.call.poll(cx) {
            return std::task::Poll::Ready(Ok(v));
        }
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep_until(*this.at)));
        }
        let timer = this.timer.as_pin_mut().expect("set above");
        timer.poll(cx).map(|()| Err(()))
    }
}

/// Explains a failed call: which limit it broke, or what trapped.
pub(super) fn trap(e: &wasmtime::Error, store: &mut Store<StoreData>, stderr_mark: u64, budget: Budget) -> Trap {
    let stderr = store.data().stderr.tail_since(stderr_mark);
    let code = e.downcast_ref::<wasmtime::Trap>();
    let breach = store.data_mut().limiter.breach.take().or(match code {
        Some(wasmtime::Trap::OutOfFuel) => budget.fuel.map(Breach::Fuel),
        Some(wasmtime::Trap::Interrupt) => budget.timeout.map(|t| budget.timed_out(t)),
        Some(wasmtime::Trap::StackOverflow) => Some(Breach::StackOverflow),
        // wasmtime's (private) error for its per-call copy cap.
        None if e.chain().any(|c| c.to_string().starts_with("too much data is being copied")) => Some(Breach::CallData),
        _ => None,
    });
    match breach {
        Some(breach) => Trap { limit: true, reason: breach.to_string(), stderr },
        None => {
            let mut reason = code.map_or_else(|| root_cause(e), ToString::to_string);
            if code == Some(&wasmtime::Trap::MemoryOutOfBounds) {
                reason.push_str(
                    " (in a stage written in Rust or C this is usually its own stack overflowing: too deep a recursion)",
                );
            }
            Trap { limit: false, reason, stderr }
        }
    }
}

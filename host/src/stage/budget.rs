//! The budget of one call into a stage: the fuel and deadline set in its
//! store before it runs, the epoch callback that enforces the deadline, and
//! the wall-clock guard around the call for time spent in the host.

use super::store::StoreData;
use crate::engine::Instrumentation;
use crate::limits::{Breach, EPOCH_TICK, Limits, YIELD_INTERVAL_FUEL};
use std::future::Future;
use std::time::{Duration, Instant};
use wasmtime::{Store, UpdateDeadline};

/// The budget of one call.
#[derive(Clone, Copy)]
pub(super) struct Budget {
    pub(super) fuel: Option<u64>,
    pub(super) timeout: Option<Duration>,
    /// Start-up (instantiation and `init`): its timeout is `limits.init_timeout`.
    init: bool,
}

impl Budget {
    /// Instantiation and `init`: the (larger) start-up budget.
    pub(super) fn start_up(limits: &Limits) -> Self {
        Budget { fuel: limits.init_fuel(), timeout: limits.init_timeout(), init: true }
    }

    /// One message's `process`.
    pub(super) fn message(limits: &Limits) -> Self {
        Budget { fuel: limits.fuel, timeout: limits.timeout, init: false }
    }

    /// A `process-batch` of `n` messages: `n` messages' fuel and time.
    pub(super) fn batch(limits: &Limits, n: u32) -> Self {
        Budget {
            fuel: limits.fuel.map(|f| f.saturating_mul(u64::from(n))),
            timeout: limits.timeout.map(|t| t.saturating_mul(n)),
            init: false,
        }
    }

    /// The breach of this budget's timeout.
    pub(super) fn timed_out(self, timeout: Duration) -> Breach {
        if self.init { Breach::InitTimeout(timeout) } else { Breach::Timeout(timeout) }
    }

    /// Puts the budget in force in `store` for the call about to start.
    pub(super) fn set(self, store: &mut Store<StoreData>, inst: Instrumentation) {
        if inst.fuel {
            store.set_fuel(self.fuel.unwrap_or(u64::MAX)).expect("fuel is enabled");
        }
        if inst.epochs {
            store.set_epoch_deadline(1);
            store.data_mut().deadline = self.timeout.map(|t| (Instant::now() + t, self.timed_out(t)));
        }
    }

    /// Runs a call under the wall-clock limit. The epoch deadline stops guest
    /// code; this also stops a call waiting on the host (I/O), a little later so
    /// that the epoch, which leaves the store consistent, normally fires first.
    pub(super) async fn guard<T>(self, call: impl Future<Output = T>) -> Result<T, Breach> {
        match self.timeout {
            Some(t) => Deadline::new(call, t + 2 * EPOCH_TICK).await.map_err(|()| self.timed_out(t)),
            None => Ok(call.await),
        }
    }
}

/// Makes a new store ready for instantiation, under `budget`: instantiation
/// runs guest code, so the limits must be in force before it.
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
        store.fuel_async_yield_interval(Some(YIELD_INTERVAL_FUEL)).expect("fuel is enabled");
    }
    budget.set(store, inst);
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

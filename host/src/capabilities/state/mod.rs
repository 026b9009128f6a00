//! `sluice:pipeline/state`: key-value state, scoped to the stage (and to the
//! message key for keyed stages). See [`crate::state`] for how it is stored
//! and checkpointed.
//!
//! `set` has no error result in the WIT: a write that breaks a quota ends the
//! call as a trap whose reason is the breach, like a memory or fuel limit, so
//! the message is dead-lettered with `"error":"limit"` and its writes dropped.

use crate::bindings::sluice::pipeline::state::Host;
use crate::limits::{Breach, StageLimiter};
use crate::state::{StateScope, WriteError};
use wasmtime::component::{HasData, Linker};

/// The most entries one `scan` returns, whatever `limit` the stage asks for.
/// Their bytes are bounded by the scope's quota (`limits.max_state_bytes`).
const MAX_SCAN: usize = 10_000;

/// Per-instance state of the state capability.
#[derive(Default)]
pub(crate) struct StateCtx {
    /// `None` when the pipeline has no state store (no stage imports state).
    pub(crate) scope: Option<StateScope>,
}

/// Access to what the state host functions reach in a store's data.
pub(crate) trait StateView: Send {
    fn state(&mut self) -> StateCtxView<'_>;
}

/// What the state host functions reach: the instance's scope, and the
/// limiter, which records a quota breach for the trap to name.
pub(crate) struct StateCtxView<'a> {
    pub(crate) ctx: &'a mut StateCtx,
    pub(crate) limiter: &'a mut StageLimiter,
}

impl StateCtxView<'_> {
    fn scope(&mut self) -> wasmtime::Result<&mut StateScope> {
        self.ctx.scope.as_mut().ok_or_else(|| wasmtime::Error::msg("this pipeline has no state store"))
    }

    fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> wasmtime::Result<()> {
        match self.scope()?.set(&key, value) {
            Ok(()) => Ok(()),
            Err(WriteError::Store(e)) => Err(e.into()),
            Err(WriteError::Limit(breach)) => Err(self.breach(breach)),
        }
    }

    fn breach(&mut self, breach: Breach) -> wasmtime::Error {
        let error = wasmtime::Error::msg(breach.to_string());
        self.limiter.breach = Some(breach);
        error
    }
}

impl Host for StateCtxView<'_> {
    async fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.scope()?.get(&key)?)
    }

    async fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.write(key, Some(value))
    }

    async fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.write(key, None)
    }

    async fn scan(&mut self, prefix: Vec<u8>, limit: u32) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.scope()?.scan(&prefix, (limit as usize).min(MAX_SCAN))?)
    }
}

struct State;

impl HasData for State {
    type Data<'a> = StateCtxView<'a>;
}

/// Links `sluice:pipeline/state` for a store whose data gives a [`StateView`].
pub(crate) fn add_to_linker<T: StateView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    crate::bindings::sluice::pipeline::state::add_to_linker::<T, State>(linker, T::state)
}

//! `sluice:pipeline/state`: key-value state, scoped to the stage (and to the
//! message key for keyed stages). See [`crate::state`] for how it is stored
//! and checkpointed.

use crate::bindings::sluice::pipeline::state::Host;
use crate::stage::StoreData;
use crate::state::StateScope;
use wasmtime::component::{HasSelf, Linker};

/// The most entries one `scan` returns, whatever `limit` the stage asks for.
const MAX_SCAN: usize = 10_000;

/// Per-instance state of the state capability.
#[derive(Default)]
pub(crate) struct StateCtx {
    /// `None` when the pipeline has no state store (no stage imports state).
    pub(crate) scope: Option<StateScope>,
}

impl StateCtx {
    fn scope(&mut self) -> wasmtime::Result<&mut StateScope> {
        self.scope.as_mut().ok_or_else(|| wasmtime::Error::msg("this pipeline has no state store"))
    }
}

impl Host for StateCtx {
    async fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.scope()?.get(&key)?)
    }

    async fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.scope()?.set(&key, Some(value));
        Ok(())
    }

    async fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.scope()?.set(&key, None);
        Ok(())
    }

    async fn scan(&mut self, prefix: Vec<u8>, limit: u32) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.scope()?.scan(&prefix, (limit as usize).min(MAX_SCAN))?)
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    crate::bindings::sluice::pipeline::state::add_to_linker::<StoreData, HasSelf<StateCtx>>(linker, |d| &mut d.state)
}

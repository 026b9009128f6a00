//! One instance of a stage: a `Store` and the stage's exports in it.

use super::load::{LoadError, root_cause};
use super::store::StoreData;
use crate::bindings::{Message, Outcome, Plugin};
use std::fmt;
use wasmtime::Store;

/// Why a call into a stage failed at the WebAssembly level. The instance it
/// happened in cannot be entered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap {
    /// What went wrong: the trap, or the host error that aborted the call.
    pub reason: String,
    /// What the guest wrote to stderr during the failed call (a panic
    /// message, a traceback), if anything.
    pub stderr: String,
}

impl Trap {
    pub(crate) fn new(e: &wasmtime::Error, store: &Store<StoreData>, stderr_mark: u64) -> Self {
        let reason = match e.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => trap.to_string(),
            None => root_cause(e),
        };
        Trap { reason, stderr: store.data().stderr.tail_since(stderr_mark) }
    }
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if !self.stderr.is_empty() {
            write!(f, "; guest stderr: {}", self.stderr)?;
        }
        Ok(())
    }
}

pub(crate) struct StageInstance {
    store: Store<StoreData>,
    plugin: Plugin,
}

impl StageInstance {
    pub(super) fn new(store: Store<StoreData>, plugin: Plugin) -> Self {
        StageInstance { store, plugin }
    }

    pub(super) async fn init(&mut self, config: &str) -> Result<(), LoadError> {
        let mark = self.store.data().stderr.mark();
        match self.plugin.sluice_pipeline_stage().call_init(&mut self.store, config).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refusal)) => Err(LoadError::InitRefused(refusal)),
            Err(e) => Err(LoadError::InitTrapped(Trap::new(&e, &self.store, mark))),
        }
    }

    /// Processes one message. An `Err` means the instance trapped and must be
    /// dropped.
    pub(crate) async fn process(&mut self, message: &Message) -> Result<Outcome, Trap> {
        let mark = self.store.data().stderr.mark();
        self.plugin
            .sluice_pipeline_stage()
            .call_process(&mut self.store, message)
            .await
            .map_err(|e| Trap::new(&e, &self.store, mark))
    }
}

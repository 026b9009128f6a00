//! What compiles, links and initialises a stage's component: made once per
//! pipeline, and kept for the run, so that a stage can be loaded again
//! ([`super::Reloader`]).

use crate::config::PipelineConfig;
use crate::engine::Instrumentation;
use crate::stage::{StagePre, StageSpec};
use crate::state::{StateScope, StateStore};
use std::sync::Arc;

/// What compiles and links a pipeline's stages: kept for the run, so that a
/// stage can be loaded again ([`Reloader`]).
pub(super) struct Loader {
    engine: wasmtime::Engine,
    linker: Arc<wasmtime::component::Linker<crate::stage::StoreData>>,
    inst: Instrumentation,
    limits: Vec<crate::limits::Limits>,
    /// Each stage's fuel burned, whatever component it runs.
    fuel: Vec<Arc<std::sync::atomic::AtomicU64>>,
    /// Each stage's component file as it was when last read.
    read: std::sync::Mutex<std::collections::HashMap<usize, FileStamp>>,
}

/// A file's modification time and length: enough to see that it changed.
pub(super) type FileStamp = Option<(std::time::SystemTime, u64)>;

/// `path` as it is now.
pub(super) fn stamp(path: &std::path::Path) -> FileStamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Loader {
    pub(super) fn new(
        engine: wasmtime::Engine,
        linker: Arc<wasmtime::component::Linker<crate::stage::StoreData>>,
        inst: Instrumentation,
        limits: Vec<crate::limits::Limits>,
    ) -> Self {
        let fuel = limits.iter().map(|_| Arc::default()).collect();
        Loader { engine, linker, inst, limits, fuel, read: Default::default() }
    }

    /// Fuel stage `index` burned, in all (0 unless a stage has a fuel limit).
    pub(super) fn fuel_used(&self, index: usize) -> Arc<std::sync::atomic::AtomicU64> {
        self.fuel[index].clone()
    }

    /// Stage `index`'s limits.
    pub(super) fn limits(&self, index: usize) -> crate::limits::Limits {
        self.limits[index]
    }

    /// Reads, compiles and links stage `index`'s component, on a blocking thread.
    pub(super) fn compile(
        &self,
        config: &PipelineConfig,
        index: usize,
    ) -> tokio::task::JoinHandle<Result<StagePre, crate::stage::LoadError>> {
        let stage = &config.stages()[index];
        let (engine, linker) = (self.engine.clone(), self.linker.clone());
        let path = config.resolve(stage.plugin());
        // Before it is read: a change from now on is one the run has not seen.
        self.read.lock().unwrap_or_else(|e| e.into_inner()).insert(index, stamp(&path));
        let spec = StageSpec {
            name: stage.name().into(),
            config: stage.config_json(),
            limits: self.limits[index],
            grants: config.stage_grants(index),
            inst: self.inst,
            fuel_used: self.fuel[index].clone(),
        };
        tokio::task::spawn_blocking(move || StagePre::load(&engine, &linker, &path, spec))
    }

    /// Stage `index`'s component file as it was when last read.
    pub(super) fn read(&self, index: usize) -> FileStamp {
        self.read.lock().unwrap_or_else(|e| e.into_inner()).get(&index).copied().flatten()
    }

    /// Gives stage `index` its share of the state store.
    pub(super) fn scope_state(
        &self,
        config: &PipelineConfig,
        index: usize,
        pre: &mut StagePre,
        store: &Arc<StateStore>,
    ) {
        let stage = &config.stages()[index];
        let keyed = stage.execution().partition_by.is_some();
        pre.set_state(StateScope::new(store.clone(), stage.name().into(), keyed, (&self.limits[index]).into()));
    }
}

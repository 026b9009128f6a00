//! A stage's component loaded: the file checked (`check`), compiled, linked
//! once into an `InstancePre`, and fresh instances made from it.

use super::budget::{self, Budget};
use super::check::{check_file_type, check_header, check_world, link_error};
use super::error::{LoadError, root_cause, trap};
use super::instance::StageInstance;
use super::store::StoreData;
use crate::bindings::PluginPre;
use crate::capabilities::http::StageHttp;
use crate::config::Grants;
use crate::engine::{CompileCache, Instrumentation};
use crate::limits::Limits;
use crate::state::StateScope;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

/// A stage's component, compiled and linked, ready to instantiate.
pub(crate) struct StagePre {
    name: Arc<str>,
    engine: Engine,
    pre: PluginPre<StoreData>,
    /// The stage's `config` table as JSON text, passed to `init`.
    config: String,
    limits: Limits,
    grants: Grants,
    inst: Instrumentation,
    /// Whether the compiled component came from the compile cache.
    from_cache: bool,
    /// Whether the component imports `sluice:pipeline/emit` / `state`.
    uses_emit: bool,
    uses_state: bool,
    /// The stage's view of the state store, given to every instance.
    state: Option<StateScope>,
    /// What the stage's instances share of outbound HTTP (its count of
    /// requests in flight).
    http: StageHttp,
    /// Fuel its instances burned, in all.
    fuel_used: Arc<std::sync::atomic::AtomicU64>,
}

/// What a stage is made of, besides its component file.
pub(crate) struct StageSpec {
    pub(crate) name: Arc<str>,
    /// The `config` table as JSON, for `init`.
    pub(crate) config: String,
    pub(crate) limits: Limits,
    pub(crate) grants: Grants,
    pub(crate) inst: Instrumentation,
    /// Where its instances add the fuel they burn (shared by the
    /// components a stage is reloaded with).
    pub(crate) fuel_used: Arc<std::sync::atomic::AtomicU64>,
}

impl StagePre {
    /// Reads, checks, compiles and links `path`. CPU-heavy (compilation): call
    /// it from a blocking thread.
    pub(crate) fn load(
        engine: &Engine,
        linker: &Linker<StoreData>,
        path: &Path,
        spec: StageSpec,
    ) -> Result<Self, LoadError> {
        check_file_type(path)?;
        let bytes = std::fs::read(path).map_err(|error| LoadError::Read { path: path.into(), error })?;
        check_header(path, &bytes)?;
        let (component, from_cache) = CompileCache::from_env()
            .component(engine, &bytes)
            .map_err(|e| LoadError::Invalid { path: path.into(), reason: root_cause(&e) })?;
        check_world(engine, path, &component)?;
        let imports =
            |interface: &str| component.component_type().imports(engine).any(|(name, _)| name.starts_with(interface));
        let (uses_emit, uses_state) = (imports("sluice:pipeline/emit"), imports("sluice:pipeline/state"));
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| link_error(path, &e))?;
        let pre =
            PluginPre::new(instance_pre).map_err(|e| LoadError::Link { path: path.into(), reason: root_cause(&e) })?;
        let StageSpec { name, config, limits, grants, inst, fuel_used } = spec;
        let http = StageHttp::new(grants.allow_http.iter().cloned(), &limits);
        Ok(StagePre {
            name,
            engine: engine.clone(),
            pre,
            config,
            limits,
            grants,
            inst,
            from_cache,
            uses_emit,
            uses_state,
            state: None,
            http,
            fuel_used,
        })
    }

    /// Whether the stage emits messages while processing (imports `emit`).
    pub(crate) fn uses_emit(&self) -> bool {
        self.uses_emit
    }

    /// Whether the stage keeps state (imports `state`).
    pub(crate) fn uses_state(&self) -> bool {
        self.uses_state
    }

    /// Gives every instance made from now on this view of the state store.
    pub(crate) fn set_state(&mut self, scope: StateScope) {
        self.state = Some(scope);
    }

    /// Whether the compiled component came from the compile cache.
    pub(crate) fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// The stage's name from the pipeline file.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The limits the stage runs under.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A fresh, initialised instance. Instantiation and `init` run guest code,
    /// under the (larger) start-up budget.
    pub(crate) async fn instantiate(&self) -> Result<StageInstance, LoadError> {
        let data = StoreData::new(&self.name, &self.limits, &self.grants, &self.http)
            .map_err(|e| LoadError::Grant(root_cause(&e)))?;
        let mut store = Store::new(&self.engine, data);
        let budget = Budget::start_up(&self.limits);
        budget::arm_store(&mut store, self.inst, budget);
        let plugin = match self.pre.instantiate_async(&mut store).await {
            Ok(plugin) => plugin,
            Err(e) => return Err(LoadError::InitTrapped(trap(&e, &mut store, 0, budget))),
        };
        let mut instance = StageInstance::new(store, plugin, self.limits, self.inst, self.fuel_used.clone());
        if let Some(scope) = &self.state {
            instance.set_state(scope.clone());
        }
        instance.init(&self.config, budget).await?;
        Ok(instance)
    }
}

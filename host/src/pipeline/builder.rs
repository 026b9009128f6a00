//! Config in, ready stages out, or every problem found.

use super::error::{BuildError, StageLoadError};
use super::events::Events;
use super::loader::Loader;
use super::reload::Reloader;
use super::runner::{NativeRunner, Runner};
use super::{BuiltStage, Pipeline};
use crate::config::{Allocator, PipelineConfig, StateBackend};
use crate::engine::memory::{self, StageMemory};
use crate::engine::{Instrumentation, Pool, new_engine};
use crate::limits::Limit;
use crate::stage::StagePre;
use crate::state::StateStore;
use std::sync::Arc;

pub(super) async fn build(config: PipelineConfig) -> Result<Pipeline, BuildError> {
    let (runners, state, loader) = load(&config, true).await?;
    let mut stages = Vec::new();
    let mut errors = Vec::new();
    for (index, runner) in runners.into_iter().enumerate() {
        let Runner::Wasm(pre) = &runner else {
            stages.push(BuiltStage { runner, exec: config.stages()[index].execution(), first: None, swaps: None });
            continue;
        };
        let exec = config.stages()[index].execution();
        if pre.uses_state() && exec.concurrency > 1 && exec.partition_by.is_none() {
            tracing::warn!(
                stage = config.stages()[index].name(),
                "runs {} messages at once on shared state: updates of one key can interleave; \
                 `partition_by = \"key\"` gives each key one owner",
                exec.concurrency
            );
        }
        // Instantiate once now so that a bad config is reported before any
        // input is read.
        match pre.instantiate().await {
            Ok(first) => stages.push(BuiltStage { runner, exec, first: Some(first), swaps: None }),
            // A durable store outlives runs: its state may be what makes `init` fail.
            Err(error) if pre.uses_state() && state.as_ref().is_some_and(|s| s.has_committed()) => {
                errors.push(StageLoadError::init_with_state(&config, index, error));
            }
            Err(error) => errors.push(StageLoadError::new(&config, index, error)),
        }
    }
    if !errors.is_empty() {
        return Err(BuildError::Stages(errors));
    }
    let events = Events::new(config.stages().iter().map(|s| s.name().to_string()));
    for index in 0..config.stages().len() {
        events.stage(index).watch_fuel(loader.fuel_used(index));
    }
    let (reloader, swaps) = Reloader::new(config.clone(), loader, state.clone());
    for (stage, swaps) in stages.iter_mut().zip(swaps) {
        stage.swaps = Some(swaps);
    }
    let taps = super::Taps::new(config.stages().iter().map(|s| s.name().to_string()));
    Ok(Pipeline { config, stages, events, state, reloader, given: Default::default(), taps })
}

/// A stage compiled by [`compile`].
#[derive(Debug, Clone)]
pub struct CompiledStage {
    /// The stage's name.
    pub stage: String,
    /// Its component file.
    pub plugin: std::path::PathBuf,
    /// Whether it was already in the compile cache.
    pub from_cache: bool,
}

/// Checks the config and compiles every WebAssembly stage into the compile
/// cache, without running any guest code: `sluice compile`, to make the first
/// run start fast.
pub async fn compile(config: &PipelineConfig) -> Result<Vec<CompiledStage>, BuildError> {
    let (runners, _, _) = load(config, false).await?;
    Ok(runners
        .iter()
        .zip(config.stages())
        .filter_map(|(runner, stage)| match runner {
            Runner::Wasm(pre) => Some(CompiledStage {
                stage: stage.name().to_string(),
                plugin: config.resolve(stage.plugin()),
                from_cache: pre.from_cache(),
            }),
            Runner::Native(_) => None,
        })
        .collect())
}

/// Validates the config, makes the engine, and compiles and links every
/// WebAssembly stage. Reports every stage that failed, not just the first.
/// With `open_state`, also opens the state store if a stage uses state.
async fn load(
    config: &PipelineConfig,
    open_state: bool,
) -> Result<(Vec<Runner>, Option<Arc<StateStore>>, Loader), BuildError> {
    config.validate()?;
    let limits: Vec<_> = (0..config.stages().len()).map(|i| config.stage_limits(i)).collect();
    // Fuel and epochs cost a little on every call: switch them on only if a
    // stage has a budget (the defaults do).
    let inst = Instrumentation {
        fuel: limits.iter().any(|l| l.fuel.is_some()),
        epochs: limits.iter().any(|l| l.timeout.is_some() || l.init_timeout.is_some()),
    };
    check_memory_budget(config, &limits)?;
    let pool = (config.engine().allocator == Allocator::Pooling).then(|| pool_size(config, &limits));
    let engine = new_engine(inst, pool).map_err(|e| {
        let hint = if pool.is_some() {
            " (if virtual memory is capped here, set `allocator = \"on-demand\"` under [engine])"
        } else {
            ""
        };
        BuildError::Engine(format!("{}{hint}", crate::stage::chain(&e)))
    })?;
    let linker = Arc::new(crate::stage::linker(&engine).map_err(|e| BuildError::Engine(e.to_string()))?);
    let loader = Loader::new(engine, linker, inst, limits);

    // Compiling is CPU-bound and can take seconds for large guests (Python,
    // JavaScript): compile every stage at once on blocking threads.
    let loads: Vec<_> = config
        .stages()
        .iter()
        .enumerate()
        .map(|(index, stage)| {
            if let Some(native) = stage.native_stage() {
                let native = Runner::Native(NativeRunner {
                    name: stage.name().into(),
                    limits: loader.limits(index),
                    stage: native.clone(),
                });
                return Loading::Ready(native);
            }
            Loading::Compiling(loader.compile(config, index))
        })
        .collect();

    let mut runners = Vec::new();
    let mut errors = Vec::new();
    for (index, load) in loads.into_iter().enumerate() {
        let load = match load {
            Loading::Ready(runner) => {
                runners.push(runner);
                continue;
            }
            Loading::Compiling(handle) => handle,
        };
        match load.await {
            Ok(Ok(pre)) => runners.push(Runner::Wasm(Arc::new(pre))),
            Ok(Err(error)) => errors.push(StageLoadError::new(config, index, error)),
            Err(join) => return Err(BuildError::Engine(format!("loading a stage panicked: {join}"))),
        }
    }
    if !errors.is_empty() {
        return Err(BuildError::Stages(errors));
    }
    let uses_state = runners.iter().any(|r| matches!(r, Runner::Wasm(pre) if pre.uses_state()));
    if !(open_state && uses_state) {
        return Ok((runners, None, loader));
    }
    let store = Arc::new(match config.state().backend {
        StateBackend::Memory => StateStore::memory(),
        StateBackend::Redb => match config.state_path() {
            Some(path) => {
                // The file is created at the first checkpoint, mid-run: a
                // directory that cannot hold it must stop the run before it
                // starts, not after it has written `.partial` files.
                if let Some(reason) = (!path.is_file()).then(|| crate::connect::cannot_create(&path)).flatten() {
                    let key = if config.state().path.is_some() { "[state] path" } else { "the default [state] path" };
                    let message = format!(
                        "{key}: cannot create the state file {}: {reason}. Create the directory, or set `path` \
                         under [state] to a file in a writable one",
                        path.display()
                    );
                    let error = crate::config::ConfigError::new(config.file(), None, None, message);
                    return Err(BuildError::Config(crate::config::ConfigErrors(vec![error])));
                }
                StateStore::open(&path, config.state().max_pending_bytes.as_u64() as usize)
            }
            None => StateStore::memory(),
        },
    });
    for (index, runner) in runners.iter_mut().enumerate() {
        if let Runner::Wasm(pre) = runner {
            let pre = Arc::get_mut(pre).expect("stages are not shared before the build ends");
            loader.scope_state(config, index, pre, &store);
        }
    }
    Ok((runners, Some(store), loader))
}

/// A stage being loaded.
enum Loading {
    Ready(Runner),
    Compiling(tokio::task::JoinHandle<Result<StagePre, crate::stage::LoadError>>),
}

/// Every instance the pipeline can have alive at once: `concurrency` per
/// stage, plus one each for the replacement made while a trapped instance is
/// still being dropped.
/// Refuses a pipeline whose stages' instances could use more memory at once
/// than `[engine] memory_budget` (default: the machine's memory).
fn check_memory_budget(config: &PipelineConfig, limits: &[crate::limits::Limits]) -> Result<(), BuildError> {
    let (budget, from_machine) = match config.engine().memory_budget {
        Some(Limit::Unlimited) => return Ok(()),
        Some(Limit::Max(budget)) => (budget.as_u64(), false),
        None => match memory::available() {
            Some(budget) => (budget, true),
            None => return Ok(()),
        },
    };
    let stages = config
        .stages()
        .iter()
        .zip(limits)
        .filter(|(s, _)| s.native_stage().is_none())
        .map(|(s, l)| StageMemory {
            stage: s.name().to_string(),
            concurrency: s.execution().concurrency,
            memory: l.memory as u64,
        })
        .collect();
    Ok(memory::check(stages, budget, from_machine)?)
}

fn pool_size(config: &PipelineConfig, limits: &[crate::limits::Limits]) -> Pool {
    let wasm = config.stages().iter().filter(|s| s.native_stage().is_none());
    // One more than `concurrency` covers a replacement made while a trapped
    // instance is still being dropped; an isolating stage also has the next
    // message's instance made ahead (`Slots`).
    let instances: usize =
        wasm.map(|s| s.execution()).map(|e| e.concurrency + 1 + usize::from(e.isolate)).sum::<usize>().max(1);
    Pool {
        instances: u32::try_from(instances).unwrap_or(u32::MAX),
        max_memory: limits.iter().map(|l| l.memory).max().unwrap_or(0),
    }
}

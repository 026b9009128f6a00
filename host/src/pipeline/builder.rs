//! Config in, ready stages out, or every problem found.

use super::error::{BuildError, StageLoadError};
use super::stats::Stats;
use super::{BuiltStage, Pipeline};
use crate::capabilities;
use crate::config::PipelineConfig;
use crate::engine::{Instrumentation, new_engine};
use crate::stage::{StagePre, StageSpec, StoreData};
use std::sync::Arc;
use wasmtime::component::Linker;

pub(super) async fn build(config: PipelineConfig) -> Result<Pipeline, BuildError> {
    config.validate()?;
    let limits: Vec<_> = (0..config.stages().len()).map(|i| config.stage_limits(i)).collect();
    // Fuel and epochs cost a little on every call: switch them on only if a
    // stage has a budget (the defaults do).
    let inst = Instrumentation {
        fuel: limits.iter().any(|l| l.fuel.is_some()),
        epochs: limits.iter().any(|l| l.timeout.is_some()),
    };
    let engine = new_engine(inst).map_err(|e| BuildError::Engine(e.to_string()))?;
    let mut linker = Linker::<StoreData>::new(&engine);
    capabilities::add_to_linker(&mut linker).map_err(|e| BuildError::Engine(e.to_string()))?;
    let linker = Arc::new(linker);

    // Compiling is CPU-bound and can take seconds for large guests (Python,
    // JavaScript): compile every stage at once on blocking threads.
    let loads: Vec<_> = config
        .stages()
        .iter()
        .enumerate()
        .map(|(index, stage)| {
            let (engine, linker) = (engine.clone(), linker.clone());
            let path = config.resolve(stage.plugin());
            let spec = StageSpec {
                name: stage.name().into(),
                config: stage.config_json(),
                limits: limits[index],
                grants: config.stage_grants(index),
                inst,
            };
            tokio::task::spawn_blocking(move || StagePre::load(&engine, &linker, &path, spec))
        })
        .collect();

    let mut stages = Vec::new();
    let mut errors = Vec::new();
    for (index, load) in loads.into_iter().enumerate() {
        let problem = |error| StageLoadError {
            stage: config.stages()[index].name().to_string(),
            location: config.stage_location(index),
            error,
        };
        let pre = match load.await {
            Ok(Ok(pre)) => Arc::new(pre),
            Ok(Err(e)) => {
                errors.push(problem(e));
                continue;
            }
            Err(join) => return Err(BuildError::Engine(format!("loading a stage panicked: {join}"))),
        };
        // Instantiate once now so that a bad config is reported before any
        // input is read.
        match pre.instantiate().await {
            Ok(first) => stages.push(BuiltStage { pre, exec: config.stages()[index].execution(), first }),
            Err(e) => errors.push(problem(e)),
        }
    }
    if !errors.is_empty() {
        return Err(BuildError::Stages(errors));
    }
    let stats = Arc::new(Stats::new(config.stages().iter().map(|s| s.name().to_string())));
    Ok(Pipeline { config, stages, stats })
}

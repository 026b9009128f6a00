//! Hot reload: a stage's component replaced while the pipeline runs.
//!
//! The new component is compiled, linked and its `init` run beside the
//! running one; only if all of that succeeds is it handed to the stage
//! task, which stops taking messages, lets those in flight finish (their
//! outputs leave as usual, in order), swaps, and takes messages again with
//! the new component. Nothing is lost, repeated or reordered: every message
//! runs once, through the old component or the new one, and leaves in the
//! order it came. A component that fails any step is refused with the
//! reason, and the running one goes on as if nothing happened.

use super::loader::{Loader, stamp};
use super::runner::Runner;
use crate::config::{Execution, PipelineConfig};
use crate::stage::StageInstance;
use crate::state::StateStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Swaps a stage's component while [`super::Pipeline::run`] goes on. Cheap
/// to clone; take it with [`super::Pipeline::reloader`] before the run.
#[derive(Clone)]
pub struct Reloader(Arc<Inner>);

struct Inner {
    config: PipelineConfig,
    loader: Loader,
    state: Option<Arc<StateStore>>,
    /// One per stage, to its task.
    swaps: Vec<mpsc::Sender<Swap>>,
    /// One reload at a time: two would race for the same stage.
    busy: tokio::sync::Mutex<()>,
}

/// A stage's component file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Plugin {
    /// The stage's name.
    pub stage: String,
    /// Its component file.
    pub path: std::path::PathBuf,
    /// Whether the file changed since the stage's component was read from it.
    pub changed: bool,
}

/// A new component for a stage task, ready to run.
pub(super) struct Swap {
    pub(super) runner: Runner,
    pub(super) exec: Execution,
    pub(super) first: StageInstance,
    /// Told once the stage runs the new component.
    pub(super) done: oneshot::Sender<()>,
}

/// A stage that now runs its new component.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Reloaded {
    /// The stage's name.
    pub stage: String,
    /// Compiling, linking and `init` of the new component.
    pub loaded_in: Duration,
    /// Waiting for the messages in flight to finish, and swapping.
    pub swapped_in: Duration,
}

/// Why a stage still runs its old component.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// No stage has that name.
    #[error("no stage is named `{stage}`; the stages are {known}")]
    UnknownStage {
        /// The name asked for.
        stage: String,
        /// The stages there are, listed.
        known: String,
    },
    /// The stage is a Rust function, not a component.
    #[error("stage `{0}` is a Rust function, not a component: there is nothing to reload")]
    Native(String),
    /// The new component failed to compile, link or initialise.
    #[error("stage `{stage}`: the new {plugin} was refused, the running one goes on: {reason}")]
    Refused {
        /// The stage's name.
        stage: String,
        /// The component file.
        plugin: String,
        /// What went wrong.
        reason: String,
    },
    /// The run is over (or has not started, and the pipeline was dropped).
    #[error("stage `{0}` is not running")]
    NotRunning(String),
}

impl Reloader {
    pub(super) fn new(
        config: PipelineConfig,
        loader: Loader,
        state: Option<Arc<StateStore>>,
    ) -> (Self, Vec<mpsc::Receiver<Swap>>) {
        let (swaps, receivers) = config.stages().iter().map(|_| mpsc::channel(1)).unzip();
        let inner = Inner { config, loader, state, swaps, busy: tokio::sync::Mutex::new(()) };
        (Reloader(Arc::new(inner)), receivers)
    }

    /// The stages whose component can be reloaded: their names, their
    /// files, and whether each file changed since the stage's component
    /// was read from it (a change to reload).
    pub fn plugins(&self) -> Vec<Plugin> {
        let Inner { config, loader, .. } = &*self.0;
        let stages = config.stages().iter().enumerate().filter(|(_, s)| s.native_stage().is_none());
        stages
            .map(|(index, s)| {
                let path = config.resolve(s.plugin());
                let changed = stamp(&path) != loader.read(index);
                Plugin { stage: s.name().to_string(), path, changed }
            })
            .collect()
    }

    /// Loads `stage`'s plugin file again and, if it compiles, links and
    /// initialises, has the stage swap to it once the messages in flight
    /// have finished.
    pub async fn reload(&self, stage: &str) -> Result<Reloaded, ReloadError> {
        let Inner { config, loader, state, swaps, busy } = &*self.0;
        let _one_at_a_time = busy.lock().await;
        let Some(index) = config.stages().iter().position(|s| s.name() == stage) else {
            let known: Vec<String> = config.stages().iter().map(|s| format!("`{}`", s.name())).collect();
            return Err(ReloadError::UnknownStage { stage: stage.to_string(), known: known.join(", ") });
        };
        if config.stages()[index].native_stage().is_some() {
            return Err(ReloadError::Native(stage.to_string()));
        }
        let refused = |reason: String| ReloadError::Refused {
            stage: stage.to_string(),
            plugin: config.stages()[index].plugin().display().to_string(),
            reason,
        };
        let started = Instant::now();
        let mut pre = loader
            .compile(config, index)
            .await
            .map_err(|e| refused(format!("loading panicked: {e}")))?
            .map_err(|e| refused(e.to_string()))?;
        if pre.uses_state() {
            let Some(store) = state else {
                return Err(refused(
                    "it keeps state, and this run was started without a state store: restart the pipeline to \
                     use it"
                        .into(),
                ));
            };
            loader.scope_state(config, index, &mut pre, store);
        }
        let exec = config.stages()[index].execution();
        let first = pre.instantiate().await.map_err(|e| refused(e.to_string()))?;
        let loaded_in = started.elapsed();

        let (done, swapped) = oneshot::channel();
        let swap = Swap { runner: Runner::Wasm(Arc::new(pre)), exec, first, done };
        let not_running = || ReloadError::NotRunning(stage.to_string());
        swaps[index].send(swap).await.map_err(|_| not_running())?;
        swapped.await.map_err(|_| not_running())?;
        Ok(Reloaded { stage: stage.to_string(), loaded_in, swapped_in: started.elapsed() - loaded_in })
    }
}

//! `PipelineConfig`: the pipeline file read and checked, or a pipeline built
//! in code; what it holds and how to change it. Paths are resolved in
//! `resolve`, and the whole is checked in `validate`.

use super::schema::{Document, default_shutdown_timeout, unplaced};
use super::sections::{DeadLetterConfig, EngineConfig, MetricsConfig, SinkConfig, SourceConfig, StateConfig};
use super::stage::StageConfig;
use super::{ConfigError, ConfigErrors, VERSION};
use crate::limits::LimitsConfig;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A whole pipeline: where messages come from, the stages they pass through in
/// order, where they go, and where the ones that fail go.
///
/// Read one from a file with [`PipelineConfig::from_file`], or build one in
/// code. Every config type is built one way: start from `new` (or
/// `Default`), then change it in place with `set_*` methods, which take
/// `&mut self` and return it so calls chain. The sections that are plain
/// data ([`SourceConfig`], [`StateConfig`], [`LimitsConfig`], ...) have
/// public fields, reached with `source_mut()`, `sink_mut()`, `state_mut()`,
/// or replaced whole with `set_limits`, `set_engine`. A stage configured in
/// place can be passed to [`Self::push_stage`] as it is:
///
/// ```
/// use sluice::{Format, Order, PipelineConfig, StageConfig};
/// let mut config = PipelineConfig::new();
/// config.set_input("in.txt").set_output("out.txt").set_dead_letter("dead.jsonl");
/// config.source_mut().format = Format::Lines;
/// config
///     .push_stage(StageConfig::new("enrich", "enrich.wasm").set_concurrency(8).set_order(Order::Unordered))
///     .push_stage(StageConfig::native("upper", |m: &sluice::Message| {
///         Ok(vec![sluice::Message { value: m.value.to_ascii_uppercase(), ..m.clone() }])
///     }));
/// ```
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub(super) version: Spanned<u32>,
    pub(super) source: SourceConfig,
    pub(super) sink: SinkConfig,
    pub(super) dead_letter: Option<DeadLetterConfig>,
    pub(super) limits: LimitsConfig,
    pub(super) shutdown_timeout: Duration,
    pub(super) engine: EngineConfig,
    pub(super) state: StateConfig,
    pub(super) metrics: MetricsConfig,
    pub(super) stages: Vec<StageConfig>,
    /// The file this came from; relative paths inside are relative to its directory.
    pub(super) file: Option<PathBuf>,
    pub(super) text: Option<String>,
    /// Whether the run adds to the output and dead-letter files instead of
    /// replacing them; a run option, not a pipeline-file key.
    append: bool,
}

impl PipelineConfig {
    /// An empty version-1 pipeline: stdin to stdout, no stages yet.
    pub fn new() -> Self {
        PipelineConfig {
            version: unplaced(VERSION),
            source: SourceConfig::default(),
            sink: SinkConfig::default(),
            dead_letter: None,
            limits: LimitsConfig::default(),
            shutdown_timeout: default_shutdown_timeout(),
            engine: EngineConfig::default(),
            state: StateConfig::default(),
            metrics: MetricsConfig::default(),
            stages: Vec::new(),
            file: None,
            text: None,
            append: false,
        }
    }

    /// Reads and checks a pipeline file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigErrors> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(Some(path), None, None, format!("cannot read the pipeline file: {e}"))])
        })?;
        Self::parse(&text, Some(path))
    }

    /// Parses and checks pipeline TOML. `file`, when given, names it in errors
    /// and anchors relative paths.
    pub fn parse(text: &str, file: Option<&Path>) -> Result<Self, ConfigErrors> {
        let doc: Document = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(file, Some(text), e.span(), super::explain::message(&e, text))])
        })?;
        let arrays = super::tables::arrays_for_tables(text);
        if !arrays.is_empty() {
            let errors =
                arrays.into_iter().map(|(span, message)| ConfigError::new(file, Some(text), Some(span), message));
            return Err(ConfigErrors(errors.collect()));
        }
        let Document { version, source, sink, dead_letter, limits, shutdown_timeout, engine, state, metrics, stages } =
            doc;
        let config = PipelineConfig {
            version,
            source,
            sink,
            dead_letter,
            limits,
            shutdown_timeout,
            engine,
            state,
            metrics,
            stages: stages.into_iter().map(StageConfig::from).collect(),
            file: file.map(Path::to_path_buf),
            text: Some(text.to_string()),
            append: false,
        };
        config.validate()?;
        Ok(config)
    }

    /// The pipeline file this came from.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Adds a stage at the end: a [`StageConfig`], or one being configured
    /// in place (`StageConfig::new(..).set_batch(1)`).
    pub fn push_stage(&mut self, stage: impl Into<StageConfig>) -> &mut Self {
        self.stages.push(stage.into());
        self
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[StageConfig] {
        &self.stages
    }

    /// Sets the source file (`-` for standard input).
    pub fn set_input(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.source.set_path(path.into());
        self
    }

    /// Sets the sink file (`-` for standard output).
    pub fn set_output(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.sink.set_path(path.into());
        self
    }

    /// Sets the dead-letter file.
    pub fn set_dead_letter(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.dead_letter = Some(DeadLetterConfig::file(path.into()));
        self
    }

    /// The source settings.
    pub fn source(&self) -> &SourceConfig {
        &self.source
    }

    /// The source settings, to change before building (e.g. from a CLI flag).
    pub fn source_mut(&mut self) -> &mut SourceConfig {
        &mut self.source
    }

    /// The dead-letter settings, if the file has them.
    pub fn dead_letters(&self) -> Option<&DeadLetterConfig> {
        self.dead_letter.as_ref()
    }

    /// Where outputs go.
    pub fn sink(&self) -> &SinkConfig {
        &self.sink
    }

    /// The sink settings, to change before building.
    pub fn sink_mut(&mut self) -> &mut SinkConfig {
        &mut self.sink
    }

    /// The state settings.
    pub fn state(&self) -> &StateConfig {
        &self.state
    }

    /// The state settings, to change before building.
    pub fn state_mut(&mut self) -> &mut StateConfig {
        &mut self.state
    }

    /// Where `sluice run` serves its metrics (`[metrics]`).
    pub fn metrics(&self) -> &MetricsConfig {
        &self.metrics
    }

    /// Engine-wide settings.
    pub fn engine(&self) -> EngineConfig {
        self.engine
    }

    /// Sets the engine-wide settings.
    pub fn set_engine(&mut self, engine: EngineConfig) -> &mut Self {
        self.engine = engine;
        self
    }

    /// The limits for every stage that does not set its own.
    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Sets the limits for every stage that does not set its own.
    pub fn set_limits(&mut self, limits: LimitsConfig) -> &mut Self {
        self.limits = limits;
        self
    }

    /// How long messages already read may take to drain after a shutdown signal.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// Sets how long messages already read may take to drain after a shutdown signal.
    pub fn set_shutdown_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// With `true`, the run keeps what the output and dead-letter files hold
    /// and writes its lines after it, e.g. to resume an interrupted run with
    /// [`SourceConfig::skip_lines`]. The files are still replaced only when
    /// the run succeeds, so a failed run leaves them as they were.
    pub fn set_append(&mut self, append: bool) -> &mut Self {
        self.append = append;
        self
    }

    /// Whether the run appends to its output files (see [`Self::set_append`]).
    pub fn append(&self) -> bool {
        self.append
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self::new()
    }
}

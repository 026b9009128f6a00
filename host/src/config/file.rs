use super::{ConfigError, ConfigErrors, VERSION};
use crate::limits::{Limits, LimitsConfig};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A whole pipeline: where messages come from, the stages they pass through in
/// order, where they go, and where the ones that fail go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    version: Spanned<u32>,
    #[serde(default)]
    source: SourceConfig,
    #[serde(default)]
    sink: SinkConfig,
    #[serde(default)]
    dead_letter: Option<DeadLetterConfig>,
    /// Limits for every stage that does not set its own.
    #[serde(default)]
    limits: LimitsConfig,
    /// After a shutdown signal, how long messages already read may take to drain.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde_compat")]
    shutdown_timeout: std::time::Duration,
    /// How stage instances are allocated.
    #[serde(default)]
    engine: EngineConfig,
    /// Where stages' state is kept, and how often it is checkpointed.
    #[serde(default)]
    state: StateConfig,
    #[serde(default)]
    stages: Vec<StageConfig>,
    /// The file this came from; relative paths inside are relative to its directory.
    #[serde(skip)]
    file: Option<PathBuf>,
    #[serde(skip)]
    text: Option<String>,
    /// Whether the run adds to the output and dead-letter files instead of
    /// replacing them; a run option, not a pipeline-file key.
    #[serde(skip)]
    append: bool,
}

/// Where messages come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A file to read; standard input when absent or `-`.
    pub path: Option<Spanned<PathBuf>>,
    /// How the input is split into messages.
    #[serde(default)]
    pub format: Format,
    /// The longest line accepted, in bytes; longer lines are dead-lettered.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Lines to skip at the start, e.g. to resume after an interrupted run.
    /// Line numbers in dead letters still count them.
    #[serde(default)]
    pub skip_lines: u64,
}

fn default_max_line_bytes() -> usize {
    16 << 20
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig { path: None, format: Format::default(), max_line_bytes: default_max_line_bytes(), skip_lines: 0 }
    }
}

/// Where stages' state is kept, and how often it is checkpointed. Used only
/// if a stage imports `sluice:pipeline/state`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The store: `redb` (a file, durable) or `memory` (gone with the run).
    #[serde(default)]
    pub backend: StateBackend,
    /// The store file; default `<pipeline stem>.state.redb` beside the pipeline file.
    pub path: Option<PathBuf>,
    /// A checkpoint after this many input messages...
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// ...or this long, whichever comes first.
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde_compat")]
    pub checkpoint_interval: std::time::Duration,
    /// Bytes of state written but not yet committed that the pipeline holds
    /// in memory: a checkpoint starts when half of it is used, and a write
    /// that would pass it is a `limit` breach.
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: bytesize::ByteSize,
}

fn default_checkpoint_every() -> u64 {
    10_000
}

fn default_checkpoint_interval() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

fn default_max_pending_bytes() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(256)
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: StateBackend::default(),
            path: None,
            checkpoint_every: default_checkpoint_every(),
            checkpoint_interval: default_checkpoint_interval(),
            max_pending_bytes: default_max_pending_bytes(),
        }
    }
}

/// Where state is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// An embedded redb file: state and checkpoints survive a crash.
    #[default]
    Redb,
    /// In memory: for tests and throwaway runs. No checkpoints.
    Memory,
}

/// Engine-wide settings.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Where instances' memories, tables and stacks come from.
    #[serde(default)]
    pub allocator: Allocator,
    /// Memory all stages' instances may use at once (`concurrency ×
    /// limits.memory`, summed), checked when the pipeline is built. Default:
    /// the machine's memory (or its cgroup's limit); `"unlimited"` to skip.
    #[serde(default)]
    pub memory_budget: Option<crate::limits::Limit<bytesize::ByteSize>>,
}

/// Where instances' memories, tables and stacks come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// Slots reserved up front, sized from the pipeline (every stage's
    /// concurrency), and reused: instantiation is about twice as fast.
    #[default]
    Pooling,
    /// Allocated per instance. For hosts that cap virtual memory
    /// (`ulimit -v`), which the pool's reservations can exceed.
    OnDemand,
}

/// Where messages that pass every stage go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// A file to write (atomically, when the run completes); standard output when absent or `-`.
    pub path: Option<PathBuf>,
    /// How messages are written.
    #[serde(default)]
    pub format: Format,
    /// A sink whose writes are seen as they happen (standard output) hands
    /// on what it holds whenever the pipeline has nothing more for it, and
    /// at least this often while it is busy.
    #[serde(default = "default_flush_interval", with = "humantime_serde_compat")]
    pub flush_interval: std::time::Duration,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig { path: None, format: Format::default(), flush_interval: default_flush_interval() }
    }
}

/// Flink's buffer timeout: a busy sink still delivers within this.
fn default_flush_interval() -> std::time::Duration {
    std::time::Duration::from_millis(100)
}

/// Where messages that a stage rejects, or that trap a stage, go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// A JSON-lines file, one record per failed message (stage, reason, message).
    pub path: PathBuf,
}

/// How a stream of bytes is split into messages, and joined back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON document per line. Input lines that are not JSON are
    /// dead-lettered; blank lines are skipped.
    #[default]
    Jsonl,
    /// One message per line, bytes as they are.
    Lines,
}

/// One stage: a component and its settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    name: Spanned<String>,
    plugin: Spanned<PathBuf>,
    #[serde(default)]
    config: toml::Table,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default = "no_grants")]
    grants: Spanned<Grants>,
    #[serde(default = "one")]
    concurrency: Spanned<usize>,
    #[serde(default)]
    order: Option<Order>,
    #[serde(default)]
    partition_by: Option<Spanned<PartitionBy>>,
    #[serde(default = "default_buffer")]
    buffer: Spanned<usize>,
    #[serde(default)]
    retries: RetryConfig,
    /// Messages handed to the stage per call, at most; `None` for the default.
    #[serde(default)]
    batch: Option<Spanned<usize>>,
    /// A fresh instance for every message: nothing a message leaves in the
    /// instance's memory is seen by the next one.
    #[serde(default)]
    isolate: bool,
    /// A fresh instance after this many messages (e.g. a guest that leaks).
    #[serde(default)]
    recycle_after: Option<Spanned<u64>>,
    /// How long one batch call may take: batches shrink until a call takes
    /// about this long, so a finished message waits at most about this long
    /// for its batch-mates.
    #[serde(default = "default_batch_window", with = "humantime_serde_compat")]
    batch_window: std::time::Duration,
    /// What happens to emitted messages if the stage then fails the input.
    #[serde(default)]
    emit: EmitMode,
    /// Set for stages built in code with [`StageConfig::native`].
    #[serde(skip)]
    native: Option<crate::stage::NativeStage>,
}

/// The batch size of a stage that does not set one. Batches only take
/// messages that are already waiting, so batching adds no latency.
const DEFAULT_BATCH: usize = 64;

/// A call's crossing into WebAssembly costs about a microsecond
/// (docs/benchmarks.md): batching pays while messages take microseconds, and
/// saves under 0.1% once a call takes a millisecond. So a batch grows until
/// a call takes about 1 ms, and no finished output waits much longer.
fn default_batch_window() -> std::time::Duration {
    std::time::Duration::from_millis(1)
}

fn default_shutdown_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn one() -> Spanned<usize> {
    Spanned::new(0..0, 1)
}

fn default_buffer() -> Spanned<usize> {
    Spanned::new(0..0, 64)
}

/// In which order a stage's outputs leave it when it runs several messages at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// In input order (a reorder buffer holds results that finish early).
    #[default]
    Ordered,
    /// As soon as each is done.
    Unordered,
}

/// What a keyed stage partitions by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionBy {
    /// The message key: messages with the same key are processed one at a
    /// time, in order; different keys in parallel. Messages without a key
    /// form one partition.
    Key,
}

/// How a stage retries messages it reports as `transient`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt; 0 dead-letters transient errors at once.
    #[serde(default = "default_max_retries")]
    pub max: u32,
    /// The first delay; each retry doubles it, with jitter.
    #[serde(default = "default_backoff", with = "humantime_serde_compat")]
    pub backoff: std::time::Duration,
    /// The longest delay.
    #[serde(default = "default_max_backoff", with = "humantime_serde_compat")]
    pub max_backoff: std::time::Duration,
}

fn default_max_retries() -> u32 {
    3
}

fn default_backoff() -> std::time::Duration {
    std::time::Duration::from_millis(100)
}

fn default_max_backoff() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { max: default_max_retries(), backoff: default_backoff(), max_backoff: default_max_backoff() }
    }
}

/// Durations as text: `"100ms"`, `"2s"`.
mod humantime_serde_compat {
    use serde::Deserialize;

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("expected a duration such as \"100ms\" or \"2s\": {e}")))
    }
}

/// How a stage runs its messages: concurrency, order, retries, buffering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution {
    /// Messages in flight at once, each in its own instance.
    pub concurrency: usize,
    /// Output order.
    pub order: Order,
    /// Keyed processing, if set.
    pub partition_by: Option<PartitionBy>,
    /// Messages buffered in front of the stage.
    pub buffer: usize,
    /// Retries of transient errors.
    pub retries: RetryConfig,
    /// Messages per guest call, at most (through `process-batch` when more
    /// than one is waiting).
    pub batch: usize,
    /// A fresh instance for every message.
    pub isolate: bool,
    /// A fresh instance after this many messages; `None`: only when needed.
    pub recycle_after: Option<u64>,
    /// How long one batch call may take (batches adapt to it).
    pub batch_window: std::time::Duration,
    /// When emitted messages go downstream.
    pub emit: EmitMode,
}

/// When messages a stage emits while processing an input go downstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmitMode {
    /// At once (waiting while the next stage is full). If the stage then
    /// fails the input, they were already delivered. A stage that is
    /// `ordered` with `concurrency > 1` holds them until the message's turn.
    #[default]
    Immediate,
    /// Held until the stage returns, then sent ahead of its outputs; dropped
    /// with the input if it fails.
    OnSuccess,
}

fn no_grants() -> Spanned<Grants> {
    Spanned::new(0..0, Grants::default())
}

/// Authority a stage gets beyond computing on its messages. By default, none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Host directories the stage may read (never write), keyed by the
    /// absolute path the stage sees: `read_dirs = { "/lookup" = "data/lookup" }`.
    /// Host paths are relative to the pipeline file.
    #[serde(default)]
    pub read_dirs: BTreeMap<String, PathBuf>,
    /// Environment variables the stage sees, with their values. Nothing of the
    /// host's environment is passed on otherwise.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Authorities the stage may send HTTP requests to through `wasi:http`:
    /// `"host:port"`, or `"host"` for the scheme's default port.
    #[serde(default)]
    pub allow_http: Vec<String>,
}

impl StageConfig {
    /// A stage named `name` running the component at `plugin`.
    pub fn new(name: impl Into<String>, plugin: impl Into<PathBuf>) -> Self {
        StageConfig {
            name: Spanned::new(0..0, name.into()),
            plugin: Spanned::new(0..0, plugin.into()),
            config: toml::Table::new(),
            limits: LimitsConfig::default(),
            grants: no_grants(),
            concurrency: one(),
            order: None,
            partition_by: None,
            buffer: default_buffer(),
            retries: RetryConfig::default(),
            batch: None,
            isolate: false,
            recycle_after: None,
            batch_window: default_batch_window(),
            emit: EmitMode::default(),
            native: None,
        }
    }

    /// A stage named `name` that is a Rust function run in the host process,
    /// for pipelines built in code. It gets the pipeline's ordering,
    /// concurrency, retries, output caps and dead letters, but no sandbox:
    /// it is trusted code. A panic loses only the message it happened on.
    ///
    /// ```
    /// let upper = sluice::StageConfig::native("upper", |m: &sluice::Message| {
    ///     Ok(vec![sluice::Message { value: m.value.to_ascii_uppercase(), ..m.clone() }])
    /// });
    /// ```
    pub fn native(
        name: impl Into<String>,
        f: impl Fn(&crate::Message) -> Result<Vec<crate::Message>, crate::StageError> + Send + Sync + 'static,
    ) -> Self {
        let mut stage = StageConfig::new(name, "<native>");
        stage.native = Some(crate::stage::NativeStage::new(f));
        stage
    }

    /// The function of a stage made with [`StageConfig::native`].
    pub(crate) fn native_stage(&self) -> Option<&crate::stage::NativeStage> {
        self.native.as_ref()
    }

    /// Sets when emitted messages go downstream.
    pub fn with_emit(mut self, emit: EmitMode) -> Self {
        self.emit = emit;
        self
    }

    /// Hands the stage up to `n` waiting messages per call.
    pub fn with_batch(mut self, n: usize) -> Self {
        self.batch = Some(Spanned::new(0..0, n));
        self
    }

    /// Whether the pipeline file (or code) sets `batch`.
    pub fn batch_is_set(&self) -> bool {
        self.batch.is_some()
    }

    /// Runs every message in a fresh instance.
    pub fn with_isolation(mut self, isolate: bool) -> Self {
        self.isolate = isolate;
        self
    }

    /// Replaces each instance after `n` messages.
    pub fn with_recycle_after(mut self, n: u64) -> Self {
        self.recycle_after = Some(Spanned::new(0..0, n));
        self
    }

    /// Sets the stage's own limits (unset ones fall back to the pipeline's, then the defaults).
    pub fn with_limits(mut self, limits: LimitsConfig) -> Self {
        self.limits = limits;
        self
    }

    /// Grants the stage authority (directories, environment).
    pub fn with_grants(mut self, grants: Grants) -> Self {
        self.grants = Spanned::new(0..0, grants);
        self
    }

    /// The stage's grants, as written.
    pub fn grants(&self) -> &Grants {
        self.grants.get_ref()
    }

    /// Lets up to `n` messages be in flight at once.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = Spanned::new(0..0, n);
        self
    }

    /// Sets the output order.
    pub fn with_order(mut self, order: Order) -> Self {
        self.order = Some(order);
        self
    }

    /// Processes messages keyed by `partition_by`.
    pub fn with_partition_by(mut self, partition_by: PartitionBy) -> Self {
        self.partition_by = Some(Spanned::new(0..0, partition_by));
        self
    }

    /// Sets the retry policy for transient errors.
    pub fn with_retries(mut self, retries: RetryConfig) -> Self {
        self.retries = retries;
        self
    }

    /// How the stage runs its messages.
    pub fn execution(&self) -> Execution {
        Execution {
            concurrency: *self.concurrency.get_ref(),
            order: self.order.unwrap_or_default(),
            partition_by: self.partition_by.as_ref().map(|p| *p.get_ref()),
            buffer: *self.buffer.get_ref(),
            retries: self.retries,
            batch: self.batch.as_ref().map_or_else(|| self.default_batch(), |b| *b.get_ref()),
            isolate: self.isolate,
            recycle_after: self.recycle_after.as_ref().map(|n| *n.get_ref()),
            batch_window: self.batch_window,
            emit: self.emit,
        }
    }

    /// One message per call when messages run concurrently (each waits on
    /// its own I/O), in keyed mode, or isolated; else [`DEFAULT_BATCH`].
    fn default_batch(&self) -> usize {
        let single = *self.concurrency.get_ref() > 1 || self.partition_by.is_some() || self.isolate;
        if single { 1 } else { DEFAULT_BATCH }
    }

    /// Sets the settings handed to the stage's `init`.
    pub fn with_config(mut self, config: toml::Table) -> Self {
        self.config = config;
        self
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// The component file, as written.
    pub fn plugin(&self) -> &Path {
        self.plugin.get_ref()
    }

    /// The settings table, as JSON text for `init`. TOML datetimes become strings.
    pub fn config_json(&self) -> String {
        fn to_json(v: &toml::Value) -> serde_json::Value {
            match v {
                toml::Value::String(s) => s.clone().into(),
                toml::Value::Integer(i) => (*i).into(),
                toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into),
                toml::Value::Boolean(b) => (*b).into(),
                toml::Value::Datetime(d) => d.to_string().into(),
                toml::Value::Array(a) => a.iter().map(to_json).collect(),
                toml::Value::Table(t) => t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect(),
            }
        }
        let object: serde_json::Map<_, _> = self.config.iter().map(|(k, v)| (k.clone(), to_json(v))).collect();
        serde_json::Value::Object(object).to_string()
    }
}

impl PipelineConfig {
    /// An empty version-1 pipeline: stdin to stdout, no stages yet.
    pub fn new() -> Self {
        PipelineConfig {
            version: Spanned::new(0..0, VERSION),
            source: SourceConfig::default(),
            sink: SinkConfig::default(),
            dead_letter: None,
            limits: LimitsConfig::default(),
            shutdown_timeout: default_shutdown_timeout(),
            engine: EngineConfig::default(),
            state: StateConfig::default(),
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
        let mut config: PipelineConfig = toml::from_str(text).map_err(|e| {
            let mut message = e.message().trim_end().to_string();
            if message == "missing field `version`" {
                message.push_str(": add `version = 1` at the top of the file");
            }
            ConfigErrors(vec![ConfigError::new(file, Some(text), e.span(), message)])
        })?;
        let arrays = super::tables::arrays_for_tables(text);
        if !arrays.is_empty() {
            let errors =
                arrays.into_iter().map(|(span, message)| ConfigError::new(file, Some(text), Some(span), message));
            return Err(ConfigErrors(errors.collect()));
        }
        config.file = file.map(Path::to_path_buf);
        config.text = Some(text.to_string());
        config.validate()?;
        Ok(config)
    }

    /// The limits stage `index` runs under.
    pub fn stage_limits(&self, index: usize) -> Limits {
        self.stages[index].limits.or(&self.limits).resolve()
    }

    /// The state settings.
    pub fn state(&self) -> &StateConfig {
        &self.state
    }

    /// The state settings, to change before building.
    pub fn state_mut(&mut self) -> &mut StateConfig {
        &mut self.state
    }

    /// The state store file: as configured, or `<stem>.state.redb` beside
    /// the pipeline file. `None` for a pipeline built in code that sets no
    /// path: its state is kept in memory.
    pub fn state_path(&self) -> Option<PathBuf> {
        match (&self.state.path, self.file.as_deref().and_then(Path::file_stem)) {
            (Some(p), _) => Some(self.resolve(p)),
            (None, Some(stem)) => Some(self.base_dir().join(format!("{}.state.redb", stem.to_string_lossy()))),
            (None, None) => None,
        }
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

    /// Sets the limits for every stage that does not set its own.
    pub fn set_limits(&mut self, limits: LimitsConfig) -> &mut Self {
        self.limits = limits;
        self
    }

    /// How long messages already read may take to drain after a shutdown signal.
    pub fn shutdown_timeout(&self) -> std::time::Duration {
        self.shutdown_timeout
    }

    /// Stage `index`'s grants with host paths resolved against [`Self::base_dir`].
    pub fn stage_grants(&self, index: usize) -> Grants {
        let mut grants = self.stages[index].grants.get_ref().clone();
        for host in grants.read_dirs.values_mut() {
            *host = self.resolve(host);
        }
        grants
    }

    /// Adds a stage at the end.
    pub fn push_stage(&mut self, stage: StageConfig) -> &mut Self {
        self.stages.push(stage);
        self
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[StageConfig] {
        &self.stages
    }

    /// The source settings.
    pub fn source(&self) -> &SourceConfig {
        &self.source
    }

    /// The source settings, to change before building (e.g. from a CLI flag).
    pub fn source_mut(&mut self) -> &mut SourceConfig {
        &mut self.source
    }

    /// The sink settings.
    pub fn sink(&self) -> &SinkConfig {
        &self.sink
    }

    /// The sink settings, to change before building.
    pub fn sink_mut(&mut self) -> &mut SinkConfig {
        &mut self.sink
    }

    /// Sets the dead-letter file.
    pub fn set_dead_letter(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.dead_letter = Some(DeadLetterConfig { path: path.into() });
        self
    }

    /// The pipeline file this came from.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The directory relative paths in the file are resolved against: the
    /// pipeline file's directory, or the current directory.
    pub fn base_dir(&self) -> PathBuf {
        match self.file.as_deref().and_then(Path::parent) {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// `path` resolved against the pipeline file's directory, once: `x.wasm`
    /// beside `p.toml` stays `x.wasm`, and `./x.wasm` beside `./p.toml` is
    /// `./x.wasm`, not `././x.wasm` (messages show paths as the user wrote them).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        let dir = self.file.as_deref().and_then(Path::parent).unwrap_or(Path::new(""));
        // `components` drops every `.` but a leading one.
        dir.join(path).components().collect()
    }

    /// The input file, or `None` for standard input.
    pub fn input_path(&self) -> Option<PathBuf> {
        let p = self.source.path.as_ref()?.get_ref();
        (p.as_os_str() != "-").then(|| self.resolve(p))
    }

    /// The output file, or `None` for standard output.
    pub fn output_path(&self) -> Option<PathBuf> {
        let p = self.sink.path.as_ref()?;
        (p.as_os_str() != "-").then(|| self.resolve(p))
    }

    /// The dead-letter file: as configured, or `<stem>.dead-letter.jsonl`
    /// beside the pipeline file (`dead-letter.jsonl` without one).
    pub fn dead_letter_path(&self) -> PathBuf {
        match &self.dead_letter {
            Some(d) => self.resolve(&d.path),
            None => {
                let stem = self.file.as_deref().and_then(Path::file_stem).map(|s| s.to_string_lossy().into_owned());
                let name = stem.map_or_else(|| "dead-letter.jsonl".to_string(), |s| format!("{s}.dead-letter.jsonl"));
                self.base_dir().join(name)
            }
        }
    }

    /// Checks what deserialisation cannot, collecting every problem.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut err = |span: std::ops::Range<usize>, message: String| {
            errors.push(ConfigError::new(self.file.as_deref(), self.text.as_deref(), Some(span), message));
        };
        if *self.version.get_ref() != VERSION {
            err(
                self.version.span(),
                format!("unsupported version {}: this sluice reads version {VERSION}", self.version.get_ref()),
            );
        }
        if self.stages.is_empty() {
            err(0..0, "no stages: add at least one [[stages]] table with a `name` and a `plugin`".into());
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let name = stage.name.get_ref().as_str();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                err(
                    stage.name.span(),
                    format!("stage name `{name}` must be non-empty ASCII letters, digits, `-` or `_`"),
                );
            }
            if let Some(first) = seen.insert(name, i) {
                err(
                    stage.name.span(),
                    format!("stage name `{name}` is used twice (stages {} and {})", first + 1, i + 1),
                );
            }
            let plugin = self.resolve(stage.plugin.get_ref());
            // A path that exists but is not a file (a directory, a FIFO) is
            // named as such when the stage is loaded.
            let missing = std::fs::metadata(&plugin).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
            if stage.native.is_none() && missing {
                err(stage.plugin.span(), format!("stage `{name}`: plugin file {} not found", plugin.display()));
            }
            for (guest, host) in &stage.grants.get_ref().read_dirs {
                let host = self.resolve(host);
                if !guest.starts_with('/') {
                    err(
                        stage.grants.span(),
                        format!("stage `{name}`: read_dirs key `{guest}` must be an absolute path, e.g. `/data`"),
                    );
                }
                if !host.is_dir() {
                    err(
                        stage.grants.span(),
                        format!("stage `{name}`: read_dirs `{guest}`: directory {} not found", host.display()),
                    );
                }
            }
            if *stage.concurrency.get_ref() == 0 {
                err(stage.concurrency.span(), format!("stage `{name}`: concurrency must be at least 1"));
            }
            if *stage.buffer.get_ref() == 0 {
                err(stage.buffer.span(), format!("stage `{name}`: buffer must be at least 1"));
            }
            if let Some(n) = stage.recycle_after.as_ref().filter(|n| *n.get_ref() == 0) {
                err(n.span(), format!("stage `{name}`: recycle_after must be at least 1 (or left out)"));
            }
            if let Some(batch) = &stage.batch {
                if *batch.get_ref() == 0 {
                    err(batch.span(), format!("stage `{name}`: batch must be at least 1"));
                }
                if *batch.get_ref() > 1 && stage.isolate {
                    err(
                        batch.span(),
                        format!("stage `{name}`: `isolate = true` runs each message alone; remove `batch`"),
                    );
                }
                if *batch.get_ref() > 1 && stage.partition_by.is_some() {
                    err(
                        batch.span(),
                        format!("stage `{name}`: keyed stages run one message per key at a time; remove `batch`"),
                    );
                }
            }
            if let (Some(p), Some(_)) = (&stage.partition_by, stage.order) {
                err(p.span(), format!("stage `{name}`: `partition_by` sets per-key order; remove `order`"));
            }
            for key in stage.grants.get_ref().env.keys() {
                if key.is_empty() || key.contains('=') {
                    err(
                        stage.grants.span(),
                        format!("stage `{name}`: env name `{key}` must be non-empty and contain no `=`"),
                    );
                }
            }
        }
        // Two outputs renamed onto one path would silently lose one of them.
        let dead = self.dead_letter_path();
        let output = self.output_path();
        let same = |a: &Path, b: &Path| {
            a == b || std::fs::canonicalize(a).ok().zip(std::fs::canonicalize(b).ok()).is_some_and(|(a, b)| a == b)
        };
        if output.as_deref().is_some_and(|o| same(o, &dead)) {
            err(
                0..0,
                format!("the sink and the dead-letter file are both {}: give them different paths", dead.display()),
            );
        }
        if let (Some(input), Some(output)) = (self.input_path(), &output) {
            if same(&input, output) {
                err(0..0, format!("the sink would overwrite the source {}: give it another path", input.display()));
            }
        }
        for (what, path) in [("sink", output.as_deref()), ("dead-letter file", Some(dead.as_path()))] {
            if let Some(path) = path.filter(|p| p.is_dir()) {
                err(0..0, format!("the {what} {} is a directory: give a file path", path.display()));
            }
        }
        if self.source.max_line_bytes == 0 {
            err(0..0, "source.max_line_bytes must be at least 1".into());
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
    }

    /// Where stage `index` is declared, for error messages: `file:line:col`.
    pub(crate) fn stage_location(&self, index: usize) -> String {
        let stage = &self.stages[index];
        ConfigError::new(self.file.as_deref(), self.text.as_deref(), Some(stage.name.span()), "")
            .to_string()
            .trim_end_matches(": ")
            .to_string()
    }

    /// Overrides the source file (`-` for standard input).
    pub fn set_input(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.source.path = Some(Spanned::new(0..0, path.into()));
        self
    }

    /// Overrides the sink file (`-` for standard output).
    pub fn set_output(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.sink.path = Some(path.into());
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

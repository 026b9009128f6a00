//! One `[[stages]]` table: a component and how it runs.

use crate::limits::LimitsConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// One stage: a component and its settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub(super) name: Spanned<String>,
    pub(super) plugin: Spanned<PathBuf>,
    #[serde(default)]
    pub(super) config: toml::Table,
    #[serde(default)]
    pub(super) limits: LimitsConfig,
    #[serde(default = "no_grants")]
    pub(super) grants: Spanned<Grants>,
    #[serde(default = "one")]
    pub(super) concurrency: Spanned<usize>,
    #[serde(default)]
    pub(super) order: Option<Order>,
    #[serde(default)]
    pub(super) partition_by: Option<Spanned<PartitionBy>>,
    #[serde(default = "default_buffer")]
    pub(super) buffer: Spanned<usize>,
    #[serde(default)]
    pub(super) retries: RetryConfig,
    /// Messages handed to the stage per call, at most; `None` for the default.
    #[serde(default)]
    pub(super) batch: Option<Spanned<usize>>,
    /// A fresh instance for every message: nothing a message leaves in the
    /// instance's memory is seen by the next one.
    #[serde(default)]
    pub(super) isolate: bool,
    /// A fresh instance after this many messages (e.g. a guest that leaks).
    #[serde(default)]
    pub(super) recycle_after: Option<Spanned<u64>>,
    /// How long one batch call may take: batches shrink until a call takes
    /// about this long, so a finished message waits at most about this long
    /// for its batch-mates.
    #[serde(default = "default_batch_window", with = "humantime_serde_compat")]
    pub(super) batch_window: std::time::Duration,
    /// What happens to emitted messages if the stage then fails the input.
    #[serde(default)]
    pub(super) emit: EmitMode,
    /// Set for stages built in code with [`StageConfig::native`].
    #[serde(skip)]
    pub(super) native: Option<crate::stage::NativeStage>,
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

pub(super) fn default_shutdown_timeout() -> std::time::Duration {
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
pub(super) mod humantime_serde_compat {
    use serde::Deserialize;

    pub(in crate::config) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<std::time::Duration, D::Error> {
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

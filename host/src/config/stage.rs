//! One stage: a component, or a Rust function for pipelines built in code,
//! and how it runs.

use super::execution::{EmitMode, Execution, Order, PartitionBy, RetryConfig};
use super::grants::Grants;
use super::schema::{StageTable, unplaced};
use crate::bindings::{Message, StageError};
use crate::limits::LimitsConfig;
use crate::native::NativeStage;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One stage: a component and its settings. Made from a `[[stages]]` table,
/// or in code with [`StageConfig::new`] or [`StageConfig::native`] and the
/// `set_*` methods (see [`super::PipelineConfig`] for the builder style).
#[derive(Debug, Clone)]
pub struct StageConfig {
    pub(super) table: StageTable,
    /// The settings handed to `init`: the table's `config`, as JSON.
    settings: serde_json::Value,
    /// Set for stages built in code with [`StageConfig::native`].
    native: Option<NativeStage>,
}

/// The batch size of a stage that does not set one. Batches only take
/// messages that are already waiting, so batching adds no latency.
const DEFAULT_BATCH: usize = 64;

impl From<StageTable> for StageConfig {
    fn from(table: StageTable) -> Self {
        let settings = table_to_json(table.config.as_ref().map_or(&toml::Table::new(), toml::Spanned::get_ref));
        StageConfig { table, settings, native: None }
    }
}

/// A stage configured in place (`StageConfig::new(..).set_batch(1)`) is
/// copied where a value is wanted, e.g. by [`super::PipelineConfig::push_stage`].
impl From<&mut StageConfig> for StageConfig {
    fn from(stage: &mut StageConfig) -> Self {
        stage.clone()
    }
}

impl StageConfig {
    /// A stage named `name` running the component at `plugin`.
    pub fn new(name: impl Into<String>, plugin: impl Into<PathBuf>) -> Self {
        StageTable::new(name.into(), plugin.into()).into()
    }

    /// A stage named `name` that is a Rust function run in the host process,
    /// for pipelines built in code. It gets the pipeline's ordering,
    /// concurrency, retries, output caps and dead letters, but no sandbox:
    /// it is trusted code. A panic loses only the message it happened on.
    ///
    /// ```
    /// let mut upper = sluice::StageConfig::native("upper", |m: &sluice::Message| {
    ///     Ok(vec![sluice::Message { value: m.value.to_ascii_uppercase(), ..m.clone() }])
    /// });
    /// upper.set_concurrency(4);
    /// ```
    pub fn native(
        name: impl Into<String>,
        f: impl Fn(&Message) -> Result<Vec<Message>, StageError> + Send + Sync + 'static,
    ) -> Self {
        let mut stage = StageConfig::new(name, "<native>");
        stage.native = Some(NativeStage::new(f));
        stage
    }

    /// The function of a stage made with [`StageConfig::native`].
    pub(crate) fn native_stage(&self) -> Option<&NativeStage> {
        self.native.as_ref()
    }

    /// Sets the settings handed to the stage's `init`: a JSON object, as a
    /// `config = { ... }` table in the pipeline file would give.
    pub fn set_config(&mut self, config: serde_json::Value) -> &mut Self {
        self.settings = config;
        self
    }

    /// Sets the stage's own limits (unset ones fall back to the pipeline's, then the defaults).
    pub fn set_limits(&mut self, limits: LimitsConfig) -> &mut Self {
        self.table.limits = limits;
        self
    }

    /// Grants the stage authority (directories, environment, HTTP).
    pub fn set_grants(&mut self, grants: Grants) -> &mut Self {
        self.table.grants = unplaced(grants);
        self
    }

    /// Lets up to `n` messages be in flight at once.
    pub fn set_concurrency(&mut self, n: usize) -> &mut Self {
        self.table.concurrency = unplaced(n);
        self
    }

    /// Sets the output order.
    pub fn set_order(&mut self, order: Order) -> &mut Self {
        self.table.order = Some(order);
        self
    }

    /// Processes messages keyed by `partition_by`.
    pub fn set_partition_by(&mut self, partition_by: PartitionBy) -> &mut Self {
        self.table.partition_by = Some(unplaced(partition_by));
        self
    }

    /// Queues up to `n` messages in front of the stage.
    pub fn set_buffer(&mut self, n: usize) -> &mut Self {
        self.table.buffer = unplaced(n);
        self
    }

    /// Sets the retry policy for transient errors.
    pub fn set_retries(&mut self, retries: RetryConfig) -> &mut Self {
        self.table.retries = retries;
        self
    }

    /// Hands the stage up to `n` waiting messages per call.
    pub fn set_batch(&mut self, n: usize) -> &mut Self {
        self.table.batch = Some(unplaced(n));
        self
    }

    /// How long one batch call may take (batches adapt to it).
    pub fn set_batch_window(&mut self, window: Duration) -> &mut Self {
        self.table.batch_window = window;
        self
    }

    /// With `true`, runs every message in a fresh instance.
    pub fn set_isolate(&mut self, isolate: bool) -> &mut Self {
        self.table.isolate = isolate;
        self
    }

    /// Replaces each instance after `n` messages.
    pub fn set_recycle_after(&mut self, n: u64) -> &mut Self {
        self.table.recycle_after = Some(unplaced(n));
        self
    }

    /// Sets when emitted messages go downstream.
    pub fn set_emit(&mut self, emit: EmitMode) -> &mut Self {
        self.table.emit = emit;
        self
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        self.table.name.get_ref()
    }

    /// The component file, as written.
    pub fn plugin(&self) -> &Path {
        self.table.plugin.get_ref()
    }

    /// The stage's grants, as written.
    pub fn grants(&self) -> &Grants {
        self.table.grants.get_ref()
    }

    /// The stage's own limits, as written (see
    /// [`super::PipelineConfig::stage_limits`] for what it runs under).
    pub fn limits(&self) -> &LimitsConfig {
        &self.table.limits
    }

    /// How the stage runs its messages.
    pub fn execution(&self) -> Execution {
        let t = &self.table;
        Execution {
            concurrency: *t.concurrency.get_ref(),
            order: t.order.unwrap_or_default(),
            partition_by: t.partition_by.as_ref().map(|p| *p.get_ref()),
            buffer: *t.buffer.get_ref(),
            retries: t.retries,
            batch: t.batch.as_ref().map_or_else(|| self.default_batch(), |b| *b.get_ref()),
            isolate: t.isolate,
            recycle_after: t.recycle_after.as_ref().map(|n| *n.get_ref()),
            batch_window: t.batch_window,
            emit: t.emit,
        }
    }

    /// One message per call when messages run concurrently (each waits on
    /// its own I/O), in keyed mode, or isolated; else [`DEFAULT_BATCH`].
    fn default_batch(&self) -> usize {
        let t = &self.table;
        let single = *t.concurrency.get_ref() > 1 || t.partition_by.is_some() || t.isolate;
        if single { 1 } else { DEFAULT_BATCH }
    }

    /// The settings handed to `init`, as set.
    pub fn config(&self) -> &serde_json::Value {
        &self.settings
    }

    /// The settings, as JSON text for `init`.
    pub fn config_json(&self) -> String {
        self.settings.to_string()
    }
}

/// A `config` table as JSON. TOML datetimes become strings.
fn table_to_json(table: &toml::Table) -> serde_json::Value {
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
    serde_json::Value::Object(table.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
}

//! The pipeline file as serde reads it: every key, its type and its default,
//! with the spans that errors point at. Only this module derives
//! `Deserialize` for the document and its stages: [`super::PipelineConfig`]
//! and [`super::StageConfig`] are built from it, so what a file cannot hold
//! (a native stage's function) stays out of the serde types.
//!
//! The order of the fields is the order serde lists them in an "unknown
//! field" error: `tests/all/config_errors.rs` pins it.

use super::execution::{EmitMode, Order, PartitionBy, RetryConfig};
use super::grants::Grants;
use super::sections::{DeadLetterConfig, EngineConfig, MetricsConfig, SinkConfig, SourceConfig, StateConfig};
use crate::limits::LimitsConfig;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Document {
    pub(super) version: Spanned<u32>,
    #[serde(default)]
    pub(super) source: SourceConfig,
    #[serde(default)]
    pub(super) sink: SinkConfig,
    #[serde(default)]
    pub(super) dead_letter: Option<DeadLetterConfig>,
    /// Limits for every stage that does not set its own.
    #[serde(default)]
    pub(super) limits: LimitsConfig,
    /// After a shutdown signal, how long messages already read may take to drain.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub(super) shutdown_timeout: Duration,
    /// How stage instances are allocated.
    #[serde(default)]
    pub(super) engine: EngineConfig,
    /// Where stages' state is kept, and how often it is checkpointed.
    #[serde(default)]
    pub(super) state: StateConfig,
    /// Where `sluice run` serves its metrics; off by default.
    #[serde(default)]
    pub(super) metrics: MetricsConfig,
    #[serde(default)]
    pub(super) stages: Vec<StageTable>,
}

/// One `[[stages]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StageTable {
    pub(super) name: Spanned<String>,
    pub(super) plugin: Spanned<PathBuf>,
    /// The settings handed to the stage's `init`, as JSON.
    #[serde(default)]
    pub(super) config: Option<Spanned<toml::Table>>,
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
    #[serde(default = "default_batch_window", with = "humantime_serde")]
    pub(super) batch_window: Duration,
    /// What happens to emitted messages if the stage then fails the input.
    #[serde(default)]
    pub(super) emit: EmitMode,
}

impl StageTable {
    /// A stage with every default, as a table with only `name` and `plugin`.
    pub(super) fn new(name: String, plugin: PathBuf) -> Self {
        StageTable {
            name: unplaced(name),
            plugin: unplaced(plugin),
            config: None,
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
        }
    }
}

/// A value set in code: it has no place in a file (errors about it carry no
/// line and column).
pub(super) fn unplaced<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

/// A call's crossing into WebAssembly costs about a microsecond
/// (docs/benchmarks.md): batching pays while messages take microseconds, and
/// saves under 0.1% once a call takes a millisecond. So a batch grows until
/// a call takes about 1 ms, and no finished output waits much longer.
fn default_batch_window() -> Duration {
    Duration::from_millis(1)
}

pub(super) fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

fn one() -> Spanned<usize> {
    unplaced(1)
}

fn default_buffer() -> Spanned<usize> {
    unplaced(64)
}

fn no_grants() -> Spanned<Grants> {
    unplaced(Grants::default())
}

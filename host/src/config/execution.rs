//! How a stage runs its messages: order, keys, retries, batches, emits.

use serde::Deserialize;
use std::time::Duration;

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
#[non_exhaustive]
pub enum PartitionBy {
    /// The message key: messages with the same key are processed one at a
    /// time, in order; different keys in parallel. Messages without a key
    /// form one partition.
    Key,
}

/// How a stage retries messages it reports as `transient`. Start from
/// [`RetryConfig::default`] and set the fields you need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Retries after the first attempt; 0 dead-letters transient errors at once.
    #[serde(default = "default_max_retries")]
    pub max: u32,
    /// The first delay; each retry doubles it, with jitter.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// The longest delay.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

fn default_max_retries() -> u32 {
    3
}

fn default_backoff() -> Duration {
    Duration::from_millis(100)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { max: default_max_retries(), backoff: default_backoff(), max_backoff: default_max_backoff() }
    }
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

/// How a stage runs its messages, with defaults applied: what
/// [`super::StageConfig::execution`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
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
    pub batch_window: Duration,
    /// When emitted messages go downstream.
    pub emit: EmitMode,
}

//! The pipeline file: a strict, versioned TOML document.
//!
//! ```toml
//! version = 1
//!
//! [source]                 # default: stdin, JSON lines
//! path = "input.jsonl"     # relative to this file
//! format = "jsonl"         # "jsonl" or "lines"
//!
//! [sink]                   # default: stdout, JSON lines
//! path = "output.jsonl"
//!
//! [dead_letter]            # default: <pipeline file stem>.dead-letter.jsonl beside it
//! path = "dead-letter.jsonl"
//!
//! [engine]
//! allocator = "pooling"    # or "on-demand" where virtual memory is capped
//!
//! [state]                  # for stages that import sluice:pipeline/state
//! path = "state.redb"      # default: <pipeline file stem>.state.redb beside it
//! backend = "redb"         # or "memory"
//! checkpoint_every = 10000 # input messages between checkpoints...
//! checkpoint_interval = "5s" # ...or this long, whichever comes first
//!
//! [limits]                 # for every stage that sets none (see `crate::limits`)
//! timeout = "10s"
//!
//! [[stages]]
//! name = "big-orders"
//! plugin = "plugins/json-filter.wasm"
//! config = { field = "amount", gte = 100 }
//! limits = { fuel = 100_000_000, memory = "32MiB" }
//! concurrency = 8                  # messages in flight, each in its own instance
//! order = "ordered"                # or "unordered"; `partition_by = "key"` for per-key order
//! buffer = 64                      # messages queued in front of the stage
//! batch = 64                       # waiting messages per call (default: 64 at concurrency 1, else 1)
//! isolate = false                  # true: a fresh instance for every message
//! emit = "immediate"               # or "on-success": emitted messages wait for the input to succeed
//! retries = { max = 3, backoff = "100ms", max_backoff = "10s" }
//! grants = { read_dirs = { "/lookup" = "data" }, env = { TZ = "UTC" } }
//! ```

//!
//! `schema` is the file as serde reads it; `pipeline` and `stage` the types
//! built from it (or in code), `resolve` what their paths and defaults come
//! to, `validate` what serde cannot check; `sections` and `execution` the
//! plain settings, `grants` a stage's authority; `tables` and `error` the
//! errors' text and places; `explain` words serde's errors for the user,
//! with what each key takes from `keys`.

mod brokers;
mod error;
mod execution;
mod explain;
mod grants;
mod keys;
mod pipeline;
#[cfg(test)]
mod plain_words;
#[cfg(test)]
mod props;
mod resolve;
mod schema;
mod sections;
mod stage;
mod tables;
#[cfg(test)]
mod tests;
mod validate;
pub(crate) use validate::StagePart;

pub use brokers::{NatsSink, NatsSource, RedisSink, RedisSource};
pub use error::{ConfigError, ConfigErrors};
pub use execution::{EmitMode, Execution, Order, PartitionBy, RetryConfig};
pub use grants::Grants;
pub use pipeline::PipelineConfig;
pub use sections::{
    Allocator, DeadLetterConfig, DeadLetterKind, EngineConfig, Format, MetricsConfig, SinkConfig, SinkKind,
    SourceConfig, SourceKind, StateBackend, StateConfig,
};
pub use stage::StageConfig;

/// The only version of the pipeline file format this build reads.
pub const VERSION: u32 = 1;

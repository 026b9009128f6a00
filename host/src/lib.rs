//! sluice: a WebAssembly plugin host for data-pipeline stages.
//!
//! Stages are WebAssembly components (any language) built against the WIT
//! contract in `wit/`. A pipeline file names them in order; sluice runs every
//! message from the source through each stage to the sink, sandboxed, with
//! messages a stage rejects or traps on sent to a dead-letter file.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let pipeline = sluice::Pipeline::from_file("examples/quickstart/pipeline.toml").await?;
//! let report = pipeline.run().await?;
//! println!("{report}");
//! # Ok(())
//! # }
//! ```

mod bindings;
mod capabilities;
mod config;
mod connect;
mod engine;
mod envelope;
mod fs;
mod limits;
mod native;
mod pipeline;
mod stage;
pub mod state;

pub use bindings::{Header, Message, StageError};
pub use config::{
    Allocator, ConfigError, ConfigErrors, DeadLetterConfig, DeadLetterKind, EmitMode, EngineConfig, Execution, Format,
    Grants, MetricsConfig, NatsSink, NatsSource, Order, PartitionBy, PipelineConfig, RedisSink, RedisSource,
    RetryConfig, SinkConfig, SinkKind, SourceConfig, SourceKind, StageConfig, StateBackend, StateConfig, VERSION,
};
pub use connect::{Acknowledged, Delivered, MemorySink, MemorySource, cannot_create};
pub use fs::{destination, inherited_descriptor, is_stream, same_file};
pub use limits::{Limit, Limits, LimitsConfig, log_safe};
pub use native::NativeStage;
pub use pipeline::{
    BuildError, CompiledStage, DeadLetterCounts, DeadLetterErrorKind, Error, LiveStats, Pipeline, Plugin, ReloadError,
    Reloaded, Reloader, RunError, RunReport, StageLoadError, StageReport, StageStats, Stats, Summary, compile,
    run_blocking,
};
pub use pipeline::{DEFAULT_TAP_RATE, MAX_TAP_RATE, TAP_VALUE_BYTES, TapError, TapListener, TappedMessage, Taps};
pub use stage::{LoadError, Trap};

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
//! [[stages]]
//! name = "big-orders"
//! plugin = "plugins/json-filter.wasm"
//! config = { field = "amount", gte = 100 }
//! ```

mod error;
mod file;

pub use error::{ConfigError, ConfigErrors};
pub use file::{DeadLetterConfig, Format, PipelineConfig, SinkConfig, SourceConfig, StageConfig};

/// The only version of the pipeline file format this build reads.
pub const VERSION: u32 = 1;

//! The pipeline file's sections besides the stages: source, sink, dead
//! letters, state, engine and metrics.

use super::brokers::{NatsSink, NatsSource, RedisSink, RedisSource};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Where messages come from. The connector and its file are set with
/// [`super::PipelineConfig::set_input`]; the other fields are plain settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SourceConfig {
    /// The connector: `file`, `stdin`, `nats` or `redis`. Default: the one
    /// whose settings are given (`path`, `[source.nats]`,
    /// `[source.redis]`), else `stdin`.
    #[serde(rename = "type", default)]
    pub(super) kind: Option<Spanned<SourceKind>>,
    /// The file to read (`type = "file"`); `-` is standard input.
    pub(super) path: Option<Spanned<PathBuf>>,
    /// A NATS JetStream consumer to read (`type = "nats"`).
    pub nats: Option<Spanned<NatsSource>>,
    /// A Redis stream to read through a consumer group (`type = "redis"`).
    pub redis: Option<Spanned<RedisSource>>,
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
        SourceConfig {
            kind: None,
            path: None,
            nats: None,
            redis: None,
            format: Format::default(),
            max_line_bytes: default_max_line_bytes(),
            skip_lines: 0,
        }
    }
}

impl SourceConfig {
    /// The connector, as set or as implied by `path`.
    pub fn kind(&self) -> SourceKind {
        match (&self.kind, &self.path) {
            (Some(kind), _) => *kind.get_ref(),
            (None, Some(path)) if path.get_ref().as_os_str() != "-" => SourceKind::File,
            (None, _) if self.nats.is_some() => SourceKind::Nats,
            (None, _) if self.redis.is_some() => SourceKind::Redis,
            (None, _) => SourceKind::Stdin,
        }
    }

    /// The file to read, as written (`-` is standard input).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_ref().map(|p| p.get_ref().as_path())
    }

    /// Reads `path` (`-`: standard input), the connector implied by it.
    pub(super) fn set_path(&mut self, path: PathBuf) {
        self.kind = None;
        self.path = Some(Spanned::new(0..0, path));
    }
}

/// The kinds of source a pipeline file can name (`[source] type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SourceKind {
    /// A file, read line by line.
    File,
    /// Standard input, read line by line as it comes.
    Stdin,
    /// A NATS JetStream durable consumer, `[source.nats]`.
    Nats,
    /// A Redis stream's consumer group, `[source.redis]`.
    Redis,
}

impl SourceKind {
    /// The kind as the pipeline file names it.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Stdin => "stdin",
            SourceKind::Nats => "nats",
            SourceKind::Redis => "redis",
        }
    }

    /// Whether the source is a broker, which keeps its own place in what it
    /// delivers and delivers again what is not acknowledged.
    pub fn is_broker(self) -> bool {
        matches!(self, SourceKind::Nats | SourceKind::Redis)
    }
}

/// The kinds of sink a pipeline file can name (`[sink] type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SinkKind {
    /// A file, which appears whole when the run completes.
    File,
    /// Standard output, written as outputs are done.
    Stdout,
    /// Publishing to NATS JetStream, `[sink.nats]`.
    Nats,
    /// Adding to a Redis stream, `[sink.redis]`.
    Redis,
}

impl SinkKind {
    /// The kind as the pipeline file names it.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::File => "file",
            SinkKind::Stdout => "stdout",
            SinkKind::Nats => "nats",
            SinkKind::Redis => "redis",
        }
    }
}

/// Where stages' state is kept, and how often it is checkpointed. Used only
/// if a stage imports `sluice:pipeline/state`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
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
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
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
#[non_exhaustive]
pub enum StateBackend {
    /// An embedded redb file: state and checkpoints survive a crash.
    #[default]
    Redb,
    /// In memory: for tests and throwaway runs. No checkpoints.
    Memory,
}

/// Engine-wide settings. Start from [`EngineConfig::default`] and set the
/// fields you need.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
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

/// Where messages that pass every stage go. The connector and its file are
/// set with [`super::PipelineConfig::set_output`]; the other fields are plain
/// settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SinkConfig {
    /// The connector: `file`, `stdout`, `nats` or `redis`. Default: the one
    /// whose settings are given (`path`, `[sink.nats]`, `[sink.redis]`),
    /// else `stdout`.
    #[serde(rename = "type", default)]
    pub(super) kind: Option<Spanned<SinkKind>>,
    /// The file to write (`type = "file"`; atomically, when the run
    /// completes); `-` is standard output.
    pub(super) path: Option<PathBuf>,
    /// How messages are written.
    #[serde(default)]
    pub format: Format,
    /// A sink whose writes are seen as they happen (standard output) hands
    /// on what it holds whenever the pipeline has nothing more for it, and
    /// at least this often while it is busy.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: std::time::Duration,
    /// NATS JetStream to publish to (`type = "nats"`).
    pub nats: Option<Spanned<NatsSink>>,
    /// A Redis stream to add to (`type = "redis"`).
    pub redis: Option<Spanned<RedisSink>>,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            kind: None,
            path: None,
            format: Format::default(),
            flush_interval: default_flush_interval(),
            nats: None,
            redis: None,
        }
    }
}

impl SinkConfig {
    /// The connector, as set or as implied by `path`.
    pub fn kind(&self) -> SinkKind {
        match (&self.kind, &self.path) {
            (Some(kind), _) => *kind.get_ref(),
            (None, Some(path)) if path.as_os_str() != "-" => SinkKind::File,
            (None, _) if self.nats.is_some() => SinkKind::Nats,
            (None, _) if self.redis.is_some() => SinkKind::Redis,
            (None, _) => SinkKind::Stdout,
        }
    }

    /// The file to write, as written (`-` is standard output).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes `path` (`-`: standard output), the connector implied by it.
    pub(super) fn set_path(&mut self, path: PathBuf) {
        self.kind = None;
        self.path = Some(path);
    }
}

/// Flink's buffer timeout: a busy sink still delivers within this.
fn default_flush_interval() -> std::time::Duration {
    std::time::Duration::from_millis(100)
}

/// Where messages that a stage rejects, or that trap a stage, go. Set with
/// [`super::PipelineConfig::set_dead_letter`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeadLetterConfig {
    /// The connector: `file`, `nats` or `redis`. Default: the one whose
    /// settings are given.
    #[serde(rename = "type", default)]
    pub(super) kind: Option<Spanned<DeadLetterKind>>,
    /// A JSON-lines file, one record per failed message (stage, reason, message).
    pub(super) path: Option<PathBuf>,
    /// NATS JetStream to publish the records to (`type = "nats"`).
    pub nats: Option<Spanned<NatsSink>>,
    /// A Redis stream to add the records to (`type = "redis"`).
    pub redis: Option<Spanned<RedisSink>>,
}

impl DeadLetterConfig {
    /// Dead letters to the file at `path`.
    pub(super) fn file(path: PathBuf) -> Self {
        DeadLetterConfig { kind: None, path: Some(path), nats: None, redis: None }
    }

    /// The connector.
    pub fn kind(&self) -> DeadLetterKind {
        match &self.kind {
            Some(kind) => *kind.get_ref(),
            None if self.path.is_some() => DeadLetterKind::File,
            None if self.nats.is_some() => DeadLetterKind::Nats,
            None if self.redis.is_some() => DeadLetterKind::Redis,
            None => DeadLetterKind::File,
        }
    }

    /// The file, as written.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// The kinds of dead-letter sink a pipeline file can name (`[dead_letter] type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DeadLetterKind {
    /// A JSON-lines file, which appears whole when the run completes.
    File,
    /// Publishing to NATS JetStream, `[dead_letter.nats]`.
    Nats,
    /// Adding to a Redis stream, `[dead_letter.redis]`.
    Redis,
}

impl DeadLetterKind {
    /// The kind as the pipeline file names it.
    pub fn name(self) -> &'static str {
        match self {
            DeadLetterKind::File => "file",
            DeadLetterKind::Nats => "nats",
            DeadLetterKind::Redis => "redis",
        }
    }
}

/// How a stream of bytes is split into messages, and joined back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Format {
    /// One JSON document per line. Input lines that are not JSON are
    /// dead-lettered; blank lines are skipped.
    #[default]
    Jsonl,
    /// One message per line, bytes as they are.
    Lines,
}

/// Where `sluice run` serves its metrics (`[metrics]`): Prometheus text at
/// `/metrics`, and `/health` and `/ready` for an orchestrator. Off unless
/// `addr` is set (or `--metrics-addr` given).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// The address to listen on, such as `127.0.0.1:9898`.
    #[serde(default, deserialize_with = "listen_addr")]
    pub addr: Option<std::net::SocketAddr>,
}

/// std's own error ("invalid socket address syntax") does not say what a
/// good one looks like.
fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not an address to listen on: give an IP address and a port, such as \"127.0.0.1:9898\""
        ))
    })
}

//! Where the pipeline opens its connectors: the kinds a pipeline file can
//! name, and the ones an embedder hands over. Adding a kind is one line in
//! `sources!` or `sinks!` (and its `type` name in the config's kinds).

use super::error::RunError;
use crate::bindings::Message;
use crate::config::DeadLetterKind;
use crate::config::{PipelineConfig, SinkKind, SourceKind};
use crate::connect::{
    FileSink, FileSource, Finished, Input, Locator, MemorySink, MemorySource, NatsSink, NatsSource, RedisSink,
    RedisSource, Sink, Source,
};
use crate::envelope::{Done, Origin};
use crate::state::Checkpoint;
use std::path::PathBuf;

/// One type over every kind of source, so that the source task is compiled
/// once per kind with no dynamic call per message.
macro_rules! sources {
    ($($kind:ident($connector:ty)),* $(,)?) => {
        pub(super) enum AnySource { $($kind($connector)),* }

        impl Source for AnySource {
            async fn next(&mut self) -> std::io::Result<Option<Input>> {
                match self { $(AnySource::$kind(s) => s.next().await),* }
            }
            fn locator(&self) -> Locator {
                match self { $(AnySource::$kind(s) => s.locator()),* }
            }
            fn acknowledges(&self) -> bool {
                match self { $(AnySource::$kind(s) => s.acknowledges()),* }
            }
            fn done(&mut self, done: Done) {
                match self { $(AnySource::$kind(s) => s.done(done)),* }
            }
            fn backlog(&self) -> Option<crate::connect::Backlog> {
                match self { $(AnySource::$kind(s) => s.backlog()),* }
            }
            fn max_unacknowledged(&self) -> Option<u64> {
                match self { $(AnySource::$kind(s) => s.max_unacknowledged()),* }
            }
            fn redelivers_after(&self) -> Option<std::time::Duration> {
                match self { $(AnySource::$kind(s) => s.redelivers_after()),* }
            }
            fn id(&self) -> Option<String> {
                match self { $(AnySource::$kind(s) => s.id()),* }
            }
            async fn close(self) -> std::io::Result<()> {
                match self { $(AnySource::$kind(s) => s.close().await),* }
            }
        }
    };
}

macro_rules! sinks {
    ($($kind:ident($connector:ty)),* $(,)?) => {
        pub(super) enum AnySink { $($kind($connector)),* }

        impl Sink for AnySink {
            async fn write(&mut self, message: Message, origin: &Origin) -> std::io::Result<()> {
                match self { $(AnySink::$kind(s) => s.write(message, origin).await),* }
            }
            fn refuses(&self, message: &Message) -> Option<String> {
                match self { $(AnySink::$kind(s) => s.refuses(message)),* }
            }
            async fn flush(&mut self) -> std::io::Result<u64> {
                match self { $(AnySink::$kind(s) => s.flush().await),* }
            }
            fn is_live(&self) -> bool {
                match self { $(AnySink::$kind(s) => s.is_live()),* }
            }
            async fn finish(self) -> std::io::Result<Finished> {
                match self { $(AnySink::$kind(s) => s.finish().await),* }
            }
        }
    };
}

sources! {
    File(FileSource),
    Memory(MemorySource),
    Nats(NatsSource),
    Redis(RedisSource),
}

sinks! {
    File(FileSink),
    Memory(MemorySink),
    Nats(NatsSink),
    Redis(RedisSink),
}

/// Connectors handed over in code ([`super::Pipeline::with_source`] and
/// friends), in place of the pipeline file's.
#[derive(Default)]
pub(super) struct Given {
    pub(super) source: Option<MemorySource>,
    pub(super) sink: Option<MemorySink>,
    pub(super) dead_letters: Option<MemorySink>,
}

/// A run's connectors, open.
pub(super) struct Opened {
    pub(super) source: AnySource,
    /// Where the source starts: every input up to here is skipped.
    pub(super) start_after: u64,
    pub(super) sink: AnySink,
    pub(super) sink_name: PathBuf,
    pub(super) dead_letters: AnySink,
    pub(super) dead_letters_name: PathBuf,
}

impl Opened {
    /// Opens the source and both sinks, given in code or named by the
    /// config. A run that `resume`s from a checkpoint starts after its
    /// positions; one that is `durable` (checkpoints) writes files that
    /// survive a crash.
    pub(super) async fn open(
        config: &PipelineConfig,
        given: Given,
        resume: Option<Checkpoint>,
        durable: bool,
    ) -> Result<Self, RunError> {
        // After `skip_lines`, or after the checkpoint the run resumes from.
        // A broker keeps its own place: what was not acknowledged comes again.
        let broker = given.source.is_none() && config.source().kind().is_broker();
        let start_after = match broker {
            true => 0,
            false => config.source().skip_lines.max(resume.as_ref().map_or(0, |c| c.source)),
        };
        let source = open_source(config, given.source, start_after).await?;
        if let Some(checkpoint) = &resume {
            match broker {
                true => tracing::info!("resuming from the last checkpoint: what it had not committed comes again"),
                false => tracing::info!(
                    "resuming after {} from the last checkpoint",
                    source.locator().describe(checkpoint.source)
                ),
            }
        }
        // Appending (resuming an interrupted run) keeps what the files hold.
        let run = SinkRun { resume, durable, append: config.append(), broker, source: source.id() };
        let (sink, sink_name) = open_sink(config, given.sink, &run).await?;
        let (dead_letters, dead_letters_name) = open_dead_letters(config, given.dead_letters, &run).await?;
        Ok(Opened { source, start_after, sink, sink_name, dead_letters, dead_letters_name })
    }
}

async fn open_source(
    config: &PipelineConfig,
    given: Option<MemorySource>,
    start_after: u64,
) -> Result<AnySource, RunError> {
    if let Some(source) = given {
        return Ok(AnySource::Memory(source));
    }
    let source = config.source();
    let broker = |name: String| move |error| RunError::Input { path: name.into(), error };
    match source.kind() {
        SourceKind::File | SourceKind::Stdin => {
            let path = config.input_path();
            FileSource::open(path.as_deref(), source.max_line_bytes, start_after)
                .await
                .map(AnySource::File)
                .map_err(|error| RunError::Input { path: path.unwrap_or_else(|| "-".into()), error })
        }
        SourceKind::Nats => {
            let nats = source.nats.as_ref().expect("validated: a nats source has [source.nats]").get_ref();
            let name = format!("NATS stream {}", nats.stream);
            NatsSource::open(nats).await.map(AnySource::Nats).map_err(broker(name))
        }
        SourceKind::Redis => {
            let redis = source.redis.as_ref().expect("validated: a redis source has [source.redis]").get_ref();
            let name = format!("Redis stream {}", redis.stream);
            RedisSource::open(redis).await.map(AnySource::Redis).map_err(broker(name))
        }
    }
}

/// How a run's sinks open: where it resumes, whether it checkpoints, whether
/// it appends.
struct SinkRun {
    resume: Option<Checkpoint>,
    durable: bool,
    append: bool,
    /// Whether the source is a broker: files are then written in place.
    broker: bool,
    /// The source's [`Source::id`], which broker sinks build message ids on.
    source: Option<String>,
}

/// The sink, and its name in errors.
async fn open_sink(
    config: &PipelineConfig,
    given: Option<MemorySink>,
    run: &SinkRun,
) -> Result<(AnySink, PathBuf), RunError> {
    if let Some(sink) = given {
        return Ok((AnySink::Memory(sink), "<memory>".into()));
    }
    match config.sink().kind() {
        SinkKind::Nats => {
            let nats = config.sink().nats.as_ref().expect("validated: a nats sink has [sink.nats]").get_ref();
            open_nats(nats, run, false).await
        }
        SinkKind::Redis => {
            let redis = config.sink().redis.as_ref().expect("validated: a redis sink has [sink.redis]").get_ref();
            open_redis(redis).await
        }
        SinkKind::File | SinkKind::Stdout => {
            let path = config.output_path();
            let name = FileSink::name(path.as_deref());
            let opening = file_opening(0o644, run, run.resume.as_ref().map(|c| c.sink));
            let sink = FileSink::open(path.as_deref(), opening)
                .map_err(|error| RunError::Output { path: name.clone(), error })?;
            Ok((AnySink::File(sink), name))
        }
    }
}

/// The dead-letter sink, and its name in errors.
async fn open_dead_letters(
    config: &PipelineConfig,
    given: Option<MemorySink>,
    run: &SinkRun,
) -> Result<(AnySink, PathBuf), RunError> {
    if let Some(sink) = given {
        return Ok((AnySink::Memory(sink), "<memory>".into()));
    }
    let dead = config.dead_letters();
    match dead.map_or(DeadLetterKind::File, |d| d.kind()) {
        DeadLetterKind::File => {}
        DeadLetterKind::Nats => {
            let nats = dead.and_then(|d| d.nats.as_ref()).expect("validated: [dead_letter.nats]").get_ref();
            return open_nats(nats, run, true).await;
        }
        DeadLetterKind::Redis => {
            let redis = dead.and_then(|d| d.redis.as_ref()).expect("validated: [dead_letter.redis]").get_ref();
            return open_redis(redis).await;
        }
    }
    let path = config.dead_letter_path().expect("dead letters to a file have a path");
    // Dead letters hold input as it was, unredacted: private by default.
    let opening = file_opening(0o600, run, run.resume.as_ref().map(|c| c.dead_letters));
    let sink = FileSink::open(Some(&path), opening).map_err(|error| RunError::Output { path: path.clone(), error })?;
    Ok((AnySink::File(sink), path))
}

async fn open_nats(
    config: &crate::config::NatsSink,
    run: &SinkRun,
    dead_letters: bool,
) -> Result<(AnySink, PathBuf), RunError> {
    let name = PathBuf::from(format!("NATS subject {}", config.subject));
    match NatsSink::open(config, run.source.clone(), dead_letters).await {
        Ok(sink) => Ok((AnySink::Nats(sink), name)),
        Err(error) => Err(RunError::Output { path: name, error }),
    }
}

async fn open_redis(config: &crate::config::RedisSink) -> Result<(AnySink, PathBuf), RunError> {
    let name = PathBuf::from(format!("Redis stream {}", config.stream));
    match RedisSink::open(config).await {
        Ok(sink) => Ok((AnySink::Redis(sink), name)),
        Err(error) => Err(RunError::Output { path: name, error }),
    }
}

fn file_opening(mode: u32, run: &SinkRun, resume_at: Option<u64>) -> crate::connect::FileOpening {
    crate::connect::FileOpening { mode, resumable: run.durable, resume_at, append: run.append, in_place: run.broker }
}

/// After a run that finished but died while moving its files into place:
/// moves the rest.
pub(super) fn complete_interrupted(config: &PipelineConfig) -> Result<(), RunError> {
    for path in config.output_path().into_iter().chain(config.dead_letter_path()) {
        FileSink::complete_interrupted(&path).map_err(|error| RunError::Output { path, error })?;
    }
    Ok(())
}

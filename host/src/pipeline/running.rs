//! The running pipeline: source → stage → … → sink, one task each, joined by
//! bounded channels so that a slow consumer slows its producer. Every task
//! also holds a sender to the dead-letter writer.

use super::Pipeline;
use super::checkpoint::{Checkpoints, Flush, Settle, commit};
use super::dead_letter::{DeadLetter, Kind, Origin};
use super::error::RunError;
use super::halt::Halt;
use super::job::EmitPlan;
use super::sink::{Sink, write_dead_letters, write_sink};
use super::slots::Slots;
use super::stage_task::StageTask;
use super::stats::{RunReport, Stats};
use crate::bindings::Message;
use crate::config::{Format, SourceConfig};
use crate::io::{Line, LineReader, Output};
use crate::state::{Checkpoint, StateStore};
use serde::de::IgnoredAny;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tokio::io::{AsyncBufRead, BufReader};
use tokio::sync::mpsc::{Sender, channel};
use tokio::task::JoinHandle;

/// Messages buffered in front of the sink (in front of a stage: its `buffer`).
const BUFFER: usize = 64;
/// Messages the sink takes from its channel at once.
/// How much of an over-long input line the dead-letter record keeps.
const TOO_LONG_KEPT: usize = 1024;

/// A message and where it came from; outputs inherit their input's origin.
pub(crate) struct Envelope {
    pub(crate) message: Message,
    pub(crate) origin: Origin,
}

/// How a task ended, when not normally.
pub(super) enum TaskError {
    /// The next task stopped taking messages: it failed, and says why itself.
    Closed,
    Failed(RunError),
}

impl From<RunError> for TaskError {
    fn from(e: RunError) -> Self {
        TaskError::Failed(e)
    }
}

type Task<T> = JoinHandle<Result<T, TaskError>>;

pub(super) async fn run(
    pipeline: Pipeline,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let Pipeline { config, stages, stats, state } = pipeline;

    let input_path = config.input_path();
    let input_label = input_path.as_ref().map_or_else(|| "-".to_string(), |p| p.display().to_string());
    let reader: Box<dyn AsyncBufRead + Send + Unpin> = match &input_path {
        Some(path) => {
            let file =
                tokio::fs::File::open(path).await.map_err(|error| RunError::Input { path: path.clone(), error })?;
            Box::new(BufReader::with_capacity(64 * 1024, file))
        }
        None => Box::new(BufReader::with_capacity(64 * 1024, tokio::io::stdin())),
    };
    // With durable state, the run checkpoints, and resumes from its last
    // checkpoint if an earlier run of this pipeline died.
    let durable = state.clone().filter(|s| s.is_durable());
    let resume = match &durable {
        Some(store) => recover(store, &config).await?,
        None => None,
    };
    // Appending (resuming an interrupted run) keeps what the files hold.
    let append = config.append();
    let open = |path: &std::path::Path, mode, resume_at: Option<u64>| match &durable {
        Some(_) => Output::resumable(path, mode, resume_at, append),
        None => Output::file(path, mode, append),
    };
    let output_path = config.output_path().unwrap_or_else(|| PathBuf::from("-"));
    let output = match config.output_path() {
        Some(path) => open(&path, 0o644, resume.map(|c| c.sink)).map_err(|error| RunError::Output { path, error })?,
        None => Output::stdout(),
    };
    let dead_path = config.dead_letter_path();
    // Dead letters hold input as it was, unredacted: private by default.
    let dead_output = open(&dead_path, 0o600, resume.map(|c| c.dead_letters))
        .map_err(|error| RunError::Output { path: dead_path.clone(), error })?;
    let mut source = config.source().clone();
    if let Some(checkpoint) = resume {
        tracing::info!("resuming after input line {} from the last checkpoint", checkpoint.source);
        source.skip_lines = source.skip_lines.max(checkpoint.source);
    }
    let settle = durable.as_ref().map(|_| Arc::new(Settle::default()));
    // Without checkpoints, a stage that can no longer start stops the run as
    // an interrupt does (with them, the run fails and resumes from its last).
    let halt = durable.is_none().then(|| Arc::new(Halt::new()));
    let shutdown = {
        let halt = halt.clone();
        async move {
            match halt {
                Some(halt) => tokio::select! {
                    () = shutdown => {}
                    () = halt.stopped() => {}
                },
                None => shutdown.await,
            }
        }
    };
    let (sink_flush_tx, sink_flush) = channel::<Flush>(1);
    let (dead_flush_tx, dead_flush) = channel::<Flush>(1);
    let checkpoints = durable.clone().zip(settle.clone()).map(|(store, settle)| Checkpoints {
        settle,
        store,
        sink: sink_flush_tx,
        dead: dead_flush_tx,
        every: config.state().checkpoint_every.max(1),
        interval: config.state().checkpoint_interval,
        since: 0,
        last: tokio::time::Instant::now(),
    });

    let (dead_tx, dead_rx) = channel::<DeadLetter>(BUFFER);
    let first_buffer = stages.first().map_or(BUFFER, |s| s.exec.buffer);
    let (source_tx, mut rx) = channel::<Envelope>(first_buffer);
    let source_task: Task<Option<u64>> = tokio::spawn(read_source(
        reader,
        source,
        input_path.unwrap_or_else(|| PathBuf::from("-")),
        source_tx,
        dead_tx.clone(),
        stats.clone(),
        shutdown,
        checkpoints,
    ));

    let mut stage_tasks: Vec<Task<()>> = Vec::new();
    let buffers: Vec<usize> = stages.iter().skip(1).map(|s| s.exec.buffer).chain([BUFFER]).collect();
    for ((index, built), buffer) in stages.into_iter().enumerate().zip(buffers) {
        let (tx, next_rx) = channel::<Envelope>(buffer);
        let task = StageTask {
            stats: stats.clone(),
            index,
            dead: dead_tx.clone(),
            slots: Slots::new(
                &built.runner,
                built.exec.concurrency,
                built.first,
                built.exec.isolate,
                built.exec.recycle_after,
            ),
            runner: built.runner,
            exec: built.exec,
            failures_in_a_row: 0,
            emit: EmitPlan::Unused,
            settle: settle.clone(),
            halt: halt.clone(),
            stuck: None,
            held: Arc::default(),
        };
        stage_tasks.push(tokio::spawn(task.run(rx, tx)));
        rx = next_rx;
    }

    let sink = Sink {
        format: config.sink().format,
        dead: dead_tx,
        stats: stats.clone(),
        settle: settle.clone(),
        flush_interval: config.sink().flush_interval,
    };
    let sink_task: Task<Output> = tokio::spawn(write_sink(rx, output, output_path.clone(), sink, sink_flush));
    let dead_task: Task<Output> = tokio::spawn(write_dead_letters(
        dead_rx,
        dead_output,
        dead_path,
        input_label,
        (stats.clone(), settle),
        dead_flush,
    ));

    // Wait for every task; the first real failure in pipeline order is the
    // cause (the others then only saw their neighbour close).
    let mut failure: Option<RunError> = None;
    let note = |failure: &mut Option<RunError>, r: Result<(), TaskError>| {
        if let Err(TaskError::Failed(e)) = r {
            failure.get_or_insert(e);
        }
    };
    let stopped_after_line = match join(source_task).await {
        Ok(stopped) => stopped,
        Err(e) => {
            note(&mut failure, Err(e));
            None
        }
    };
    let aborts: Vec<_> = stage_tasks
        .iter()
        .map(JoinHandle::abort_handle)
        .chain([sink_task.abort_handle(), dead_task.abort_handle()])
        .collect();
    let rest = async {
        let mut stages = Vec::new();
        for t in stage_tasks {
            stages.push(join(t).await);
        }
        (stages, join(sink_task).await, join(dead_task).await)
    };
    // After a shutdown signal, what was read gets `shutdown_timeout` to drain.
    let (stages, sink, dead) = match stopped_after_line {
        None => rest.await,
        Some(line) => match tokio::time::timeout(config.shutdown_timeout(), rest).await {
            Ok(done) => done,
            Err(_) => {
                aborts.iter().for_each(|a| a.abort());
                let timeout = humantime::format_duration(config.shutdown_timeout()).to_string();
                return Err(RunError::DrainTimeout { stopped_after_line: line, timeout });
            }
        },
    };
    for r in stages {
        note(&mut failure, r);
    }
    let (sink, dead) = match (sink, dead) {
        (Ok(sink), Ok(dead)) if failure.is_none() => (sink, dead),
        (sink, dead) => {
            note(&mut failure, sink.map(drop));
            note(&mut failure, dead.map(drop));
            return Err(failure.unwrap_or_else(|| RunError::Internal("a task stopped without saying why".into())));
        }
    };

    // Both files complete and on disk before either appears.
    let sink = sink.finish().await.map_err(|error| RunError::Output { path: output_path.clone(), error })?;
    let dead = dead.finish().await.map_err(|error| RunError::Output { path: config.dead_letter_path(), error })?;
    // The state of a finished run is committed before its outputs appear: a
    // crash in between leaves a complete checkpoint, and the next run only
    // finishes moving the files.
    if let Some(store) = &state {
        let done = Checkpoint { source: stopped_after_line.unwrap_or(0), sink: 0, dead_letters: 0, complete: true };
        commit(store, store.is_durable().then_some(done)).await?;
    }
    sink.commit().await.map_err(|error| RunError::Output { path: output_path, error })?;
    dead.commit().await.map_err(|error| RunError::Output { path: config.dead_letter_path(), error })?;
    if let Some(store) = durable {
        commit(&store, None).await?;
    }
    let mut report = stats.report(started.elapsed());
    report.stopped_after_line = stopped_after_line;
    if let Some(halted) = halt.as_ref().and_then(|h| h.halted()) {
        report.stop_reason = Some(format!(
            "{}; the {} messages it could not run were dead-lettered with that reason",
            halted.reason, halted.unfinished
        ));
    }
    Ok(report)
}

async fn join<T>(task: Task<T>) -> Result<T, TaskError> {
    task.await.unwrap_or_else(|e| Err(TaskError::Failed(RunError::Internal(format!("pipeline task failed: {e}")))))
}

/// Reads the input into messages. Returns `Some(line)` if `shutdown` stopped
/// it: every line up to and including `line` was sent on, none after.
async fn read_source(
    reader: Box<dyn AsyncBufRead + Send + Unpin>,
    source: SourceConfig,
    path: PathBuf,
    tx: Sender<Envelope>,
    dead: Sender<DeadLetter>,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut checkpoints: Option<Checkpoints>,
) -> Result<Option<u64>, TaskError> {
    let max_line_bytes = source.max_line_bytes;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut lines = LineReader::new(reader, max_line_bytes);
    let settle = checkpoints.as_ref().map(|c| c.settle.clone());
    let enter = || {
        if let Some(settle) = &settle {
            settle.change(1);
        }
    };
    loop {
        // A checkpoint after the last line read, once due by count or time.
        // If a task fails meanwhile, the pipeline will never empty: stop.
        if let Some(c) = checkpoints.as_mut() {
            if c.due() {
                tokio::select! {
                    taken = c.take(lines.line) => taken?,
                    () = tx.closed() => return Err(TaskError::Closed),
                    () = dead.closed() => return Err(TaskError::Closed),
                }
            }
        }
        let line = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(Some(lines.line)),
            line = lines.next() => line.map_err(|error| RunError::Input { path: path.clone(), error })?,
            // While no line is ready: a failed stage or sink closes its
            // input, so stop now, not at the next line (which, from stdin or
            // a pipe, may never come).
            () = tx.closed() => return Err(TaskError::Closed),
            () = dead.closed() => return Err(TaskError::Closed),
        };
        let Some(line) = line else { return Ok(None) };
        let origin = Origin { line: lines.line };
        if origin.line <= source.skip_lines {
            continue;
        }
        if let Some(c) = &mut checkpoints {
            c.since += 1;
        }
        let bytes = match line {
            Line::Text(bytes) => bytes,
            Line::TooLong(mut head) => {
                stats.read.fetch_add(1, Relaxed);
                head.truncate(TOO_LONG_KEPT);
                let reason = format!(
                    "line is longer than {max_line_bytes} bytes (source.max_line_bytes); the record keeps its first {} bytes",
                    head.len()
                );
                enter();
                send_dead(&dead, "source", Kind::Input, reason, origin, message(head)).await?;
                continue;
            }
        };
        if source.format == Format::Jsonl {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                stats.skipped.fetch_add(1, Relaxed);
                continue;
            }
            // JSON text is UTF-8 (RFC 8259), but `from_slice` does not check
            // the strings it skips: without this, the first stage would get
            // the blame (as `invalid`) for bad input.
            let json = std::str::from_utf8(&bytes)
                .map_err(|e| format!("not UTF-8 ({e})"))
                .and_then(|text| serde_json::from_str::<IgnoredAny>(text).map_err(|e| e.to_string()));
            if let Err(e) = json {
                stats.read.fetch_add(1, Relaxed);
                enter();
                send_dead(&dead, "source", Kind::Input, format!("not JSON: {e}"), origin, message(bytes)).await?;
                continue;
            }
        }
        // A message waiting for room downstream when the signal comes counts as unread.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(Some(origin.line - 1)),
            permit = tx.reserve() => permit.map_err(|_| TaskError::Closed)?,
        };
        enter();
        permit.send(Envelope { message: message(bytes), origin });
        stats.read.fetch_add(1, Relaxed);
    }
}

fn message(value: Vec<u8>) -> Message {
    Message { key: None, value, headers: Vec::new(), timestamp: None }
}

pub(super) async fn send_dead(
    dead: &Sender<DeadLetter>,
    stage: &str,
    kind: Kind,
    reason: String,
    origin: Origin,
    message: Message,
) -> Result<(), TaskError> {
    let letter = DeadLetter { stage: stage.to_string(), kind, reason, origin, message };
    dead.send(letter).await.map_err(|_| TaskError::Closed)
}

/// Before a run with durable state: the checkpoint to resume from, if an
/// earlier run died. An earlier run that finished but died while moving its
/// outputs into place gets that finished first.
async fn recover(
    store: &Arc<StateStore>,
    config: &crate::config::PipelineConfig,
) -> Result<Option<Checkpoint>, RunError> {
    let reading = store.clone();
    let checkpoint = tokio::task::spawn_blocking(move || reading.checkpoint())
        .await
        .map_err(|e| RunError::Internal(format!("reading the checkpoint panicked: {e}")))??;
    match checkpoint {
        Some(c) if c.complete => {
            for path in config.output_path().into_iter().chain([config.dead_letter_path()]) {
                let partial = crate::io::partial_path(&path);
                if partial.exists() {
                    std::fs::rename(&partial, &path).map_err(|error| RunError::Output { path: path.clone(), error })?;
                }
            }
            commit(store, None).await?;
            Ok(None)
        }
        other => Ok(other),
    }
}

//! The running pipeline: source → stage → … → sink, one task each, joined by
//! bounded channels so that a slow consumer slows its producer. Every task
//! also holds a sender to the dead-letter writer.

use super::Pipeline;
use super::dead_letter::{DeadLetter, Kind, Origin};
use super::error::RunError;
use super::stage_task::StageTask;
use super::stats::{RunReport, Stats};
use crate::bindings::Message;
use crate::config::{Format, SourceConfig};
use crate::io::{Line, LineReader, Output};
use serde::de::IgnoredAny;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tokio::io::{AsyncBufRead, BufReader};
use tokio::sync::mpsc::{Receiver, Sender, channel};
use tokio::task::JoinHandle;

/// Messages buffered in front of the sink (in front of a stage: its `buffer`).
const BUFFER: usize = 64;
/// Messages the sink takes from its channel at once.
const SINK_BATCH: usize = 256;
/// How much of an over-long input line the dead-letter record keeps.
const TOO_LONG_KEPT: usize = 1024;

/// A message and where it came from; outputs inherit their input's origin.
pub(super) struct Envelope {
    pub(super) message: Message,
    pub(super) origin: Origin,
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
    let Pipeline { config, stages, stats } = pipeline;

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
    let output_path = config.output_path().unwrap_or_else(|| PathBuf::from("-"));
    let output = match config.output_path() {
        Some(path) => Output::file(&path, 0o644).map_err(|error| RunError::Output { path, error })?,
        None => Output::stdout(),
    };
    let dead_path = config.dead_letter_path();
    // Dead letters hold input as it was, unredacted: private by default.
    let dead_output =
        Output::file(&dead_path, 0o600).map_err(|error| RunError::Output { path: dead_path.clone(), error })?;

    let (dead_tx, dead_rx) = channel::<DeadLetter>(BUFFER);
    let first_buffer = stages.first().map_or(BUFFER, |s| s.exec.buffer);
    let (source_tx, mut rx) = channel::<Envelope>(first_buffer);
    let source = config.source();
    let source_task: Task<Option<u64>> = tokio::spawn(read_source(
        reader,
        source.clone(),
        input_path.unwrap_or_else(|| PathBuf::from("-")),
        source_tx,
        dead_tx.clone(),
        stats.clone(),
        shutdown,
    ));

    let mut stage_tasks: Vec<Task<()>> = Vec::new();
    let buffers: Vec<usize> = stages.iter().skip(1).map(|s| s.exec.buffer).chain([BUFFER]).collect();
    for ((index, built), buffer) in stages.into_iter().enumerate().zip(buffers) {
        let (tx, next_rx) = channel::<Envelope>(buffer);
        let task = StageTask {
            runner: built.runner,
            exec: built.exec,
            stats: stats.clone(),
            index,
            dead: dead_tx.clone(),
            idle: built.first.into_iter().collect(),
            failures_in_a_row: 0,
        };
        stage_tasks.push(tokio::spawn(task.run(rx, tx)));
        rx = next_rx;
    }

    let sink_task: Task<Output> =
        tokio::spawn(write_sink(rx, output, output_path.clone(), config.sink().format, dead_tx, stats.clone()));
    let dead_task: Task<Output> =
        tokio::spawn(write_dead_letters(dead_rx, dead_output, dead_path, input_label, stats.clone()));

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
    sink.commit().await.map_err(|error| RunError::Output { path: output_path, error })?;
    dead.commit().await.map_err(|error| RunError::Output { path: config.dead_letter_path(), error })?;
    let mut report = stats.report(started.elapsed());
    report.stopped_after_line = stopped_after_line;
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
) -> Result<Option<u64>, TaskError> {
    let max_line_bytes = source.max_line_bytes;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut lines = LineReader::new(reader, max_line_bytes);
    loop {
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
        let bytes = match line {
            Line::Text(bytes) => bytes,
            Line::TooLong(mut head) => {
                stats.read.fetch_add(1, Relaxed);
                head.truncate(TOO_LONG_KEPT);
                let reason = format!(
                    "line is longer than {max_line_bytes} bytes (source.max_line_bytes); the record keeps its first {} bytes",
                    head.len()
                );
                send_dead(&dead, "source", Kind::Input, reason, origin, message(head)).await?;
                continue;
            }
        };
        if source.format == Format::Jsonl {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Err(e) = serde_json::from_slice::<IgnoredAny>(&bytes) {
                stats.read.fetch_add(1, Relaxed);
                send_dead(&dead, "source", Kind::Input, format!("not JSON: {e}"), origin, message(bytes)).await?;
                continue;
            }
        }
        // A message waiting for room downstream when the signal comes counts as unread.
        tokio::select! {
            biased;
            () = &mut shutdown => return Ok(Some(origin.line - 1)),
            sent = tx.send(Envelope { message: message(bytes), origin }) => sent.map_err(|_| TaskError::Closed)?,
        }
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

async fn write_sink(
    mut rx: Receiver<Envelope>,
    mut output: Output,
    path: PathBuf,
    format: Format,
    dead: Sender<DeadLetter>,
    stats: Arc<Stats>,
) -> Result<Output, TaskError> {
    let mut batch = Vec::with_capacity(SINK_BATCH);
    while rx.recv_many(&mut batch, SINK_BATCH).await > 0 {
        let mut written = 0;
        for Envelope { message, origin } in batch.drain(..) {
            if format == Format::Jsonl && message.value.iter().any(|&b| b == b'\n' || b == b'\r') {
                // Keep one document per line. In valid JSON a raw line break can
                // only be whitespace between tokens, so blanking it changes
                // nothing else: no re-encoding, key order and numbers stay.
                match serde_json::from_slice::<IgnoredAny>(&message.value) {
                    Ok(_) => {
                        let one_line = crate::io::one_line_json(message.value);
                        output
                            .write_line(&one_line)
                            .await
                            .map_err(|error| RunError::Output { path: path.clone(), error })?;
                        written += 1;
                    }
                    Err(e) => {
                        let reason =
                            format!("the sink writes JSON lines, but this output spans lines and is not JSON: {e}");
                        send_dead(&dead, "sink", Kind::Output, reason, origin, message).await?;
                    }
                }
                continue;
            }
            output.write_line(&message.value).await.map_err(|error| RunError::Output { path: path.clone(), error })?;
            written += 1;
        }
        stats.written.fetch_add(written, Relaxed);
    }
    Ok(output)
}

async fn write_dead_letters(
    mut rx: Receiver<DeadLetter>,
    mut output: Output,
    path: PathBuf,
    input_label: String,
    stats: Arc<Stats>,
) -> Result<Output, TaskError> {
    while let Some(letter) = rx.recv().await {
        output
            .write_line(&letter.to_json_line(&input_label))
            .await
            .map_err(|error| RunError::Output { path: path.clone(), error })?;
        stats.dead_lettered.fetch_add(1, Relaxed);
    }
    Ok(output)
}

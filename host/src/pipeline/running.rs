//! The running pipeline: source → stage → … → sink, one task each, joined by
//! bounded channels so that a slow consumer slows its producer. Every task
//! also holds a sender to the dead-letter writer.

use super::Pipeline;
use super::dead_letter::{DeadLetter, Kind, Origin};
use super::error::RunError;
use super::stats::{RunReport, Stats};
use crate::bindings::Message;
use crate::config::Format;
use crate::io::{Line, LineReader, Output};
use super::stage_task::StageTask;
use serde::de::IgnoredAny;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tokio::io::{AsyncBufRead, BufReader};
use tokio::sync::mpsc::{Receiver, Sender, channel};
use tokio::task::JoinHandle;

/// Messages buffered in front of the sink (in front of a stage: its `buffer`).
const BUFFER: usize = 64;
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

pub(super) async fn run(pipeline: Pipeline) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let Pipeline { config, stages, stats } = pipeline;

    let input_path = config.input_path();
    let input_label = input_path.as_ref().map_or_else(|| "-".to_string(), |p| p.display().to_string());
    let reader: Box<dyn AsyncBufRead + Send + Unpin> = match &input_path {
        Some(path) => {
            let file =
                tokio::fs::File::open(path).await.map_err(|source| RunError::Input { path: path.clone(), source })?;
            Box::new(BufReader::with_capacity(64 * 1024, file))
        }
        None => Box::new(BufReader::with_capacity(64 * 1024, tokio::io::stdin())),
    };
    let output_path = config.output_path().unwrap_or_else(|| PathBuf::from("-"));
    let output = match config.output_path() {
        Some(path) => Output::file(&path).map_err(|source| RunError::Output { path, source })?,
        None => Output::stdout(),
    };
    let dead_path = config.dead_letter_path();
    let dead_output =
        Output::file(&dead_path).map_err(|source| RunError::Output { path: dead_path.clone(), source })?;

    let (dead_tx, dead_rx) = channel::<DeadLetter>(BUFFER);
    let first_buffer = stages.first().map_or(BUFFER, |s| s.exec.buffer);
    let (source_tx, mut rx) = channel::<Envelope>(first_buffer);
    let source = config.source();
    let source_task: Task<()> = tokio::spawn(read_source(
        reader,
        source.format,
        source.max_line_bytes,
        input_path.unwrap_or_else(|| PathBuf::from("-")),
        source_tx,
        dead_tx.clone(),
        stats.clone(),
    ));

    let mut stage_tasks: Vec<Task<()>> = Vec::new();
    let buffers: Vec<usize> = stages.iter().skip(1).map(|s| s.exec.buffer).chain([BUFFER]).collect();
    for ((index, built), buffer) in stages.into_iter().enumerate().zip(buffers) {
        let (tx, next_rx) = channel::<Envelope>(buffer);
        let task = StageTask {
            pre: built.pre,
            exec: built.exec,
            stats: stats.clone(),
            index,
            dead: dead_tx.clone(),
            idle: vec![built.first],
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
    note(&mut failure, join(source_task).await);
    for t in stage_tasks {
        note(&mut failure, join(t).await);
    }
    let sink = join(sink_task).await;
    let dead = join(dead_task).await;
    let (sink, dead) = match (sink, dead) {
        (Ok(sink), Ok(dead)) if failure.is_none() => (sink, dead),
        (sink, dead) => {
            note(&mut failure, sink.map(drop));
            note(&mut failure, dead.map(drop));
            return Err(failure.unwrap_or_else(|| RunError::Internal("a task stopped without saying why".into())));
        }
    };

    sink.commit().await.map_err(|source| RunError::Output { path: output_path, source })?;
    dead.commit().await.map_err(|source| RunError::Output { path: config.dead_letter_path(), source })?;
    Ok(stats.report(started.elapsed()))
}

async fn join<T>(task: Task<T>) -> Result<T, TaskError> {
    task.await.unwrap_or_else(|e| Err(TaskError::Failed(RunError::Internal(format!("pipeline task failed: {e}")))))
}

async fn read_source(
    reader: Box<dyn AsyncBufRead + Send + Unpin>,
    format: Format,
    max_line_bytes: usize,
    path: PathBuf,
    tx: Sender<Envelope>,
    dead: Sender<DeadLetter>,
    stats: Arc<Stats>,
) -> Result<(), TaskError> {
    let mut lines = LineReader::new(reader, max_line_bytes);
    while let Some(line) = lines.next().await.map_err(|source| RunError::Input { path: path.clone(), source })? {
        let origin = Origin { line: lines.line };
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
        if format == Format::Jsonl {
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            stats.read.fetch_add(1, Relaxed);
            if let Err(e) = serde_json::from_slice::<IgnoredAny>(&bytes) {
                send_dead(&dead, "source", Kind::Input, format!("not JSON: {e}"), origin, message(bytes)).await?;
                continue;
            }
        } else {
            stats.read.fetch_add(1, Relaxed);
        }
        tx.send(Envelope { message: message(bytes), origin }).await.map_err(|_| TaskError::Closed)?;
    }
    Ok(())
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
    while let Some(Envelope { message, origin }) = rx.recv().await {
        if format == Format::Jsonl && message.value.contains(&b'\n') {
            // Keep one document per line: re-encode compactly, or refuse.
            match serde_json::from_slice::<serde_json::Value>(&message.value) {
                Ok(doc) => {
                    let compact = serde_json::to_vec(&doc).expect("a parsed value serialises");
                    output
                        .write_line(&compact)
                        .await
                        .map_err(|source| RunError::Output { path: path.clone(), source })?;
                    stats.written.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    let reason =
                        format!("the sink writes JSON lines, but this output spans lines and is not JSON: {e}");
                    send_dead(&dead, "sink", Kind::Output, reason, origin, message).await?;
                }
            }
            continue;
        }
        output.write_line(&message.value).await.map_err(|source| RunError::Output { path: path.clone(), source })?;
        stats.written.fetch_add(1, Relaxed);
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
            .map_err(|source| RunError::Output { path: path.clone(), source })?;
        stats.dead_lettered.fetch_add(1, Relaxed);
    }
    Ok(output)
}

//! The running pipeline: source → stage → … → sink, one task each, joined by
//! bounded channels so that a slow consumer slows its producer. Every task
//! also holds a sender to the dead-letter task.

use super::Pipeline;
use super::checkpoint::{Checkpoints, Flush, commit};
use super::connectors::{self, SinkRun};
use super::dead_letter::{DeadLetter, Kind};
use super::error::RunError;
use super::halt::Halt;
use super::job::EmitPlan;
use super::sink::{Drained, SinkTask};
use super::slots::Slots;
use super::source::{SourceTask, Stopped};
use super::stage_task::StageTask;
use super::stats::RunReport;
use crate::bindings::Message;
use crate::connect::{Sink, Source};
use crate::envelope::{Acks, Envelope, Origin};
use crate::state::{Checkpoint, StateStore};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::{Sender, channel};
use tokio::task::JoinHandle;

/// Messages buffered in front of the sink (in front of a stage: its `buffer`).
const BUFFER: usize = 64;

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
    let Pipeline { config, stages, stats, state, given } = pipeline;

    // With durable state, the run checkpoints, and resumes from its last
    // checkpoint if an earlier run of this pipeline died.
    let durable = state.clone().filter(|s| s.is_durable());
    let resume = match &durable {
        Some(store) => recover(store, &config).await?,
        None => None,
    };
    let start_after = connectors::start_after(&config, resume.as_ref());
    let source = connectors::open_source(&config, given.source, start_after).await?;
    let locator = source.locator();
    if let Some(checkpoint) = &resume {
        tracing::info!("resuming after {} from the last checkpoint", locator.describe(checkpoint.source));
    }
    // Appending (resuming an interrupted run) keeps what the files hold.
    let sink_run = SinkRun { resume, durable: durable.is_some(), append: config.append() };
    let (sink, sink_name) = connectors::open_sink(&config, given.sink, sink_run)?;
    let (dead_sink, dead_name) = connectors::open_dead_letters(&config, given.dead_letters, sink_run)?;

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
    let (sink_flush_tx, sink_flushes) = channel::<Flush>(1);
    let (dead_flush_tx, dead_flushes) = channel::<Flush>(1);
    let checkpoints = durable.clone().map(|store| Checkpoints {
        store,
        sink: sink_flush_tx,
        dead: dead_flush_tx,
        every: config.state().checkpoint_every.max(1),
        interval: config.state().checkpoint_interval,
        since: 0,
        last: tokio::time::Instant::now(),
    });
    // Inputs are tracked until done only when something waits for that: a
    // checkpoint, or a source that acknowledges.
    let ack_when_durable = source.acknowledges();
    let acks = (checkpoints.is_some() || ack_when_durable).then(Acks::new);

    let (dead_tx, dead_rx) = channel::<DeadLetter>(BUFFER);
    let first_buffer = stages.first().map_or(BUFFER, |s| s.exec.buffer);
    let (source_tx, mut rx) = channel::<Envelope>(first_buffer);
    let source_task: Task<Stopped<_>> = tokio::spawn(
        SourceTask {
            source,
            format: config.source().format,
            tx: source_tx,
            dead: dead_tx.clone(),
            stats: stats.clone(),
            acks,
            checkpoints,
            read_through: start_after,
        }
        .run(shutdown),
    );

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
            halt: halt.clone(),
            stuck: None,
            held: Arc::default(),
        };
        stage_tasks.push(tokio::spawn(task.run(rx, tx)));
        rx = next_rx;
    }

    let flush_interval = config.sink().flush_interval;
    let sink_task = SinkTask {
        sink,
        name: sink_name.clone(),
        flush_interval,
        ack_when_durable,
        stats: stats.clone(),
        flushes: sink_flushes,
    };
    let sink_task: Task<Drained<_>> = tokio::spawn(sink_task.outputs(rx, config.sink().format, dead_tx));
    let dead_task = SinkTask {
        sink: dead_sink,
        name: dead_name.clone(),
        flush_interval,
        ack_when_durable,
        stats: stats.clone(),
        flushes: dead_flushes,
    };
    let dead_task: Task<Drained<_>> = tokio::spawn(dead_task.dead_letters(dead_rx, locator.clone()));

    // Wait for every task; the first real failure in pipeline order is the
    // cause (the others then only saw their neighbour close).
    let mut failure: Option<RunError> = None;
    let note = |failure: &mut Option<RunError>, r: Result<(), TaskError>| {
        if let Err(TaskError::Failed(e)) = r {
            failure.get_or_insert(e);
        }
    };
    let mut stopped = match join(source_task).await {
        Ok(stopped) => Some(stopped),
        Err(e) => {
            note(&mut failure, Err(e));
            None
        }
    };
    let stopped_after = stopped.as_ref().and_then(|s| s.after);
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
    let (stages, sink, dead) = match stopped_after {
        None => rest.await,
        Some(position) => match tokio::time::timeout(config.shutdown_timeout(), rest).await {
            Ok(done) => done,
            Err(_) => {
                aborts.iter().for_each(|a| a.abort());
                let timeout = humantime::format_duration(config.shutdown_timeout()).to_string();
                return Err(RunError::DrainTimeout { stopped_after: locator.describe(position), timeout });
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
            // What was given up on is told to the source (a broker redelivers it).
            if let Some(stopped) = stopped.as_mut() {
                stopped.tell_done();
            }
            return Err(failure.unwrap_or_else(|| RunError::Internal("a task stopped without saying why".into())));
        }
    };

    // Both sinks complete and durable before either appears.
    let (sink, sink_unflushed) = finish(sink, &sink_name).await?;
    let (dead, dead_unflushed) = finish(dead, &dead_name).await?;
    // The state of a finished run is committed before its outputs appear: a
    // crash in between leaves a complete checkpoint, and the next run only
    // finishes moving the files.
    if let Some(store) = &state {
        let done = Checkpoint { source: stopped_after.unwrap_or(0), sink: 0, dead_letters: 0, complete: true };
        commit(store, store.is_durable().then_some(done)).await?;
    }
    sink.commit().await.map_err(|error| RunError::Output { path: sink_name, error })?;
    dead.commit().await.map_err(|error| RunError::Output { path: dead_name, error })?;
    if let Some(store) = durable {
        commit(&store, None).await?;
    }
    sink_unflushed.into_iter().chain(dead_unflushed).for_each(Origin::settle);
    if let Some(stopped) = stopped.as_mut() {
        stopped.tell_done();
    }
    let mut report = stats.report(started.elapsed());
    report.stopped_after = stopped_after;
    if let Some(halted) = halt.as_ref().and_then(|h| h.halted()) {
        report.stop_reason = Some(format!(
            "{}; the {} messages it could not run were dead-lettered with that reason",
            halted.reason, halted.unfinished
        ));
    }
    Ok(report)
}

/// A sink at the end of a successful run: everything durable, ready to be
/// made visible; and the messages whose acknowledgement waited for that.
async fn finish<S: Sink>(
    drained: Drained<S>,
    name: &std::path::Path,
) -> Result<(crate::connect::Finished, Vec<Origin>), RunError> {
    let finished = drained.sink.finish().await.map_err(|error| RunError::Output { path: name.to_path_buf(), error })?;
    Ok((finished, drained.unflushed))
}

impl<S: Source> Stopped<S> {
    /// Tells the source of the inputs done since it last heard.
    fn tell_done(&mut self) {
        if let Some(acks) = self.acks.as_mut() {
            acks.take_done(|done| self.source.done(done));
        }
    }
}

async fn join<T>(task: Task<T>) -> Result<T, TaskError> {
    task.await.unwrap_or_else(|e| Err(TaskError::Failed(RunError::Internal(format!("pipeline task failed: {e}")))))
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
            connectors::complete_interrupted(config)?;
            commit(store, None).await?;
            Ok(None)
        }
        other => Ok(other),
    }
}

//! The running pipeline: source → stage → … → sink, one task each, joined by
//! bounded channels so that a slow consumer slows its producer. Every task
//! also holds a sender to the dead-letter task.
//!
//! A run opens its connectors, starts the tasks ([`Running::start`]), waits
//! for them ([`Running::wait`]), and only if every one ended well commits,
//! in this order: the sinks made durable, the state (with a checkpoint
//! marked complete), the sinks made visible, the checkpoint cleared, and
//! the source told that its last inputs are done ([`Ended::commit`]).

use super::applied::Applied;
use super::checkpoint::{self, Checkpoints, Flush, commit};
use super::connectors::{AnySink, AnySource, Opened};
use super::dead_letter::DeadLetter;
use super::error::RunError;
use super::events::Events;
use super::halt::Halt;
use super::sink::{Drained, SinkTask};
use super::source::{SourceTask, Stopped};
use super::stage_task::StageTask;
use super::stats::RunReport;
use super::task::{Task, TaskError, join};
use super::{BuiltStage, Pipeline};
use crate::config::PipelineConfig;
use crate::connect::{Locator, Sink, Source};
use crate::envelope::{Acks, Envelope, Origin};
use crate::state::{Checkpoint, InputId, StateStore, StoppedInput};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::channel;
use tokio::task::JoinHandle;

/// Messages buffered in front of the sink (in front of a stage: its `buffer`).
const BUFFER: usize = 64;

/// The stopped inputs a store remembers (the most recent): each is one
/// run stopped by a signal and never resumed.
const MAX_STOPPED_INPUTS: usize = 100;

pub(super) async fn run(
    pipeline: Pipeline,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    // The reloader stays with whoever took it; the stages hold their end.
    let Pipeline { config, stages, events, state, given, reloader: _, taps } = pipeline;
    // With durable state, the run checkpoints, and resumes from its last
    // checkpoint if an earlier run of this pipeline died.
    let durable = state.clone().filter(|s| s.is_durable());
    // The input a signal may stop: lines of a file or stdin, read in order.
    let input = (given.source.is_none() && !config.source().kind().is_broker())
        .then(|| InputId::of(config.input_path().as_deref()));
    let recovered = match &durable {
        Some(store) => checkpoint::recover(store, &config, input.as_ref()).await?,
        None => checkpoint::Recovered::default(),
    };
    let opened = Opened::open(&config, given, recovered.resume, durable.is_some()).await?;
    let applied = Applied::new(opened.source.id(), opened.source.redelivers_after(), recovered.applied);
    // Without checkpoints, a stage that can no longer start stops the run as
    // an interrupt does (with them, the run fails and resumes from its last).
    let halt = durable.is_none().then(|| Arc::new(Halt::new()));
    let checkpointing = durable.clone().map(|store| (store, input.clone()));
    let running =
        Running::start(&config, stages, (opened, applied), (&events, &taps), checkpointing, halt.clone(), shutdown);
    let ended = running.wait(&config).await?;
    let stopped_after = ended.commit(state.as_ref(), durable.as_ref(), (input, recovered.stopped_inputs)).await?;

    let mut report = events.snapshot().report(started.elapsed());
    report.stopped_after = stopped_after;
    if let Some(halted) = halt.as_ref().and_then(|h| h.halted()) {
        report.stop_reason = Some(format!(
            "{}; the {} messages it could not run were dead-lettered with that reason",
            halted.reason, halted.unfinished
        ));
    }
    Ok(report)
}

/// The tasks of a run, started.
struct Running {
    source: Task<Stopped<AnySource>>,
    stages: Vec<Task<()>>,
    sink: Task<Drained<AnySink>>,
    dead_letters: Task<Drained<AnySink>>,
    locator: Locator,
    sink_name: PathBuf,
    dead_letters_name: PathBuf,
    /// The shutdown signal, also heard once the source has read its whole
    /// input: the messages still in the stages then drain under
    /// `shutdown_timeout` as they would have.
    stop: Shared<BoxFuture<'static, ()>>,
}

/// The tasks of a run that ended well.
struct Ended {
    stopped: Stopped<AnySource>,
    sink: Drained<AnySink>,
    dead_letters: Drained<AnySink>,
    sink_name: PathBuf,
    dead_letters_name: PathBuf,
}

impl Running {
    /// Joins the connectors and the stages with channels, and starts a task
    /// for each. `checkpointing`: the store checkpoints go to, and the input
    /// they record; `halt`: where a stuck stage stops the source (runs
    /// without checkpoints).
    fn start(
        config: &PipelineConfig,
        stages: Vec<BuiltStage>,
        (opened, applied): (Opened, Applied),
        (events, taps): (&Events, &super::Taps),
        checkpointing: Option<(Arc<StateStore>, Option<InputId>)>,
        halt: Option<Arc<Halt>>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        let Opened { source, start_after, sink, sink_name, dead_letters, dead_letters_name } = opened;
        let locator = source.locator();
        if let Some(backlog) = source.backlog() {
            events.watch_backlog(backlog);
        }
        let stop = shutdown.boxed().shared();
        let shutdown = {
            let (stop, halt) = (stop.clone(), halt.clone());
            async move {
                match halt {
                    Some(halt) => tokio::select! {
                        () = stop => {}
                        () = halt.stopped() => {}
                    },
                    None => stop.await,
                }
            }
        };
        let (sink_flush, sink_flushes) = channel::<Flush>(1);
        let (dead_flush, dead_flushes) = channel::<Flush>(1);
        let checkpoints = checkpointing.map(|(store, input)| Checkpoints {
            store,
            input,
            sink: sink_flush,
            dead: dead_flush,
            every: config.state().checkpoint_every.max(1),
            interval: config.state().checkpoint_interval,
            since: 0,
            last: tokio::time::Instant::now(),
        });
        // Inputs are tracked until done only when something waits for that:
        // a checkpoint, or a source that acknowledges.
        let ack_when_durable = source.acknowledges();
        let acks = (checkpoints.is_some() || ack_when_durable).then(Acks::new);

        let (dead_tx, dead_rx) = channel::<DeadLetter>(BUFFER);
        let first_buffer = stages.first().map_or(BUFFER, |s| s.exec.buffer);
        let (source_tx, mut rx) = channel::<Envelope>(first_buffer);
        // The channel in front of each stage, for its queue depth.
        let mut inbox = source_tx.downgrade();
        let source = SourceTask {
            source,
            format: config.source().format,
            tx: source_tx,
            dead: dead_tx.clone(),
            events: events.clone(),
            acks,
            checkpoints,
            read_through: start_after,
            applied,
        };
        let source = tokio::spawn(source.run(shutdown));

        let mut stage_tasks = Vec::new();
        let buffers: Vec<usize> = stages.iter().skip(1).map(|s| s.exec.buffer).chain([BUFFER]).collect();
        for ((index, built), buffer) in stages.into_iter().enumerate().zip(buffers) {
            let (tx, next_rx) = channel::<Envelope>(buffer);
            events.stage(index).watch_inbox(std::mem::replace(&mut inbox, tx.downgrade()));
            let task = StageTask::new(built, events.stage(index), taps.point(index), dead_tx.clone(), halt.clone());
            stage_tasks.push(tokio::spawn(task.run(rx, tx)));
            rx = next_rx;
        }

        let sink_task = |sink, name: &PathBuf, flushes| SinkTask {
            sink,
            name: name.clone(),
            flush_interval: config.sink().flush_interval,
            ack_when_durable,
            events: events.clone(),
            flushes,
        };
        let sink = tokio::spawn(sink_task(sink, &sink_name, sink_flushes).outputs(rx, config.sink().format, dead_tx));
        let dead_letters = tokio::spawn(
            sink_task(dead_letters, &dead_letters_name, dead_flushes).dead_letters(dead_rx, locator.clone()),
        );
        Running { source, stages: stage_tasks, sink, dead_letters, locator, sink_name, dead_letters_name, stop }
    }

    /// Waits for every task. The first real failure in pipeline order is
    /// the cause (the others then only saw their neighbour close). After a
    /// shutdown signal, what was read gets `shutdown_timeout` to drain, also
    /// when the signal comes after the source has read its whole input.
    async fn wait(self, config: &PipelineConfig) -> Result<Ended, RunError> {
        let Running { source, stages, sink, dead_letters, locator, sink_name, dead_letters_name, stop } = self;
        let mut failure: Option<RunError> = None;
        let note = |failure: &mut Option<RunError>, r: Result<(), TaskError>| {
            if let Err(TaskError::Failed(e)) = r {
                failure.get_or_insert(e);
            }
        };
        let mut stopped = match join(source).await {
            Ok(stopped) => Some(stopped),
            Err(e) => {
                note(&mut failure, Err(e));
                None
            }
        };
        let aborts: Vec<_> = stages
            .iter()
            .map(JoinHandle::abort_handle)
            .chain([sink.abort_handle(), dead_letters.abort_handle()])
            .collect();
        let rest = async {
            let mut joined = Vec::new();
            for t in stages {
                joined.push(join(t).await);
            }
            (joined, join(sink).await, join(dead_letters).await)
        };
        let mut rest = std::pin::pin!(rest);
        let stopped_after = stopped.as_ref().and_then(|s| s.after);
        let drained = match stopped_after {
            Some(_) => tokio::time::timeout(config.shutdown_timeout(), &mut rest).await,
            // The whole input was read (or the source failed, which closes
            // the stages' input): a signal now still bounds the drain.
            None => tokio::select! {
                biased;
                done = &mut rest => Ok(done),
                () = stop => {
                    if stopped.is_some() {
                        tracing::info!("the whole input was read; the messages still running are finishing");
                    }
                    tokio::time::timeout(config.shutdown_timeout(), &mut rest).await
                }
            },
        };
        let (stages, sink, dead_letters) = match drained {
            Ok(done) => done,
            Err(_) => {
                aborts.iter().for_each(|a| a.abort());
                // The source failed: that is why the run ends.
                let Some(stopped) = stopped.take() else {
                    return Err(
                        failure.unwrap_or_else(|| RunError::Internal("the source stopped without saying why".into()))
                    );
                };
                // What was given up on goes back to a broker now, not after its ack wait.
                if let Err(e) = stopped.close(false).await {
                    tracing::warn!("{e}");
                }
                let timeout = humantime::format_duration(config.shutdown_timeout()).to_string();
                let broker = config.source().kind().is_broker();
                let stopped_after = stopped_after.map(|position| locator.describe(position));
                return Err(RunError::DrainTimeout { stopped_after, timeout, broker });
            }
        };
        for r in stages {
            note(&mut failure, r);
        }
        match (stopped.take(), sink, dead_letters) {
            (Some(stopped), Ok(sink), Ok(dead_letters)) if failure.is_none() => {
                Ok(Ended { stopped, sink, dead_letters, sink_name, dead_letters_name })
            }
            (mut stopped, sink, dead_letters) => {
                note(&mut failure, sink.map(drop));
                note(&mut failure, dead_letters.map(drop));
                // What was given up on is told to the source (a broker redelivers it).
                if let Some(stopped) = stopped.take()
                    && let Err(e) = stopped.close(false).await
                {
                    tracing::warn!("{e}");
                }
                Err(failure.unwrap_or_else(|| RunError::Internal("a task stopped without saying why".into())))
            }
        }
    }
}

impl Ended {
    /// Makes the run's work durable and visible; returns where the source
    /// stopped, if a signal stopped it. A run with durable state reading
    /// `input` leaves its place in the store then, so that the next run does
    /// not read those lines again into the same state.
    async fn commit(
        self,
        state: Option<&Arc<StateStore>>,
        durable: Option<&Arc<StateStore>>,
        (input, stopped_inputs): (Option<InputId>, Vec<StoppedInput>),
    ) -> Result<Option<u64>, RunError> {
        let Ended { mut stopped, sink, dead_letters, sink_name, dead_letters_name } = self;
        let stopped_after = stopped.after;
        // The inputs signals stopped runs over, as this run leaves them: its
        // own input's mark goes (the run read on from there, or read it
        // whole) or moves to where a signal stopped it; the others stay.
        let stopped_inputs = input.map(|input| {
            let mut left: Vec<_> = stopped_inputs.into_iter().filter(|s| !s.input.is(&input)).collect();
            left.extend(stopped_after.map(|line| StoppedInput { input, line }));
            let kept = left.len().saturating_sub(MAX_STOPPED_INPUTS);
            left.split_off(kept)
        });
        // Both sinks complete and durable before either appears.
        let (sink, sink_unflushed) = finish(sink, &sink_name).await?;
        let (dead_letters, dead_unflushed) = finish(dead_letters, &dead_letters_name).await?;
        // The state of a finished run is committed before its outputs
        // appear: a crash in between leaves a complete checkpoint, and the
        // next run only finishes moving the files. With the record of the
        // inputs from a broker it is about to acknowledge (those done, held
        // for this commit, and those whose outputs were just made durable).
        if let Some(store) = state {
            let applied = match durable {
                Some(_) => {
                    stopped.take_done();
                    let unflushed = sink_unflushed.iter().chain(&dead_unflushed).map(|origin| origin.position);
                    stopped.applied.record(stopped.told.positions().chain(unflushed))
                }
                None => None,
            };
            let done = Checkpoint {
                source: stopped_after.unwrap_or(0),
                complete: true,
                applied,
                stopped_inputs,
                ..Checkpoint::default()
            };
            commit(store, store.is_durable().then_some(done)).await?;
        }
        sink.commit().await.map_err(|error| RunError::Output { path: sink_name, error })?;
        dead_letters.commit().await.map_err(|error| RunError::Output { path: dead_letters_name, error })?;
        // The checkpoint goes; the record of a broker's inputs stays, in
        // case the broker does not hear, and so do the stopped inputs.
        if let Some(store) = durable {
            commit(store, None).await?;
        }
        let held_again = stopped.applied.held_again();
        if held_again > 0 {
            tracing::info!(
                "{held_again} inputs delivered again after a run died were in the state already: acknowledged \
                 without running again"
            );
        }
        sink_unflushed.into_iter().chain(dead_unflushed).for_each(Origin::settle);
        stopped.close(true).await?;
        Ok(stopped_after)
    }
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
    /// The inputs done since the source last heard, held or told.
    fn take_done(&mut self) {
        let Stopped { source, acks, told, .. } = self;
        if let Some(acks) = acks.as_mut() {
            acks.take_done(|done| told.done(source, done));
        }
    }

    /// Tells the source of the inputs done since it last heard, their state
    /// (if any) committed or, if not `committed`, given up on; then closes
    /// it, so that what it tells a broker is sent.
    async fn close(mut self, committed: bool) -> Result<(), RunError> {
        self.take_done();
        let Stopped { source, told, .. } = &mut self;
        if committed {
            told.committed(source);
        } else {
            told.abandoned(source);
        }
        let path = source.locator().path();
        self.source.close().await.map_err(|error| RunError::Input { path, error })
    }
}

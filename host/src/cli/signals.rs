//! The signals `sluice run` answers: SIGINT and SIGTERM stop the run
//! (a second one aborts it), SIGHUP reloads its stages, SIGUSR1 prints its
//! live stats; all of them from before the pipeline is built.

use super::outcome::{Decided, Outcome};
use anyhow::{Context, Result};
use sluice::LiveStats;
use std::time::Instant;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// The signals `sluice run` answers, listened for from before the pipeline
/// is built: one that comes while stages compile (seconds, for a Python
/// stage not yet in the compile cache) must not kill the process with the
/// signal's default action, without its report.
pub(super) struct Signals {
    pub(super) stop: Stop,
    pub(super) hangup: Signal,
    pub(super) usr1: Signal,
}

impl Signals {
    pub(super) fn listen() -> Result<Self> {
        Ok(Signals {
            stop: Stop::listen()?,
            hangup: listen(SignalKind::hangup())?,
            usr1: listen(SignalKind::user_defined1())?,
        })
    }

    /// Runs `build`, answering signals meanwhile: SIGINT or SIGTERM stops
    /// it (nothing has been read, so nothing is lost), SIGHUP and SIGUSR1
    /// say that the pipeline is still being built.
    pub(super) async fn while_building<T>(&mut self, build: impl Future<Output = T>) -> Result<T> {
        let started = Instant::now();
        let mut build = std::pin::pin!(build);
        loop {
            tokio::select! {
                built = &mut build => return Ok(built),
                () = self.stop.recv() => {
                    let message = "interrupted while the pipeline was being built: nothing was read or written";
                    return Err(Decided { outcome: Outcome::Interrupted, message: message.into() }.into());
                }
                Some(()) = self.hangup.recv() => tracing::info!(
                    "SIGHUP: the pipeline is still being built; a plugin file that changed meanwhile is reloaded \
                     once it runs"
                ),
                Some(()) = self.usr1.recv() => tracing::info!(
                    "the pipeline is still being built ({:.1} s so far)",
                    started.elapsed().as_secs_f64()
                ),
            }
        }
    }
}

fn listen(kind: SignalKind) -> Result<Signal> {
    signal(kind).context("installing a signal handler")
}

/// SIGINT and SIGTERM, which stop a run.
pub(super) struct Stop {
    interrupt: Signal,
    terminate: Signal,
}

impl Stop {
    fn listen() -> Result<Self> {
        Ok(Stop { interrupt: listen(SignalKind::interrupt())?, terminate: listen(SignalKind::terminate())? })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Resolves at the first SIGINT or SIGTERM.
pub(super) async fn shutdown_signal(mut stop: Stop, drain: String) {
    stop.recv().await;
    tracing::warn!(
        "stopping: no more input is read; messages already read are finishing (up to shutdown_timeout, {drain}). \
         Press Ctrl-C again to abort without writing output"
    );
    FIRST_SIGNAL.notify_one();
}

static FIRST_SIGNAL: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Resolves at a signal after the first: it starts listening only once the
/// first has been handled.
pub(super) async fn second_signal() {
    FIRST_SIGNAL.notified().await;
    wait_for_signal().await;
}

async fn wait_for_signal() {
    match Stop::listen() {
        Ok(mut stop) => stop.recv().await,
        Err(_) => std::future::pending().await,
    }
}

/// `kill -USR1 <pid>` prints the live stats as one line of JSON on stderr.
pub(super) async fn stats_on_sigusr1(stats: LiveStats, mut usr1: Signal) {
    let started = Instant::now();
    while usr1.recv().await.is_some() {
        match serde_json::to_string(&stats.snapshot().report(started.elapsed())) {
            Ok(json) => super::progress::suspended(|| stderr!("{json}")),
            Err(e) => tracing::warn!("cannot serialise stats: {e}"),
        }
    }
}

//! A stage's running jobs: the reorder buffer of an ordered stage, or jobs
//! in completion order.

use super::job::Ran;
use futures_util::StreamExt;
use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use std::future::Future;
use std::pin::Pin;
use tokio::task::{JoinError, JoinHandle};

/// A job, running on this task (`concurrency = 1`) or spawned.
pub(super) type Job = Pin<Box<dyn Future<Output = Result<Ran, JoinError>> + Send>>;

/// A spawned job that is cancelled if dropped: when a stage fails, or a
/// drain times out, its running jobs (and their host I/O) stop with it
/// instead of running on detached.
pub(super) struct AbortOnDrop<T>(pub(super) JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Running jobs, in input order or in completion order.
pub(super) enum InFlight {
    Ordered(FuturesOrdered<Job>),
    Unordered(FuturesUnordered<Job>),
}

impl InFlight {
    pub(super) fn push(&mut self, job: Job) {
        match self {
            InFlight::Ordered(f) => f.push_back(job),
            InFlight::Unordered(f) => f.push(job),
        }
    }

    /// A job whose outputs come before every other's still in flight.
    pub(super) fn push_front(&mut self, job: Job) {
        match self {
            InFlight::Ordered(f) => f.push_front(job),
            InFlight::Unordered(f) => f.push(job),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            InFlight::Ordered(f) => f.len(),
            InFlight::Unordered(f) => f.len(),
        }
    }

    pub(super) async fn next(&mut self) -> Option<Result<Ran, JoinError>> {
        match self {
            InFlight::Ordered(f) => f.next().await,
            InFlight::Unordered(f) => f.next().await,
        }
    }
}

//! `sluice run --metrics-addr` (or `[metrics] addr`): Prometheus metrics at
//! `/metrics`, and `/health` and `/ready` for an orchestrator.
//!
//! The numbers are read from the run's live counters when Prometheus
//! scrapes (`collector::StatsCollector` takes one [`sluice::Stats`] snapshot per
//! scrape), so a message costs nothing more with metrics on than off.

mod collector;
mod status;
mod tap;

use super::outcome::BadArgument;
use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use collector::StatsCollector;
use sluice::LiveStats;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// The `Server` header of every answer of the metrics server.
pub(crate) const SERVER: &str = "sluice";

/// The metrics server of one run. Dropping it stops it.
pub(crate) struct MetricsServer {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    /// Set once the pipeline is built; until then `/tap/{stage}` says 503.
    taps: Arc<OnceLock<sluice::Taps>>,
}

struct Shared {
    registry: prometheus::Registry,
    /// Set once the pipeline is built; until then `/metrics` is empty.
    stats: Arc<OnceLock<LiveStats>>,
    phase: AtomicU8,
}

/// Where the run is, for `/ready`.
const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const DRAINING: u8 = 2;

impl MetricsServer {
    /// Listens on `addr` and answers at once: `/health` with 200, `/ready`
    /// with 503 until [`Self::running`]. `setting` names where `addr` was
    /// given (`--metrics-addr` or the file's `[metrics] addr`).
    pub(crate) async fn start(addr: SocketAddr, setting: &str) -> Result<Self> {
        // A port in use or an address that is not this machine's is the
        // address's fault: a config error (78), fixed by another address.
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            BadArgument(format!(
                "{setting} {addr}: cannot serve metrics there: {e}. Give a free port of an address of this machine, \
                 e.g. 127.0.0.1:9898 (or port 0 for any free port)"
            ))
        })?;
        // The address really listened on: with port 0, the system's choice.
        let addr = listener.local_addr().unwrap_or(addr);
        let stats = Arc::new(OnceLock::new());
        let registry = prometheus::Registry::new();
        registry.register(Box::new(StatsCollector::new(stats.clone()))).context("registering the metrics")?;
        let shared = Arc::new(Shared { registry, stats, phase: AtomicU8::new(STARTING) });
        let taps = Arc::new(OnceLock::new());
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .merge(tap::routes(taps.clone()))
            .merge(status::routes(shared.clone()))
            .with_state(shared.clone())
            // How `sluice top` and `sluice tap` tell sluice's answers (its
            // 404 for an unknown stage, say) from another server's.
            .layer(axum::middleware::map_response(|mut response: axum::response::Response| async move {
                response.headers_mut().insert(header::SERVER, header::HeaderValue::from_static(SERVER));
                response
            }));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("the metrics server stopped: {e}");
            }
        });
        tracing::info!("metrics at http://{addr}/metrics (and /health, /ready), the status page at http://{addr}/");
        Ok(MetricsServer { shared, task, taps })
    }

    /// The pipeline is built and about to run: `/metrics` reads `stats`,
    /// `/ready` says 200.
    pub(crate) fn running(&self, stats: LiveStats) {
        let _ = self.shared.stats.set(stats);
        self.shared.phase.store(RUNNING, Relaxed);
    }

    /// `/tap/{stage}` samples the stages of the pipeline `taps` belongs to.
    pub(crate) fn tapping(&self, taps: sluice::Taps) {
        let _ = self.taps.set(taps);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `shutdown`, after which `server` (if any) says 503 at `/ready` while the
/// messages already read drain.
pub(crate) fn draining_after(
    server: Option<&MetricsServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let shared = server.map(|s| s.shared.clone());
    async move {
        shutdown.await;
        if let Some(shared) = shared {
            shared.phase.store(DRAINING, Relaxed);
        }
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    match prometheus::TextEncoder::new().encode_to_string(&shared.registry.gather()) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], format!("{e}\n")),
    }
}

/// 200 as long as the process answers.
async fn health() -> &'static str {
    "ok\n"
}

/// 200 while the pipeline runs; 503 while it is built, and while it drains
/// after a shutdown signal.
async fn ready(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    match shared.phase.load(Relaxed) {
        RUNNING => (StatusCode::OK, "ready\n"),
        DRAINING => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
    }
}

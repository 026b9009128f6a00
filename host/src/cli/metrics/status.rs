//! The status page at the metrics address: `/` (and `/status`) is one page
//! of plain HTML, CSS and JS (`status.html`, no build step, nothing loaded
//! from elsewhere) that polls `/status.json` every second and draws the
//! pipeline as a row of boxes: source, each stage, sink, and the dead
//! letters below.
//!
//! `/status.json` is one [`sluice::Stats`] snapshot as it serializes, with
//! where the run is and how long the server has been up: the page computes
//! rates from two polls over the difference of their `uptime_seconds`, the
//! server's clock, so a slow poll does not read as a slow pipeline.

use super::{DRAINING, RUNNING, Shared};
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use sluice::Stats;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// The page, as served.
const PAGE: &str = include_str!("status.html");

/// The page may run its own inline script and style and fetch from its own
/// address, and nothing else: no stage name can turn into markup or a load
/// from elsewhere, whatever the page's script does with it.
const PAGE_POLICY: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'";

/// The routes of the page and its data, for any router state (they keep
/// their own).
pub(super) fn routes<S: Clone + Send + Sync + 'static>(shared: Arc<Shared>) -> Router<S> {
    let started = Instant::now();
    Router::new().route("/", get(page)).route("/status", get(page)).route(
        "/status.json",
        get(move || {
            let shared = shared.clone();
            async move { json(&shared, started) }
        }),
    )
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
}

/// What `/status.json` says.
#[derive(Serialize)]
struct Status {
    /// `starting` while the pipeline is built, `running`, `draining` after a
    /// shutdown signal.
    phase: &'static str,
    /// Since the metrics server started.
    uptime_seconds: f64,
    /// `null` until the pipeline is built.
    stats: Option<Stats>,
}

fn json(shared: &Shared, started: Instant) -> impl IntoResponse + use<> {
    let status = Status {
        phase: match shared.phase.load(Relaxed) {
            RUNNING => "running",
            DRAINING => "draining",
            _ => "starting",
        },
        uptime_seconds: started.elapsed().as_secs_f64(),
        stats: shared.stats.get().map(|s| s.snapshot()),
    };
    let headers = [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")];
    match serde_json::to_string(&status) {
        Ok(body) => (StatusCode::OK, headers, body),
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, headers, serde_json::json!({ "error": e.to_string() }).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicU8;

    async fn body(response: impl IntoResponse) -> serde_json::Value {
        use http_body_util::BodyExt;
        let bytes = response.into_response().into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn status_json_says_starting_until_the_pipeline_is_built_then_has_each_stages_counts() {
        use sluice::{Format, MemorySink, MemorySource, Message, Pipeline, PipelineConfig, StageConfig, StageError};
        let shared = Shared {
            registry: prometheus::Registry::new(),
            stats: Arc::new(OnceLock::new()),
            phase: AtomicU8::new(super::super::STARTING),
        };
        let started = Instant::now();
        let before = body(json(&shared, started)).await;
        assert_eq!(before["phase"], "starting");
        assert_eq!(before["stats"], serde_json::Value::Null);

        let mut config = PipelineConfig::new();
        config.source_mut().format = Format::Lines;
        config.sink_mut().format = Format::Lines;
        config.push_stage(StageConfig::native("picky", |m: &Message| match m.value.as_slice() {
            b"bad" => Err(StageError::Invalid("bad".into())),
            b"drop" => Ok(vec![]),
            _ => Ok(vec![m.clone()]),
        }));
        let pipeline = Pipeline::build(config).await.unwrap();
        let _ = shared.stats.set(pipeline.stats());
        shared.phase.store(RUNNING, Relaxed);
        let inputs = ["a", "drop", "bad", "b"].map(|t| Message::from_value(t.as_bytes().to_vec()));
        let (sink, mut outputs) = MemorySink::channel(16);
        let (dead, mut dead_letters) = MemorySink::channel(16);
        let run = tokio::spawn(
            pipeline.with_source(MemorySource::from_iter(inputs)).with_sink(sink).with_dead_letters(dead).run(),
        );
        let drain = tokio::spawn(async move { while dead_letters.recv().await.is_some() {} });
        while outputs.recv().await.is_some() {}
        run.await.unwrap().unwrap();
        drain.await.unwrap();

        let after = body(json(&shared, started)).await;
        assert_eq!(after["phase"], "running");
        assert!(after["uptime_seconds"].as_f64().unwrap() >= before["uptime_seconds"].as_f64().unwrap());
        let stats = &after["stats"];
        assert_eq!((stats["read"].as_u64(), stats["written"].as_u64()), (Some(4), Some(2)));
        let stage = &stats["stages"][0];
        assert_eq!(stage["name"], "picky");
        for (field, value) in [("input", 4), ("output", 2), ("dropped", 1), ("dead_lettered", 1)] {
            assert_eq!(stage[field].as_u64(), Some(value), "{field} in {stage}");
        }
        assert_eq!(stage["latency_us"]["count"].as_u64(), Some(4), "{stage}");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_polls_its_own_status_json() {
        for outside in ["http://", "https://", "//cdn", " src=", "@import"] {
            assert!(!PAGE.contains(outside), "the page must load nothing from elsewhere, yet has {outside:?}");
        }
        assert!(PAGE.contains("fetch(\"status.json\""), "the page polls /status.json relative to where it is served");
    }
}

//! What tapping a stage costs the pipeline: the throughput of a 2-stage
//! pipeline with no tap, and with a listener on its last stage at the
//! default rate (100/s) and at the most a tap may ask (1,000/s). Numbers go
//! to `docs/benchmarks.md`, never into asserts.
//!
//!     cargo bench -p sluice-tests --bench tap
//!
//! Run with `RUST_BACKTRACE` unset. `SLUICE_BENCH_MESSAGES` and
//! `SLUICE_BENCH_ROUNDS` override the sizes below.

use sluice::{DEFAULT_TAP_RATE, Format, MAX_TAP_RATE, Pipeline, PipelineConfig, StageConfig};
use sluice_tests::{guests, thousands};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

// The allocator the `sluice` binary uses, so that in-process runs measure what
// the command line does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MESSAGES: usize = 1_000_000;
const ROUNDS: usize = 5;

fn main() {
    let messages = env_or("SLUICE_BENCH_MESSAGES", MESSAGES);
    let rounds = env_or("SLUICE_BENCH_ROUNDS", ROUNDS);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.lines");
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&input).unwrap());
    for i in 0..messages {
        writeln!(file, "{i:010} The quick brown fox jumps over").unwrap();
    }
    file.flush().unwrap();
    drop(file);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let variants: [(&str, Option<u32>); 3] = [
        ("no tap", None),
        ("tapped at 100/s (the default)", Some(DEFAULT_TAP_RATE)),
        ("tapped at 1,000/s (the most)", Some(MAX_TAP_RATE)),
    ];
    assert_eq!(DEFAULT_TAP_RATE, 100);
    let mut times = vec![Vec::new(); variants.len()];
    let mut tapped = vec![0u64; variants.len()];
    // Interleaved rounds: a machine that slows down slows every variant.
    for _ in 0..rounds {
        for (i, (_, rate)) in variants.iter().enumerate() {
            let (took, n) = runtime.block_on(timed_run(pipeline(&input, dir.path()), messages, *rate));
            times[i].push(took);
            tapped[i] += n;
        }
    }
    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    let base = rate(median(&times[0]));
    println!(
        "`upper` → `upper`, {} lines of ~40 bytes, file to file, default settings; a listener on the second \
         stage reading every sample it gets. Median of {rounds} interleaved rounds.\n",
        thousands(messages)
    );
    println!("| pipeline | messages/s | vs no tap | samples per run |");
    println!("|---|---:|---:|---:|");
    for (i, (name, _)) in variants.iter().enumerate() {
        let r = rate(median(&times[i]));
        println!(
            "| {name} | {} | {:+.1}% | {} |",
            thousands(r as u64),
            (r / base - 1.0) * 100.0,
            tapped[i] / rounds as u64
        );
    }
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn pipeline(input: &Path, dir: &Path) -> PipelineConfig {
    let mut config = PipelineConfig::new();
    config.push_stage(StageConfig::new("upper-1", guests::UPPER));
    config.push_stage(StageConfig::new("upper-2", guests::UPPER));
    config.set_input(input).set_output(dir.join("out.lines")).set_dead_letter(dir.join("dead.jsonl"));
    config.source_mut().format = Format::Lines;
    config.sink_mut().format = Format::Lines;
    config
}

/// Builds the pipeline, attaches a listener at `rate` (if any) to its last
/// stage, and times the run; returns how long it took and the samples seen.
async fn timed_run(config: PipelineConfig, messages: usize, rate: Option<u32>) -> (Duration, u64) {
    let pipeline = Pipeline::build(config).await.unwrap();
    let listener = rate.map(|rate| {
        let mut listener = pipeline.taps().listen("upper-2", rate).unwrap();
        tokio::spawn(async move {
            let mut seen = 0u64;
            while listener.next().await.is_some() {
                seen += 1;
            }
            seen
        })
    });
    let started = Instant::now();
    let report = pipeline.run().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!((report.read, report.written), (messages as u64, messages as u64), "{report}");
    let seen = match listener {
        Some(listener) => listener.await.unwrap(),
        None => 0,
    };
    (elapsed, seen)
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

//! The async engine: concurrency, order, keys, retries, backpressure, and
//! every message accounted for. No test here measures speed; the benchmarks do.

use crate::server::TestServer;
use crate::support::{Outcome, Scratch, guests, header, stage_with};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering::SeqCst;

fn test_stage(name: &str, extra: &str) -> String {
    stage_with(name, guests::TEST_STAGE, "", extra)
}

async fn run_one(extra: &str, input: &str) -> Outcome {
    Scratch::new().run(&(header("lines") + &test_stage("t", extra)), input).await
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_waiting_on_the_network_do_not_hold_up_each_other() {
    let server = TestServer::start();
    let grants = format!("grants = {{ allow_http = [\"{}\"] }}", server.addr);
    let input: String = (0..40).map(|i| format!("http:{}\n", server.url(&format!("/delay/100/json/{i}")))).collect();
    let run = run_one(&format!("concurrency = 20\n{grants}"), &input).await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output.len(), 40);
    let overlap = server.max_concurrent.load(SeqCst);
    assert!(overlap >= 10, "at most {overlap} requests were in flight at once, with concurrency 20");

    let serial = TestServer::start();
    let grants = format!("grants = {{ allow_http = [\"{}\"] }}", serial.addr);
    let input: String = (0..5).map(|i| format!("http:{}\n", serial.url(&format!("/delay/20/json/{i}")))).collect();
    run_one(&grants, &input).await.report.unwrap();
    assert_eq!(serial.max_concurrent.load(SeqCst), 1, "concurrency 1 means one at a time");
}

#[tokio::test(flavor = "multi_thread")]
async fn ordered_mode_keeps_input_order_whatever_finishes_first() {
    let mut rng = fastrand::Rng::with_seed(7);
    let input: String = (0..300).map(|i| format!("sleep:{}:{i}\n", rng.u64(0..15))).collect();
    let run = run_one("concurrency = 16", &input).await;
    run.report.as_ref().unwrap();
    let expected: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    assert_eq!(run.output, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn unordered_mode_emits_each_result_as_it_is_done() {
    let mut input = String::from("sleep:400:slow\n");
    input.extend((1..=20).map(|i| format!("sleep:1:{i}\n")));
    let run = run_one("concurrency = 4\norder = \"unordered\"", &input).await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output.len(), 21);
    assert_eq!(run.output.last().map(String::as_str), Some("slow"), "the slow first message left last");
    let all: HashSet<&str> = run.output.iter().map(String::as_str).collect();
    assert_eq!(all.len(), 21);
}

#[tokio::test(flavor = "multi_thread")]
async fn keyed_mode_keeps_each_key_in_order_and_runs_keys_in_parallel() {
    let server = TestServer::start();
    let mut rng = fastrand::Rng::with_seed(11);
    let keys = ["a", "b", "c", "d", "e", "f"];
    let mut input = String::new();
    for n in 0..20 {
        for k in keys {
            let path = format!("/delay/{}/json/{k}{n}", rng.u64(1..25));
            input.push_str(&format!("keyed:{k}:http:{}\n", server.url(&path)));
        }
    }
    // Stage 1 sets each message's key; stage 2 is keyed.
    let grants = format!("grants = {{ allow_http = [\"{}\"] }}", server.addr);
    let pipeline = header("lines")
        + &test_stage("key", "")
        + &test_stage("fetch", &format!("concurrency = 6\npartition_by = \"key\"\n{grants}"));
    let run = Scratch::new().run(&pipeline, &input).await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output.len(), 120);
    let mut per_key: BTreeMap<char, Vec<u32>> = BTreeMap::new();
    for line in &run.output {
        // `200 {"id":"c7"}`
        let id = line.split('"').nth(3).unwrap();
        let (k, n) = id.split_at(1);
        per_key.entry(k.chars().next().unwrap()).or_default().push(n.parse().unwrap());
    }
    for (k, ns) in &per_key {
        assert_eq!(ns, &(0..20).collect::<Vec<_>>(), "key {k} out of order");
    }
    assert!(server.max_concurrent.load(SeqCst) > 1, "different keys ran in parallel");
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_errors_are_retried_with_backoff_then_dead_lettered() {
    let run = run_one("retries = { max = 3, backoff = \"1ms\" }", "flaky:2:a\nflaky:5:b\ninvalid:c\n").await;
    let report = run.report.as_ref().unwrap();
    assert_eq!(run.output, ["a"], "two failures, then success on the third try");
    let reasons: Vec<_> =
        run.dead.iter().map(|d| (d["error"].as_str().unwrap(), d["reason"].as_str().unwrap())).collect();
    assert_eq!(
        reasons,
        [("transient", "b: try 4 of 5 fails (after 3 retries)"), ("invalid", "c")],
        "invalid is never retried"
    );
    assert_eq!(report.stages[0].retried, 5);
}

/// Thousands of messages with random I/O delays, transient failures, invalid
/// messages and crashes, through two concurrent stages: every input comes out
/// exactly once, as an output or a dead letter, in input order.
#[tokio::test(flavor = "multi_thread")]
async fn every_message_is_accounted_for_under_concurrency_and_failures() {
    const N: usize = 3000;
    let mut rng = fastrand::Rng::with_seed(2024);
    let mut input = String::new();
    for i in 0..N {
        let line = match rng.u32(0..100) {
            0..=59 => format!("sleep:{}:{i}", rng.u64(0..4)),
            60..=79 => format!("flaky:{}:{i}", rng.u32(0..4)),
            80..=94 => format!("invalid:{i}"),
            _ => format!("panic:{i}"),
        };
        input.push_str(&line);
        input.push('\n');
    }
    let settings = "concurrency = 16\nretries = { max = 2, backoff = \"1ms\" }";
    let pipeline = header("lines") + &test_stage("first", settings) + &test_stage("second", "concurrency = 8");
    let run = Scratch::new().run(&pipeline, &input).await;
    let report = run.report.as_ref().unwrap();

    // Outputs carry their input's number; dead letters carry the message that failed.
    let out_ids: Vec<usize> = run.output.iter().map(|o| o.parse().unwrap()).collect();
    let dead_ids: Vec<usize> = run
        .dead
        .iter()
        .map(|d| {
            let text = d["message"]["value_text"].as_str().unwrap();
            text.rsplit(':').next().unwrap().parse().unwrap()
        })
        .collect();
    let mut all: Vec<usize> = out_ids.iter().chain(&dead_ids).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>(), "each input exactly once: no loss, no duplicate");
    assert!(out_ids.windows(2).all(|w| w[0] < w[1]), "ordered stages keep input order");
    assert_eq!(report.read as usize, N);
    assert_eq!(report.written as usize, out_ids.len());
    assert_eq!(report.dead_lettered as usize, dead_ids.len());
    for s in &report.stages {
        assert_eq!(s.input, s.output + s.dead_lettered, "{}: in = out + dead (one output per input here)", s.name);
        assert_eq!(s.in_flight, 0);
    }
    assert!(report.stages[0].retried > 0 && report.stages[0].trapped > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_stage_holds_the_source_back() {
    // Bounded channels all the way: while the last stage is slow, the source
    // may be ahead of it by at most the buffers and messages in flight.
    const N: u64 = 400;
    let scratch = Scratch::new();
    let pipeline = header("lines") + &test_stage("fast", "buffer = 8") + &test_stage("slow", "buffer = 8");
    scratch.write("input", "keyed:k:sleep:2\n".repeat(N as usize));
    let pipeline = scratch.build(&pipeline).await.unwrap();
    let stats = pipeline.stats();
    let running = tokio::spawn(pipeline.run());
    let mut furthest_ahead = 0;
    let mut read_while_slow = Vec::new();
    while !running.is_finished() {
        let now = stats.snapshot();
        let (read, slow_in) = (now.read, now.stages[1].input);
        furthest_ahead = furthest_ahead.max(read - slow_in.min(read));
        read_while_slow.push(read);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.written, N);
    // chan(8) + fast: its running batch (the messages it took, then what
    // its channel held again as it started: 8 + 8) and those it took for
    // its next batch (8) + chan(8) + those slow took for its next batch (8)
    // + slack for the counters' order. Bounded by the channels, whatever
    // the input's length.
    assert!(
        furthest_ahead <= 8 + (8 + 8 + 8) + 8 + 8 + 2,
        "the source ran {furthest_ahead} messages ahead of the slow stage"
    );
    assert!(read_while_slow.iter().any(|&r| r < N / 2), "the source was held back, not read to the end at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_drains_what_was_read_and_says_where_to_resume() {
    const N: usize = 300;
    let scratch = Scratch::new();
    let input: String = (0..N).map(|i| format!("sleep:2:{i}\n")).collect();
    scratch.write("input", &input);
    let pipeline = header("lines") + &test_stage("t", "buffer = 4");
    let built = scratch.build(&pipeline).await.unwrap();
    let report = built.run_until(tokio::time::sleep(std::time::Duration::from_millis(150))).await.unwrap();
    let stopped = report.stopped_after.expect("the signal came before the end of the input") as usize;
    assert!(stopped < N);
    let first = crate::support::read_lines(&scratch.path("out"));
    let expected: Vec<String> = (0..stopped).map(|i| i.to_string()).collect();
    assert_eq!(first, expected, "every line read was processed and written, none after");

    // Resuming after that line processes exactly the rest.
    let resumed = pipeline.replace("[source]\n", &format!("[source]\nskip_lines = {stopped}\n"));
    let built = scratch.build(&resumed).await.unwrap();
    let report = built.run().await.unwrap();
    assert_eq!(report.stopped_after, None);
    let rest = crate::support::read_lines(&scratch.path("out"));
    let expected: Vec<String> = (stopped..N).map(|i| i.to_string()).collect();
    assert_eq!(rest, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_that_overruns_shutdown_timeout_writes_nothing() {
    let scratch = Scratch::new();
    // The first message takes 5 s; behind it the stage holds the next (taken
    // for the next job, waiting for a slot), and the source waits for room.
    scratch.write("input", "sleep:5000:x\n".to_string() + &"y\n".repeat(10));
    let pipeline =
        header("lines").replace("[source]", "shutdown_timeout = \"100ms\"\n[source]") + &test_stage("t", "buffer = 1");
    let built = scratch.build(&pipeline).await.unwrap();
    let err = built.run_until(tokio::time::sleep(std::time::Duration::from_millis(50))).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "stopped reading after input line 3, but the messages already read did not finish within shutdown_timeout \
         (100ms); no output was written. Rerun, or raise shutdown_timeout"
    );
    assert!(!scratch.path("out").exists());
}

#[test]
fn run_blocking_works_from_plain_code() {
    let scratch = Scratch::new();
    let report = sluice::run_blocking(config_for(&scratch)).unwrap();
    assert_eq!(report.written, 2);
}

#[tokio::test]
async fn run_blocking_works_inside_a_running_runtime() {
    // A single-threaded runtime is already running this test, as in a notebook kernel.
    let scratch = Scratch::new();
    let report = sluice::run_blocking(config_for(&scratch)).unwrap();
    assert_eq!(report.written, 2);
    assert_eq!(crate::support::read_lines(&scratch.path("out")), ["a", "b"]);
}

fn config_for(scratch: &Scratch) -> sluice::PipelineConfig {
    scratch.write("input", "a\nb\n");
    let file = scratch.write("pipeline.toml", header("lines") + &test_stage("t", ""));
    sluice::PipelineConfig::from_file(file).unwrap()
}

/// Input from a pipe that goes quiet (like `tail -f | sluice run`): when a
/// later stage fails, the run must end with that error instead of waiting
/// for input that may never come.
#[tokio::test(flavor = "multi_thread")]
async fn a_failure_downstream_ends_the_run_even_while_the_input_is_quiet() {
    let scratch = Scratch::new();
    let fifo = scratch.path("input");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // The writer sends one message and then holds the pipe open, silent,
    // until the test is done.
    let (done, quiet) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            use std::io::Write;
            let mut pipe = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            pipe.write_all(b"keyed:k:panic:boom\n").unwrap();
            pipe.flush().unwrap();
            let _ = quiet.recv_timeout(std::time::Duration::from_secs(60));
        }
    });
    let pipeline =
        header("lines") + &test_stage("first", "") + &test_stage("second", "limits = { max_consecutive_failures = 1 }");
    let built = scratch.build(&pipeline).await.unwrap();
    // A guard against hanging the test suite, not a measurement.
    let result = tokio::time::timeout(std::time::Duration::from_secs(30), built.run()).await;
    done.send(()).unwrap();
    writer.join().unwrap();
    let err = result.expect("the run ended without more input").unwrap_err();
    assert!(err.to_string().starts_with("stage `second` failed 1 messages in a row"), "{err}");
}

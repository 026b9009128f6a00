//! Hostile stages: each misbehaviour costs the one message that caused it,
//! with a reason that names the limit, and the run goes on. Neighbouring
//! messages come through; the host and its other stages are untouched.

use crate::stages::Captured;
use crate::support::{Outcome, Scratch, guests, header, stage_with};

/// Runs the test stage with `extra` keys (limits, grants) over `input` lines.
async fn run_hostile(scratch: &Scratch, extra: &str, input: &str) -> Outcome {
    scratch.run(&(header("lines") + &stage_with("t", guests::TEST_STAGE, "", extra)), input).await
}

/// The one dead letter of a run: (error kind, reason).
fn only_dead_letter(run: &Outcome) -> (String, String) {
    assert_eq!(run.dead.len(), 1, "{:#?}", run.dead);
    let d = &run.dead[0];
    (d["error"].as_str().unwrap().to_string(), d["reason"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_infinite_loop_runs_out_of_fuel() {
    let scratch = Scratch::new();
    let run = run_hostile(&scratch, "limits = { fuel = 50_000_000 }", "a\nloop\nb\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["a", "b"]);
    assert_eq!(
        only_dead_letter(&run),
        ("limit".into(), "used all 50000000 units of fuel allowed per message (limits.fuel)".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_infinite_loop_hits_the_timeout_when_fuel_is_unlimited() {
    let scratch = Scratch::new();
    let run = run_hostile(&scratch, r#"limits = { fuel = "unlimited", timeout = "200ms" }"#, "a\nloop\nb\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["a", "b"]);
    assert_eq!(
        only_dead_letter(&run),
        ("limit".into(), "took longer than the 200ms allowed per message (limits.timeout)".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_wide_timeout_stops_a_stage_without_settings() {
    // With no settings at all the 30 s default applies (pinned in the limits unit tests).
    let scratch = Scratch::new();
    let pipeline = header("lines") + "[limits]\ntimeout = \"300ms\"\n" + &stage_with("t", guests::TEST_STAGE, "", "");
    let run = scratch.run(&pipeline, "loop\nb\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["b"]);
    assert_eq!(only_dead_letter(&run).1, "took longer than the 300ms allowed per message (limits.timeout)");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_bomb_hits_the_memory_cap() {
    let scratch = Scratch::new();
    let run = run_hostile(&scratch, r#"limits = { memory = "16MiB" }"#, "alloc:64\nalloc:2\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["allocated 2"], "the next message gets a fresh instance");
    let (kind, reason) = only_dead_letter(&run);
    assert_eq!(kind, "limit");
    assert!(reason.starts_with("tried to grow its memory to "), "{reason}");
    assert!(reason.ends_with(", over the 16.0 MiB allowed per instance (limits.memory)"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_memory_cap_stops_a_memory_bomb() {
    let scratch = Scratch::new();
    let run = run_hostile(&scratch, "", "alloc:1024\nx\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["x"]);
    assert!(only_dead_letter(&run).1.ends_with("over the 128.0 MiB allowed per instance (limits.memory)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_overflows_the_stack_only() {
    let scratch = Scratch::new();
    let run = run_hostile(&scratch, "", "recurse:100000000\nrecurse:10\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output.len(), 1, "the shallow recursion still runs");
    assert_eq!(only_dead_letter(&run), ("limit".into(), "overflowed its call stack (too deep a recursion)".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn overflowing_the_guest_own_stack_in_memory_is_caught_too() {
    // Rust and C keep big frames on a stack in linear memory, below which
    // (with `--stack-first`) there is nothing: overflowing it is an out-of-bounds access.
    let scratch = Scratch::new();
    let run = run_hostile(&scratch, "", "deepstack:100000000\ndeepstack:10\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output.len(), 1);
    assert_eq!(
        only_dead_letter(&run),
        (
            "trap".into(),
            "wasm trap: out of bounds memory access (in a stage written in Rust or C this is usually its own \
             stack overflowing: too deep a recursion)"
                .into()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_outputs_are_refused_whole() {
    let scratch = Scratch::new();
    let run = run_hostile(&scratch, "limits = { max_outputs = 10 }", "split:11\nsplit:10\n").await;
    let report = run.report.as_ref().unwrap();
    assert_eq!(run.output.len(), 10, "none of the 11 got through");
    assert_eq!(
        only_dead_letter(&run),
        ("limit".into(), "produced 11 outputs for one input, over the 10 allowed (limits.max_outputs)".into())
    );
    assert_eq!(report.stages[0].trapped, 0, "an output cap is not a trap: the instance lives on");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_output_is_refused() {
    let scratch = Scratch::new();
    let run = run_hostile(&scratch, r#"limits = { max_output_bytes = "1KiB" }"#, "big:2048\nbig:1024\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["x".repeat(1024)]);
    assert_eq!(
        only_dead_letter(&run).1,
        "produced an output of 2048 bytes (output 1), over the 1024 bytes allowed (limits.max_output_bytes)"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_log_flood_is_cut_to_the_budget() {
    let captured = Captured::default();
    let _guard = captured.install();
    let scratch = Scratch::new();
    // One message per call: in a batch, the budget is shared by its messages.
    let run =
        run_hostile(&scratch, "limits = { max_log_records = 50 }\nbatch = 1", "logflood:100000\nlog:after\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["logflood:100000", "log:after"], "the flooding message itself is fine");
    let log = captured.text();
    assert_eq!(log.lines().filter(|l| l.contains("flood ")).count(), 50);
    assert!(log.contains("dropped 99950 log records (limits.max_log_records = 50 per message)"), "{log}");
    assert!(log.contains("after"), "the next message has a fresh budget");
}

#[tokio::test(flavor = "multi_thread")]
async fn host_files_are_invisible_without_a_grant() {
    let scratch = Scratch::new();
    scratch.write("secret.txt", "s3cret");
    let secret = scratch.path("secret.txt");
    let run = run_hostile(&scratch, "", &format!("read:{}\nread:/etc/passwd\nx\n", secret.display())).await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["x"]);
    assert_eq!(run.dead.len(), 2);
    for d in &run.dead {
        assert_eq!(d["error"], "invalid", "a refused open is an error value to the guest, not a trap");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_directory_is_readable_but_not_writable() {
    let scratch = Scratch::new();
    std::fs::create_dir(scratch.path("data")).unwrap();
    scratch.write("data/hello.txt", "hello from the host");
    let grants = r#"grants = { read_dirs = { "/data" = "data" } }"#;
    let run = run_hostile(&scratch, grants, "read:/data/hello.txt\nwrite:/data/new.txt\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["hello from the host"]);
    assert_eq!(only_dead_letter(&run).0, "invalid");
    assert!(!scratch.path("data/new.txt").exists(), "the write did not reach the host");
}

#[tokio::test(flavor = "multi_thread")]
async fn sockets_are_refused_without_a_grant() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let scratch = Scratch::new();
    let run = run_hostile(&scratch, "", &format!("connect:{addr}\n")).await;
    run.report.as_ref().unwrap();
    let (kind, reason) = only_dead_letter(&run);
    assert_eq!(kind, "invalid");
    assert!(reason.starts_with(&format!("connect {addr}: ")), "{reason}");
    assert_eq!(listener.accept().unwrap_err().kind(), std::io::ErrorKind::WouldBlock, "nothing connected");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_environment_is_empty_unless_granted() {
    let scratch = Scratch::new();
    let run = run_hostile(&scratch, "", "env\n").await;
    assert_eq!(run.output, [""], "nothing of the host's environment leaks");
    let scratch = Scratch::new();
    let run = run_hostile(&scratch, r#"grants = { env = { GREETING = "hi" } }"#, "env\n").await;
    assert_eq!(run.output, ["GREETING=hi"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_failing_every_message_trips_the_circuit_breaker() {
    let scratch = Scratch::new();
    let input = "panic:always\n".repeat(10);
    let run = run_hostile(&scratch, "limits = { max_consecutive_failures = 3 }", &input).await;
    let err = run.report.as_ref().unwrap_err();
    assert!(
        err.starts_with(
            "stage `t` failed 3 messages in a row (limits.max_consecutive_failures), so the pipeline stopped; \
             the last failure: wasm trap: wasm `unreachable` instruction executed"
        ),
        "{err}"
    );
    assert!(err.ends_with("Fix the stage or its input, or raise the limit"), "{err}");
    assert!(run.output.is_empty() && run.dead.is_empty(), "a stopped run writes no files");
}

#[tokio::test(flavor = "multi_thread")]
async fn successes_reset_the_circuit_breaker() {
    let scratch = Scratch::new();
    let input = "invalid:a\ninvalid:b\nok\n".repeat(5);
    let run = run_hostile(&scratch, "limits = { max_consecutive_failures = 3 }", &input).await;
    let report = run.report.as_ref().unwrap();
    assert_eq!((report.written, report.dead_lettered), (5, 10));
}

// One thread: if the looping guest never yielded, the ticker could not run at all until it ended.
#[tokio::test(flavor = "current_thread")]
async fn a_cpu_bound_stage_yields_to_other_tasks() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let ticks = std::sync::Arc::new(AtomicU64::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                ticks.fetch_add(1, Relaxed);
            }
        }
    });
    let scratch = Scratch::new();
    // Spins until its timeout.
    let spin = stage_with("t", guests::TEST_STAGE, "", r#"limits = { timeout = "400ms" }"#);
    let pipeline = scratch.build(&(header("lines") + &spin)).await.unwrap();
    scratch.write("input", "loop\n");
    let before = ticks.load(Relaxed);
    let report = pipeline.run().await.unwrap();
    let during = ticks.load(Relaxed) - before;
    ticker.abort();
    assert_eq!(report.dead_lettered, 1, "the loop ran until its timeout");
    assert!(during >= 10, "the ticker ran only {during} times while the guest looped");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timeout_also_covers_waiting_on_host_io() {
    // While the guest waits in a host call no wasm runs, so no epoch check
    // fires: the host's own timer must end the call.
    let scratch = Scratch::new();
    let run = run_hostile(&scratch, r#"limits = { timeout = "200ms" }"#, "sleep:5000:late\nsleep:1:fine\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["fine"]);
    assert_eq!(
        only_dead_letter(&run),
        ("limit".into(), "took longer than the 200ms allowed per message (limits.timeout)".into())
    );
}

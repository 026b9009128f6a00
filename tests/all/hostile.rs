//! A stage written to hurt the host (`tests/guests/hostile`, straight against
//! the WIT), with default limits: whatever it does, the host's memory and
//! disk stay within what the limits allow, the other messages come through
//! exact, the reason names the limit, and the run's finished work is kept.

use crate::stages::Captured;
use crate::support::{Outcome, Scratch, guests, header, stage_with};
use std::path::Path;
use std::process::Command;

fn hostile(extra: &str) -> String {
    stage_with("h", guests::HOSTILE, "", extra)
}

/// The one dead letter of a run: (error kind, reason).
fn only_dead_letter(run: &Outcome) -> (String, String) {
    assert_eq!(run.dead.len(), 1, "{:#?}", run.dead);
    let d = &run.dead[0];
    (d["error"].as_str().unwrap().to_string(), d["reason"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_input_cannot_make_more_output_than_the_total_cap() {
    // 200 emitted outputs of 1 MiB each: within the per-output cap and the
    // count cap, but 200 MiB from one small input.
    let scratch = Scratch::new();
    let run = scratch.run(&(header("lines") + &hostile("")), "a\nemit:200:1048576\nb\n").await;
    run.report.as_ref().unwrap();
    let (kind, reason) = only_dead_letter(&run);
    assert_eq!(kind, "limit");
    assert!(reason.ends_with("over the 67108864 bytes (64.0 MiB) allowed (limits.max_total_output_bytes)"), "{reason}");
    // Emitted at once (`emit = "immediate"`): what fit under the cap was delivered, nothing more.
    let emitted = run.output.iter().filter(|l| l.starts_with('e')).count();
    assert_eq!(emitted, 64, "64 outputs of 1 MiB fit in 64 MiB");
    assert_eq!(run.output.first().map(String::as_str), Some("a"));
    assert_eq!(run.output.last().map(String::as_str), Some("b"));
    let disk = std::fs::metadata(scratch.path("out")).unwrap().len();
    assert!(disk <= (64 << 20) + 64 * 2 + 16, "the output file holds at most the cap: {disk} bytes");

    // Returned rather than emitted: the same cap.
    let run = scratch.run(&(header("lines") + &hostile("")), "a\nsplit:80:1048576\nb\n").await;
    assert_eq!(run.output, ["a", "b"]);
    assert!(only_dead_letter(&run).1.contains("(limits.max_total_output_bytes)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn held_emits_are_bounded_and_dropped_with_the_failed_input() {
    let scratch = Scratch::new();
    let pipeline = header("lines") + &hostile("emit = \"on-success\"\nlimits = { max_total_output_bytes = \"4MiB\" }");
    let run = scratch.run(&pipeline, "a\nemit:100:1048576\nb\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["a", "b"], "on-success: nothing of the failed input leaves");
    let (kind, reason) = only_dead_letter(&run);
    assert_eq!(kind, "limit", "the stage ignored the refusal; the message fails with the limit anyway");
    assert!(reason.contains("over the 4194304 bytes (4.0 MiB) allowed (limits.max_total_output_bytes)"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_count_toward_the_output_size() {
    // A million empty headers: zero bytes of names and values, but each
    // costs the host memory.
    let scratch = Scratch::new();
    let run = scratch.run(&(header("lines") + &hostile("")), "a\nheaders:1000000\nb\n").await;
    assert_eq!(run.output, ["a", "b"]);
    let (kind, reason) = only_dead_letter(&run);
    assert_eq!(kind, "limit");
    assert!(reason.ends_with("over the 16777216 bytes (16.0 MiB) allowed (limits.max_output_bytes)"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_error_reason_is_cut_and_marked() {
    let scratch = Scratch::new();
    let run = scratch.run(&(header("lines") + &hostile("")), "reason:10000000\nb\n").await;
    assert_eq!(run.output, ["b"]);
    let (kind, reason) = only_dead_letter(&run);
    assert_eq!(kind, "invalid");
    assert_eq!(reason, format!("{} [cut: {} more bytes]", "x".repeat(4096), 10_000_000 - 4096));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_init_refusal_is_cut_and_cannot_move_the_terminal() {
    let scratch = Scratch::new();
    let pipeline = header("lines") + &stage_with("h", guests::HOSTILE, "refuse = 100000", "");
    let err = scratch.build(&pipeline).await.err().expect("init refuses");
    assert!(err.contains("\\u{1b}[2J"), "the escape is shown, not sent: {err}");
    assert!(!err.contains('\u{1b}'));
    assert!(err.contains(" [cut: 95908 more bytes]"), "{err}");
    assert!(err.len() < 5000, "{} bytes", err.len());
}

// Current-thread runtime: every task runs on this thread, under this thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_stage_cannot_forge_host_log_lines() {
    let captured = Captured::default();
    let _guard = captured.install();
    let scratch = Scratch::new();
    let run = scratch.run(&(header("lines") + &hostile("")), "forge\n").await;
    run.report.unwrap();
    let log = captured.text();
    // The forged timestamp has no fractional seconds: the host's own never lacks them.
    assert!(!log.lines().any(|l| l.starts_with("2026-12-01T00:00:00Z")), "a forged line appeared:\n{log}");
    assert!(!log.contains('\u{1b}') && !log.contains('\r'), "{log:?}");
    let forged: Vec<&str> = log.lines().filter(|l| l.contains("all clear")).collect();
    assert_eq!(forged.len(), 2, "one line each from the log record and stdout:\n{log}");
    for line in &forged {
        assert!(line.contains(" INFO sluice::stage: ") && line.contains("stage=\"h\""), "tagged: {line}");
        assert!(line.contains("\\u{1b}[31m"), "{line}");
    }
    assert!(forged[0].contains("ok\\n2026-12-01"), "a log record stays on one line: {}", forged[0]);
}

/// Runs `pipeline` (in `scratch`) from input line `skip + 1`, appending to
/// the first run's files, as the interrupt hint says.
async fn resume(scratch: &Scratch, skip: u64) -> sluice::RunReport {
    let mut config = sluice::PipelineConfig::from_file(scratch.path("pipeline.toml")).unwrap();
    config.source_mut().skip_lines = skip;
    config.set_append(true);
    sluice::Pipeline::build(config).await.unwrap().run().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_that_can_no_longer_start_stops_the_run_losing_and_repeating_nothing() {
    // `poison` stores state that makes `init` trap; with `isolate` every
    // later message needs a fresh instance, which cannot start. Two at a
    // time, unordered: messages finish out of order around the failure.
    const N: u64 = 3000;
    let scratch = Scratch::new();
    let pipeline = header("lines")
        + "[state]\nbackend = \"memory\"\n"
        + &hostile("isolate = true\nconcurrency = 2\norder = \"unordered\"");
    let input: String = ["a".to_string(), "poison".into()]
        .into_iter()
        .chain((3..=N).map(|i| i.to_string()))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let run = scratch.run(&pipeline, &input).await;
    let report = run.report.clone().unwrap();
    let reason = report.stop_reason.clone().expect("the run stopped early");
    assert!(reason.starts_with("stage `h` cannot start a new instance: "), "{reason}");
    assert!(reason.contains("init found the poison"), "the guest's panic message: {reason}");
    assert!(!reason.contains("sluice state"), "no state to clear in memory: {reason}");
    let stopped = report.stopped_after.expect("the source stopped before the end");
    assert!(stopped < N, "{stopped}");
    // Every line read ended as an output or a dead letter naming why: the
    // input line each stands for (the stage echoes every line but the first two).
    let line_of = |output: &str| match output {
        "a" => 1,
        "poison" => 2,
        n => n.parse::<u64>().unwrap(),
    };
    let lines_of = |dead: &[serde_json::Value]| -> Vec<u64> {
        dead.iter().map(|d| d["input"]["line"].as_u64().unwrap()).collect()
    };
    for d in &run.dead {
        assert_eq!(d["error"], "trap");
        assert!(d["reason"].as_str().unwrap().starts_with("not processed: stage `h` cannot start"), "{d}");
    }
    let mut first: Vec<u64> = run.output.iter().map(|l| line_of(l)).collect();
    first.extend(lines_of(&run.dead));
    first.sort_unstable();
    assert_eq!(first, (1..=stopped).collect::<Vec<_>>(), "each line read, once");

    // Resuming where the hint says (the poison lived in memory) finishes the
    // rest, and the files hold every line exactly once.
    let resumed = resume(&scratch, stopped).await;
    assert_eq!(resumed.stop_reason, None);
    let output = crate::support::read_lines(&scratch.path("out"));
    let dead = crate::support::read_json_lines(&scratch.path("dead.jsonl"));
    let mut all: Vec<u64> = output.iter().map(|l| line_of(l)).collect();
    all.extend(lines_of(&dead));
    all.sort_unstable();
    assert_eq!(all, (1..=N).collect::<Vec<_>>(), "nothing lost, nothing repeated");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_init_is_stopped_by_the_init_timeout_and_named() {
    let scratch = Scratch::new();
    let pipeline =
        header("lines") + "[state]\nbackend = \"memory\"\n" + &hostile("limits = { init_timeout = \"300ms\" }");
    let run = scratch.run(&pipeline, "a\npoison-slow\npanic\nc\n").await;
    let report = run.report.unwrap();
    let reason = report.stop_reason.expect("the run stopped");
    let timeout = "took longer than the 300ms allowed to start an instance and run `init` (limits.init_timeout)";
    assert!(reason.contains(timeout), "{reason}");
    assert_eq!(run.output, ["a", "poison-slow"]);
    let dead: Vec<(&str, u64)> =
        run.dead.iter().map(|d| (d["error"].as_str().unwrap(), d["input"]["line"].as_u64().unwrap())).collect();
    assert_eq!(dead, [("trap", 3), ("trap", 4)], "the panic, then c, which could not run");
    assert!(run.dead[1]["reason"].as_str().unwrap().contains(timeout));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_that_could_use_more_memory_than_its_budget_is_refused() {
    let scratch = Scratch::new();
    let pipeline = header("lines")
        + "[engine]\nmemory_budget = \"1GiB\"\n"
        + &hostile("concurrency = 16")
        + &hostile("").replace("name = \"h\"", "name = \"h2\"");
    let err = scratch.build(&pipeline).await.err().expect("refused");
    assert_eq!(
        err,
        "the stages' instances may use 2.1 GiB of memory at once (`h` 16 × 128.0 MiB = 2.0 GiB, `h2` 1 × 128.0 MiB \
         = 128.0 MiB; concurrency × limits.memory), over the 1.0 GiB of [engine] memory_budget. Lower `concurrency` \
         or `limits.memory` of the largest, or set `memory_budget` under [engine] (\"unlimited\" to skip this check)"
    );
    // The default budget is the machine's memory.
    let err = scratch.build(&(header("lines") + &hostile("concurrency = 100000"))).await.err().expect("refused");
    assert!(err.contains("of this machine's memory"), "{err}");
}

/// Runs the real `sluice` binary on `pipeline` and returns its peak resident
/// memory in bytes, and whether it succeeded.
fn peak_rss_of_run(pipeline: &Path) -> (u64, bool) {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    let child = Command::new(bin)
        .arg("run")
        .arg(pipeline)
        .arg("--progress=0")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is valid, and `wait4` fills it for our own child.
    #[allow(unsafe_code)]
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::wait4(child.id() as i32, &mut status, 0, &mut usage), child.id() as i32);
        usage
    };
    ((usage.ru_maxrss as u64) * 1024, libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
}

#[test]
fn an_ordered_stage_holds_a_bounded_amount_while_a_message_waits_to_be_retried() {
    // The first message waits out a 2 s backoff; behind it, 24 inputs of 30
    // MiB of outputs each finish and wait for their turn. Held by count
    // alone (concurrency + buffer), that would be 720 MiB.
    let scratch = Scratch::new();
    scratch.write("input", "transient\n".to_string() + &"split:30:1048576\n".repeat(24));
    let pipeline =
        header("lines") + &hostile("concurrency = 2\nretries = { max = 1, backoff = \"2s\", max_backoff = \"2s\" }");
    let pipeline = scratch.write("pipeline.toml", pipeline);
    let (peak, ok) = peak_rss_of_run(&pipeline);
    assert!(ok, "the run succeeds");
    let dead = crate::support::read_json_lines(&scratch.path("dead.jsonl"));
    assert_eq!(dead.len(), 1, "the transient one, after its retry");
    let lines = std::fs::read(scratch.path("out")).unwrap().iter().filter(|&&b| b == b'\n').count();
    assert_eq!(lines, 24 * 30, "every output, in order");
    let bound = 450 << 20;
    assert!(peak < bound, "peak RSS {} MiB, over the {} MiB bound", peak >> 20, bound >> 20);
}

#[test]
fn a_flood_of_held_emits_does_not_raise_host_memory() {
    // Without a total cap, 1,000 held outputs of 1 MiB (within max_outputs
    // and max_output_bytes) would make the host hold 1 GiB for one input.
    let scratch = Scratch::new();
    scratch.write("input", "a\nemit:1000:1048576\nb\n");
    let pipeline = scratch.write("pipeline.toml", header("lines") + &hostile("emit = \"on-success\""));
    let (peak, ok) = peak_rss_of_run(&pipeline);
    assert!(ok, "the run succeeds");
    assert_eq!(crate::support::read_lines(&scratch.path("out")), ["a", "b"]);
    let bound = 384 << 20;
    assert!(peak < bound, "peak RSS {} MiB, over the {} MiB bound", peak >> 20, bound >> 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_checkpoints_a_stage_that_cannot_start_fails_the_run_and_says_how_to_clear_its_state() {
    let scratch = Scratch::new();
    let pipeline = header("lines") + "[state]\npath = \"state.redb\"\ncheckpoint_every = 1\n" + &hostile("");
    // Enough lines after `poison` that a checkpoint commits it before `panic`.
    let input = format!("a\npoison\n{}panic\nc\nd\n", "b\n".repeat(500));
    let run = scratch.run(&pipeline, &input).await;
    let err = run.report.unwrap_err();
    assert!(err.starts_with("stage `h` cannot make a new instance: "), "{err}");
    assert!(err.contains("init found the poison"), "{err}");
    assert!(err.contains("running it again resumes from its last checkpoint"), "{err}");
    assert!(run.output.is_empty(), "a failed run publishes nothing");

    // The poison was committed: the next run cannot even start, and says what to do.
    let err = scratch.build(&pipeline).await.err().expect("init fails on the committed state");
    assert!(
        err.contains("`sluice state --clear --stage h <dir>/pipeline.toml` removes it"),
        "the error says how to clear the state: {err}"
    );

    // Doing what it says lets the run resume from its checkpoint (after
    // `poison`, before `panic`) and finish: every line once.
    let cleared = sluice::state::clear_state(&scratch.path("state.redb"), Some("h")).unwrap();
    assert!(cleared.entries >= 1, "the poison was removed");
    assert_eq!(cleared.checkpoint, None, "clearing one stage keeps the checkpoint");
    let run = scratch.run(&pipeline, &input).await;
    run.report.unwrap();
    let expected: Vec<String> = input.lines().filter(|l| *l != "panic").map(str::to_string).collect();
    assert_eq!(run.output, expected, "nothing lost or repeated across the two runs");
    assert_eq!(run.dead.len(), 1, "the panic");
}

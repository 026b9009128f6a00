//! Stateful and streaming stages: state across messages and runs, per-key
//! partitions, emission, and checkpoints that survive `kill -9`.

use crate::support::{Scratch, guests, header, read_lines, stage_with};
use std::collections::BTreeMap;
use std::time::Duration;

fn test_stage(name: &str, extra: &str) -> String {
    stage_with(name, guests::TEST_STAGE, "", extra)
}

fn state_table(extra: &str) -> String {
    format!("[state]\npath = \"state.redb\"\n{extra}\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn state_lasts_across_messages_and_runs() {
    let scratch = Scratch::new();
    let pipeline = header("lines") + &state_table("") + &test_stage("t", "");
    let run = scratch.run(&pipeline, "incr:a\nincr:b\nincr:a\n").await;
    run.report.unwrap();
    assert_eq!(run.output, ["a=1", "b=1", "a=2"]);
    let run = scratch.run(&pipeline, "incr:a\nget:b\ndel:b\nget:b\nincr:b\n").await;
    run.report.unwrap();
    assert_eq!(run.output, ["a=3", "1", "deleted b", "none", "b=1"], "the first run's state was kept");
    let entries = sluice::state::read_state(&scratch.path("state.redb"), "t", false).unwrap();
    let entries: Vec<_> = entries.iter().map(|e| (e.key.as_slice(), e.value.as_slice())).collect();
    assert_eq!(entries, [(&b"a"[..], &b"3"[..]), (b"b", b"1")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn state_written_by_a_failed_attempt_or_a_trap_is_not_kept() {
    let scratch = Scratch::new();
    let pipeline =
        header("lines") + "[state]\nbackend = \"memory\"\n" + &test_stage("t", "retries = { backoff = \"1ms\" }");
    let run = scratch.run(&pipeline, "incrflaky:a\nget:a\n").await;
    run.report.unwrap();
    assert_eq!(run.output, ["a=1", "1"], "the retry starts from the state before the failed attempt");

    // In a batch that traps, the messages run again alone: each counts once.
    let pipeline = header("lines") + "[state]\nbackend = \"memory\"\n" + &test_stage("t", "batch = 8");
    let run = scratch.run(&pipeline, "incr:b\nincr:b\npanic:x\nincr:b\nget:b\n").await;
    run.report.unwrap();
    assert_eq!(run.output, ["b=1", "b=2", "b=3", "3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_failure_in_a_batch_keeps_each_messages_state_writes_exactly_once() {
    let scratch = Scratch::new();
    let pipeline = header("lines")
        + "[state]\nbackend = \"memory\"\n"
        + &test_stage("t", "batch = 8\nbatch_window = \"10s\"\nretries = { backoff = \"1ms\" }");
    // `incrflaky:b` writes b, then fails `transient`: in the batch, its write
    // must not be kept (nor seen by `get:b`), and its batch-mates' writes
    // must be kept once, whether the batch's writes stand or are made again.
    let input = "incr:a\nincrflaky:b\nincr:a\nget:a\nget:b\nincr:a\n";
    let run = scratch.run(&pipeline, &input.repeat(3)).await;
    run.report.unwrap();
    let expected = [
        ["a=1", "b=1", "a=2", "2", "1", "a=3"],
        ["a=4", "b=2", "a=5", "5", "2", "a=6"],
        ["a=7", "b=3", "a=8", "8", "3", "a=9"],
    ];
    assert_eq!(run.output, expected.concat(), "as if each message ran alone, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_stage_has_state_per_key_and_stages_do_not_share() {
    let scratch = Scratch::new();
    let pipeline = header("lines")
        + "[state]\nbackend = \"memory\"\n"
        + &test_stage("key", "")
        + &test_stage("per-key", "partition_by = \"key\"")
        + &test_stage("other", "");
    let input = "keyed:u1:incr:n\nkeyed:u2:incr:n\nkeyed:u1:incr:n\nkeyed:u1:scan:\n";
    let run = scratch.run(&pipeline, input).await;
    run.report.unwrap();
    // `other` sees `n=1` etc. as commands it echoes: its own state is untouched.
    assert_eq!(run.output, ["n=1", "n=1", "n=2", "n=2"]);
    assert!(!scratch.path("state.redb").exists(), "the memory backend writes no file");

    let run = scratch.run(&pipeline, "keyed:u1:incr:n\n").await;
    assert_eq!(run.output, ["n=1"], "memory state is gone with the run");
}

#[tokio::test(flavor = "multi_thread")]
async fn emitted_messages_come_before_the_final_result_and_in_input_order() {
    let scratch = Scratch::new();
    let run = scratch.run(&(header("lines") + &test_stage("t", "")), "emit:2\nplain\nemit:1\n").await;
    run.report.unwrap();
    assert_eq!(run.output, ["e1", "e2", "final", "plain", "e1", "final"]);

    // Ordered with several in flight: held until each message's turn.
    let input = "emit:3\nemit:1\nemit:2\n".repeat(20);
    let run = scratch.run(&(header("lines") + &test_stage("t", "concurrency = 4")), &input).await;
    let report = run.report.unwrap();
    assert_eq!(run.output, "e1 e2 e3 final e1 final e1 e2 final".split(' ').cycle().take(9 * 20).collect::<Vec<_>>());
    assert_eq!(report.stages[0].output, 9 * 20, "emitted messages count as outputs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_failure_in_a_batch_that_wrote_state_counts_as_its_first_attempt() {
    let scratch = Scratch::new();
    let pipeline = header("lines")
        + "[state]\nbackend = \"memory\"\n"
        + &test_stage("t", "batch = 8\nbatch_window = \"10s\"\nretries = { max = 0 }");
    // The batch's writes are undone and its messages run again alone, but
    // `incrflaky:b` had its one attempt: with no retries it is dead-lettered,
    // as it would be alone, and b is never written.
    let run = scratch.run(&pipeline, "incr:a\nincr:a\nincrflaky:b\nincr:a\nget:b\n").await;
    run.report.unwrap();
    assert_eq!(run.output, ["a=1", "a=2", "a=3", "none"]);
    assert_eq!(run.dead.len(), 1, "{:?}", run.dead);
    assert_eq!(run.dead[0]["error"], "transient");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_that_emits_inside_a_batch_gets_one_message_per_call_from_then_on() {
    let scratch = Scratch::new();
    let pipeline = header("lines") + &test_stage("t", "batch = 8\nbatch_window = \"10s\"");
    // `batch` outputs the size of the call it came in.
    let input = "batch\n".repeat(6) + "emit:1\n" + &"batch\n".repeat(20);
    let run = scratch.run(&pipeline, &input).await;
    run.report.unwrap();
    let emitted = run.output.iter().position(|o| o == "e1").expect("the emitted message arrives");
    let sizes: Vec<usize> = run.output[..emitted].iter().map(|o| o.parse().unwrap()).collect();
    assert!(sizes.iter().any(|&n| n > 1), "it ran in batches until it emitted: {sizes:?}");
    assert_eq!(sizes.len(), 6);
    assert_eq!(run.output[emitted + 1], "final", "then its own output, in input order");
    assert_eq!(run.output[emitted + 2..], ["1"; 20], "and one message per call from then on");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_was_emitted_before_a_failure_is_delivered_or_held_as_configured() {
    let scratch = Scratch::new();
    let input = "emit:2:invalid\nemit:2:panic\nok\n";
    let run = scratch.run(&(header("lines") + &test_stage("t", "emit = \"immediate\"")), input).await;
    run.report.unwrap();
    assert_eq!(run.output, ["e1", "e2", "e1", "e2", "ok"], "immediate: already delivered");
    assert_eq!(run.dead.len(), 2);

    let run = scratch.run(&(header("lines") + &test_stage("t", "emit = \"on-success\"")), input).await;
    run.report.unwrap();
    assert_eq!(run.output, ["ok"], "on-success: dropped with the failed input");
    assert_eq!(run.dead.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn emitted_messages_count_toward_the_output_caps() {
    let scratch = Scratch::new();
    let pipeline = header("lines") + &test_stage("t", "limits = { max_outputs = 2 }\nemit = \"on-success\"");
    let run = scratch.run(&pipeline, "emit:3\nemit:2\nemit:1\n").await;
    run.report.unwrap();
    assert_eq!(run.output, ["e1", "final"]);
    let reasons: Vec<&str> = run.dead.iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].contains("limits.max_outputs"), "the third emit is refused: {reasons:?}");
    assert!(reasons[1].contains("3 outputs") || reasons[1].contains("limits.max_outputs"), "{reasons:?}");
}

/// The `sluice` binary cargo built for this workspace's tests.
fn sluice_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    assert!(bin.is_file(), "{} is missing: `cargo test` at the workspace root builds it", bin.display());
    bin
}

#[test]
fn a_killed_run_resumes_from_its_last_checkpoint_losing_and_repeating_nothing() {
    const N: usize = 3000;
    const KEYS: usize = 5;
    let scratch = Scratch::new();
    // Stage 1 takes ~1 ms per message, so the run lasts seconds; stage 2 counts per key in state.
    let pipeline = header("lines")
        + &state_table("checkpoint_every = 50\ncheckpoint_interval = \"20ms\"")
        + &test_stage("slow", "")
        + &test_stage("count", "");
    let file = scratch.write("pipeline.toml", pipeline);
    scratch.write("input", (0..N).map(|i| format!("sleep:1:incr:k{}\n", i % KEYS)).collect::<String>());
    let run = || {
        std::process::Command::new(sluice_binary())
            .args(["run", file.to_str().unwrap()])
            .env("SLUICE_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };

    let mut first = run();
    // Killed once it has checkpointed (the state file appears at the first
    // one), a little after: on a loaded machine, building can take longer
    // than a fixed wait.
    let give_up = std::time::Instant::now() + Duration::from_secs(120);
    while !scratch.path("state.redb").exists() {
        assert!(std::time::Instant::now() < give_up, "no checkpoint in two minutes");
        assert!(first.try_wait().unwrap().is_none(), "the first run ended before it checkpointed");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(first.try_wait().unwrap().is_none(), "the first run ended before it could be killed");
    first.kill().unwrap(); // SIGKILL: no chance to clean up
    first.wait().unwrap();
    assert!(!scratch.path("out").exists(), "a killed run publishes no output");
    assert!(scratch.path(".out.partial").exists(), "its checkpointed output is kept to resume");

    // Another input is not resumed at the killed run's position, which
    // would skip its first lines as read: refused, saying how to go on.
    scratch.write("other", "incr:k0\n");
    let other = std::process::Command::new(sluice_binary())
        .args(["run", file.to_str().unwrap(), "-i", "other"])
        .current_dir(scratch.dir.path())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(78), "{log}");
    assert!(log.contains("did not finish: its last checkpoint is after input line"), "{log}");
    assert!(log.contains("To finish that run, run it again over "), "{log}");
    assert!(scratch.path(".out.partial").exists(), "the refused run leaves the checkpoint's output");

    let second = run().wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{log}");
    assert!(log.contains("resuming after input line"), "the second run resumed: {log}");

    // Each key's outputs are its running count: 1, 2, 3, ... once each, so no
    // input was lost or counted twice, and no output was lost or repeated.
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in read_lines(&scratch.path("out")) {
        let (key, n) = line.split_once('=').unwrap();
        counts.entry(key.to_string()).or_default().push(n.parse().unwrap());
    }
    assert_eq!(counts.len(), KEYS);
    for (key, seen) in &counts {
        assert_eq!(*seen, (1..=(N / KEYS) as u64).collect::<Vec<_>>(), "{key}");
    }
    let state = sluice::state::read_state(&scratch.path("state.redb"), "count", false).unwrap();
    assert!(state.iter().all(|e| e.value == (N / KEYS).to_string().as_bytes()), "state matches the output");
    assert_eq!(sluice::state::read_checkpoint(&scratch.path("state.redb")).unwrap(), None, "the run finished");
}

#[tokio::test(flavor = "multi_thread")]
async fn count_by_key_counts_across_runs_and_emits_window_summaries() {
    let scratch = Scratch::new();
    let pipeline = header("jsonl")
        + &state_table("")
        + &crate::support::stage("per-user", guests::COUNT_BY_KEY, "field = \"user\", every = 2");
    let input = "{\"user\":\"a\"}\n{\"user\":\"b\"}\n{\"user\":\"a\"}\n{\"id\":1}\n";
    let run = scratch.run(&pipeline, input).await;
    run.report.unwrap();
    assert_eq!(
        run.output,
        [
            r#"{"count":1,"user":"a"}"#,
            r#"{"count":1,"user":"b"}"#,
            r#"{"count":2,"key":"a","window_end":true}"#,
            r#"{"count":2,"user":"a"}"#,
        ]
    );
    assert_eq!(run.dead.len(), 1, "a message without the field is invalid");
    let run = scratch.run(&pipeline, "{\"user\":\"b\"}\n").await;
    assert_eq!(run.output, [r#"{"count":2,"key":"b","window_end":true}"#, r#"{"count":2,"user":"b"}"#]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_stage_keeps_a_running_total_in_state() {
    let scratch = Scratch::new();
    let config = "key_field = \"user\", amount_field = \"amount\"";
    let pipeline = header("jsonl")
        + &state_table("")
        + &crate::support::stage_with("totals", guests::JS_RUNNING_TOTAL, config, "batch_window = \"10s\"");
    let input: String = (0..40)
        .map(|i| {
            format!("{{\"user\":\"u{}\",\"amount\":{}}}\n", i % 3, if i == 7 { "\"x\"".into() } else { i.to_string() })
        })
        .collect();
    let run = scratch.run(&pipeline, &input).await;
    run.report.unwrap();
    // Batches of up to 64 (the window is long): each message sees the totals
    // its batch-mates before it wrote, and a failed one adds nothing.
    let mut totals = [0; 3];
    let expected: Vec<String> = (0..40)
        .filter(|&i| i != 7)
        .map(|i| {
            totals[i % 3] += i;
            format!("{{\"user\":\"u{}\",\"amount\":{i},\"total\":{}}}", i % 3, totals[i % 3])
        })
        .collect();
    assert_eq!(run.output, expected);
    assert_eq!(run.dead.len(), 1, "a non-numeric amount is invalid");
    let state = sluice::state::read_state(&scratch.path("state.redb"), "totals", false).unwrap();
    let state: Vec<String> = state
        .iter()
        .map(|e| format!("{}={}", String::from_utf8_lossy(&e.key), String::from_utf8_lossy(&e.value)))
        .collect();
    assert_eq!(state, totals.iter().enumerate().map(|(k, t)| format!("u{k}={t}")).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_stage_keeps_a_running_total_in_state() {
    let scratch = Scratch::new();
    let config = "key_field = \"user\", amount_field = \"amount\"";
    let pipeline =
        header("jsonl") + &state_table("") + &crate::support::stage("totals", guests::PY_RUNNING_TOTAL, config);
    let run = scratch.run(&pipeline, "{\"user\":\"a\",\"amount\":5}\n{\"user\":\"a\",\"amount\":2.5}\n").await;
    run.report.unwrap();
    assert_eq!(run.output, [r#"{"user":"a","amount":5,"total":5}"#, r#"{"user":"a","amount":2.5,"total":7.5}"#]);
    let run = scratch.run(&pipeline, "{\"user\":\"a\",\"amount\":1}\n{\"user\":\"a\",\"amount\":\"x\"}\n").await;
    assert_eq!(run.output.len(), 1);
    assert!(run.output[0].ends_with("\"total\":8.5}"), "{:?}", run.output);
    assert_eq!(run.dead.len(), 1, "a non-numeric amount is invalid");
    let state = sluice::state::read_state(&scratch.path("state.redb"), "totals", false).unwrap();
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].value, b"8.5");
}

#[test]
fn a_second_process_on_a_state_file_in_use_is_refused_before_it_reads() {
    use crate::metrics::{free_addr, poll, start, stdin_to_stdout};
    use std::io::Write;
    let scratch = Scratch::new();
    let pipeline = stdin_to_stdout("[state]\npath = \"shared.redb\"\ncheckpoint_every = 1")
        + &crate::support::stage_with("count", guests::TEST_STAGE, "", "");
    let addr = free_addr();
    let mut first = start(&scratch, &pipeline, addr);
    poll(addr, "/ready", |status, _| status == 200);
    // A checkpoint creates the state file, which the run then holds open.
    // (One falls due as the source reads on: lines keep coming until then.)
    let mut stdin = first.0.stdin.take().unwrap();
    let state = scratch.dir.path().join("shared.redb");
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while !state.exists() {
        assert!(std::time::Instant::now() < give_up, "no checkpoint created {}", state.display());
        stdin.write_all(b"incr:a\n").and_then(|()| stdin.flush()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }

    let second = std::process::Command::new(crate::resume::sluice_binary())
        .args(["run", "pipeline.toml", "-i", "/dev/null", "-o", "second.out"])
        .current_dir(scratch.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("shared.redb") && stderr.contains("it is open in another process"), "{stderr}");
    assert!(!scratch.dir.path().join("second.out").exists(), "nothing written");
}

//! State quotas: key and value sizes, bytes per stage (per message key when
//! keyed), the pending-write budget, and `sluice state --clear`.

use crate::support::{Scratch, guests, header, stage_with};
use std::io::Write;
use std::process::{Command, Stdio};

fn test_stage(name: &str, extra: &str) -> String {
    stage_with(name, guests::TEST_STAGE, "", extra)
}

fn state_table(extra: &str) -> String {
    format!("[state]\npath = \"state.redb\"\n{extra}\n")
}

/// `(stage's error kind, reason)` of each dead letter.
fn dead(run: &crate::support::Outcome) -> Vec<(String, String)> {
    run.dead.iter().map(|d| (d["error"].as_str().unwrap().into(), d["reason"].as_str().unwrap().into())).collect()
}

/// The committed state of `stage` as `(partition, key, value length)`.
fn committed(scratch: &Scratch, stage: &str, keyed: bool) -> Vec<(String, String, usize)> {
    let entries = sluice::state::read_state(&scratch.path("state.redb"), stage, keyed).unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    entries.iter().map(|e| (text(e.partition.as_deref().unwrap_or_default()), text(&e.key), e.value.len())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_or_value_over_its_cap_is_a_limit_and_the_other_messages_go_on() {
    let scratch = Scratch::new();
    let limits = "limits = { max_state_key_bytes = \"16B\", max_state_value_bytes = \"1KiB\" }";
    let pipeline = header("lines") + &state_table("") + &test_stage("t", limits);
    let input = "incr:a\nlongkey:16\nlongkey:17\nsetbig:v:1024\nsetbig:w:1025\nincr:a\n";
    let run = scratch.run(&pipeline, input).await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["a=1", "set", "v:1024", "a=2"]);
    assert_eq!(
        dead(&run),
        [
            ("limit".into(), "wrote a state key of 17 bytes, over the 16 allowed (limits.max_state_key_bytes)".into()),
            (
                "limit".into(),
                "wrote a state value of 1025 bytes, over the 1024 bytes allowed (limits.max_state_value_bytes)".into()
            ),
        ]
    );
    assert_eq!(run.dead[1]["message"]["value_text"], "setbig:w:1025", "the message at fault");
    let keys: Vec<_> = committed(&scratch, "t", false).into_iter().map(|(_, k, len)| (k, len)).collect();
    assert_eq!(keys, [("a".into(), 1), ("k".repeat(16), 1), ("v".into(), 1024)], "nothing of the breaches");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_that_fills_its_quota_loses_only_the_message_that_passes_it_in_this_run_and_the_next() {
    let scratch = Scratch::new();
    // Keys and values count: `k1` + 300 bytes is 302.
    let pipeline = header("lines") + &state_table("") + &test_stage("t", "limits = { max_state_bytes = \"1KiB\" }");
    let run =
        scratch.run(&pipeline, "setbig:k1:300\nsetbig:k2:300\nsetbig:k3:300\nsetbig:k4:300\nincr:c\nlen:k4\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["k1:300", "k2:300", "k3:300", "c=1", "none"]);
    assert_eq!(
        dead(&run),
        [(
            "limit".into(),
            "would hold 1208 bytes of state for this stage, over the 1024 bytes allowed (limits.max_state_bytes)"
                .into()
        )]
    );
    let state = |scratch: &Scratch| -> Vec<(String, usize)> {
        committed(scratch, "t", false).into_iter().map(|(_, k, len)| (k, len)).collect()
    };
    assert_eq!(state(&scratch), [("c".into(), 1), ("k1".into(), 300), ("k2".into(), 300), ("k3".into(), 300)]);

    // 908 bytes are committed: the next run counts them from the file.
    let run = scratch.run(&pipeline, "setbig:k5:100\nsetbig:k6:100\ndel:k1\nsetbig:k6:100\n").await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["k5:100", "deleted k1", "k6:100"], "a deletion makes room");
    assert_eq!(dead(&run).len(), 1);
    assert!(dead(&run)[0].1.contains("would hold 1112 bytes of state for this stage"), "{:?}", dead(&run));
    assert_eq!(
        state(&scratch),
        [("c".into(), 1), ("k2".into(), 300), ("k3".into(), 300), ("k5".into(), 100), ("k6".into(), 100)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_stage_has_a_quota_per_key() {
    let scratch = Scratch::new();
    let pipeline = header("lines")
        + &state_table("")
        + &test_stage("key", "")
        + &test_stage("per-key", "partition_by = \"key\"\nlimits = { max_state_bytes = \"1KiB\" }");
    let input = "keyed:u1:setbig:a:1000\nkeyed:u1:setbig:b:100\nkeyed:u2:setbig:b:100\nkeyed:u2:setbig:a:900\n";
    let run = scratch.run(&pipeline, input).await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["a:1000", "b:100", "a:900"], "u1 being full does not stop u2");
    assert_eq!(dead(&run).len(), 1);
    assert!(dead(&run)[0].1.contains("of state for this message key"), "{:?}", dead(&run));
    assert_eq!(
        committed(&scratch, "per-key", true),
        [("u1".into(), "a".into(), 1000), ("u2".into(), "a".into(), 900), ("u2".into(), "b".into(), 100)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uncommitted_state_is_bounded_checkpointing_early_and_refusing_what_cannot_fit() {
    let scratch = Scratch::new();
    // Counted checkpoints never come: only the pending budget triggers them.
    let state = state_table("checkpoint_every = 1000000\ncheckpoint_interval = \"1h\"\nmax_pending_bytes = \"8KiB\"");
    let pipeline = header("lines") + &state + &test_stage("t", "buffer = 1");
    // 100 values of 200 bytes: 20 KiB pending without checkpoints, past the budget.
    let input: String = (0..100).map(|i| format!("setbig:k{i:03}:200\n")).collect();
    let run = scratch.run(&pipeline, &(input + "setbig:huge:9000\nsetbig:after:1\n")).await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output.len(), 101, "every write that fits was kept");
    assert_eq!(run.output.last().unwrap(), "after:1");
    assert_eq!(dead(&run).len(), 1);
    assert!(dead(&run)[0].1.ends_with("until a checkpoint (state.max_pending_bytes)"), "{:?}", dead(&run));
    assert_eq!(committed(&scratch, "t", false).len(), 101);
}

/// The `sluice` binary cargo built for this workspace's tests.
fn binary() -> std::path::PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("sluice")
}

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(binary()).args(args).env("SLUICE_LOG", "warn").output().unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn state_clear_removes_one_stages_state_or_all_and_refuses_while_the_pipeline_runs() {
    let scratch = Scratch::new();
    let state = state_table("");
    // `one` writes `x` and passes `x=1` on; `two` writes `y` in the second pipeline.
    let pipeline = header("lines") + &state + &test_stage("one", "") + &test_stage("two", "");
    scratch.run(&pipeline, "incr:x\n").await.report.unwrap();
    let only_two = scratch.write("two.toml", header("lines") + &state + &test_stage("two", ""));
    let config = sluice::PipelineConfig::from_file(&only_two).unwrap();
    scratch.write("input", "incr:y\nincr:y\n");
    sluice::Pipeline::build(config).await.unwrap().run().await.unwrap();
    let file = scratch.path("pipeline.toml");
    let file = file.to_str().unwrap();
    let listed = stdout(&sluice(&["state", file]));
    assert_eq!(
        listed,
        "{\"key\":\"x\",\"stage\":\"one\",\"value\":\"1\"}\n{\"key\":\"y\",\"stage\":\"two\",\"value\":\"2\"}\n"
    );

    // A stage that is not there is a wrong argument (78), and the stages are named.
    let unknown = sluice(&["state", "--stage", "nope", file]);
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(78), "{said}");
    assert!(said.contains("no stage `nope` (stages: one, two)"), "{said}");

    let cleared = stdout(&sluice(&["state", "--clear", "--stage", "one", file]));
    assert!(cleared.ends_with(": removed 1 state entries (6 B) of stage `one`\n"), "{cleared}");
    assert_eq!(stdout(&sluice(&["state", file])), "{\"key\":\"y\",\"stage\":\"two\",\"value\":\"2\"}\n");

    // A run reading stdin opens the state file when it starts (to look for
    // a checkpoint) and keeps it open while it waits for input.
    let stdin_pipeline = scratch.write(
        "stdin.toml",
        "version = 1\n[source]\nformat = \"lines\"\n[sink]\npath = \"out\"\nformat = \"lines\"\n".to_string()
            + &state
            + &test_stage("two", ""),
    );
    let mut running = Command::new(binary())
        .args(["run", stdin_pipeline.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state_file = scratch.path("state.redb");
    let fds = format!("/proc/{}/fd", running.id());
    let holds_state = || {
        std::fs::read_dir(&fds).unwrap().any(|fd| std::fs::read_link(fd.unwrap().path()).is_ok_and(|p| p == state_file))
    };
    for tries in 0.. {
        if holds_state() {
            break;
        }
        assert!(tries < 6000, "the run never opened its state file");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let refused = sluice(&["state", "--clear", file]);
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("it is open in another process: is the pipeline running? Stop it first"), "{error}");
    let mut input = running.stdin.take().unwrap();
    writeln!(input, "incr:y").unwrap();
    drop(input);
    assert!(running.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(scratch.path("out")).unwrap(), "y=3\n", "the refusal removed nothing");

    let cleared = stdout(&sluice(&["state", "--clear", file]));
    assert!(cleared.ends_with(": removed 1 state entries (6 B) of every stage\n"), "{cleared}");
    assert_eq!(stdout(&sluice(&["state", file])), "");
}

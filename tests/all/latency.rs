//! A streaming tool delivers each message as soon as it is done: outputs
//! reach a live consumer while the input is still open, and a message waiting
//! to be retried does not hold up the others. (Behaviour, not timing: the
//! figures are in docs/benchmarks.md.)

use crate::support::{Scratch, guests, header, stage_with};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn a_consumer_of_stdout_gets_each_output_before_the_next_input_is_sent() {
    let scratch = Scratch::new();
    let pipeline = "version = 1\n[source]\nformat = \"lines\"\n[sink]\nformat = \"lines\"\n\
                    [dead_letter]\npath = \"dead.jsonl\"\n"
        .to_string()
        + &stage_with("t", guests::TEST_STAGE, "prefix = \"seen \"", "");
    let file = scratch.write("pipeline.toml", pipeline);
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    let mut child = Command::new(bin)
        .args(["run", file.to_str().unwrap(), "--progress=0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || stdout.lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    for i in 0..5 {
        writeln!(stdin, "line {i}").unwrap();
        stdin.flush().unwrap();
        // Generous: a slow machine must not fail it. Before outputs were
        // flushed when idle, nothing came until the input ended.
        let output = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("no output for input {i} while the input stays open")
        });
        assert_eq!(output, format!("seen line {i}"));
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

fn retrying(order: &str) -> String {
    header("lines")
        + &stage_with(
            "t",
            guests::TEST_STAGE,
            "",
            &format!("order = \"{order}\"\nretries = {{ max = 3, backoff = \"200ms\", max_backoff = \"1s\" }}"),
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_waiting_to_be_retried_does_not_hold_up_its_neighbours() {
    let scratch = Scratch::new();
    // `flaky:2:x` fails twice (`transient`), then succeeds: at least 100 ms
    // and 200 ms of backoff, while the others take microseconds.
    let input = "flaky:2:x\na\nb\nc\n";
    let run = scratch.run(&retrying("unordered"), input).await;
    let report = run.report.unwrap();
    assert_eq!(run.output, ["a", "b", "c", "x"], "the neighbours finished while x waited");
    assert_eq!(report.stages[0].retried, 2);
    assert_eq!(report.stages[0].in_flight, 0);

    // Ordered, the reorder buffer holds them until x is done: same order as the input.
    let run = scratch.run(&retrying("ordered"), input).await;
    run.report.unwrap();
    assert_eq!(run.output, ["x", "a", "b", "c"]);
}

//! `sluice tap ADDR STAGE`: a live sample of what leaves a stage of a real
//! running `sluice run --metrics-addr ADDR` fed from stdin held open. It
//! prints the stage's outputs as JSON lines, changes nothing the pipeline
//! writes, names the stages when asked for one that is not there, and keeps
//! to its rate.

use crate::metrics::{Sluice, free_addr, poll, start, stdin_to_stdout};
use crate::resume::sluice_binary;
use crate::support::{Scratch, guests, stage_with};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `first` echoes, `second` prefixes `>`: what leaves `second` is `>` and
/// the line. Returns the run, its stdin, and its stdout read to the end on
/// a thread (so that a full pipe never stalls it).
fn two_stages(scratch: &Scratch) -> (Sluice, ChildStdin, SocketAddr, JoinHandle<String>) {
    let pipeline = stdin_to_stdout("")
        + &stage_with("first", guests::TEST_STAGE, "", "")
        + &stage_with("second", guests::TEST_STAGE, "prefix = \">\"", "");
    let addr = free_addr();
    let mut child = start(scratch, &pipeline, addr);
    poll(addr, "/ready", |status, _| status == 200);
    let stdin = child.0.stdin.take().unwrap();
    let mut stdout = child.0.stdout.take().unwrap();
    let output = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    (child, stdin, addr, output)
}

fn tap(addr: SocketAddr, args: &[&str]) -> Child {
    Command::new(sluice_binary())
        .args(["tap", &addr.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Ends the run (closing stdin) and checks it wrote every line fed, through
/// both stages, in order: tapping took nothing away and changed nothing.
fn ends_with_every_line(mut run: Sluice, stdin: ChildStdin, output: JoinHandle<String>, fed: usize) {
    drop(stdin);
    let status = run.0.wait().unwrap();
    let mut stderr = String::new();
    run.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let written = output.join().unwrap();
    let expected: Vec<String> = (0..fed).map(|i| format!(">m{i}")).collect();
    assert_eq!(written.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn tap_prints_json_lines_of_what_leaves_the_stage_and_the_output_is_unchanged() {
    let scratch = Scratch::new();
    let (run, mut stdin, addr, output) = two_stages(&scratch);
    let mut tapping = tap(addr, &["second", "--count", "5"]);
    // Lines go in until the tap has its five, whenever it attached. The
    // bound only stops a broken build from feeding forever.
    let mut fed = 0;
    while tapping.try_wait().unwrap().is_none() {
        assert!(fed < 200_000, "the tap never got 5 messages");
        writeln!(stdin, "m{fed}").unwrap();
        stdin.flush().unwrap();
        fed += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    let tapped = tapping.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&tapped.stderr);
    assert!(tapped.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8(tapped.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 5, "{lines:?}\n{stderr}");
    let mut last = 0;
    for line in &lines {
        let position = line["position"].as_u64().unwrap();
        // Line n of stdin (from 1) is `m{n-1}`; `second` made it `>m{n-1}`.
        assert_eq!(line["value"], format!(">m{}", position - 1), "{line}");
        assert_eq!(line["stage"], "second", "{line}");
        assert_eq!(line["key"], serde_json::Value::Null, "{line}");
        assert_eq!(line["headers"], serde_json::json!([]), "{line}");
        assert!(line.get("cut").is_none(), "{line}");
        assert!(position > last, "in the order the stage sent them: {lines:?}");
        last = position;
    }
    ends_with_every_line(run, stdin, output, fed);
}

#[test]
fn tapping_a_stage_that_is_not_there_names_the_stages_and_exits_78() {
    let scratch = Scratch::new();
    let (run, stdin, addr, output) = two_stages(&scratch);
    let out = tap(addr, &["third", "--count", "1"]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot tap `third` at {addr}: no stage `third` in this pipeline; its stages: first, second"
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    ends_with_every_line(run, stdin, output, 0);

    // Nothing listening: it says what to start.
    let addr = free_addr().to_string();
    let out = Command::new(sluice_binary()).args(["tap", &addr, "second"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("is `sluice run --metrics-addr {addr}` running?")), "{stderr}");
}

#[test]
fn tapping_a_server_that_is_not_sluice_exits_1_without_printing_its_page() {
    // It answers 404 `"not found"` to /tap/...: not sluice's unknown stage.
    let server = crate::server::TestServer::start();
    let addr = server.addr.to_string();
    let out = Command::new(sluice_binary()).args(["tap", &addr, "second"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{addr} does not answer like a sluice metrics server")), "{stderr}");
    assert!(!stderr.contains("not found"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_tap_keeps_to_its_rate_while_the_stage_runs_flat_out() {
    let scratch = Scratch::new();
    let (run, mut stdin, addr, output) = two_stages(&scratch);
    let mut tapping = tap(addr, &["second", "--rate", "10"]);
    // It says so on stderr once the stage has it as a listener.
    let (said, attached) = mpsc::channel();
    let stderr = BufReader::new(tapping.stderr.take().unwrap());
    let stderr = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stderr.lines() {
            let line = line.unwrap();
            if line.contains("tapping stage `second`") {
                let _ = said.send(());
            }
            all += &line;
            all.push('\n');
        }
        all
    });
    attached.recv_timeout(Duration::from_secs(60)).expect("the tap never attached");
    let started = Instant::now();
    // 2,000 lines in 20 bursts of 100 with a pause between: the stage sends
    // far more than 10 a second for over a second, whatever the machine.
    let fed = 2000;
    for burst in 0..20 {
        let lines: String = (burst * 100..(burst + 1) * 100).map(|i| format!("m{i}\n")).collect();
        stdin.write_all(lines.as_bytes()).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(60));
    }
    ends_with_every_line(run, stdin, output, fed);
    // The stage ended, and so does the tap.
    let mut stdout = String::new();
    tapping.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let status = tapping.wait().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let stderr = stderr.join().unwrap();
    assert!(status.success(), "{stderr}");
    let tapped = stdout.lines().count();
    // 10 a second, after a first burst of one; one more for rounding.
    let bound = (10.0 * elapsed).floor() as usize + 2;
    assert!((1..=bound).contains(&tapped), "{tapped} tapped in {elapsed:.2}s at --rate 10\n{stderr}");
}

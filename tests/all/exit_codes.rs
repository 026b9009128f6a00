//! What a script sees when `sluice run` ends: its exit status, and the
//! `--report-json` file saying how the run ended, on every path (and what
//! `sluice check` says of the same pipelines). These run
//! the real `sluice` binary, as a script would.

use crate::resume::sluice_binary;
use crate::support::{Scratch, guests, header, stage_with};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::process::{Command, Output, Stdio};

/// `sluice run pipeline.toml --report-json report.json <args>` in the
/// scratch directory, to the end.
fn run(scratch: &Scratch, args: &[&str]) -> Output {
    Command::new(sluice_binary())
        .args(["run", "pipeline.toml", "--report-json", "report.json", "--progress", "0"])
        .args(args)
        .current_dir(scratch.dir.path())
        .env("SLUICE_LOG", "info")
        .env_remove("SLUICE_LOG_FORMAT")
        .output()
        .unwrap()
}

fn report(scratch: &Scratch) -> Value {
    let text = std::fs::read(scratch.path("report.json")).expect("the report file is written");
    serde_json::from_slice(&text).unwrap()
}

fn test_stage(extra: &str) -> String {
    stage_with("t", guests::TEST_STAGE, "", extra)
}

#[test]
fn a_run_that_finishes_exits_0_and_its_report_keeps_its_fields_adding_how_it_ended() {
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", header("lines") + &test_stage(""));
    scratch.write("input", "a\ninvalid:no\nb\n");
    let out = run(&scratch, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report(&scratch);
    let keys: Vec<&str> = report.as_object().unwrap().keys().map(String::as_str).collect();
    // The library's report, as before, then the three the CLI adds.
    let expected = [
        "read",
        "skipped",
        "written",
        "dead_lettered",
        "elapsed",
        "stages",
        "stopped_after",
        "stop_reason",
        "outcome",
        "exit_code",
        "error",
    ];
    let (mut keys, mut expected) = (keys, expected.to_vec());
    keys.sort_unstable();
    expected.sort_unstable();
    assert_eq!(keys, expected, "{report}");
    assert_eq!((report["outcome"].as_str(), report["exit_code"].as_u64()), (Some("success"), Some(0)), "{report}");
    assert!(report["error"].is_null(), "{report}");
    assert_eq!((report["read"].as_u64(), report["written"].as_u64()), (Some(3), Some(2)), "{report}");
    assert_eq!(report["stages"][0]["dead_lettered"].as_u64(), Some(1), "{report}");
}

#[test]
fn a_wrong_pipeline_exits_78_with_a_report_that_says_why() {
    // A misspelt key, and a stage that refuses its config: both the file's fault.
    for pipeline in [
        "shutdown_timout = \"1s\"\n".to_string() + &header("lines") + &test_stage(""),
        header("lines") + &stage_with("t", guests::TEST_STAGE, "fail_init = true", ""),
    ] {
        let scratch = Scratch::new();
        scratch.write("pipeline.toml", &pipeline);
        scratch.write("input", "a\n");
        let out = run(&scratch, &[]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{pipeline}\n{log}");
        let report = report(&scratch);
        assert_eq!((report["outcome"].as_str(), report["exit_code"].as_u64()), (Some("config_error"), Some(78)));
        let error = report["error"].as_str().unwrap();
        assert!(log.contains(&format!("error: {error}")), "the report's error is the one printed:\n{log}\n{report}");
        // Nothing ran, so there is nothing to count.
        assert!(report.get("read").is_none() && report.get("stages").is_none(), "{report}");
        assert!(!scratch.path("out").exists());
    }
}

#[test]
fn the_circuit_breaker_exits_3_and_the_report_has_the_counts_so_far() {
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", header("lines") + &test_stage("limits = { max_consecutive_failures = 2 }"));
    scratch.write("input", "a\ninvalid:x\ninvalid:y\nb\n");
    let out = run(&scratch, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{log}");
    let report = report(&scratch);
    assert_eq!((report["outcome"].as_str(), report["exit_code"].as_u64()), (Some("circuit_open"), Some(3)));
    assert!(report["error"].as_str().unwrap().contains("limits.max_consecutive_failures"), "{report}");
    assert_eq!(report["stages"][0]["name"], "t", "{report}");
    assert!(report["stages"][0]["input"].as_u64().unwrap() >= 3, "{report}");
    // A failed run writes no output.
    assert!(!scratch.path("out").exists(), "{log}");
}

#[test]
fn a_runtime_failure_exits_1_with_the_report() {
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", header("lines") + &test_stage(""));
    // Standard input that cannot be read (a directory): it fails only once
    // the run reads it.
    let out = Command::new(sluice_binary())
        .args(["run", "pipeline.toml", "--report-json", "report.json", "--progress", "0", "-i", "-"])
        .current_dir(scratch.dir.path())
        .stdin(std::fs::File::open(scratch.dir.path()).unwrap())
        .env_remove("SLUICE_LOG_FORMAT")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    let report = report(&scratch);
    assert_eq!((report["outcome"].as_str(), report["exit_code"].as_u64()), (Some("failed"), Some(1)));
    assert!(report["error"].as_str().unwrap().contains("cannot read input"), "{report}");
    // The pipeline was built: its counts are there, at zero.
    assert_eq!((report["read"].as_u64(), report["stages"][0]["name"].as_str()), (Some(0), Some("t")), "{report}");
}

/// `sluice check` on the pipeline file in `scratch`: its exit status and stderr.
fn check(scratch: &Scratch) -> (Option<i32>, String) {
    let out = Command::new(sluice_binary())
        .args(["check", "pipeline.toml"])
        .current_dir(scratch.dir.path())
        .env_remove("SLUICE_LOG_FORMAT")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_missing_input_or_an_output_in_a_missing_directory_fails_the_run_as_check_does_before_building() {
    let scratch = Scratch::new();
    let stage = test_stage("");
    let cases = [
        (header("lines") + &stage, "pipeline.toml: [source] path: cannot read input: it does not exist"),
        (
            header("lines").replace("path = \"out\"", "path = \"no/such/dir/out\"") + &stage,
            "pipeline.toml: [sink] path: cannot write no/such/dir/out: directory no/such/dir does not exist",
        ),
    ];
    for (pipeline, problem) in cases {
        scratch.write("pipeline.toml", pipeline);
        if problem.contains("[sink]") {
            scratch.write("input", "a\n");
        }
        let (code, checked) = check(&scratch);
        assert_eq!(code, Some(78), "{checked}");
        assert!(checked.contains(problem), "{checked}");
        let out = run(&scratch, &[]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{log}");
        // The same words as check's, and no report table of a run that
        // never started, nor the name of a temporary file.
        assert!(log.contains(problem), "{log}");
        assert!(!log.contains(" read, ") && !log.contains(".partial"), "{log}");
        let report = report(&scratch);
        assert_eq!((report["outcome"].as_str(), report["exit_code"].as_u64()), (Some("config_error"), Some(78)));
        assert!(report["read"].is_null(), "nothing was built: {report}");
    }
    // With a stage's problem too, both are told, as check tells them.
    scratch.write("junk.wasm", "not a component");
    let junk = "[[stages]]\nname = \"u\"\nplugin = \"junk.wasm\"\n";
    scratch.write("pipeline.toml", header("lines") + &stage + junk);
    std::fs::remove_file(scratch.path("input")).unwrap();
    let (code, checked) = check(&scratch);
    let out = run(&scratch, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!((code, out.status.code()), (Some(78), Some(78)), "{checked}\n{log}");
    for said in [&*checked, &*log] {
        assert!(said.contains("[source] path: cannot read input: it does not exist"), "{said}");
        assert!(said.contains("stage `u`"), "{said}");
    }

    // Given on the command line, the problem names the flag.
    scratch.write("pipeline.toml", header("lines") + &stage);
    let out = run(&scratch, &["-o", "out", "-i", "no-such-input"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{log}");
    assert!(log.contains("error: --input: cannot read /"), "{log}");
    assert!(log.contains("/no-such-input: it does not exist"), "{log}");
}

#[test]
fn a_stage_that_can_no_longer_start_exits_4_having_written_what_finished() {
    // `poison` makes every later `init` trap; `isolate` needs a fresh instance per message.
    let scratch = Scratch::new();
    let stage = stage_with("h", guests::HOSTILE, "", "isolate = true");
    scratch.write("pipeline.toml", header("lines") + "[state]\nbackend = \"memory\"\n" + &stage);
    let rest: String = (0..20).map(|i| format!("{i}\n")).collect();
    scratch.write("input", format!("a\npoison\n{rest}"));
    let out = run(&scratch, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{log}");
    let report = report(&scratch);
    assert_eq!((report["outcome"].as_str(), report["exit_code"].as_u64()), (Some("stopped_early"), Some(4)));
    assert!(report["stop_reason"].as_str().unwrap().starts_with("stage `h` cannot start a new instance"), "{report}");
    assert!(report["error"].as_str().unwrap().contains("the run did not finish"), "{report}");
    assert!(scratch.path("out").exists(), "what finished is written:\n{log}");
}

#[test]
fn sigint_drains_exits_130_and_the_report_says_where_it_stopped() {
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", header("lines") + &test_stage(""));
    let mut child = Command::new(sluice_binary())
        .args(["run", "pipeline.toml", "-i", "-", "-o", "-", "--report-json", "report.json", "--progress", "0"])
        .current_dir(scratch.dir.path())
        .env("SLUICE_LOG", "info")
        .env_remove("SLUICE_LOG_FORMAT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "a").unwrap();
    stdin.flush().unwrap();
    // Once its output is out, the run is under way (and its handlers installed).
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "a\n");
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{log}");
    assert!(log.contains("To resume: "), "{log}");
    drop(stdin);
    let report = report(&scratch);
    assert_eq!((report["outcome"].as_str(), report["exit_code"].as_u64()), (Some("interrupted"), Some(130)));
    assert!(report["error"].is_null(), "{report}");
    assert_eq!((report["stopped_after"].as_u64(), report["written"].as_u64()), (Some(1), Some(1)), "{report}");
}

/// `sluice run` over `input` (whose whole text is read at once) with its
/// outputs on stdout: started once the first output is out and the source
/// has had time to reach the end of its input.
fn running_past_the_end_of_input(scratch: &Scratch, input: &str) -> (std::process::Child, String) {
    scratch.write("input", input);
    let mut child = Command::new(sluice_binary())
        .args(["run", "pipeline.toml", "-o", "-", "--report-json", "report.json", "--progress", "0"])
        .current_dir(scratch.dir.path())
        .env("SLUICE_LOG", "info")
        .env_remove("SLUICE_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut rest = String::new();
    std::thread::spawn(move || std::io::Read::read_to_string(&mut stdout, &mut rest).map(|_| rest));
    (child, first)
}

fn interrupt(child: &std::process::Child) {
    let signalled = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(signalled.success());
}

#[test]
fn sigint_after_the_whole_input_was_read_still_bounds_the_drain_by_shutdown_timeout() {
    // The second message takes a minute; the drain may take one second.
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", "shutdown_timeout = \"1s\"\n".to_string() + &header("lines") + &test_stage(""));
    let (child, first) = running_past_the_end_of_input(&scratch, "a\nsleep:60000\n");
    assert_eq!(first, "a\n");
    let since = std::time::Instant::now();
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(since.elapsed() < std::time::Duration::from_secs(30), "the run went on: {log}");
    assert!(log.contains("stopped after the whole input was read"), "{log}");
    assert!(log.contains("did not finish within shutdown_timeout (1s)"), "{log}");
    let report = report(&scratch);
    assert_eq!((report["outcome"].as_str(), report["exit_code"].as_u64()), (Some("failed"), Some(1)), "{report}");
}

#[test]
fn after_the_whole_input_was_read_sigint_lets_the_run_finish_and_a_second_one_aborts_it() {
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", header("lines") + &test_stage(""));
    // Finished within shutdown_timeout: the run is whole, as if no signal had come.
    let (child, _) = running_past_the_end_of_input(&scratch, "a\nsleep:1500:b\n");
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(!log.contains("To resume"), "nothing is left to resume: {log}");
    let finished = report(&scratch);
    assert_eq!((finished["outcome"].as_str(), finished["written"].as_u64()), (Some("success"), Some(2)), "{finished}");

    // A second signal aborts at once, as it does while input is being read.
    let (child, _) = running_past_the_end_of_input(&scratch, "a\nsleep:60000\n");
    let since = std::time::Instant::now();
    interrupt(&child);
    std::thread::sleep(std::time::Duration::from_millis(300));
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{log}");
    assert!(since.elapsed() < std::time::Duration::from_secs(30), "the run went on: {log}");
    let report = report(&scratch);
    assert_eq!(report["outcome"].as_str(), Some("aborted"), "{report}");
}

#[test]
fn no_file_the_run_reads_is_written_over_by_its_outputs_or_its_report() {
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", header("lines") + &test_stage(""));
    scratch.write("input", "a\nb\n");
    let cases: [(&[&str], &str); 6] = [
        (&["--dead-letter", "input"], "the dead-letter file would overwrite the source"),
        (&["--report-json", "./out"], "--report-json ./out: the sink is that file"),
        (&["-o", "pipeline.toml"], "the sink would overwrite the pipeline file"),
        (&["--report-json", "input"], "--report-json input: the source is that file"),
        (&["-o", "o2", "--report-json", "o2"], "--report-json o2: the sink is that file"),
        (&["--dead-letter", "-"], "dead letters go to a file, not `-`"),
    ];
    for (args, says) in cases {
        let out = Command::new(sluice_binary())
            .args(["run", "pipeline.toml", "--progress", "0"])
            .args(args)
            .current_dir(scratch.dir.path())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {log}");
        assert!(log.contains(says), "{args:?}: {log}");
        assert_eq!(std::fs::read_to_string(scratch.path("input")).unwrap(), "a\nb\n", "{args:?}");
        assert!(std::fs::read_to_string(scratch.path("pipeline.toml")).unwrap().starts_with("version = 1"));
    }
}

#[test]
fn the_report_follows_a_symlink_and_writes_a_pipe_in_place() {
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", header("lines") + &test_stage(""));
    scratch.write("input", "a\n");
    std::fs::create_dir(scratch.path("reports")).unwrap();
    std::os::unix::fs::symlink("reports/latest.json", scratch.path("report.json")).unwrap();
    let out = run(&scratch, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::symlink_metadata(scratch.path("report.json")).unwrap().is_symlink(), "the link stays");
    assert_eq!(report(&scratch)["outcome"].as_str(), Some("success"));

    // A named pipe is written as it is, not replaced by a file.
    let fifo = scratch.path("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (tx, rx) = std::sync::mpsc::channel();
    let reading = fifo.clone();
    std::thread::spawn(move || tx.send(std::fs::read_to_string(reading)));
    let out = Command::new(sluice_binary())
        .args(["run", "pipeline.toml", "--progress", "0", "--report-json", "fifo", "-o", "o3"])
        .current_dir(scratch.dir.path())
        .output()
        .unwrap();
    let got = rx.recv_timeout(std::time::Duration::from_secs(20));
    if got.is_err() {
        // Unblock the reader of a pipe that was never opened.
        drop(std::fs::OpenOptions::new().write(true).open(&fifo));
    }
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = got.expect("the report came through the pipe").unwrap();
    let written: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(written["outcome"].as_str(), Some("success"), "{text}");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the pipe stays a pipe");

    // /dev/stdout is the inherited descriptor, here a file the shell opened
    // for the outputs too: the report follows them, replacing nothing.
    let shell = format!(
        "'{}' run pipeline.toml --progress 0 -o - --report-json /dev/stdout > all.txt",
        sluice_binary().display()
    );
    let out = Command::new("sh").args(["-c", &shell]).current_dir(scratch.dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all = std::fs::read_to_string(scratch.path("all.txt")).unwrap();
    let (output, report) = all.split_once('\n').unwrap();
    assert_eq!(output, "a", "{all}");
    assert_eq!(serde_json::from_str::<Value>(report).unwrap()["outcome"].as_str(), Some("success"), "{all}");
}

#[test]
fn check_and_compile_of_a_one_stage_pipeline_say_stage() {
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", header("lines") + &test_stage(""));
    scratch.write("input", "a\n");
    let (code, checked) = check(&scratch);
    assert_eq!(code, Some(0), "{checked}");
    assert!(checked.contains("pipeline.toml: ok (1 stage: t)"), "{checked}");
    let out = Command::new(sluice_binary())
        .args(["compile", "pipeline.toml"])
        .current_dir(scratch.dir.path())
        .env("SLUICE_CACHE", scratch.path("cache"))
        .output()
        .unwrap();
    let compiled = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{compiled}");
    assert!(compiled.contains("pipeline.toml: 1 stage ready, "), "{compiled}");
}

//! Resuming an interrupted run with the command it prints keeps every line of
//! both runs; what a run would fail to write stops it before it writes anything.
//! These run the real `sluice` binary, as a user would.

use crate::support::{Scratch, guests, read_json_lines, read_lines, stage_with};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `sluice` binary cargo built for this workspace's tests.
pub(crate) fn sluice_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    assert!(bin.is_file(), "{} is missing: `cargo test` at the workspace root builds it", bin.display());
    bin
}

/// `sluice <args>`, run in `dir`, to the end.
fn sluice(dir: &Path, args: &[&str]) -> Output {
    Command::new(sluice_binary()).args(args).current_dir(dir).env("SLUICE_LOG", "info").output().unwrap()
}

fn test_stage(name: &str, extra: &str) -> String {
    stage_with(name, guests::TEST_STAGE, "", extra)
}

/// Lines in and out, paths from the command line.
const LINES: &str = "version = 1\n[source]\nformat = \"lines\"\n[sink]\nformat = \"lines\"\n";

/// Files whose names end in `.partial` in `dir`.
fn partial_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect()
}

/// Runs `args` in `dir`, interrupts it with SIGINT once it has read some
/// input, and returns its stderr. The run must end well, drained.
fn run_and_interrupt(dir: &Path, args: &[&str]) -> String {
    let mut child = Command::new(sluice_binary())
        .args(args)
        .args(["--progress", "1"])
        .current_dir(dir)
        .env("SLUICE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || stderr.lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    let mut log = Vec::new();
    // The first progress line that counts messages read: the run is under way.
    for line in rx.iter() {
        let started = line.contains("progress: ") && !line.contains("progress: 0 read");
        log.push(line);
        if started {
            break;
        }
    }
    let signalled = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(signalled.success());
    log.extend(rx.iter());
    let status = child.wait().unwrap();
    let log = log.join("\n");
    // 130: interrupted, and drained (a failed drain would be 1).
    assert_eq!(status.code(), Some(130), "the interrupted run failed:\n{log}");
    log
}

/// The command the interrupted run printed, run as printed by a POSIX shell
/// (with `sluice` being the binary under test).
fn run_the_hint(dir: &Path, log: &str) -> (String, Output) {
    let hint = log.split("To resume: ").nth(1).unwrap_or_else(|| panic!("no resume hint in:\n{log}"));
    let hint = hint.lines().next().unwrap().to_string();
    let command = hint.strip_prefix("sluice ").expect("the hint is a sluice command");
    let shell = format!("'{}' {command}", sluice_binary().display());
    let out = Command::new("sh").args(["-c", &shell]).current_dir(dir).env("SLUICE_LOG", "info").output().unwrap();
    (hint, out)
}

/// Interrupts a run over `input` with SIGINT, runs the printed hint, and
/// returns the final output lines and dead-letter records.
fn interrupt_then_resume(scratch: &Scratch, pipeline: &str, input: &str) -> (Vec<String>, Vec<serde_json::Value>) {
    let dir = scratch.dir.path();
    scratch.write("pipeline.toml", pipeline);
    scratch.write("input", input);
    // File names a shell would split: the hint must quote them.
    let args = ["run", "pipeline.toml", "-i", "input", "-o", "my out", "--dead-letter", "dead letters.jsonl"];
    let log = run_and_interrupt(dir, &args);
    let first_output = read_lines(&scratch.path("my out"));
    assert!(!first_output.is_empty(), "the first run wrote what it read:\n{log}");

    let (hint, resumed) = run_the_hint(dir, &log);
    assert!(
        hint.starts_with(
            "sluice run pipeline.toml -i input -o 'my out' --dead-letter 'dead letters.jsonl' --skip-lines "
        ),
        "{hint}"
    );
    assert!(hint.ends_with(" --append"), "{hint}");
    assert!(resumed.status.success(), "the resumed run failed:\n{}", String::from_utf8_lossy(&resumed.stderr));
    let output = read_lines(&scratch.path("my out"));
    assert_eq!(output[..first_output.len()], first_output[..], "the first run's lines come first, unchanged");
    assert!(partial_files(dir).is_empty(), "{:?}", partial_files(dir));
    (output, read_json_lines(&scratch.path("dead letters.jsonl")))
}

/// Input lines 1..=n: every tenth is invalid (dead-lettered), the rest `ok(i)`.
fn input(n: usize, ok: impl Fn(usize) -> String) -> String {
    (1..=n).map(|i| if i % 10 == 0 { format!("invalid:bad{i}\n") } else { ok(i) + "\n" }).collect()
}

/// The input line numbers of dead letters, sorted.
fn dead_lines(dead: &[serde_json::Value]) -> Vec<u64> {
    let mut lines: Vec<u64> = dead.iter().map(|d| d["input"]["line"].as_u64().unwrap()).collect();
    lines.sort_unstable();
    lines
}

#[test]
fn resuming_with_the_printed_command_keeps_every_line_of_both_runs() {
    const N: usize = 4000;
    let scratch = Scratch::new();
    // ~1 ms per message, so the run is still reading when it is interrupted.
    // Without durable state: the outputs are plain temporary files.
    let pipeline = LINES.to_string() + "[state]\nbackend = \"memory\"\n" + &test_stage("slow", "");
    let (output, dead) = interrupt_then_resume(&scratch, &pipeline, &input(N, |i| format!("sleep:1:m{i}")));
    let expected: Vec<String> = (1..=N).filter(|i| i % 10 != 0).map(|i| format!("m{i}")).collect();
    assert_eq!(output, expected, "every line once, in input order");
    assert_eq!(dead_lines(&dead), (1..=N as u64).filter(|i| i % 10 == 0).collect::<Vec<_>>());
}

#[test]
fn resuming_a_checkpointed_run_with_the_printed_command_keeps_every_line_and_the_state() {
    const N: usize = 3000;
    const KEYS: usize = 5;
    let scratch = Scratch::new();
    let pipeline = LINES.to_string()
        + "[state]\npath = \"state.redb\"\ncheckpoint_every = 50\ncheckpoint_interval = \"20ms\"\n"
        + &test_stage("slow", "")
        + &test_stage("count", "");
    let (output, dead) =
        interrupt_then_resume(&scratch, &pipeline, &input(N, |i| format!("sleep:1:incr:k{}", i % KEYS)));
    // Each key's outputs are its running count, once each: nothing lost, nothing counted twice.
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in &output {
        let (key, n) = line.split_once('=').unwrap();
        counts.entry(key.to_string()).or_default().push(n.parse().unwrap());
    }
    let per_key = |k: usize| (1..=N).filter(|i| i % 10 != 0 && i % KEYS == k).count() as u64;
    for (k, key) in (0..KEYS).map(|k| (k, format!("k{k}"))) {
        assert_eq!(counts[&key], (1..=per_key(k)).collect::<Vec<_>>(), "{key}");
    }
    assert_eq!(dead_lines(&dead), (1..=N as u64).filter(|i| i % 10 == 0).collect::<Vec<_>>());
}

#[test]
fn a_resumed_run_that_fails_leaves_the_first_runs_files_byte_identical() {
    // Plain temporary outputs, and `.partial` ones with durable state.
    for state in ["[state]\nbackend = \"memory\"\n", "[state]\npath = \"state.redb\"\n"] {
        let scratch = Scratch::new();
        let dir = scratch.dir.path();
        let pipeline = LINES.to_string()
            + state
            + &test_stage("t", "limits = { max_consecutive_failures = 2 }")
            + &test_stage("count", "");
        scratch.write("pipeline.toml", pipeline);
        scratch.write("first", "incr:a\ninvalid:x\nincr:a\n");
        let files = ["-o", "out", "--dead-letter", "dead.jsonl"];
        let first = sluice(dir, &[&["run", "pipeline.toml", "-i", "first"][..], &files].concat());
        assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
        let (out, dead) =
            (std::fs::read(scratch.path("out")).unwrap(), std::fs::read(scratch.path("dead.jsonl")).unwrap());
        assert_eq!(out, b"a=1\na=2\n");

        // Two failures in a row open the circuit breaker: the run fails after writing some lines.
        scratch.write("second", "incr:a\ninvalid:x\nincr:a\nincr:a\ninvalid:y\ninvalid:z\n");
        let args = [&["run", "pipeline.toml", "-i", "second", "--skip-lines", "3", "--append"][..], &files].concat();
        let second = sluice(dir, &args);
        let log = String::from_utf8_lossy(&second.stderr);
        assert!(!second.status.success(), "{log}");
        assert!(log.contains("limits.max_consecutive_failures"), "{log}");
        assert_eq!(std::fs::read(scratch.path("out")).unwrap(), out, "{state}");
        assert_eq!(std::fs::read(scratch.path("dead.jsonl")).unwrap(), dead, "{state}");
        assert!(partial_files(dir).is_empty(), "{state}: {:?}", partial_files(dir));
    }
}

#[test]
fn a_report_json_path_that_cannot_be_written_fails_the_run_before_it_writes_anything() {
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    scratch.write("pipeline.toml", LINES.to_string() + "[state]\nbackend = \"memory\"\n" + &test_stage("t", ""));
    scratch.write("input", "a\ninvalid:x\n");
    let files = ["run", "pipeline.toml", "-i", "input", "-o", "out", "--dead-letter", "dead.jsonl"];
    let run = sluice(dir, &[&files[..], &["--report-json", "no-such-dir/report.json"]].concat());
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{log}");
    assert!(
        log.contains("error: --report-json no-such-dir/report.json: directory no-such-dir does not exist"),
        "{log}"
    );
    assert!(!scratch.path("out").exists() && !scratch.path("dead.jsonl").exists(), "{log}");

    // Where it can be written, it holds the run's report.
    let run = sluice(dir, &[&files[..], &["--report-json", "report.json"]].concat());
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch.path("report.json")).unwrap()).unwrap();
    assert_eq!((report["written"].as_u64(), report["dead_lettered"].as_u64()), (Some(1), Some(1)), "{report}");
}

#[test]
fn a_state_file_in_a_missing_directory_is_refused_before_the_run_leaving_nothing() {
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    let pipeline = LINES.to_string() + "[state]\npath = \"no-such-dir/state.redb\"\n" + &test_stage("count", "");
    scratch.write("pipeline.toml", pipeline);
    scratch.write("input", "incr:a\n");
    let run = sluice(dir, &["run", "pipeline.toml", "-i", "input", "-o", "out", "--dead-letter", "dead.jsonl"]);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{log}");
    // Paths are relative to the pipeline file, here given relative to the current directory.
    assert!(
        log.contains(
            "error: pipeline.toml: [state] path: cannot create the state file no-such-dir/state.redb: \
             directory no-such-dir does not exist. Create the directory, or set `path` under [state] to a \
             file in a writable one"
        ),
        "{log}"
    );
    assert!(partial_files(dir).is_empty(), "{:?}", partial_files(dir));
    assert!(!scratch.path("out").exists());
}

/// A pipeline that writes `out.txt` and `dead.jsonl` in `dir`, upper-casing nothing.
fn echo_pipeline(scratch: &Scratch) -> PathBuf {
    scratch.write("in.txt", "a\nb\n");
    let pipeline = "version = 1\n[source]\npath = \"in.txt\"\nformat = \"lines\"\n\
                    [sink]\npath = \"out.txt\"\nformat = \"lines\"\n[dead_letter]\npath = \"dead.jsonl\"\n"
        .to_string()
        + &test_stage("t", "");
    scratch.write("pipeline.toml", &pipeline)
}

#[test]
fn an_output_that_is_a_symlink_or_a_device_is_written_through_not_replaced() {
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    echo_pipeline(&scratch);
    std::fs::write(dir.join("real.txt"), "old\n").unwrap();
    std::os::unix::fs::symlink("real.txt", dir.join("link.txt")).unwrap();
    let run = sluice(dir, &["run", "pipeline.toml", "-o", "link.txt", "--dead-letter", "/dev/null"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(std::fs::symlink_metadata(dir.join("link.txt")).unwrap().file_type().is_symlink(), "the link stays");
    assert_eq!(read_lines(&dir.join("real.txt")), ["a", "b"], "what it points to is written");
    let null = std::fs::metadata("/dev/null").unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&null.file_type()), "/dev/null is still a device");
    assert!(partial_files(dir).is_empty(), "{:?}", partial_files(dir));
}

#[test]
fn temporary_files_of_killed_runs_are_removed_and_a_live_runs_kept() {
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    echo_pipeline(&scratch);
    // As a run killed with -9 leaves them (a minute ago); one a live run
    // still writes (locked); and the resumable file of another output,
    // `out.txt.errors1`, which is not a temporary file at all.
    let old = |name: &str| {
        let file = std::fs::File::create(dir.join(name)).unwrap();
        file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60)).unwrap();
        file
    };
    old(".out.txt.~Ab12Cd.partial");
    old(".out.txt.errors1.partial");
    let live = old(".out.txt.~Zz98Yx.partial");
    live.lock().unwrap();
    let run = sluice(dir, &["run", "pipeline.toml"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(read_lines(&dir.join("out.txt")), ["a", "b"]);
    let mut left = partial_files(dir);
    left.sort();
    assert_eq!(left, [".out.txt.errors1.partial", ".out.txt.~Zz98Yx.partial"]);
}

#[test]
fn a_plain_rerun_after_an_interrupt_is_refused_rather_than_counting_lines_twice_into_the_state() {
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    let pipeline =
        LINES.to_string() + "[state]\npath = \"state.redb\"\n" + &test_stage("slow", "") + &test_stage("count", "");
    scratch.write("pipeline.toml", &pipeline);
    scratch.write("input", &input(3000, |i| format!("sleep:1:incr:k{}", i % 5)));
    let args = ["run", "pipeline.toml", "-i", "input", "-o", "out"];
    let log = run_and_interrupt(dir, &args);
    let state = || sluice(dir, &["state", "pipeline.toml"]).stdout;
    let state_before = state();

    // The same command again, without the hint's --skip-lines/--append.
    let again = sluice(dir, &args);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(78), "{stderr}");
    let line = log.split("--skip-lines ").nth(1).and_then(|s| s.split(' ').next()).unwrap();
    assert!(stderr.contains(&format!("was interrupted after input line {line}")), "{stderr}");
    assert!(stderr.contains(&format!("--skip-lines {line} --append")), "{stderr}");
    assert!(stderr.contains("`sluice state pipeline.toml --clear`"), "{stderr}");
    // The same files spelled another way are the same files.
    let spelled = sluice(dir, &["run", "./pipeline.toml", "-i", "./input", "-o", "out"]);
    assert_eq!(spelled.status.code(), Some(78), "{}", String::from_utf8_lossy(&spelled.stderr));
    // Refused before reading: no counts, as for any run that never started.
    assert!(!stderr.contains(" read, "), "{stderr}");
    assert_eq!(state(), state_before, "the state is untouched");

    // A run over another file, in between, finishes and leaves the mark:
    // the plain rerun is still refused.
    scratch.write("other", "incr:k1\n");
    let between = sluice(dir, &["run", "pipeline.toml", "-i", "other", "-o", "other-out"]);
    assert!(between.status.success(), "{}", String::from_utf8_lossy(&between.stderr));
    let again = sluice(dir, &args);
    assert_eq!(again.status.code(), Some(78), "{}", String::from_utf8_lossy(&again.stderr));
    let listed = String::from_utf8_lossy(&sluice(dir, &["state", "pipeline.toml"]).stderr).to_string();
    assert!(listed.contains(&format!("was interrupted after input line {line}")), "{listed}");

    // Another file under the same name is new input: it runs.
    std::fs::remove_file(dir.join("input")).unwrap();
    scratch.write("input", "incr:k0\n");
    let other = sluice(dir, &args);
    assert!(other.status.success(), "{}", String::from_utf8_lossy(&other.stderr));
}

#[test]
fn an_output_of_dev_stdout_writes_to_the_inherited_stdout_keeping_the_shells_append() {
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    echo_pipeline(&scratch);
    std::fs::write(dir.join("app.log"), "earlier line, longer than what follows\n").unwrap();
    let shell = format!("'{}' run pipeline.toml -o /dev/stdout >> app.log", sluice_binary().display());
    let run = Command::new("sh").args(["-c", &shell]).current_dir(dir).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(read_lines(&dir.join("app.log")), ["earlier line, longer than what follows", "a", "b"]);
}

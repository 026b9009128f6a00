//! Stage behaviour through the host: outputs, errors, traps, config.

use crate::support::{Scratch, guests, header, stage, stage_with};

fn test_stage(config: &str) -> String {
    header("lines") + &stage("t", guests::TEST_STAGE, config)
}

#[tokio::test(flavor = "multi_thread")]
async fn split_drop_invalid_and_transient_each_go_where_they_belong() {
    let scratch = Scratch::new();
    let pipeline = test_stage(r#"prefix = "> ""#) + "retries = { max = 2, backoff = \"1ms\" }\n";
    let run = scratch.run(&pipeline, "split:3\ninvalid:bad thing\ntransient:db down\ndrop\nx\n").await;
    let report = run.report.unwrap();
    assert_eq!(run.output, ["0", "1", "2", "> x"]);
    let reasons: Vec<_> =
        run.dead.iter().map(|d| (d["error"].as_str().unwrap(), d["reason"].as_str().unwrap())).collect();
    assert_eq!(reasons, [("invalid", "bad thing"), ("transient", "db down (after 2 retries)")]);
    assert_eq!(run.dead[0]["message"]["value_text"], "invalid:bad thing", "the original message is kept");
    assert_eq!(run.dead[1]["input"]["line"], 3);
    let t = &report.stages[0];
    assert_eq!((t.input, t.output, t.dropped, t.dead_lettered, t.trapped, t.retried), (5, 4, 1, 2, 0, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_dead_letters_that_message_only_and_the_run_goes_on() {
    let scratch = Scratch::new();
    // One message per call, so that `count` counts this input's messages.
    let pipeline = header("lines") + &crate::support::stage_with("t", guests::TEST_STAGE, "", "batch = 1");
    let run = scratch.run(&pipeline, "a\ncount\npanic:boom at 42\nb\ncount\n").await;
    let report = run.report.unwrap();
    // `count` says how many messages the instance has seen: after the trap a
    // fresh instance took over, so the second count restarts.
    assert_eq!(run.output, ["a", "2", "b", "2"]);
    assert_eq!(run.dead.len(), 1, "{:#?}", run.dead);
    let trap = &run.dead[0];
    assert_eq!(trap["stage"], "t");
    assert_eq!(trap["error"], "trap");
    assert_eq!(trap["input"]["line"], 3);
    let reason = trap["reason"].as_str().unwrap();
    assert!(reason.starts_with("wasm trap: wasm `unreachable` instruction executed"), "{reason}");
    assert!(reason.contains("boom at 42"), "the guest's panic message is in the reason: {reason}");
    assert_eq!(report.stages[0].trapped, 1);
    assert_eq!((report.read, report.written, report.dead_lettered), (5, 4, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_message_is_accounted_for_across_stages() {
    let scratch = Scratch::new();
    let commands = ["x", "split:2", "drop", "invalid:no", "panic:p", "transient:t"];
    let input: String = (0..600).map(|i| format!("{}\n", commands[i % commands.len()])).collect();
    let no_retries = "retries = { max = 0 }";
    let pipeline = header("lines")
        + &stage_with("first", guests::TEST_STAGE, "", no_retries)
        + &stage_with("second", guests::TEST_STAGE, r#"prefix = "+""#, no_retries);
    let run = scratch.run(&pipeline, &input).await;
    let report = run.report.unwrap();
    assert_eq!(report.read, 600);
    for s in &report.stages {
        // Every input either succeeded (with zero or more outputs) or was dead-lettered.
        assert!(s.input >= s.dropped + s.dead_lettered, "{s:?}");
    }
    let (first, second) = (&report.stages[0], &report.stages[1]);
    assert_eq!(
        (first.input, first.output, first.dropped, first.dead_lettered, first.trapped),
        (600, 300, 100, 300, 100)
    );
    assert_eq!(second.input, first.output);
    assert_eq!(run.output.len() as u64, report.written);
    assert_eq!(run.dead.len() as u64, report.dead_lettered);
    assert_eq!(report.written, 300);
    assert_eq!(report.dead_lettered, 300);
    assert_eq!(run.output.iter().filter(|o| *o == "+x").count(), 100);
    assert_eq!(run.output.iter().filter(|o| *o == "+0").count(), 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_that_refuses_its_config_stops_the_build() {
    let scratch = Scratch::new();
    let err = scratch.build(&test_stage("fail_init = true")).await.err().unwrap();
    assert_eq!(err, "<dir>/pipeline.toml:13:10: stage `t`: the stage refused its config: fail_init was set");
    let err = scratch.build(&test_stage(r#"prefx = "x""#)).await.err().unwrap();
    assert_eq!(
        err,
        "<dir>/pipeline.toml:13:10: stage `t`: the stage refused its config: invalid config: \
         unknown field `prefx`, expected one of `prefix`, `fail_init`, `init_sleep_ms` at line 1 column 8"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_writes_no_output_files() {
    let scratch = Scratch::new();
    let pipeline = scratch.build(&test_stage("")).await.unwrap();
    // The input disappears between build and run.
    let err = pipeline.run().await.err().unwrap();
    assert!(scratch.anonymise(&err.to_string()).starts_with("cannot read input <dir>/input: "), "{err}");
    let left: Vec<_> = std::fs::read_dir(scratch.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["pipeline.toml"], "no output, dead-letter or partial file is left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_can_be_built_in_code_without_a_file() {
    let scratch = Scratch::new();
    scratch.write("in.txt", "a\nb\n");
    let mut config = sluice::PipelineConfig::new();
    config
        .push_stage(sluice::StageConfig::new("t", guests::TEST_STAGE).set_config(serde_json::json!({ "prefix": "1:" })))
        .push_stage(
            sluice::StageConfig::new("u", guests::TEST_STAGE).set_config(serde_json::json!({ "prefix": "2:" })),
        );
    config.set_input(scratch.path("in.txt")).set_output(scratch.path("out.txt")).set_dead_letter(scratch.path("dead"));
    config.source_mut().format = sluice::Format::Lines;
    config.sink_mut().format = sluice::Format::Lines;
    let report = sluice::Pipeline::build(config).await.unwrap().run().await.unwrap();
    assert_eq!(crate::support::read_lines(&scratch.path("out.txt")), ["2:1:a", "2:1:b"]);
    assert_eq!((report.read, report.written), (2, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_native_rust_stage_runs_beside_wasm_stages_with_the_same_guarantees() {
    let scratch = Scratch::new();
    let input: String = (0..300).map(|i| format!("m{i}\n")).collect();
    scratch.write("in.txt", input.replace("m100\n", "crash\n").replace("m200\n", "bad\n"));
    let mut upper = sluice::StageConfig::native("upper", |m: &sluice::Message| match &m.value[..] {
        b"crash" => panic!("native boom"),
        b"bad" => Err(sluice::StageError::Invalid("bad input".into())),
        value => Ok(vec![sluice::Message { value: value.to_ascii_uppercase(), ..m.clone() }]),
    });
    upper.set_concurrency(4);
    let mut config = sluice::PipelineConfig::new();
    config.push_stage(sluice::StageConfig::new("t", guests::TEST_STAGE)).push_stage(upper).push_stage(
        sluice::StageConfig::new("u", guests::TEST_STAGE).set_config(serde_json::json!({ "prefix": "> " })),
    );
    config.set_input(scratch.path("in.txt")).set_output(scratch.path("out.txt")).set_dead_letter(scratch.path("dead"));
    config.source_mut().format = sluice::Format::Lines;
    config.sink_mut().format = sluice::Format::Lines;
    let report = sluice::Pipeline::build(config).await.unwrap().run().await.unwrap();
    let expected: Vec<String> = (0..300).filter(|i| *i != 100 && *i != 200).map(|i| format!("> M{i}")).collect();
    assert_eq!(crate::support::read_lines(&scratch.path("out.txt")), expected, "in order, at concurrency 4");
    let dead = crate::support::read_json_lines(&scratch.path("dead"));
    let reasons: Vec<_> = dead.iter().map(|d| (d["stage"].as_str().unwrap(), d["reason"].as_str().unwrap())).collect();
    assert_eq!(reasons, [("upper", "the native stage panicked: native boom"), ("upper", "bad input")]);
    assert_eq!((report.read, report.written, report.dead_lettered), (300, 298, 2));
}

/// Collects what `tracing` writes, for one test.
#[derive(Clone, Default)]
pub(crate) struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// Captures this thread's `tracing` output until the guard drops.
    pub(crate) fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        // With exactly one dispatcher registered, tracing asks only the
        // registering thread's default whether a call site is enabled: a call
        // site first hit on another test's thread (no subscriber there) would
        // then be cached as disabled for this one too. A second, idle
        // dispatcher kept for the whole run makes it ask every dispatcher.
        static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
        tracing::subscriber::set_default(subscriber)
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Current-thread runtime: every task runs on this thread, under this thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn guest_logs_and_stdio_reach_the_host_log_tagged_with_the_stage() {
    let captured = Captured::default();
    let _guard = captured.install();

    let scratch = Scratch::new();
    let run = scratch.run(&test_stage(""), "log:hello from the guest\nprint:to stdio\n").await;
    run.report.unwrap();
    let log = captured.text();
    let line = |needle: &str| {
        log.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no `{needle}` in:\n{log}")).to_string()
    };
    let logged = line("hello from the guest");
    assert!(logged.contains("INFO") && logged.contains("stage=\"t\""), "{logged}");
    assert!(line("stream=\"stdout\"").contains("to stdio"), "{log}");
    assert!(line("stream=\"stderr\"").contains("to stdio"), "{log}");
    assert_eq!(run.output, ["log:hello from the guest", "print:to stdio"], "guest stdio never mixes with the sink");
}

#[tokio::test(flavor = "current_thread")]
async fn a_panic_message_is_logged_once_and_kept_in_the_dead_letter() {
    let captured = Captured::default();
    let _guard = captured.install();

    let scratch = Scratch::new();
    let run = scratch.run(&test_stage(""), "panic:boom at 42\n").await;
    run.report.unwrap();
    let log = captured.text();
    // Once as the guest's stderr line, and the trap's own line without it.
    assert_eq!(log.lines().filter(|l| l.contains("boom at 42")).count(), 1, "{log}");
    assert!(log.lines().any(|l| l.contains("stream=\"stderr\"") && l.contains("boom at 42")), "{log}");
    assert!(log.lines().any(|l| l.contains("position=1") && l.contains("wasm trap")), "{log}");
    let reason = run.dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("wasm trap") && reason.contains("boom at 42"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_private_and_a_replaced_file_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |scratch: &Scratch, name: &str| std::fs::metadata(scratch.path(name)).unwrap().permissions().mode() & 0o777;
    let input = "x\ninvalid:no\n";
    // New files: dead letters hold the input unredacted, so no one else may read them.
    let scratch = Scratch::new();
    scratch.run(&test_stage(""), input).await.report.unwrap();
    assert_eq!(mode(&scratch, "dead.jsonl") & 0o077, 0);
    assert_eq!(mode(&scratch, "out") & 0o600, 0o600);
    // A file that is replaced keeps the mode its owner gave it.
    let scratch = Scratch::new();
    for (name, mode) in [("out", 0o640), ("dead.jsonl", 0o644)] {
        let path = scratch.write(name, "old\n");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    scratch.run(&test_stage(""), input).await.report.unwrap();
    assert_eq!((mode(&scratch, "out"), mode(&scratch, "dead.jsonl")), (0o640, 0o644));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_line_json_output_is_written_on_one_line_as_it_was() {
    let scratch = Scratch::new();
    let pipeline = header("lines")
        .replacen("format = \"lines\"", "format = \"lines\"", 1)
        .replace("[sink]\npath = \"out\"\nformat = \"lines\"", "[sink]\npath = \"out\"\nformat = \"jsonl\"")
        + &stage("t", guests::TEST_STAGE, "");
    let run = scratch.run(&pipeline, "multiline\n").await;
    run.report.unwrap();
    // Key order and the big integer stay exactly as the stage wrote them.
    assert_eq!(run.output, [r#"{   "b": 1,    "a": 12345678901234567890123 }"#]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jsonl_sink_dead_letters_an_output_that_is_not_json() {
    let scratch = Scratch::new();
    let pipeline = header("lines")
        .replace("[sink]\npath = \"out\"\nformat = \"lines\"", "[sink]\npath = \"out\"\nformat = \"jsonl\"")
        + &stage("t", guests::TEST_STAGE, "");
    // The stage echoes: one JSON line, one that is not JSON, one JSON
    // document over several lines.
    let run = scratch.run(&pipeline, "{\"a\": 1}\nnot json\nmultiline\n").await;
    let report = run.report.unwrap();
    assert_eq!(run.output.len(), 2, "{:?}", run.output);
    assert_eq!(run.output[0], r#"{"a": 1}"#);
    assert_eq!(run.dead.len(), 1, "{:#?}", run.dead);
    assert_eq!((&run.dead[0]["stage"], &run.dead[0]["error"]), (&"sink".into(), &"output".into()));
    let reason = run.dead[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("the sink writes JSON lines, but this output is not JSON"), "{reason}");
    assert_eq!(run.dead[0]["message"]["value_text"], "not json");
    assert_eq!((report.written, report.dead_lettered), (2, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lines_sink_dead_letters_an_output_holding_a_line_break() {
    let scratch = Scratch::new();
    let run = scratch.run(&test_stage(""), "a\nmultiline\nb\n").await;
    let report = run.report.unwrap();
    // Written, it would have been several messages to whoever reads the file.
    assert_eq!(run.output, ["a", "b"]);
    assert_eq!(run.dead.len(), 1, "{:#?}", run.dead);
    assert_eq!((&run.dead[0]["stage"], &run.dead[0]["error"]), (&"sink".into(), &"output".into()));
    let reason = run.dead[0]["reason"].as_str().unwrap();
    assert_eq!(reason, "the sink writes lines, one message per line, but this output holds a line break");
    assert_eq!((report.written, report.dead_lettered), (2, 1));
}

/// libc (C, Zig) buffers a stream that is not a terminal by block: a stage's
/// `printf` lines would reach the log late, or be lost with the instance.
#[tokio::test]
async fn a_stage_sees_its_stdout_and_stderr_as_terminals_so_libc_writes_each_line_when_printed() {
    let scratch = Scratch::new();
    let run = scratch.run(&test_stage(""), "tty\n").await;
    run.report.unwrap();
    assert_eq!(run.output, ["stdout:true stderr:true"]);
}

/// `sluice run p.toml 2>&1 | head -1`: the reader of stderr goes away while
/// stages still print and the run still logs. The run finishes all the same.
#[test]
fn a_run_whose_stderr_is_closed_finishes_and_writes_its_output() {
    let scratch = Scratch::new();
    let input: String = (0..300).map(|i| format!("print:line {i}\n")).collect();
    scratch.write("input", &input);
    let file = scratch.write("pipeline.toml", &test_stage(""));
    let mut child = std::process::Command::new(crate::resume::sluice_binary())
        .args(["run", file.to_str().unwrap()])
        .current_dir(scratch.dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // the reader is gone before anything is written
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let out = std::fs::read_to_string(scratch.dir.path().join("out")).unwrap();
    assert_eq!(out.lines().count(), 300);
}

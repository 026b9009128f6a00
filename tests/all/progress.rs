//! `sluice run` shows how far it has got: a bar with percent and ETA on a
//! terminal, plain log lines elsewhere. The real `sluice` binary.

use crate::resume::sluice_binary;
use crate::support::{Scratch, guests, header, stage_with};
use std::process::Command;

/// A run that lasts a few seconds whatever the machine (each `sleep:300`
/// waits 300 ms in the stage), with a log line from the stage in the middle.
fn slow_run() -> Scratch {
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", header("lines") + &stage_with("t", guests::TEST_STAGE, "", ""));
    let mut input = "sleep:300\n".repeat(4) + "log:hello from the stage\n" + &"sleep:300\n".repeat(4);
    input += &(0..500).map(|i| format!("line {i}\n")).collect::<String>();
    scratch.write("input", input);
    scratch
}

#[test]
fn off_a_terminal_progress_is_plain_log_lines_with_the_share_of_the_input_read() {
    let scratch = slow_run();
    let out = Command::new(sluice_binary())
        .args(["run", "pipeline.toml", "--progress", "1"])
        .current_dir(scratch.dir.path())
        .env("SLUICE_LOG", "info")
        .env_remove("SLUICE_LOG_FORMAT")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains('\x1b') && !stderr.contains('\r'), "no bar, no escape codes in a pipe: {stderr:?}");
    let line = stderr.lines().find(|l| l.contains("INFO progress: ")).unwrap_or_else(|| panic!("{stderr}"));
    let percent: u32 = line.split("dead-lettered; ").nth(1).and_then(|rest| rest.split('%').next()).map_or_else(
        || panic!("the counts, then a percent: {line}"),
        |p| p.parse().unwrap_or_else(|e| panic!("{e}: {line}")),
    );
    assert!(percent <= 100, "{line}");
    assert!(line.contains("of the input") && line.contains("msg/s (t "), "the rate, and the stage's: {line}");
}

#[test]
fn on_a_terminal_progress_is_a_bar_with_percent_and_log_lines_are_not_drawn_over() {
    let scratch = slow_run();
    // `script` runs the command with a terminal (a pty) as its stderr.
    let command = format!("{} run pipeline.toml", sluice_binary().display());
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .current_dir(scratch.dir.path())
        .env("SLUICE_LOG", "info")
        .env_remove("SLUICE_LOG_FORMAT")
        .output()
        .expect("`script` (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // The bar redraws in place: each drawing after a carriage return.
    let bars: Vec<&str> = text.split(['\r', '\n']).filter(|l| l.contains("% ") && l.contains("ETA")).collect();
    assert!(!bars.is_empty(), "a bar with percent and ETA: {text:?}");
    assert!(bars.iter().any(|b| b.contains("msg/s (t ")), "the rate, and the stage's: {bars:?}");
    let logged = text.split(['\r', '\n']).find(|l| l.contains("hello from the stage")).expect("the stage's log line");
    assert!(!logged.contains("ETA"), "the bar is cleared before a log line: {logged:?}");
    assert!(text.contains("read, ") && text.contains("written"), "the report after the bar: {text:?}");
}

//! `--log-format json`: what a stage logs reaches a log shipper or `jq` as
//! one JSON object per line, with the stage named. The real `sluice` binary.

use crate::resume::sluice_binary;
use crate::support::{Scratch, guests, header, stage_with};
use serde_json::Value;
use std::process::Command;

#[test]
fn with_json_logs_every_stderr_line_is_an_object_and_a_stages_log_names_the_stage() {
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", header("lines") + &stage_with("t", guests::TEST_STAGE, "", ""));
    scratch.write("input", "log:hello from the stage\nb\n");
    let out = Command::new(sluice_binary())
        .args(["--log-format", "json", "run", "pipeline.toml", "--progress", "0"])
        .current_dir(scratch.dir.path())
        .env("SLUICE_LOG", "info")
        .env_remove("SLUICE_LOG_FORMAT")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    let events: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for event in &events {
        let timestamp = event["timestamp"].as_str().unwrap_or_default();
        // RFC 3339 in UTC: 2025-01-31T09:14:03.123456Z
        assert!(timestamp.len() == 27 && timestamp.ends_with('Z') && &timestamp[10..11] == "T", "{event}");
        assert!(event["level"].is_string() && event["message"].is_string(), "{event}");
    }
    let logged = events.iter().find(|e| e["message"] == "hello from the stage").expect("the stage's log line");
    assert_eq!((logged["level"].as_str(), logged["stage"].as_str()), (Some("INFO"), Some("t")), "{logged}");
    assert_eq!(logged["target"], "sluice::stage", "{logged}");
    // The report's summary is an event too, its counts as fields.
    let summary = events.iter().find(|e| e.get("written").is_some()).expect("the report's summary");
    assert_eq!((summary["read"].as_u64(), summary["written"].as_u64()), (Some(2), Some(2)), "{summary}");
}

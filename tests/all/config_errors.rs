//! Pipeline-file mistakes: each gives file, line, column and what to do.

use crate::support::{Scratch, guests, stage};

#[tokio::test]
async fn unknown_keys_name_the_allowed_ones() {
    let scratch = Scratch::new();
    let err = scratch.build("version = 1\ncolour = \"blue\"\n").await.err().unwrap();
    assert_eq!(
        err,
        "<dir>/pipeline.toml:2:1: unknown field `colour`, expected one of `version`, `source`, `sink`, `dead_letter`, `limits`, `shutdown_timeout`, `engine`, `state`, `stages`"
    );
    let err = scratch
        .build(&format!("version = 1\n[[stages]]\nname = \"a\"\nplugin = {:?}\nsettings = {{}}\n", guests::TEST_STAGE))
        .await
        .err()
        .unwrap();
    assert_eq!(
        err,
        "<dir>/pipeline.toml:5:1: unknown field `settings`, expected one of `name`, `plugin`, `config`, `limits`, \
         `grants`, `concurrency`, `order`, `partition_by`, `buffer`, `retries`, `batch`, `isolate`, `recycle_after`, `batch_window`, `emit`"
    );
}

#[tokio::test]
async fn version_is_required_and_checked() {
    let scratch = Scratch::new();
    let err = scratch.build(&stage("a", guests::TEST_STAGE, "")).await.err().unwrap();
    assert!(err.ends_with("missing field `version`: add `version = 1` at the top of the file"), "{err}");
    let err = scratch.build(&format!("version = 2\n{}", stage("a", guests::TEST_STAGE, ""))).await.err().unwrap();
    assert_eq!(err, "<dir>/pipeline.toml:1:11: unsupported version 2: this sluice reads version 1");
}

#[tokio::test]
async fn every_problem_is_reported_at_once() {
    let scratch = Scratch::new();
    let pipeline = format!(
        "version = 1\n{}{}{}",
        stage("a", "missing.wasm", ""),
        stage("a", guests::TEST_STAGE, ""),
        stage("b c", guests::TEST_STAGE, "")
    );
    let err = scratch.build(&pipeline).await.err().unwrap();
    assert_eq!(
        err,
        "<dir>/pipeline.toml:4:10: stage `a`: plugin file <dir>/missing.wasm not found\n\
         <dir>/pipeline.toml:7:8: stage name `a` is used twice (stages 1 and 2)\n\
         <dir>/pipeline.toml:11:8: stage name `b c` must be non-empty ASCII letters, digits, `-` or `_`"
    );
}

#[tokio::test]
async fn a_pipeline_needs_stages() {
    let scratch = Scratch::new();
    let err = scratch.build("version = 1\n").await.err().unwrap();
    assert_eq!(err, "<dir>/pipeline.toml: no stages: add at least one [[stages]] table with a `name` and a `plugin`");
}

#[tokio::test]
async fn two_outputs_on_one_path_are_refused() {
    let scratch = Scratch::new();
    let pipeline = format!(
        "version = 1\n[sink]\npath = \"same.jsonl\"\n[dead_letter]\npath = \"same.jsonl\"\n{}",
        stage("a", guests::TEST_STAGE, "")
    );
    let err = scratch.build(&pipeline).await.err().unwrap();
    assert_eq!(
        err,
        "<dir>/pipeline.toml: the sink and the dead-letter file are both <dir>/same.jsonl: give them different paths"
    );
}

//! Pipeline-file mistakes: each gives file, line, column and what to do.

use crate::support::{Scratch, guests, stage};

#[tokio::test]
async fn unknown_keys_name_the_allowed_ones_or_the_one_meant() {
    let scratch = Scratch::new();
    let err = scratch.build("version = 1\ncolour = \"blue\"\n").await.err().unwrap();
    assert_eq!(
        err,
        "<dir>/pipeline.toml:2:1: unknown key `colour` at the top of the file: the keys allowed there are `version`, \
         `source`, `sink`, `dead_letter`, `limits`, `shutdown_timeout`, `engine`, `state`, `metrics`, `stages`"
    );
    let cases = [
        ("concurency = 4", "5:1: unknown key `concurency` in a [[stages]] table: did you mean `concurrency`?"),
        ("Concurrency = 4", "5:1: unknown key `Concurrency` in a [[stages]] table: did you mean `concurrency`?"),
        (
            "partition-by = \"key\"",
            "5:1: unknown key `partition-by` in a [[stages]] table: did you mean `partition_by`?",
        ),
        ("limits = { memroy = \"64MiB\" }", "5:12: unknown key `memroy` in `limits`: did you mean `memory`?"),
        (
            "retries = { maximum = 3 }",
            "5:13: unknown key `maximum` in `retries`: the keys allowed there are `max`, `backoff`, `max_backoff`",
        ),
    ];
    for (line, want) in cases {
        let err = scratch.build(&one_stage(line)).await.err().unwrap();
        assert_eq!(err, format!("<dir>/pipeline.toml:{want}"), "for {line}");
    }
    let err = scratch.build(&format!("version = 1\n[limits]\ntimout = \"1s\"\n{}", one_stage(""))).await.err().unwrap();
    assert_eq!(err, "<dir>/pipeline.toml:3:1: unknown key `timout` in [limits]: did you mean `timeout`?");
}

/// `version = 1` and one stage running the test guest, with `line` as its
/// fifth line: errors in it are at `5:col`.
fn one_stage(line: &str) -> String {
    format!("version = 1\n[[stages]]\nname = \"a\"\nplugin = {:?}\n{line}\n", guests::TEST_STAGE)
}

#[tokio::test]
async fn a_value_of_the_wrong_kind_is_named_with_an_example() {
    let scratch = Scratch::new();
    let cases = [
        // Numbers.
        (
            "concurrency = \"x\"",
            "5:15: `concurrency` must be a whole number, at least 1, e.g. `concurrency = 4`, not `\"x\"`",
        ),
        (
            "concurrency = -1",
            "5:15: `concurrency` must be a whole number, at least 1, e.g. `concurrency = 4`, not `-1`",
        ),
        (
            "concurrency = 2.5",
            "5:15: `concurrency` must be a whole number, at least 1, e.g. `concurrency = 4`, not `2.5`",
        ),
        (
            "buffer = 1979-05-27",
            "5:10: `buffer` must be a whole number, at least 1, e.g. `buffer = 64`, not `1979-05-27`",
        ),
        ("retries = { max = -1 }", "5:19: `max` must be a whole number, e.g. `max = 3`, not `-1`"),
        (
            "recycle_after = true",
            "5:17: `recycle_after` must be a whole number, at least 1, e.g. `recycle_after = 10000`, not `true`",
        ),
        (
            "limits = { fuel = true }",
            "5:19: `fuel` must be a whole number, or \"unlimited\", e.g. `fuel = 100000000`, not `true`",
        ),
        (
            "limits = { fuel = \"lots\" }",
            "5:19: `fuel` must be a whole number, or \"unlimited\", e.g. `fuel = 100000000`, not `\"lots\"`",
        ),
        // A boolean.
        ("isolate = \"yes\"", "5:11: `isolate` must be `true` or `false`, e.g. `isolate = true`, not `\"yes\"`"),
        // Text, lists and tables.
        (
            "grants = \"all\"",
            "5:10: `grants` must be a table, e.g. `grants = { env = { TZ = \"UTC\" } }`, not `\"all\"`",
        ),
        (
            "grants = { allow_http = [5] }",
            "5:26: `allow_http` must be a list of texts in quotes, e.g. `allow_http = [\"api.example.com:443\"]`, not `5`",
        ),
        (
            "grants = { env = { TZ = 1 } }",
            "5:25: each value in `env` must be text in quotes, e.g. `env = { TZ = \"UTC\" }`, not `1`",
        ),
        // Durations.
        (
            "batch_window = 5",
            "5:16: `batch_window` must be a duration such as \"100ms\", \"2s\" or \"1m 30s\", not `5`",
        ),
        (
            "limits = { timeout = \"soon\" }",
            "5:22: `timeout` must be a duration such as \"100ms\", \"2s\" or \"1m 30s\", or \"none\", not `\"soon\"`",
        ),
        // Byte sizes.
        (
            "limits = { memory = \"32 bogus\" }",
            "5:21: `memory` must be a size such as \"64MiB\" or \"1GB\", or a number of bytes, not `\"32 bogus\"`",
        ),
        (
            "limits = { memory = -1 }",
            "5:21: `memory` must be a size such as \"64MiB\" or \"1GB\", or a number of bytes, not `-1`",
        ),
        // Choices, with the one probably meant.
        (
            "order = \"orderd\"",
            "5:9: `order` must be \"ordered\" or \"unordered\", not `\"orderd\"`: did you mean \"ordered\"?",
        ),
        ("order = \"sorted\"", "5:9: `order` must be \"ordered\" or \"unordered\", not `\"sorted\"`"),
        ("order = 1", "5:9: `order` must be \"ordered\" or \"unordered\", not `1`"),
        (
            "emit = \"on_success\"",
            "5:8: `emit` must be \"immediate\" or \"on-success\", not `\"on_success\"`: did you mean \"on-success\"?",
        ),
    ];
    for (line, want) in cases {
        let err = scratch.build(&one_stage(line)).await.err().unwrap();
        assert_eq!(err, format!("<dir>/pipeline.toml:{want}"), "for {line}");
    }
    let sections = [
        ("[source]\npath = 5\n", "3:8: `path` must be a path in quotes, e.g. `path = \"input.jsonl\"`, not `5`"),
        (
            "[source]\nskip_lines = -1\n",
            "3:14: `skip_lines` must be a whole number, e.g. `skip_lines = 1000`, not `-1`",
        ),
        (
            "[engine]\nmemory_budget = true\n",
            "3:17: `memory_budget` must be a size such as \"64MiB\" or \"1GB\", a number of bytes, or \"unlimited\", not `true`",
        ),
        (
            "[state]\nbackend = \"reddb\"\n",
            "3:11: `backend` must be \"redb\" or \"memory\", not `\"reddb\"`: did you mean \"redb\"?",
        ),
        ("source = 5\n", "2:10: `source` must be a table, e.g. `source = { path = \"input.jsonl\" }`, not `5`"),
    ];
    for (section, want) in sections {
        let err = scratch
            .build(&format!("version = 1\n{section}{}", one_stage("").replace("version = 1\n", "")))
            .await
            .err()
            .unwrap();
        assert_eq!(err, format!("<dir>/pipeline.toml:{want}"), "for {section}");
    }
}

#[tokio::test]
async fn a_missing_key_is_named_with_an_example() {
    let scratch = Scratch::new();
    let err = scratch.build(&stage("a", guests::TEST_STAGE, "")).await.err().unwrap();
    assert_eq!(err, "<dir>/pipeline.toml: missing key `version`: add `version = 1` at the top of the file");
    let err = scratch.build("version = 1\n[[stages]]\nname = \"a\"\n").await.err().unwrap();
    assert_eq!(
        err,
        "<dir>/pipeline.toml:2:1: missing key `plugin` in a [[stages]] table: add it, e.g. `plugin = \"plugins/json-filter.wasm\"`"
    );
}

#[tokio::test]
async fn version_is_checked() {
    let scratch = Scratch::new();
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
        "<dir>/pipeline.toml:4:10: stage `a`: plugin file <dir>/missing.wasm not found: build the stage first \
         (`sluice build` in its project), or fix the path (a relative one is from this file's directory)\n\
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

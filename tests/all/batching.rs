//! Batches, instance reuse and isolation, the allocators, and the compile cache.

use crate::support::{Scratch, guests, header, stage_with};

fn test_stage(extra: &str) -> String {
    header("lines") + &stage_with("t", guests::TEST_STAGE, "", extra)
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_messages_go_to_the_stage_in_batches_of_at_most_batch() {
    let scratch = Scratch::new();
    let run = scratch.run(&test_stage("batch = 4"), &"batch\n".repeat(500)).await;
    run.report.unwrap();
    let sizes: Vec<usize> = run.output.iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(sizes.len(), 500);
    assert!(sizes.iter().all(|&n| (1..=4).contains(&n)), "{sizes:?}");
    assert!(sizes.contains(&4), "a source far ahead of the stage fills batches: {sizes:?}");

    let run = scratch.run(&test_stage("batch = 1"), &"batch\n".repeat(50)).await;
    assert!(run.output.iter().all(|s| s == "1"), "batch = 1 calls `process`: {:?}", run.output);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_in_a_batch_dead_letters_that_message_only() {
    let scratch = Scratch::new();
    let mut input: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    input[77] = "panic:boom".into();
    let run = scratch.run(&test_stage("batch = 64"), &(input.join("\n") + "\n")).await;
    let report = run.report.unwrap();
    let expected: Vec<String> = input.iter().filter(|m| !m.starts_with("panic")).cloned().collect();
    assert_eq!(run.output, expected, "every batch-mate of the trapping message goes through, in order");
    assert_eq!(run.dead.len(), 1, "{:#?}", run.dead);
    assert_eq!(run.dead[0]["input"]["line"], 78);
    assert!(run.dead[0]["reason"].as_str().unwrap().contains("boom"));
    assert_eq!((report.read, report.written, report.dead_lettered), (200, 199, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_over_its_time_budget_names_the_message_that_took_it() {
    let scratch = Scratch::new();
    let run = scratch.run(&test_stage("batch = 4\nlimits = { timeout = \"100ms\" }"), "a\nb\nloop\nc\nd\n").await;
    run.report.unwrap();
    assert_eq!(run.output, ["a", "b", "c", "d"]);
    assert_eq!(run.dead.len(), 1, "{:#?}", run.dead);
    assert_eq!(run.dead[0]["message"]["value_text"], "loop");
    assert_eq!(run.dead[0]["error"], "limit");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_error_in_a_batch_is_retried_alone() {
    let scratch = Scratch::new();
    let pipeline = test_stage("batch = 8\nretries = { max = 2, backoff = \"1ms\" }");
    let run = scratch.run(&pipeline, "a\nflaky:1:x\nb\ntransient:down\nc\n").await;
    let report = run.report.unwrap();
    assert_eq!(run.output, ["a", "x", "b", "c"]);
    assert_eq!(run.dead.len(), 1);
    assert_eq!(run.dead[0]["reason"], "down (after 2 retries)");
    assert_eq!(report.stages[0].retried, 3, "one retry for the flaky message, two for the failing one");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_answered_with_the_wrong_number_of_outcomes_loses_nothing() {
    let scratch = Scratch::new();
    let run = scratch.run(&test_stage("batch = 8"), "a\nb\nshortbatch\nc\n").await;
    run.report.unwrap();
    assert_eq!(run.output, ["a", "b", "shortbatch", "c"], "each message is run again alone");
    assert!(run.dead.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_reused_unless_the_stage_isolates_messages() {
    let scratch = Scratch::new();
    let run = scratch.run(&test_stage("batch = 1"), "count\ncount\ncount\n").await;
    assert_eq!(run.output, ["1", "2", "3"], "one instance sees every message");
    let run = scratch.run(&test_stage("isolate = true"), "count\ncount\ncount\n").await;
    run.report.unwrap();
    assert_eq!(run.output, ["1", "1", "1"], "isolated: every message has a fresh instance");
    let run = scratch.run(&test_stage("isolate = true\nconcurrency = 3"), &"count\n".repeat(30)).await;
    assert!(run.output.iter().all(|c| c == "1"), "{:?}", run.output);
}

#[tokio::test(flavor = "multi_thread")]
async fn isolation_and_batches_do_not_mix() {
    let scratch = Scratch::new();
    let e = scratch.build(&test_stage("isolate = true\nbatch = 8")).await.err().unwrap();
    assert_eq!(e, "<dir>/pipeline.toml:15:9: stage `t`: `isolate = true` runs each message alone; remove `batch`");
}

#[tokio::test(flavor = "multi_thread")]
async fn both_allocators_run_the_pipeline_and_the_pool_holds_every_instance() {
    let scratch = Scratch::new();
    let input = "sleep:5\n".repeat(64);
    for allocator in ["pooling", "on-demand"] {
        // 16 instances at once, and more made after traps: all within the pool.
        let pipeline = test_stage("concurrency = 16") + &format!("[engine]\nallocator = \"{allocator}\"\n");
        let run = scratch.run(&pipeline, &(input.clone() + &"panic:x\nsleep:1\n".repeat(20))).await;
        run.report.unwrap();
        assert_eq!(run.output.len(), 64 + 20, "{allocator}");
        assert_eq!(run.dead.len(), 20, "{allocator}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compile_fills_the_cache_that_runs_load_from() {
    let scratch = Scratch::new();
    let file = scratch.write("pipeline.toml", test_stage(""));
    let config = sluice::PipelineConfig::from_file(&file).unwrap();
    let first = sluice::compile(&config).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].stage, "t");
    let again = sluice::compile(&config).await.unwrap();
    assert!(again[0].from_cache, "the second compile finds the first one's entry");
}

//! Stages written in Python, JavaScript, C and Zig, built from source by
//! their plugins' build.sh, through the real host.

use crate::server::TestServer;
use crate::support::{Outcome, Scratch, guests, header, stage_with};

const INPUT: &str = concat!(
    r#"{"id": 1, "amount": 250}"#,
    "\n",
    r#"{"id": 2, "amount": 5}"#,
    "\n",
    r#"{"id": 3, "amount": "lots"}"#,
    "\n",
    r#"{"id": 4}"#,
    "\n",
);

async fn filter(plugin: &str) -> Outcome {
    let stage = stage_with("f", plugin, r#"field = "amount", gte = 100"#, "");
    Scratch::new().run(&(header("jsonl") + &stage), INPUT).await
}

fn check_filter(run: &Outcome, reason: &str) {
    let report = run.report.as_ref().unwrap();
    assert_eq!(run.output, [r#"{"id": 1, "amount": 250}"#], "kept unchanged; below the bound or missing: dropped");
    assert_eq!(run.dead.len(), 1, "{:#?}", run.dead);
    assert_eq!(run.dead[0]["error"], "invalid");
    assert_eq!(run.dead[0]["reason"], reason);
    assert_eq!(run.dead[0]["input"]["line"], 3);
    let f = &report.stages[0];
    assert_eq!((f.input, f.output, f.dropped, f.dead_lettered, f.trapped), (4, 1, 2, 1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_stage_filters_and_rejects() {
    check_filter(&filter(guests::PY_JSON_FILTER).await, "field `amount` is a string, but `gte` needs a number");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_stage_filters_and_rejects() {
    check_filter(&filter(guests::JS_JSON_FILTER).await, "field `amount` is a string, but `gte` needs a number");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_c_stage_filters_and_rejects() {
    check_filter(&filter(guests::C_JSON_FILTER).await, "field `amount` is not a number");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zig_stage_filters_and_rejects() {
    // Built through the WASI preview 1 adapter: Zig's libc imports it.
    check_filter(&filter(guests::ZIG_JSON_FILTER).await, "field `amount` is not a number");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_language_refuses_a_bad_config_at_build_time() {
    for plugin in [guests::PY_JSON_FILTER, guests::JS_JSON_FILTER, guests::C_JSON_FILTER, guests::ZIG_JSON_FILTER] {
        let scratch = Scratch::new();
        let err = scratch.build(&(header("jsonl") + &stage_with("f", plugin, r#"field = "amount""#, ""))).await.err();
        let err = err.unwrap_or_else(|| panic!("{plugin} accepted a config without a predicate"));
        assert!(err.contains("stage `f`: the stage refused its config: "), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_stage_fetches_from_a_granted_host_only() {
    let server = TestServer::start();
    let config = format!(r#"url = "http://{}/json/{{user.id}}", target = "profile""#, server.addr);
    let input = concat!(r#"{"user": {"id": "u1"}}"#, "\n");

    let granted = stage_with(
        "fetch",
        guests::JS_FETCH_ENRICH,
        &config,
        &format!("grants = {{ allow_http = [\"{}\"] }}", server.addr),
    );
    let run = Scratch::new().run(&(header("jsonl") + &granted), input).await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output.len(), 1, "{:#?}", run.dead);
    let out: serde_json::Value = serde_json::from_str(&run.output[0]).unwrap();
    assert_eq!(out["profile"], serde_json::json!({"id": "u1"}));

    let denied = stage_with("fetch", guests::JS_FETCH_ENRICH, &config, "retries = { max = 0 }");
    let hits = server.hits.load(std::sync::atomic::Ordering::SeqCst);
    let run = Scratch::new().run(&(header("jsonl") + &denied), input).await;
    run.report.as_ref().unwrap();
    assert!(run.output.is_empty());
    assert_eq!(run.dead[0]["error"], "transient", "fetch() cannot tell a denial from a network error");
    assert_eq!(server.hits.load(std::sync::atomic::Ordering::SeqCst), hits, "nothing reached the server");
}

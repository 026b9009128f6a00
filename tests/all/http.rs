//! Outbound HTTP through `wasi:http`: granted per stage, denied otherwise.

use crate::server::TestServer;
use crate::support::{Scratch, guests, header, stage_with};
use std::sync::atomic::Ordering::SeqCst;

#[tokio::test(flavor = "multi_thread")]
async fn http_is_denied_without_a_grant_as_an_error_not_a_trap() {
    let server = TestServer::start();
    let scratch = Scratch::new();
    let pipeline = header("lines") + &stage_with("t", guests::TEST_STAGE, "", "");
    let run = scratch.run(&pipeline, &format!("http:{}\nafter\n", server.url("/json/1"))).await;
    let report = run.report.as_ref().unwrap();
    assert_eq!(run.output, ["after"]);
    assert_eq!(run.dead[0]["error"], "invalid");
    assert_eq!(run.dead[0]["reason"], "request denied: the stage has no grant for this host (grants.allow_http)");
    assert_eq!(report.stages[0].trapped, 0);
    assert_eq!(server.hits.load(SeqCst), 0, "the request never left the host");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_authority_is_reachable_and_others_are_not() {
    let server = TestServer::start();
    let other = TestServer::start();
    let scratch = Scratch::new();
    let grants = format!("grants = {{ allow_http = [\"{}\"] }}", server.addr);
    let pipeline = header("lines") + &stage_with("t", guests::TEST_STAGE, "", &grants);
    let input = format!("http:{}\nhttp:{}\n", server.url("/json/7"), other.url("/json/8"));
    let run = scratch.run(&pipeline, &input).await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, [r#"200 {"id":"7"}"#]);
    assert_eq!(run.dead.len(), 1);
    assert_eq!(other.hits.load(SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_enrich_stores_responses_and_retries_failures() {
    let server = TestServer::start();
    let scratch = Scratch::new();
    let stage = stage_with(
        "enrich",
        guests::HTTP_ENRICH,
        &format!("url = \"http://{}/{{route}}/{{user.id}}\", target = \"profile\"", server.addr),
        &format!(
            "grants = {{ allow_http = [\"{}\"] }}\nconcurrency = 4\nretries = {{ max = 2, backoff = \"1ms\" }}",
            server.addr
        ),
    );
    let input = concat!(
        r#"{"route": "json", "user": {"id": "u1"}}"#,
        "\n",
        r#"{"route": "status", "user": {"id": 503}}"#,
        "\n",
        r#"{"route": "json"}"#,
        "\n",
    );
    let run = scratch.run(&(header("jsonl") + &stage), input).await;
    let report = run.report.as_ref().unwrap();
    assert_eq!(run.output, [r#"{"profile":{"id":"u1"},"route":"json","user":{"id":"u1"}}"#]);
    let reasons: Vec<_> =
        run.dead.iter().map(|d| (d["error"].as_str().unwrap(), d["reason"].as_str().unwrap())).collect();
    let url = server.url("/status/503");
    assert_eq!(
        reasons,
        [
            ("transient", format!("GET {url}: HTTP 503 (after 2 retries)").as_str()),
            ("invalid", "field `user.id` for the url is missing")
        ]
    );
    assert_eq!(report.stages[0].retried, 2);
    assert_eq!(server.hits.load(SeqCst), 4, "one success, and the 503 three times");
}

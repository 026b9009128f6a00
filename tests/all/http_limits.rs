//! What a stage holds of outbound HTTP is bounded, and instances that leak
//! handles are replaced before they fail a message.

use crate::server::TestServer;
use crate::support::{Scratch, guests, header, stage_with};
use std::sync::atomic::Ordering::SeqCst;

/// jco's `fetch()` leaks resource handles (about 7 a request), so without
/// recycling an instance fills its resource table (10,000) and traps after
/// about 1,429 requests. `batch = 1`: a trap in a batch would rerun its
/// messages alone in a fresh instance and hide the failure.
#[tokio::test(flavor = "multi_thread")]
async fn a_javascript_fetch_stage_runs_thousands_of_requests_without_losing_one() {
    const N: usize = 4000;
    let server = TestServer::start();
    let config = format!(r#"url = "http://{}/json/{{user.id}}", target = "profile""#, server.addr);
    let stage = stage_with(
        "fetch",
        guests::JS_FETCH_ENRICH,
        &config,
        &format!("grants = {{ allow_http = [\"{}\"] }}\nbatch = 1\nretries = {{ max = 0 }}", server.addr),
    );
    let input: String = (0..N).map(|i| format!("{{\"user\": {{\"id\": \"u{i}\"}}}}\n")).collect();
    let run = Scratch::new().run(&(header("jsonl") + &stage), &input).await;
    let report = run.report.as_ref().unwrap();
    assert_eq!(run.dead, Vec::<serde_json::Value>::new(), "no message is lost to a full resource table");
    assert_eq!(report.stages[0].trapped, 0);
    assert_eq!(run.output.len(), N);
    for (i, line) in run.output.iter().enumerate() {
        let out: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(out["profile"], serde_json::json!({ "id": format!("u{i}") }), "output {i}");
    }
    assert_eq!(server.hits.load(SeqCst), N, "each message fetched once");
}

#[tokio::test(flavor = "multi_thread")]
async fn recycle_after_gives_a_fresh_instance_every_n_messages() {
    let pipeline = header("lines") + &stage_with("t", guests::TEST_STAGE, "", "batch = 1\nrecycle_after = 3");
    let run = Scratch::new().run(&pipeline, &"count\n".repeat(7)).await;
    run.report.as_ref().unwrap();
    assert_eq!(run.output, ["1", "2", "3", "1", "2", "3", "1"], "each instance counts the messages it saw");
}

#[tokio::test(flavor = "multi_thread")]
async fn recycle_after_zero_is_refused() {
    let pipeline = header("lines") + &stage_with("t", guests::TEST_STAGE, "", "recycle_after = 0");
    let err = Scratch::new().build(&pipeline).await.err().unwrap();
    assert_eq!(err, "<dir>/pipeline.toml:14:17: stage `t`: recycle_after must be at least 1 (or left out)");
}

/// A stage that sends requests and never reads the responses holds its cap,
/// and no more; its excess fails with an error value naming the limit, and
/// the next stage's granted requests still go through.
#[tokio::test(flavor = "multi_thread")]
async fn a_stage_holding_idle_requests_gets_its_cap_and_does_not_starve_another() {
    let server = TestServer::start();
    let grants = format!("grants = {{ allow_http = [\"{}\"] }}", server.addr);
    let pipeline = header("lines")
        + &stage_with("hog", guests::HTTP_HOG, "", &grants)
        + &stage_with("t", guests::TEST_STAGE, "", &grants);
    let input = format!("http:{}\nhttp:{}\n", server.url("/json/1"), server.url("/json/2"));
    let run = Scratch::new().run(&pipeline, &input).await;
    let report = run.report.as_ref().unwrap();
    let refused = "held 16; refused: 16 outbound HTTP requests are already in flight in this instance, the most \
                   allowed (limits.max_http_requests_per_instance); read or drop a response first";
    assert_eq!(run.output, [r#"200 {"id":"1"}"#, refused, r#"200 {"id":"2"}"#, refused]);
    assert_eq!(run.dead, Vec::<serde_json::Value>::new());
    assert_eq!(report.stages[0].trapped, 0, "refused with an error value, not a trap");
    assert_eq!(server.hits.load(SeqCst), 16 + 2, "the hog's 16, then the next stage's 2; the refused never left");
}

/// `max_http_requests` is per stage: messages in flight in several
/// instances wait for a free place instead of failing.
#[tokio::test(flavor = "multi_thread")]
async fn a_stage_waits_for_its_own_requests_in_flight_over_max_http_requests() {
    const N: usize = 40;
    let server = TestServer::start();
    let extra = format!(
        "grants = {{ allow_http = [\"{}\"] }}\nconcurrency = 8\nlimits = {{ max_http_requests = 2 }}",
        server.addr
    );
    let pipeline = header("lines") + &stage_with("t", guests::TEST_STAGE, "", &extra);
    let input: String = (0..N).map(|i| format!("http:{}\n", server.url(&format!("/delay/5/json/{i}")))).collect();
    let run = Scratch::new().run(&pipeline, &input).await;
    run.report.as_ref().unwrap();
    let expected: Vec<String> = (0..N).map(|i| format!(r#"200 {{"id":"{i}"}}"#)).collect();
    assert_eq!(run.output, expected);
    assert_eq!(run.dead, Vec::<serde_json::Value>::new());
    assert!(server.max_concurrent.load(SeqCst) <= 2, "{} at once", server.max_concurrent.load(SeqCst));
}

/// wasi:http is linked for every stage, granted or not: a stage that hoards
/// header fields or requests (never sent) across messages would make the
/// host hold gigabytes outside `limits.memory`. The message that passes the
/// cap on what an instance may hold, or sets an oversized authority, is a
/// `limit` dead letter; a fresh instance takes the next message.
#[tokio::test(flavor = "multi_thread")]
async fn a_stage_hoarding_http_fields_or_requests_is_stopped_at_a_fixed_cap() {
    // `batch = 1`: a breach in a batch would rerun its messages alone, in a
    // fresh instance holding nothing.
    let pipeline = header("lines") + &stage_with("hog", guests::HTTP_HOG, "", "batch = 1");
    // 300 sets of 30 KB of fields hold about 9 MiB: twice is over 16 MiB.
    // 1,500 authorities of 8,000 bytes hold 12 MB: twice is over.
    let input = "hoard-fields:300\nhoard-fields:300\nhoard-authority:1:8193\nhoard-authority:1500:8000\n\
                 hoard-authority:1500:8000\nhoard-fields:1\nplain\n";
    let run = Scratch::new().run(&pipeline, input).await;
    run.report.as_ref().unwrap();
    assert_eq!(
        run.output,
        [
            "hoard-fields:300",
            "holding 300 fields, 0 requests",
            "hoard-authority:1500:8000",
            "holding 0 fields, 1500 requests",
            "hoard-fields:1",
            "holding 1 fields, 0 requests",
            "plain"
        ]
    );
    let dead: Vec<(&str, &str, &str)> = run
        .dead
        .iter()
        .map(|d| {
            (d["message"]["value_text"].as_str().unwrap(), d["error"].as_str().unwrap(), d["reason"].as_str().unwrap())
        })
        .collect();
    assert_eq!(dead.len(), 3, "{dead:?}");
    let held = "in wasi:http fields, unsent requests and responses, over the 16777216 bytes (16.0 MiB) an instance \
                may hold (a fixed cap); drop the ones it no longer needs";
    assert_eq!((dead[0].0, dead[0].1), ("hoard-fields:300", "limit"));
    assert!(dead[0].2.starts_with("held ") && dead[0].2.ends_with(held), "{}", dead[0].2);
    assert_eq!(
        dead[1],
        (
            "hoard-authority:1:8193",
            "limit",
            "set an outgoing HTTP request's authority of 8193 bytes, over the 8192 bytes allowed for a request's \
             method, scheme, authority or path (a fixed cap)"
        )
    );
    assert_eq!((dead[2].0, dead[2].1), ("hoard-authority:1500:8000", "limit"));
    assert!(dead[2].2.starts_with("held ") && dead[2].2.ends_with(held), "{}", dead[2].2);
}

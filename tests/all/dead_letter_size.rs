//! A dead letter larger than its sink takes (a NATS server's max_payload) is
//! written cut to fit, keeping why and where and the start of the message:
//! written whole, it would fail the run, and every run after it on a broker
//! (the input is delivered again, and fails the next worker too).

use crate::resume::sluice_binary;
use crate::support::{Scratch, guests};
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde_json::Value as Json;
use sluice_tests::brokers::NatsServer;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every message `stream` holds, in order.
async fn read(js: &jetstream::Context, stream: &str) -> Vec<Vec<u8>> {
    let mut stream = js.get_stream(stream).await.unwrap();
    let total = stream.info().await.unwrap().state.messages as usize;
    let reader = stream
        .create_consumer(consumer::pull::Config { ack_policy: consumer::AckPolicy::None, ..Default::default() })
        .await
        .unwrap();
    let mut messages = reader.messages().await.unwrap();
    let mut read = Vec::with_capacity(total);
    while read.len() < total {
        read.push(messages.next().await.unwrap().unwrap().payload.to_vec());
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_over_the_nats_max_payload_is_written_cut_and_the_run_goes_on() {
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let scratch = Scratch::new();
    // A 2 MB output: the sink refuses it (over the default max_payload of
    // 1 MB), and its dead letter, which holds it, is over it too.
    scratch.write("input", "big:2000000\nhello\n");
    let url = server.url();
    scratch.write(
        "pipeline.toml",
        format!(
            "version = 1\n\
             [source]\npath = \"input\"\nformat = \"lines\"\n\
             [sink]\nformat = \"lines\"\n\
             [sink.nats]\nurl = \"{url}\"\nsubject = \"out\"\nstream = \"OUT\"\n\
             [dead_letter.nats]\nurl = \"{url}\"\nsubject = \"dead\"\nstream = \"DEAD\"\n\
             [[stages]]\nname = \"t\"\nplugin = {:?}\n",
            guests::TEST_STAGE
        ),
    );
    let mut run = Command::new(sluice_binary())
        .args(["run", "pipeline.toml", "--progress", "0"])
        .current_dir(scratch.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(scratch.path("run.log")).unwrap())
        .spawn()
        .unwrap();
    // A bound for a broken build (a refused dead letter is retried as an
    // outage for a minute), not a measure of speed.
    let give_up = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > give_up {
            let _ = run.kill();
            let _ = run.wait();
            panic!("the run did not end:\n{}", std::fs::read_to_string(scratch.path("run.log")).unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(scratch.path("run.log")).unwrap();
    assert!(status.success(), "{status}:\n{log}");

    assert_eq!(read(&js, "OUT").await, [b"hello".to_vec()], "{log}");
    let dead = read(&js, "DEAD").await;
    assert_eq!(dead.len(), 1, "{log}");
    assert!(dead[0].len() < 4096, "{} bytes", dead[0].len());
    let record: Json = serde_json::from_slice(&dead[0]).unwrap();
    assert_eq!(record["stage"], "sink", "{record}");
    assert_eq!(record["error"], "output", "{record}");
    assert_eq!(record["input"]["line"], 1, "{record}");
    let reason = record["reason"].as_str().unwrap();
    let (why, cut) = reason.split_once(" [cut: ").unwrap_or_else(|| panic!("not marked as cut: {reason}"));
    assert!(why.contains("over the NATS server's max_payload of 1048576 bytes"), "the sink's reason: {reason}");
    assert!(
        cut.starts_with("the dead-letter sink refused the whole record")
            && cut.ends_with("the record keeps the first 1024 of the message's 2000000 bytes]"),
        "{reason}"
    );
    let head = record["message"]["value_text"].as_str().unwrap();
    assert_eq!(head.len(), 1024, "the start of the message");
    assert!(head.chars().all(|c| c == 'x'), "{head}");
}

//! NATS JetStream in and out: a real nats-server (started per test on a free
//! port), real `sluice run` processes, streams loaded and read with the NATS
//! client. Every input is accounted for: published (once) to the output
//! stream, filtered out, or published to the dead-letter stream.

use crate::metrics::Sluice;
use crate::resume::sluice_binary;
use crate::support::{Scratch, root};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use sluice_tests::brokers::NatsServer;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A server, and a JetStream client of it.
struct Nats {
    server: NatsServer,
    js: jetstream::Context,
}

impl Nats {
    async fn start() -> Self {
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.unwrap();
        Nats { js: jetstream::new(client), server }
    }

    /// A stream named `name` storing `subject`.
    async fn stream(&self, name: &str, subject: &str) {
        let config = stream::Config { name: name.into(), subjects: vec![subject.into()], ..Default::default() };
        self.js.create_stream(config).await.unwrap();
    }

    /// Publishes each message on `subject`, waiting for every store.
    async fn publish(
        &self,
        subject: &str,
        messages: impl IntoIterator<Item = async_nats::jetstream::message::PublishMessage>,
    ) {
        let mut acks = Vec::new();
        for message in messages {
            acks.push(self.js.send_publish(subject.to_string(), message).await.unwrap());
            if acks.len() == 1024 {
                for ack in acks.drain(..) {
                    ack.await.unwrap();
                }
            }
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }

    async fn count(&self, stream: &str) -> u64 {
        match self.js.get_stream(stream).await {
            Ok(mut s) => s.info().await.unwrap().state.messages,
            Err(_) => 0,
        }
    }

    /// Waits until `stream` holds at least `n` messages; at most a minute
    /// (a bound for a broken build, not a measure of speed).
    async fn wait_for(&self, stream: &str, n: u64, worker: &mut Sluice) {
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            let count = self.count(stream).await;
            if count >= n {
                return;
            }
            if let Some(status) = worker.0.try_wait().unwrap() {
                panic!("the worker ended ({status}) with {count} of {n} messages in {stream}");
            }
            assert!(Instant::now() < give_up, "{stream} holds {count} messages, not {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every message `stream` holds, in order.
    async fn read(&self, stream: &str) -> Vec<async_nats::jetstream::Message> {
        let total = self.count(stream).await as usize;
        let stream = self.js.get_stream(stream).await.unwrap();
        let reader = stream
            .create_consumer(consumer::pull::Config { ack_policy: consumer::AckPolicy::None, ..Default::default() })
            .await
            .unwrap();
        let mut messages = reader.messages().await.unwrap();
        let mut read = Vec::with_capacity(total);
        while read.len() < total {
            read.push(messages.next().await.unwrap().unwrap());
        }
        read
    }

    /// The durable consumer's count of messages delivered and not yet
    /// acknowledged, and of messages not yet delivered.
    async fn consumer_pending(&self, stream: &str, name: &str) -> (usize, u64) {
        let mut c: consumer::PullConsumer = self.js.get_stream(stream).await.unwrap().get_consumer(name).await.unwrap();
        let info = c.info().await.unwrap();
        (info.num_ack_pending, info.num_pending)
    }
}

fn publish(value: impl Into<Vec<u8>>) -> jetstream::message::PublishMessage {
    jetstream::message::PublishMessage::build().payload(value.into().into())
}

fn plugin(name: &str) -> String {
    root().join("target/plugins").join(name).display().to_string()
}

/// The pipeline file of a worker reading `IN` and writing `OUT` and `DEAD`.
fn worker_pipeline(url: &str, source: &str, stages: &str) -> String {
    format!(
        "version = 1\n\
         [source.nats]\nurl = \"{url}\"\nstream = \"IN\"\nconsumer = \"workers\"\n{source}\n\
         [sink.nats]\nurl = \"{url}\"\nsubject = \"out\"\nstream = \"OUT\"\n\
         [dead_letter.nats]\nurl = \"{url}\"\nsubject = \"dead\"\nstream = \"DEAD\"\n\
         {stages}"
    )
}

fn start_worker(scratch: &Scratch, pipeline: &str, log: &str) -> Sluice {
    Sluice(
        Command::new(sluice_binary())
            .args(["run", pipeline])
            .current_dir(scratch.dir.path())
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(scratch.path(log)).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// SIGINT, then the exit code and what the worker logged.
fn interrupt(mut worker: Sluice, scratch: &Scratch, log: &str) -> (Option<i32>, String) {
    let signalled = Command::new("kill").args(["-INT", &worker.0.id().to_string()]).status().unwrap();
    assert!(signalled.success());
    let status = worker.0.wait().unwrap();
    (status.code(), std::fs::read_to_string(scratch.path(log)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_in_stages_jetstream_out_and_dead_letters_account_for_every_input() {
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    // 300 orders: amounts 0..300, so 200 pass `amount >= 100`; every 25th is not JSON.
    let inputs: Vec<String> = (0..300)
        .map(|i| if i % 25 == 7 { format!("not json {i}") } else { format!(r#"{{"id":{i},"amount":{i}}}"#) })
        .collect();
    let invalid = inputs.iter().filter(|v| v.starts_with("not")).count() as u64;
    let passing = (0..300).filter(|i| i % 25 != 7 && *i >= 100).count() as u64;
    nats.publish("in.orders", inputs.iter().map(|v| publish(v.clone()))).await;
    // Blank ones are skipped, and acknowledged like the rest.
    nats.publish("in.orders", [publish(""), publish("  ")]).await;
    // One with a key, a timestamp and a header of its own.
    let marked = publish(r#"{"id":"marked","amount":500}"#)
        .header("Sluice-Key", "customer-7")
        .header("Sluice-Timestamp", "1700000000123")
        .header("X-Trace", "abc");
    nats.publish("in.orders", [marked]).await;

    let scratch = Scratch::new();
    let stage = format!(
        "[[stages]]\nname = \"large\"\nplugin = \"{}\"\nconfig = {{ field = \"amount\", gte = 100 }}\n",
        plugin("json-filter.wasm")
    );
    scratch.write("pipeline.toml", worker_pipeline(&nats.server.url(), "", &stage));
    let mut worker = start_worker(&scratch, "pipeline.toml", "worker.log");
    nats.wait_for("OUT", passing + 1, &mut worker).await;
    nats.wait_for("DEAD", invalid, &mut worker).await;
    // Acknowledged once delivered: nothing left for the consumer.
    let give_up = Instant::now() + Duration::from_secs(30);
    while nats.consumer_pending("IN", "workers").await != (0, 0) {
        assert!(
            Instant::now() < give_up,
            "inputs left unacknowledged: {:?}",
            nats.consumer_pending("IN", "workers").await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, log) = interrupt(worker, &scratch, "worker.log");
    assert_eq!(code, Some(130), "{log}");
    assert!(log.contains("stopped: everything read was processed, delivered and acknowledged"), "{log}");
    assert!(!log.contains("--skip-lines"), "a broker keeps its own place: {log}");

    let out = nats.read("OUT").await;
    let dead = nats.read("DEAD").await;
    assert_eq!(out.len() as u64, passing + 1, "every passing order once");
    assert_eq!(dead.len() as u64, invalid);
    for letter in &dead {
        let record: serde_json::Value = serde_json::from_slice(&letter.payload).unwrap();
        assert_eq!(record["error"], "input", "{record}");
        assert_eq!(record["input"]["nats"], "IN", "{record}");
        assert!(record["input"]["sequence"].as_u64().unwrap() >= 1, "{record}");
        assert!(String::from_utf8_lossy(letter.payload.as_ref()).contains("not json"));
    }
    // The key, timestamp and headers came through as they went in.
    let marked = out.iter().find(|m| String::from_utf8_lossy(&m.payload).contains("marked")).unwrap();
    let headers = marked.headers.as_ref().unwrap();
    assert_eq!(headers.get("Sluice-Key").unwrap().as_str(), "customer-7");
    assert_eq!(headers.get("Sluice-Timestamp").unwrap().as_str(), "1700000000123");
    assert_eq!(headers.get("X-Trace").unwrap().as_str(), "abc");
    assert!(headers.get("Nats-Msg-Id").is_some(), "each output carries an id for the duplicate window");
}

/// The messages `stream` holds, counted by payload.
async fn payloads(nats: &Nats, stream: &str) -> BTreeMap<String, usize> {
    let mut counted = BTreeMap::new();
    for m in nats.read(stream).await {
        *counted.entry(String::from_utf8_lossy(&m.payload).into_owned()).or_insert(0) += 1;
    }
    counted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_one_killed_and_restarted_every_input_out_once() {
    const N: usize = 20_000;
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    nats.publish("in.x", (0..N).map(|i| publish(format!("message {i}")))).await;

    let scratch = Scratch::new();
    // A short ack wait: what the killed worker held comes back to the others soon.
    let source = "ack_wait = \"2s\"\nmax_ack_pending = 500\n[source]\nformat = \"lines\"\n[sink]\nformat = \"lines\"";
    let stage = format!("[[stages]]\nname = \"upper\"\nplugin = \"{}\"\n", plugin("upper.wasm"));
    scratch.write("pipeline.toml", worker_pipeline(&nats.server.url(), source, &stage));
    let start = |log: String| (start_worker(&scratch, "pipeline.toml", &log), log);
    let mut workers: Vec<(Sluice, String)> = (0..3).map(|i| start(format!("worker{i}.log"))).collect();
    // Mid-run: some output is out, much is not.
    nats.wait_for("OUT", (N / 4) as u64, &mut workers[0].0).await;
    let (mut killed, _) = workers.remove(1);
    killed.0.kill().unwrap();
    killed.0.wait().unwrap();
    assert!(nats.count("OUT").await < N as u64, "the kill came too late to matter");
    workers.push(start("restarted.log".into()));
    nats.wait_for("OUT", N as u64, &mut workers[0].0).await;
    let give_up = Instant::now() + Duration::from_secs(60);
    while nats.consumer_pending("IN", "workers").await != (0, 0) {
        assert!(Instant::now() < give_up, "left unacknowledged: {:?}", nats.consumer_pending("IN", "workers").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (worker, log) in workers {
        let (code, log) = interrupt(worker, &scratch, &log);
        assert_eq!(code, Some(130), "{log}");
    }
    let out = payloads(&nats, "OUT").await;
    let want: BTreeSet<String> = (0..N).map(|i| format!("MESSAGE {i}")).collect();
    assert_eq!(out.keys().cloned().collect::<BTreeSet<_>>(), want, "every input's output is in OUT");
    let twice: Vec<_> = out.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "outputs in OUT more than once: {:?}", &twice[..twice.len().min(5)]);
    assert_eq!(nats.count("DEAD").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stage_holds_at_most_max_ack_pending_and_sigint_leaves_the_rest_on_the_stream() {
    const N: usize = 400;
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    // Each message waits 20 ms in the stage (on a WASI clock, as I/O would).
    nats.publish("in.x", (0..N).map(|i| publish(format!("sleep:20:m{i}")))).await;
    let scratch = Scratch::new();
    let addr = crate::metrics::free_addr();
    let source = format!(
        "max_ack_pending = 8\nack_wait = \"2s\"\n[source]\nformat = \"lines\"\n[sink]\nformat = \"lines\"\n\
         [metrics]\naddr = \"{addr}\""
    );
    let stage =
        format!("[[stages]]\nname = \"slow\"\nplugin = \"{}\"\nconcurrency = 4\n", crate::support::guests::TEST_STAGE);
    scratch.write("pipeline.toml", worker_pipeline(&nats.server.url(), &source, &stage));
    let mut worker = start_worker(&scratch, "pipeline.toml", "worker.log");
    nats.wait_for("OUT", 20, &mut worker).await;
    // The metrics say how much the broker still holds for the consumer.
    let scrape = crate::metrics::poll(addr, "/metrics", |_, body| {
        crate::metrics::sample(body, "sluice_source_backlog").is_some_and(|n| n > 100.0)
    });
    let backlog = crate::metrics::sample(&scrape, "sluice_source_backlog").unwrap();
    assert!(backlog <= N as f64, "the broker holds {backlog} of {N} for the consumer");
    // Backpressure reaches the server: it has the rest, the worker at most 8.
    for _ in 0..20 {
        let (held, waiting) = nats.consumer_pending("IN", "workers").await;
        assert!(held <= 8, "the worker holds {held} unacknowledged messages, over max_ack_pending");
        assert!(waiting > 0, "the server should still hold most of the input");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (code, log) = interrupt(worker, &scratch, "worker.log");
    assert_eq!(code, Some(130), "{log}");
    // What it read it finished and acknowledged; what the server had sent
    // on (not yet taken in) it handed back; the rest waits on the stream.
    let out = nats.count("OUT").await;
    let (held, waiting) = nats.consumer_pending("IN", "workers").await;
    assert!(held <= 8, "{held} held, over max_ack_pending");
    assert_eq!(out + waiting + held as u64, N as u64, "every input is either out or still on the stream");
    assert!(waiting > 0, "the signal came after the end");
    // The next run takes up the rest: each once.
    let mut worker = start_worker(&scratch, "pipeline.toml", "again.log");
    nats.wait_for("OUT", N as u64, &mut worker).await;
    let (code, log) = interrupt(worker, &scratch, "again.log");
    assert_eq!(code, Some(130), "{log}");
    let out = payloads(&nats, "OUT").await;
    assert_eq!(out.len(), N, "each output once");
    assert!(out.values().all(|&n| n == 1));
}

/// `examples/nats` as the README runs it (on this test's server): the load,
/// two workers, the reader; the large orders come out as the quickstart's
/// file pipeline writes them, and the two bad orders as dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_example_does_what_the_readme_says() {
    let nats = Nats::start().await;
    let scratch = Scratch::new();
    let example = root().join("examples/nats");
    for file in ["load.toml", "pipeline.toml", "read.toml", "read-dead.toml"] {
        let text = std::fs::read_to_string(example.join(file)).unwrap();
        let text = text
            .replace("nats://127.0.0.1:4222", &nats.server.url())
            .replace("../../target/", &format!("{}/", root().join("target").display()))
            .replace("../quickstart/", &format!("{}/", root().join("examples/quickstart").display()));
        scratch.write(file, text);
    }
    let load =
        Command::new(sluice_binary()).args(["run", "load.toml"]).current_dir(scratch.dir.path()).output().unwrap();
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    let mut workers =
        [start_worker(&scratch, "pipeline.toml", "w1.log"), start_worker(&scratch, "pipeline.toml", "w2.log")];
    nats.wait_for("LARGE", 5, &mut workers[0]).await;
    nats.wait_for("ORDERS_DEAD", 2, &mut workers[1]).await;
    let read = |file: &str| crate::support::read_for(scratch.dir.path(), file, Duration::from_millis(1500));
    let mut large: Vec<String> = read("read.toml").lines().map(str::to_owned).collect();
    large.sort();
    assert_eq!(large, crate::support::quickstart_outputs(&scratch.path("quickstart-dead.jsonl")));
    let dead = read("read-dead.toml");
    let stages: Vec<String> = dead
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["stage"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stages.len(), 2, "{dead}");
    assert!(stages.contains(&"source".to_string()) && stages.contains(&"large-orders".to_string()), "{dead}");
    for worker in workers {
        interrupt(worker, &scratch, "w1.log");
    }
}

/// Keyed state across workers: each worker owns a partition of the keys
/// (the producer puts the partition in the subject, each worker's consumer
/// filters its own), keeps its counts in its own state file, and commits
/// them before it acknowledges. A worker killed mid-run and restarted
/// resumes from its last checkpoint, the broker delivers again what it had
/// not acknowledged, and the final counts come out right, each input out
/// once. (The output of an input delivered again is its first attempt's:
/// the rerun's has the same message id and is dropped, so a count published
/// for it may repeat or skip one; the README says so.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_workers_keep_keyed_state_right_through_a_kill() {
    const N: usize = 4_000;
    const KEYS: usize = 40;
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    let scratch = Scratch::new();
    for p in 0..2 {
        let source = format!(
            "subject = \"in.p{p}\"\nack_wait = \"2s\"\nmax_ack_pending = 2000\n[state]\npath = \"p{p}.state.redb\"\ncheckpoint_every = 700"
        );
        let stage = format!(
            "[[stages]]\nname = \"count\"\nplugin = \"{}\"\nconfig = {{ field = \"user\" }}\n",
            plugin("count-by-key.wasm")
        );
        let pipeline = worker_pipeline(&nats.server.url(), &source, &stage)
            .replace("consumer = \"workers\"", &format!("consumer = \"p{p}\""));
        scratch.write(&format!("p{p}.toml"), pipeline);
    }
    let messages = (0..N).map(|i| (i % KEYS, i));
    for (key, i) in messages {
        let body = format!(r#"{{"user":"k{key}","i":{i}}}"#);
        nats.publish(&format!("in.p{}", key % 2), [publish(body)]).await;
    }
    let mut p0 = start_worker(&scratch, "p0.toml", "p0.log");
    let mut p1 = start_worker(&scratch, "p1.toml", "p1.log");
    // Killed with its state since the last checkpoint (every 700) not committed.
    nats.wait_for("OUT", 1200, &mut p0).await;
    p0.0.kill().unwrap();
    p0.0.wait().unwrap();
    assert!(nats.count("OUT").await < N as u64 - 500, "the kill came too late to matter");
    let p0 = start_worker(&scratch, "p0.toml", "p0-again.log");
    nats.wait_for("OUT", N as u64, &mut p1).await;
    for (worker, log) in [(p0, "p0-again.log"), (p1, "p1.log")] {
        let (code, log) = interrupt(worker, &scratch, log);
        assert_eq!(code, Some(130), "{log}");
    }
    let mut seen = BTreeSet::new();
    for m in nats.read("OUT").await {
        let out: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert!(seen.insert(out["i"].as_u64().unwrap()), "input {} out twice", out["i"]);
    }
    assert_eq!(seen.len(), N, "every input out once");
    // The state itself: each key counted once per input, none lost to the
    // kill, none counted twice when delivered again. (A count *published*
    // for an input delivered again is the first attempt's: the rerun's
    // output has the same id and is dropped.)
    let mut counts: BTreeMap<String, String> = BTreeMap::new();
    for p in 0..2 {
        let listed = Command::new(sluice_binary())
            .args(["state", &format!("p{p}.toml")])
            .current_dir(scratch.dir.path())
            .output()
            .unwrap();
        assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
        for line in String::from_utf8(listed.stdout).unwrap().lines() {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = entry["key"].as_str().unwrap().to_owned();
            let owner = format!("p{}", key[1..].parse::<usize>().unwrap() % 2);
            assert_eq!(owner, format!("p{p}"), "{key} counted by its partition's worker only");
            counts.insert(key, entry["value"].as_str().unwrap().to_owned());
        }
    }
    let expected: BTreeMap<String, String> = (0..KEYS).map(|k| (format!("k{k}"), (N / KEYS).to_string())).collect();
    assert_eq!(counts, expected, "each key counted exactly once per input");
}

/// A file loaded twice is two loads: its lines are not duplicates of the
/// first load's (message ids are only for inputs a broker delivers again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_loaded_twice_into_a_stream_is_stored_twice() {
    let nats = Nats::start().await;
    let scratch = Scratch::new();
    let load = |lines: &str| {
        scratch.write("input", lines);
        let pipeline = format!(
            "version = 1\n[source]\npath = \"input\"\nformat = \"lines\"\n[sink]\nformat = \"lines\"\n\
             [sink.nats]\nurl = \"{}\"\nsubject = \"loaded\"\nstream = \"LOADED\"\n",
            nats.server.url()
        );
        scratch.write("load.toml", pipeline);
        let out = Command::new(sluice_binary()).args(["run", "load.toml"]).current_dir(scratch.dir.path()).output();
        let out = out.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    load("first-1\nfirst-2\n");
    load("second-1\nsecond-2\nsecond-3\n");
    let stored: Vec<String> =
        nats.read("LOADED").await.iter().map(|m| String::from_utf8_lossy(&m.payload).into()).collect();
    assert_eq!(stored, ["first-1", "first-2", "second-1", "second-2", "second-3"]);
}

/// Workers with state on one consumer: `max_ack_pending` is the consumer's,
/// shared, so no worker may ever hold half of it; their held
/// acknowledgements are still released (by the checkpoint interval), and
/// the stream is worked through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_workers_sharing_a_small_max_ack_pending_do_not_stall() {
    const N: u64 = 300;
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    nats.publish("in.x", (0..N).map(|i| publish(format!("incr:k{}", i % 7)))).await;
    let scratch = Scratch::new();
    let mut workers = Vec::new();
    for w in 0..3 {
        let source = format!(
            "max_ack_pending = 30\n[state]\npath = \"w{w}.state.redb\"\ncheckpoint_interval = \"200ms\"\n\
             [source]\nformat = \"lines\"\n[sink]\nformat = \"lines\""
        );
        let stage = format!("[[stages]]\nname = \"count\"\nplugin = \"{}\"\n", crate::support::guests::TEST_STAGE);
        scratch.write(&format!("w{w}.toml"), worker_pipeline(&nats.server.url(), &source, &stage));
        workers.push(start_worker(&scratch, &format!("w{w}.toml"), &format!("w{w}.log")));
    }
    nats.wait_for("OUT", N, &mut workers[0]).await;
    for (w, worker) in workers.into_iter().enumerate() {
        let (code, log) = interrupt(worker, &scratch, &format!("w{w}.log"));
        assert_eq!(code, Some(130), "{log}");
    }
    assert_eq!(nats.consumer_pending("IN", "workers").await, (0, 0));
}

/// Hot reload on a broker source: the stage's plugin replaced while the
/// worker consumes; every message out once, in order, through the old
/// component up to one point and the new one after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_reloaded_while_consuming_a_stream_loses_and_repeats_nothing() {
    const N: usize = 3_000;
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    let scratch = Scratch::new();
    let plugin = scratch.path("stage.wasm");
    std::fs::copy(crate::support::guests::TEST_STAGE, &plugin).unwrap();
    let source = "[source]\nformat = \"lines\"\n[sink]\nformat = \"lines\"";
    let stage = "[[stages]]\nname = \"s\"\nplugin = \"stage.wasm\"\n";
    scratch.write("pipeline.toml", worker_pipeline(&nats.server.url(), source, stage));
    let mut worker = start_worker(&scratch, "pipeline.toml", "worker.log");
    // Published as the worker runs, a slice at a time, while the new component comes.
    let mut published = 0;
    let mut reloaded = false;
    let give_up = Instant::now() + Duration::from_secs(60);
    while published < N {
        nats.publish("in.x", (published..published + 100).map(|i| publish(format!("m{i}")))).await;
        published += 100;
        if published == 500 {
            nats.wait_for("OUT", 500, &mut worker).await;
            let temp = scratch.path("stage.new");
            std::fs::copy(root().join("target/plugins/upper.wasm"), &temp).unwrap();
            std::fs::rename(&temp, &plugin).unwrap();
        }
        reloaded = reloaded || std::fs::read_to_string(scratch.path("worker.log")).unwrap().contains("reloaded");
        if published > 500 && !reloaded && published >= N - 100 {
            // Hold the last slice back until the swap has happened.
            while !std::fs::read_to_string(scratch.path("worker.log")).unwrap().contains("reloaded") {
                assert!(Instant::now() < give_up, "never reloaded");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    nats.wait_for("OUT", N as u64, &mut worker).await;
    let (code, log) = interrupt(worker, &scratch, "worker.log");
    assert_eq!(code, Some(130), "{log}");
    let out: Vec<String> = nats.read("OUT").await.iter().map(|m| String::from_utf8_lossy(&m.payload).into()).collect();
    assert_eq!(out.len(), N, "each message out once");
    let switch = out.iter().position(|v| v.starts_with('M')).expect("the new component ran");
    assert!(switch >= 500);
    for (i, value) in out.iter().enumerate() {
        let want = if i < switch { format!("m{i}") } else { format!("M{i}") };
        assert_eq!(value, &want, "in order, the old component up to {switch}, the new one after");
    }
}

/// Waits until `stream`'s consumer `name` has nothing delivered and not
/// acknowledged, and nothing left to deliver; at most a minute.
async fn wait_all_acknowledged(nats: &Nats, stream: &str, name: &str) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while nats.consumer_pending(stream, name).await != (0, 0) {
        assert!(Instant::now() < give_up, "left unacknowledged: {:?}", nats.consumer_pending(stream, name).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Headers the NATS server acts on (`Nats-Expected-Stream`,
/// `Nats-Expected-Last-Sequence`, ...) were instructions for the publish
/// that stored the input: not passed on to its outputs, where the server
/// would refuse them (the output stream is another stream, at another
/// sequence). The worker goes on, its other headers pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_the_server_acts_on_are_not_passed_on_to_outputs() {
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    nats.publish("in.a", [publish("first").header("Nats-Expected-Stream", "IN").header("X-Trace", "t1")]).await;
    nats.publish("in.a", [publish("second").header("Nats-Expected-Last-Sequence", "1").header("X-Trace", "t2")]).await;
    nats.publish("in.a", [publish("third").header("nats-expected-stream", "IN")]).await;
    let scratch = Scratch::new();
    let source = "[source]\nformat = \"lines\"\n[sink]\nformat = \"lines\"";
    scratch.write("pipeline.toml", worker_pipeline(&nats.server.url(), source, ""));
    let mut worker = start_worker(&scratch, "pipeline.toml", "worker.log");
    nats.wait_for("OUT", 3, &mut worker).await;
    wait_all_acknowledged(&nats, "IN", "workers").await;
    let (code, log) = interrupt(worker, &scratch, "worker.log");
    assert_eq!(code, Some(130), "{log}");
    let out = nats.read("OUT").await;
    let values: Vec<String> = out.iter().map(|m| String::from_utf8_lossy(&m.payload).into()).collect();
    assert_eq!(values, ["first", "second", "third"]);
    for message in &out {
        let headers = message.headers.as_ref().unwrap();
        let names: Vec<String> = headers.iter().map(|(name, _)| name.to_string()).collect();
        assert!(
            names.iter().all(|n| n == "Nats-Msg-Id" || !n.to_ascii_lowercase().starts_with("nats-")),
            "a header for the server was passed on: {names:?}"
        );
    }
    assert_eq!(out[0].headers.as_ref().unwrap().get("X-Trace").unwrap().as_str(), "t1");
    assert_eq!(out[1].headers.as_ref().unwrap().get("X-Trace").unwrap().as_str(), "t2");
    assert_eq!(nats.count("DEAD").await, 0);
}

/// A message the output stream would refuse for good (over its
/// `max_msg_size`) is an `output` dead letter; the messages around it go
/// out, and every input is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_output_stream_refuses_is_a_dead_letter_and_the_rest_go_on() {
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    let out = stream::Config {
        name: "OUT".into(),
        subjects: vec!["out".into()],
        max_message_size: 1000,
        ..Default::default()
    };
    nats.js.create_stream(out).await.unwrap();
    let big = "x".repeat(2000);
    nats.publish("in.a", [publish("small-1"), publish(big.clone()), publish("small-2")]).await;
    let scratch = Scratch::new();
    let source = "[source]\nformat = \"lines\"\n[sink]\nformat = \"lines\"";
    scratch.write("pipeline.toml", worker_pipeline(&nats.server.url(), source, ""));
    let mut worker = start_worker(&scratch, "pipeline.toml", "worker.log");
    nats.wait_for("OUT", 2, &mut worker).await;
    nats.wait_for("DEAD", 1, &mut worker).await;
    wait_all_acknowledged(&nats, "IN", "workers").await;
    let (code, log) = interrupt(worker, &scratch, "worker.log");
    assert_eq!(code, Some(130), "{log}");
    let values: Vec<String> =
        nats.read("OUT").await.iter().map(|m| String::from_utf8_lossy(&m.payload).into()).collect();
    assert_eq!(values, ["small-1", "small-2"]);
    let dead = nats.read("DEAD").await;
    assert_eq!(dead.len(), 1);
    let record: serde_json::Value = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(record["error"], "output", "{record}");
    assert_eq!(record["input"]["sequence"], 2, "{record}");
    assert!(record["reason"].as_str().unwrap().contains("max_msg_size of 1000 bytes"), "{record}");
}

/// An output stream that refuses every publish (sealed) is not an outage
/// to wait out: the worker stops, saying what the server said, and leaves
/// its input on the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_server_refuses_for_good_stops_the_worker_with_the_servers_reason() {
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    nats.stream("OUT", "out").await;
    let mut sealed = nats.js.get_stream("OUT").await.unwrap().info().await.unwrap().config.clone();
    sealed.sealed = true;
    nats.js.update_stream(sealed).await.unwrap();
    nats.publish("in.a", [publish("one")]).await;
    let scratch = Scratch::new();
    let source = "[source]\nformat = \"lines\"\n[sink]\nformat = \"lines\"";
    scratch.write("pipeline.toml", worker_pipeline(&nats.server.url(), source, ""));
    let mut worker = start_worker(&scratch, "pipeline.toml", "worker.log");
    // Bounded for a broken build only: the worker stops on the first answer.
    let status = wait_exit(&mut worker, Duration::from_secs(90));
    let log = std::fs::read_to_string(scratch.path("worker.log")).unwrap();
    assert_eq!(status, Some(1), "{log}");
    assert!(log.contains("refused a message published to out"), "{log}");
    assert!(log.contains("sealed"), "the server's reason: {log}");
    assert_eq!(nats.count("OUT").await, 0);
}

/// The worker's exit code, once it has ended; at most `bound` (a bound for
/// a broken build, not a measure of speed).
fn wait_exit(worker: &mut Sluice, bound: Duration) -> Option<i32> {
    let give_up = Instant::now() + bound;
    loop {
        if let Some(status) = worker.0.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < give_up, "the worker is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Messages a worker has pulled but not yet started on are kept alive like
/// those it works on: with slow messages, a short `ack_wait` and two
/// workers, no message is delivered to both, and none runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_in_a_workers_buffer_are_not_delivered_again() {
    const N: usize = 60;
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    // 60 × 100 ms, one at a time: several times `ack_wait`, pulled at once
    // by whichever worker asks first, and most of it waits in that worker
    // (the stage takes one at a time, its queue holds one).
    nats.publish("in.x", (0..N).map(|i| publish(format!("sleep:100:m{i}")))).await;
    let scratch = Scratch::new();
    let source = "ack_wait = \"1s\"\n[source]\nformat = \"lines\"\n[sink]\nformat = \"lines\"";
    let stage = format!(
        "[[stages]]\nname = \"slow\"\nplugin = \"{}\"\nconcurrency = 1\nbuffer = 1\n",
        crate::support::guests::TEST_STAGE
    );
    scratch.write("pipeline.toml", worker_pipeline(&nats.server.url(), source, &stage));
    let mut workers =
        [start_worker(&scratch, "pipeline.toml", "w1.log"), start_worker(&scratch, "pipeline.toml", "w2.log")];
    nats.wait_for("OUT", N as u64, &mut workers[0]).await;
    wait_all_acknowledged(&nats, "IN", "workers").await;
    let [w1, w2] = workers;
    let mut logs = String::new();
    for (worker, log) in [(w1, "w1.log"), (w2, "w2.log")] {
        let (code, log) = interrupt(worker, &scratch, log);
        assert_eq!(code, Some(130), "{log}");
        logs += &log;
    }
    // Each worker's report says how many messages it read: together, each once.
    let read: usize = logs
        .lines()
        .filter_map(|line| line.split_once(" read, ").and_then(|(n, _)| n.trim().parse::<usize>().ok()))
        .sum();
    assert_eq!(read, N, "inputs read by the two workers together: {logs}");
    assert!(!logs.contains("duplicates"), "an input ran twice: {logs}");
    assert_eq!(payloads(&nats, "OUT").await.len(), N);
}

/// A durable consumer that exists with another subject filter than the
/// pipeline file's is not used (a worker would read another partition's
/// messages): the worker stops, naming the consumer, both filters and what
/// to do. One that differs only in `ack_wait` or `max_ack_pending` is
/// updated to the file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_consumer_with_other_settings_is_refused_or_updated() {
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    let stream = nats.js.get_stream("IN").await.unwrap();
    let existing = consumer::pull::Config {
        durable_name: Some("workers".into()),
        filter_subject: "in.p0".into(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(10),
        max_ack_pending: 1000,
        ..Default::default()
    };
    stream.create_consumer(existing).await.unwrap();
    nats.publish("in.p0", [publish("zero")]).await;
    nats.publish("in.p1", [publish("one")]).await;
    let scratch = Scratch::new();
    let lines = "[source]\nformat = \"lines\"\n[sink]\nformat = \"lines\"";
    let other = format!("subject = \"in.p1\"\n{lines}");
    scratch.write("p1.toml", worker_pipeline(&nats.server.url(), &other, ""));
    let mut worker = start_worker(&scratch, "p1.toml", "p1.log");
    let status = wait_exit(&mut worker, Duration::from_secs(30));
    let log = std::fs::read_to_string(scratch.path("p1.log")).unwrap();
    assert_eq!(status, Some(1), "{log}");
    assert!(log.contains("consumer workers of stream IN"), "{log}");
    assert!(log.contains("subject is in.p1 in the file, in.p0 on the server"), "{log}");
    assert!(log.contains("another `consumer` name"), "{log}");
    assert_eq!(nats.count("OUT").await, 0, "nothing read through the wrong filter");

    // The same filter, other limits: updated, and the worker reads its partition.
    let same = format!("subject = \"in.p0\"\nack_wait = \"3s\"\nmax_ack_pending = 5\n{lines}");
    scratch.write("p0.toml", worker_pipeline(&nats.server.url(), &same, ""));
    let mut worker = start_worker(&scratch, "p0.toml", "p0.log");
    nats.wait_for("OUT", 1, &mut worker).await;
    let (code, log) = interrupt(worker, &scratch, "p0.log");
    assert_eq!(code, Some(130), "{log}");
    assert!(log.contains("updated to the pipeline file's settings"), "{log}");
    let mut consumer: consumer::PullConsumer = stream.get_consumer("workers").await.unwrap();
    let config = consumer.info().await.unwrap().config.clone();
    assert_eq!((config.ack_wait, config.max_ack_pending), (Duration::from_secs(3), 5));
    assert_eq!(config.filter_subject, "in.p0");
    let values: Vec<String> =
        nats.read("OUT").await.iter().map(|m| String::from_utf8_lossy(&m.payload).into()).collect();
    assert_eq!(values, ["zero"]);
}

/// A worker that dies after committing its state and before the server
/// hears its acknowledgements: the server delivers those inputs again, and
/// the next run acknowledges them without applying them to the state (or
/// writing their outputs) a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_committed_but_not_yet_acknowledged_when_a_worker_dies_are_not_applied_twice() {
    use crate::support::{Cuttable, assert_counts, counting_pipeline, die_after_an_unheard_checkpoint, lines_out};
    const N: usize = 100;
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    nats.publish("in.x", (0..N).map(|i| publish(format!("incr:k{}", i % 5)))).await;
    let network = Cuttable::to(nats.server.port()).await;
    let scratch = Scratch::new();
    let source = format!(
        "[source.nats]\nurl = \"nats://127.0.0.1:{}\"\nstream = \"IN\"\nconsumer = \"c\"\nack_wait = \"1s\"\n",
        network.port
    );
    scratch.write("pipeline.toml", counting_pipeline(&source));
    die_after_an_unheard_checkpoint(&scratch, &network, N).await;
    assert_eq!(nats.consumer_pending("IN", "c").await.0, N, "the server heard no acknowledgement");

    let give_up = Instant::now() + Duration::from_secs(60);
    let mut again = start_worker(&scratch, "pipeline.toml", "again.log");
    while nats.consumer_pending("IN", "c").await != (0, 0) {
        assert!(again.0.try_wait().unwrap().is_none());
        assert!(Instant::now() < give_up, "not all acknowledged: {:?}", nats.consumer_pending("IN", "c").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, log) = interrupt(again, &scratch, "again.log");
    assert_eq!(code, Some(130), "{log}");
    assert_eq!(lines_out(&scratch), N, "each input's output written once");
    assert_counts(&scratch, N / 5);
    assert!(log.contains(&format!("{N} inputs delivered again")), "{log}");

    // The stream made anew numbers its messages from 1 again: new inputs
    // at the recorded positions, which run.
    nats.js.delete_stream("IN").await.unwrap();
    nats.stream("IN", "in.>").await;
    nats.publish("in.x", (0..N).map(|i| publish(format!("incr:k{}", i % 5)))).await;
    let mut anew = start_worker(&scratch, "pipeline.toml", "anew.log");
    while lines_out(&scratch) < 2 * N {
        assert!(anew.0.try_wait().unwrap().is_none());
        assert!(Instant::now() < give_up + Duration::from_secs(30), "{} of {} out", lines_out(&scratch), 2 * N);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, log) = interrupt(anew, &scratch, "anew.log");
    assert_eq!(code, Some(130), "{log}");
    assert_counts(&scratch, 2 * N / 5);
}

/// The consumer deleted while a worker reads from it: a pull from it is
/// never answered, so the worker stops, saying why, rather than waiting for
/// ever; and it exits 1 (failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_consumer_is_deleted_stops_saying_so() {
    let nats = Nats::start().await;
    nats.stream("IN", "in.>").await;
    nats.publish("in.x", (0..10).map(|i| publish(format!("m{i}")))).await;
    let scratch = Scratch::new();
    let source = "[source]\nformat = \"lines\"\n[sink]\nformat = \"lines\"";
    let stage = format!("[[stages]]\nname = \"s\"\nplugin = \"{}\"\n", crate::support::guests::TEST_STAGE);
    scratch.write("pipeline.toml", worker_pipeline(&nats.server.url(), source, &stage));
    let mut worker = start_worker(&scratch, "pipeline.toml", "worker.log");
    nats.wait_for("OUT", 10, &mut worker).await;
    nats.js.get_stream("IN").await.unwrap().delete_consumer("workers").await.unwrap();
    let give_up = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = worker.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < give_up,
            "still running: {}",
            std::fs::read_to_string(scratch.path("worker.log")).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(scratch.path("worker.log")).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("the consumer workers of stream IN is gone from the server"), "{log}");
}

//! Redis Streams in and out: a real redis-server (started per test on a free
//! port), real `sluice run` processes, streams loaded and read with the
//! Redis client. Every input is accounted for: added to the output stream
//! (at least once) or to the dead-letter stream, and acknowledged.

use crate::resume::sluice_binary;
use crate::support::{Scratch, guests, root};
use ::redis::{Connection, Value};
use serde_json::Value as Json;
use sluice_tests::brokers::RedisServer;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A `sluice run` process, its log (stderr) in a file; killed if a test
/// fails before it ends.
struct Worker {
    child: Child,
    log: std::path::PathBuf,
}

impl Worker {
    fn start(scratch: &Scratch, log: &str) -> Worker {
        let log = scratch.path(log);
        let child = Command::new(sluice_binary())
            .args(["run", "pipeline.toml", "--progress", "0"])
            .current_dir(scratch.dir.path())
            .env("SLUICE_LOG", "info")
            .env_remove("SLUICE_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Worker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (`INT`, `KILL`) with kill(1).
    fn signal(&self, signal: &str) {
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        assert!(sent.unwrap().success());
    }

    /// SIGINT, then its exit status and log.
    fn interrupt(mut self) -> (ExitStatus, String) {
        self.signal("INT");
        let status = self.child.wait().unwrap();
        (status, self.log())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(server: &RedisServer) -> Connection {
    ::redis::Client::open(server.url()).unwrap().get_connection().unwrap()
}

/// Adds entries of `fields` to `stream`, in one round trip; their ids.
fn add(con: &mut Connection, stream: &str, entries: &[Vec<(&str, String)>]) -> Vec<String> {
    let mut pipe = ::redis::pipe();
    for fields in entries {
        let xadd = pipe.cmd("XADD").arg(stream).arg("*");
        for (name, value) in fields {
            xadd.arg(*name).arg(value);
        }
    }
    pipe.query(con).unwrap()
}

fn len(con: &mut Connection, stream: &str) -> usize {
    ::redis::cmd("XLEN").arg(stream).query(con).unwrap()
}

/// Every entry of `stream`: its id and fields, in order.
fn range(con: &mut Connection, stream: &str) -> Vec<(String, Vec<(String, String)>)> {
    let reply: Vec<(String, Vec<String>)> = ::redis::cmd("XRANGE").arg(stream).arg("-").arg("+").query(con).unwrap();
    reply
        .into_iter()
        .map(|(id, flat)| (id, flat.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect()))
        .collect()
}

/// The group's pending entries: their count, and the count per consumer.
fn pending(con: &mut Connection, stream: &str, group: &str) -> (u64, BTreeMap<String, u64>) {
    let reply: Value = ::redis::cmd("XPENDING").arg(stream).arg(group).query(con).unwrap();
    let Value::Array(parts) = reply else { panic!("XPENDING: {reply:?}") };
    let count: u64 = ::redis::from_redis_value(parts[0].clone()).unwrap();
    let consumers: Vec<(String, u64)> = match &parts[3] {
        Value::Nil => Vec::new(),
        consumers => ::redis::from_redis_value(consumers.clone()).unwrap(),
    };
    (count, consumers.into_iter().collect())
}

/// The value of an entry's `field`.
fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {name}: {fields:?}"))
}

/// Waits until the output and dead-letter streams hold `n` entries together
/// (at least); at most two minutes (a bound for a broken build, not a
/// measure of speed).
fn wait_for(con: &mut Connection, n: usize, workers: &mut [&mut Worker]) {
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let got = len(con, "out") + len(con, "dead");
        if got >= n {
            return;
        }
        for worker in workers.iter_mut() {
            if let Some(status) = worker.child.try_wait().unwrap() {
                panic!("a worker ended ({status}) with {got} of {n} entries written:\n{}", worker.log());
            }
        }
        let logs: Vec<String> = workers.iter().map(|w| w.log()).collect();
        assert!(Instant::now() < give_up, "{got} of {n} entries written:\n{}", logs.join("\n---\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn plugin(name: &str) -> String {
    root().join("target/plugins").join(name).display().to_string()
}

/// A pipeline reading `in` through group `g`, writing `out` and `dead`.
fn pipeline(url: &str, source: &str, format: &str, stages: &str) -> String {
    format!(
        "version = 1\n\
         [source]\nformat = \"{format}\"\n\
         [source.redis]\nurl = \"{url}\"\nstream = \"in\"\ngroup = \"g\"\n{source}\n\
         [sink]\nformat = \"{format}\"\n\
         [sink.redis]\nurl = \"{url}\"\nstream = \"out\"\n\
         [dead_letter.redis]\nurl = \"{url}\"\nstream = \"dead\"\n\
         {stages}"
    )
}

/// A dead letter's record (the JSON in its `value` field), and the entry id
/// it names as its input.
fn dead_letter(fields: &[(String, String)]) -> (Json, String) {
    let record: Json = serde_json::from_str(field(fields, "value")).unwrap();
    assert_eq!(record["input"]["redis"], "in", "{record}");
    let entry = record["input"]["entry"].as_str().unwrap_or_else(|| panic!("no entry id: {record}")).to_string();
    (record, entry)
}

#[test]
fn every_entry_is_written_or_dead_lettered_and_acknowledged_and_sigint_stops_the_worker() {
    let server = RedisServer::start();
    let mut con = connect(&server);
    let scratch = Scratch::new();
    // 200 entries: 180 orders, 10 that are not JSON, 10 the filter rejects.
    let values: Vec<String> = (0..200)
        .map(|i| match i % 20 {
            7 => format!("not json {i}"),
            13 => format!("{{\"id\":{i},\"amount\":\"lots\"}}"),
            _ => format!("{{\"id\":{i},\"amount\":{i}}}"),
        })
        .collect();
    let ids = add(&mut con, "in", &values.iter().map(|v| vec![("value", v.clone())]).collect::<Vec<_>>());
    let stage = format!(
        "[[stages]]\nname = \"orders\"\nplugin = {:?}\nconfig = {{ field = \"amount\", gte = 0 }}\n",
        plugin("json-filter.wasm")
    );
    scratch.write("pipeline.toml", pipeline(&server.url(), "consumer = \"w1\"", "jsonl", &stage));
    let mut worker = Worker::start(&scratch, "w1.log");
    wait_for(&mut con, 200, &mut [&mut worker]);
    let (status, log) = worker.interrupt();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(log.contains("stopped: everything read was processed, delivered and acknowledged"), "{log}");

    // Each order once in the output, each other entry once in the dead letters.
    let out: Vec<u64> = range(&mut con, "out")
        .iter()
        .map(|(_, fields)| serde_json::from_str::<Json>(field(fields, "value")).unwrap()["id"].as_u64().unwrap())
        .collect();
    let orders: Vec<u64> = (0..200).filter(|i| ![7, 13].contains(&(i % 20))).collect();
    assert_eq!(out, orders, "outputs in input order, each once");
    let mut dead: BTreeMap<String, String> = BTreeMap::new();
    for (_, fields) in range(&mut con, "dead") {
        let (record, entry) = dead_letter(&fields);
        assert!(dead.insert(entry, record["error"].as_str().unwrap().to_string()).is_none(), "twice: {record}");
    }
    let expected: BTreeMap<String, String> = (0..200)
        .filter_map(|i| match i % 20 {
            7 => Some((ids[i].clone(), "input".to_string())),
            13 => Some((ids[i].clone(), "invalid".to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(dead, expected);
    assert_eq!(pending(&mut con, "in", "g").0, 0, "every entry is acknowledged");
}

#[test]
fn key_timestamp_and_other_fields_come_back_as_they_went_in() {
    let server = RedisServer::start();
    let mut con = connect(&server);
    let scratch = Scratch::new();
    // An id XADD takes but sluice cannot track (a sequence number of 2^20
    // or more): dead-lettered under that id.
    let odd: String = ::redis::cmd("XADD").arg("in").arg("1-2000000").arg("value").arg("odd").query(&mut con).unwrap();
    let ids = add(
        &mut con,
        "in",
        &[
            vec![
                ("colour", "red".into()),
                ("value", "hello".into()),
                ("key", "k1".into()),
                ("timestamp", "1700000000123".into()),
                ("size", "L".into()),
            ],
            // No timestamp: the entry id's milliseconds.
            vec![("value", "plain".into())],
            // No value: dead-lettered, naming the field.
            vec![("body", "where is the value".into())],
            // A timestamp that is not one: dead-lettered, keeping the value.
            vec![("timestamp", "yesterday".into()), ("value", "keep me".into())],
        ],
    );
    let stage = format!("[[stages]]\nname = \"upper\"\nplugin = {:?}\n", plugin("upper.wasm"));
    scratch.write("pipeline.toml", pipeline(&server.url(), "", "lines", &stage));
    let mut worker = Worker::start(&scratch, "w.log");
    wait_for(&mut con, 5, &mut [&mut worker]);
    let (status, log) = worker.interrupt();
    assert_eq!(status.code(), Some(130), "{log}");

    let out: Vec<Vec<(String, String)>> = range(&mut con, "out").into_iter().map(|(_, fields)| fields).collect();
    let pairs = |p: &[(&str, &str)]| p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect::<Vec<_>>();
    let first_ms = ids[1].split('-').next().unwrap();
    assert_eq!(
        out,
        [
            pairs(&[
                ("value", "HELLO"),
                ("key", "k1"),
                ("timestamp", "1700000000123"),
                ("colour", "red"),
                ("size", "L")
            ]),
            pairs(&[("value", "PLAIN"), ("timestamp", first_ms)]),
        ]
    );
    let dead: BTreeMap<String, Json> = range(&mut con, "dead")
        .iter()
        .map(|(_, fields)| {
            let (record, entry) = dead_letter(fields);
            assert_eq!(record["error"], "input", "{record}");
            (entry, record)
        })
        .collect();
    let entries: Vec<&str> = dead.keys().map(String::as_str).collect();
    let mut want = vec![odd.as_str(), ids[2].as_str(), ids[3].as_str()];
    want.sort();
    assert_eq!(entries, want, "each dead letter names its entry's id");
    let reason = dead[&odd]["reason"].as_str().unwrap();
    assert!(reason.contains("entry id 1-2000000"), "{reason}");
    assert_eq!(dead[&odd]["message"]["value_text"], "odd");
    let reason = dead[&ids[2]]["reason"].as_str().unwrap();
    assert!(reason.contains("no field `value`") && reason.contains("value_field"), "{reason}");
    let bad_time = &dead[&ids[3]];
    assert!(bad_time["reason"].as_str().unwrap().contains(r#""yesterday""#), "{bad_time}");
    assert_eq!(bad_time["message"]["value_text"], "keep me", "{bad_time}");
    assert_eq!(pending(&mut con, "in", "g").0, 0);
}

#[test]
fn a_header_named_like_a_field_of_the_sink_is_dead_lettered_not_written() {
    let server = RedisServer::start();
    let mut con = connect(&server);
    let scratch = Scratch::new();
    // The source takes its key from `id`, so `key` is a header, which the
    // sink (key_field `key`) would read back as the key.
    add(&mut con, "in", &[vec![("value", "a".into()), ("key", "x".into())], vec![("value", "b".into())]]);
    let stage = format!("[[stages]]\nname = \"upper\"\nplugin = {:?}\n", plugin("upper.wasm"));
    scratch.write("pipeline.toml", pipeline(&server.url(), "key_field = \"id\"", "lines", &stage));
    let mut worker = Worker::start(&scratch, "w.log");
    wait_for(&mut con, 2, &mut [&mut worker]);
    let (status, log) = worker.interrupt();
    assert_eq!(status.code(), Some(130), "{log}");
    let out = range(&mut con, "out");
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(field(&out[0].1, "value"), "B");
    let dead = range(&mut con, "dead");
    let (record, _) = dead_letter(&dead[0].1);
    assert_eq!(record["error"], "output", "{record}");
    assert!(record["reason"].as_str().unwrap().contains("header `key`"), "{record}");
}

#[test]
fn entries_a_killed_worker_held_are_claimed_by_the_other_and_nothing_is_lost() {
    let server = RedisServer::start();
    let mut con = connect(&server);
    let scratch = Scratch::new();
    // 5,000 entries, each a little work; every 100th rejected by the stage.
    let values: Vec<String> =
        (0..5000).map(|i| if i % 100 == 42 { format!("invalid:{i}") } else { format!("sleep:1:{i}") }).collect();
    let entries: Vec<Vec<(&str, String)>> = values.iter().map(|v| vec![("value", v.clone())]).collect();
    let mut ids = Vec::new();
    for chunk in entries.chunks(1000) {
        ids.extend(add(&mut con, "in", chunk));
    }
    // No `consumer`: each process gets its own default name, `<host>-<pid>`.
    let stage = format!(
        "[[stages]]\nname = \"t\"\nplugin = {:?}\nconcurrency = 4\norder = \"unordered\"\n",
        guests::TEST_STAGE
    );
    scratch.write("pipeline.toml", pipeline(&server.url(), "claim_idle = \"1s\"", "lines", &stage));
    let mut doomed = Worker::start(&scratch, "doomed.log");
    let mut survivor = Worker::start(&scratch, "survivor.log");
    wait_for(&mut con, 500, &mut [&mut doomed, &mut survivor]);
    doomed.signal("KILL");
    doomed.child.wait().unwrap();
    // It died holding entries it had not acknowledged.
    let doomed_name = format!("-{}", doomed.child.id());
    let (_, consumers) = pending(&mut con, "in", "g");
    let held: u64 = consumers.iter().filter(|(name, _)| name.ends_with(&doomed_name)).map(|(_, n)| n).sum();
    assert!(held > 0, "the killed worker held nothing: {consumers:?}");

    // Everything reaches the output or the dead letters, and nothing stays pending.
    let give_up = Instant::now() + Duration::from_secs(120);
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    loop {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for (_, fields) in range(&mut con, "out") {
            let i: usize = field(&fields, "value").parse().unwrap();
            seen.insert(ids[i].clone());
        }
        for (_, fields) in range(&mut con, "dead") {
            seen.insert(dead_letter(&fields).1);
        }
        if seen == all && pending(&mut con, "in", "g").0 == 0 {
            break;
        }
        assert!(seen.is_subset(&all), "an output of no input");
        if let Some(status) = survivor.child.try_wait().unwrap() {
            panic!("the survivor ended ({status}):\n{}", survivor.log());
        }
        let missing = all.len() - seen.len();
        assert!(Instant::now() < give_up, "{missing} entries missing:\n{}", survivor.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let dead_ids: BTreeSet<String> = range(&mut con, "dead").iter().map(|(_, f)| dead_letter(f).1).collect();
    let rejected: BTreeSet<String> = (0..5000).filter(|i| i % 100 == 42).map(|i| ids[i].clone()).collect();
    assert_eq!(dead_ids, rejected, "the dead letters are the rejected entries");

    let (status, log) = survivor.interrupt();
    assert_eq!(status.code(), Some(130), "{log}");
    // At least what the killed worker held (more if, on a loaded machine,
    // one worker claimed entries of the other that looked idle).
    let told = " entries of Redis stream in were delivered again after a worker stopped";
    let again: u64 = log
        .lines()
        .find_map(|line| line.split_once(told).map(|(before, _)| before.rsplit(' ').next().unwrap().parse().unwrap()))
        .unwrap_or_else(|| panic!("no redelivery count:\n{log}"));
    assert!(again >= held, "{again} delivered again, {held} taken over:\n{log}");
    assert_eq!(pending(&mut con, "in", "g").0, 0);
}

/// A worker stopped with SIGINT hands back what it read but never finished,
/// and the other worker takes it at once: with `claim_idle` far longer than
/// this test may wait, nothing would otherwise reach it. A default-named
/// worker that stops holding nothing leaves the group.
#[test]
fn entries_a_stopped_worker_did_not_finish_go_to_the_other_at_once() {
    let server = RedisServer::start();
    let mut con = connect(&server);
    let scratch = Scratch::new();
    // Slow entries, so that the first worker has read far more than it
    // has finished when it is stopped.
    let entries: Vec<Vec<(&str, String)>> = (0..600).map(|i| vec![("value", format!("sleep:10:{i}"))]).collect();
    add(&mut con, "in", &entries);
    let stage = format!("[[stages]]\nname = \"t\"\nplugin = {:?}\nconcurrency = 1\n", guests::TEST_STAGE);
    scratch.write("pipeline.toml", pipeline(&server.url(), "claim_idle = \"10m\"", "lines", &stage));
    let mut first = Worker::start(&scratch, "first.log");
    wait_for(&mut con, 20, &mut [&mut first]);
    let mut second = Worker::start(&scratch, "second.log");
    let first_name = format!("-{}", first.child.id());
    let (status, log) = first.interrupt();
    assert_eq!(status.code(), Some(130), "{log}");
    let handed: u64 = log
        .lines()
        .find_map(|line| line.split_once("handed back ").and_then(|(_, rest)| rest.split(' ').next()?.parse().ok()))
        .unwrap_or_else(|| panic!("nothing handed back:\n{log}"));
    assert!(handed > 0, "{log}");

    wait_for(&mut con, 600, &mut [&mut second]);
    let done: BTreeSet<u64> = range(&mut con, "out").iter().map(|(_, f)| field(f, "value").parse().unwrap()).collect();
    assert_eq!(done, (0..600).collect(), "every entry, the handed-back ones too");
    let second_name = format!("-{}", second.child.id());
    let (status, log) = second.interrupt();
    assert_eq!(status.code(), Some(130), "{log}");
    assert_eq!(pending(&mut con, "in", "g").0, 0, "{log}");
    // The second held nothing when it stopped: its name is gone. The first's
    // stays, with nothing pending (its entries were claimed).
    let consumers: Vec<Vec<Value>> = ::redis::cmd("XINFO").arg("CONSUMERS").arg("in").arg("g").query(&mut con).unwrap();
    let names: Vec<String> = consumers
        .iter()
        .map(|c| {
            let at = c.iter().position(|v| *v == Value::BulkString(b"name".to_vec())).unwrap();
            ::redis::from_redis_value(c[at + 1].clone()).unwrap()
        })
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(&second_name)), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(&first_name)), "{names:?}");
}

/// The server drops every connection mid-run: the worker connects again,
/// sends again what was not added, and goes on; every entry reaches the
/// output (at least once) and is acknowledged.
#[test]
fn a_worker_goes_on_when_the_server_drops_its_connections() {
    let server = RedisServer::start();
    let mut con = connect(&server);
    let scratch = Scratch::new();
    let entries: Vec<Vec<(&str, String)>> = (0..400).map(|i| vec![("value", format!("sleep:5:{i}"))]).collect();
    add(&mut con, "in", &entries);
    let stage = format!("[[stages]]\nname = \"t\"\nplugin = {:?}\nconcurrency = 1\n", guests::TEST_STAGE);
    scratch.write("pipeline.toml", pipeline(&server.url(), "consumer = \"w\"", "lines", &stage));
    let mut worker = Worker::start(&scratch, "w.log");
    for at in [50, 150, 250] {
        wait_for(&mut con, at, &mut [&mut worker]);
        let killed: u64 = ::redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").query(&mut con).unwrap();
        assert!(killed >= 3, "the worker's connections: {killed}");
    }
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let done: BTreeSet<u64> =
            range(&mut con, "out").iter().map(|(_, f)| field(f, "value").parse().unwrap()).collect();
        if done.len() == 400 && pending(&mut con, "in", "g").0 == 0 {
            assert_eq!(done, (0..400).collect());
            break;
        }
        if let Some(status) = worker.child.try_wait().unwrap() {
            panic!("the worker ended ({status}):\n{}", worker.log());
        }
        assert!(Instant::now() < give_up, "{} of 400 written:\n{}", done.len(), worker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, log) = worker.interrupt();
    assert_eq!(status.code(), Some(130), "{log}");
}

/// `examples/redis` as its README runs it (on this test's server): the
/// load, two workers, the reader; the large orders come out as the
/// quickstart's file pipeline writes them, and the two bad orders as dead
/// letters.
#[test]
fn the_redis_example_does_what_its_readme_says() {
    let server = RedisServer::start();
    let mut con = connect(&server);
    let scratch = Scratch::new();
    let example = root().join("examples/redis");
    for file in ["load.toml", "pipeline.toml", "read.toml", "read-dead.toml"] {
        let text = std::fs::read_to_string(example.join(file)).unwrap();
        let text = text
            .replace("redis://127.0.0.1:6379", server.url().trim_end_matches('/'))
            .replace("../../target/", &format!("{}/", root().join("target").display()))
            .replace("../quickstart/", &format!("{}/", root().join("examples/quickstart").display()));
        scratch.write(file, text);
    }
    let run = |file: &str| Command::new(sluice_binary()).args(["run", file]).current_dir(scratch.dir.path()).output();
    let load = run("load.toml").unwrap();
    assert!(load.status.success(), "{}", String::from_utf8_lossy(&load.stderr));
    assert_eq!(len(&mut con, "orders"), 10, "one entry per line of the quickstart's input");
    let mut first = Worker::start(&scratch, "w1.log");
    let mut second = Worker::start(&scratch, "w2.log");
    let give_up = Instant::now() + Duration::from_secs(60);
    while len(&mut con, "orders-large") < 5 || len(&mut con, "orders-dead") < 2 {
        assert!(Instant::now() < give_up, "{}\n---\n{}", first.log(), second.log());
        assert!(first.child.try_wait().unwrap().is_none() && second.child.try_wait().unwrap().is_none());
        std::thread::sleep(Duration::from_millis(20));
    }
    let read = |file: &str| crate::support::read_for(scratch.dir.path(), file, Duration::from_millis(1500));
    let mut large: Vec<String> = read("read.toml").lines().map(str::to_owned).collect();
    large.sort();
    assert_eq!(large, crate::support::quickstart_outputs(&scratch.path("quickstart-dead.jsonl")));
    let dead = read("read-dead.toml");
    let stages: Vec<String> =
        dead.lines().map(|l| serde_json::from_str::<Json>(l).unwrap()["stage"].as_str().unwrap().to_owned()).collect();
    assert_eq!(stages.len(), 2, "{dead}");
    assert!(stages.contains(&"source".to_string()) && stages.contains(&"large-orders".to_string()), "{dead}");
    for worker in [first, second] {
        let (status, log) = worker.interrupt();
        assert_eq!(status.code(), Some(130), "{log}");
    }
    assert_eq!(pending(&mut con, "orders", "large-orders").0, 0, "every order acknowledged");
}

/// The metrics say how many entries of the stream the group has not yet been
/// given: the source's backlog, from the server.
#[test]
fn the_backlog_the_group_has_not_yet_been_given_is_a_metric() {
    let server = RedisServer::start();
    let mut con = connect(&server);
    let entries: Vec<Vec<(&str, String)>> = (0..300).map(|i| vec![("value", format!("sleep:20:m{i}"))]).collect();
    add(&mut con, "in", &entries);
    let scratch = Scratch::new();
    let addr = crate::metrics::free_addr();
    let stage = format!("[[stages]]\nname = \"slow\"\nplugin = \"{}\"\n", guests::TEST_STAGE);
    let file = pipeline(server.url().trim_end_matches('/'), "max_ack_pending = 10", "lines", &stage)
        + &format!("[metrics]\naddr = \"{addr}\"\n");
    scratch.write("pipeline.toml", file);
    let worker = Worker::start(&scratch, "worker.log");
    let scrape = crate::metrics::poll(addr, "/metrics", |_, body| {
        crate::metrics::sample(body, "sluice_source_backlog").is_some_and(|n| n > 0.0)
    });
    let backlog = crate::metrics::sample(&scrape, "sluice_source_backlog").unwrap();
    assert!(backlog <= 300.0, "{backlog}");
    let (status, log) = worker.interrupt();
    assert_eq!(status.code(), Some(130), "{log}");
}

/// Entries a worker has read but not yet sent on (its reader reads many at
/// once, and the pipeline takes them one by one behind a slow stage) are
/// kept from looking idle like those in the pipeline: the other worker never
/// claims them, so none is processed twice.
#[test]
fn entries_waiting_in_a_live_worker_are_not_claimed_by_another() {
    let server = RedisServer::start();
    let mut con = connect(&server);
    let scratch = Scratch::new();
    // Each worker reads far more than it works through within claim_idle:
    // what fills its channels, and a read of 256 more that waits for room.
    let entries: Vec<Vec<(&str, String)>> = (0..2000).map(|i| vec![("value", format!("sleep:20:{i}"))]).collect();
    for chunk in entries.chunks(1000) {
        add(&mut con, "in", chunk);
    }
    let stage = format!("[[stages]]\nname = \"t\"\nplugin = {:?}\nconcurrency = 1\n", guests::TEST_STAGE);
    scratch.write("pipeline.toml", pipeline(&server.url(), "claim_idle = \"2s\"", "lines", &stage));
    let mut first = Worker::start(&scratch, "first.log");
    let mut second = Worker::start(&scratch, "second.log");
    wait_for(&mut con, 2000, &mut [&mut first, &mut second]);
    let logs: Vec<String> = [first, second]
        .into_iter()
        .map(|worker| {
            let (status, log) = worker.interrupt();
            assert_eq!(status.code(), Some(130), "{log}");
            log
        })
        .collect();
    let logs = logs.join("\n---\n");
    let mut out: Vec<u64> = range(&mut con, "out").iter().map(|(_, f)| field(f, "value").parse().unwrap()).collect();
    out.sort();
    assert_eq!(out, (0..2000).collect::<Vec<_>>(), "each entry out once:\n{logs}");
    assert!(!logs.contains("claimed by another worker"), "{logs}");
    assert!(!logs.contains("delivered again"), "{logs}");
    assert_eq!(pending(&mut con, "in", "g").0, 0, "{logs}");
}

/// With state, acknowledgements wait for a checkpoint; one is taken as soon
/// as half of `max_ack_pending` waits, else the worker would hold all it may
/// and stall until `checkpoint_interval` (here far longer than the test).
#[test]
fn a_stateful_worker_checkpoints_before_it_holds_max_ack_pending() {
    let server = RedisServer::start();
    let mut con = connect(&server);
    let scratch = Scratch::new();
    let entries: Vec<Vec<(&str, String)>> =
        (0..100).map(|i| vec![("value", format!(r#"{{"user":"u{}","i":{i}}}"#, i % 3))]).collect();
    add(&mut con, "in", &entries);
    let stage = format!(
        "[[stages]]\nname = \"count\"\nplugin = {:?}\nconfig = {{ field = \"user\" }}\n",
        plugin("count-by-key.wasm")
    );
    let source = "consumer = \"w\"\nmax_ack_pending = 10\n\
                  [state]\npath = \"w.state.redb\"\ncheckpoint_interval = \"10m\"";
    scratch.write("pipeline.toml", pipeline(&server.url(), source, "jsonl", &stage));
    let mut worker = Worker::start(&scratch, "w.log");
    wait_for(&mut con, 100, &mut [&mut worker]);
    let (status, log) = worker.interrupt();
    assert_eq!(status.code(), Some(130), "{log}");
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (_, fields) in range(&mut con, "out") {
        let out: Json = serde_json::from_str(field(&fields, "value")).unwrap();
        let count = counts.entry(out["user"].as_str().unwrap().to_owned()).or_default();
        *count = (*count).max(out["count"].as_u64().unwrap());
    }
    assert_eq!(counts, BTreeMap::from([("u0".into(), 34), ("u1".into(), 33), ("u2".into(), 33)]));
    assert_eq!(pending(&mut con, "in", "g").0, 0, "{log}");
}

/// A dead letter keeps a key and header values that are not UTF-8 as their
/// bytes (a Redis field holds any bytes), as it keeps such a value.
#[test]
fn a_dead_letter_keeps_binary_key_and_header_values_as_bytes() {
    let server = RedisServer::start();
    let mut con = connect(&server);
    let scratch = Scratch::new();
    let _: String = ::redis::cmd("XADD")
        .arg("in")
        .arg("*")
        .arg("value")
        .arg("not json")
        .arg("key")
        .arg(&[0xffu8, b'k'][..])
        .arg("tag")
        .arg(&[0xc3u8, 0x28][..])
        .arg("colour")
        .arg("red")
        .query(&mut con)
        .unwrap();
    let stage = format!("[[stages]]\nname = \"upper\"\nplugin = {:?}\n", plugin("upper.wasm"));
    scratch.write("pipeline.toml", pipeline(&server.url(), "", "jsonl", &stage));
    let mut worker = Worker::start(&scratch, "w.log");
    wait_for(&mut con, 1, &mut [&mut worker]);
    let (status, log) = worker.interrupt();
    assert_eq!(status.code(), Some(130), "{log}");
    let dead = range(&mut con, "dead");
    let (record, _) = dead_letter(&dead[0].1);
    assert_eq!(record["error"], "input", "{record}");
    let message = &record["message"];
    assert_eq!(message["value_text"], "not json", "{record}");
    assert_eq!(message["key"], serde_json::json!([255, 107]), "{record}");
    assert_eq!(message["headers"], serde_json::json!([["tag", [195, 40]], ["colour", "red"]]), "{record}");
}

/// A worker that dies after committing its state and before Redis hears its
/// `XACK`: the next run takes the entries back (under the same consumer name,
/// from its pending list at once; under the default name, one per process,
/// by claiming them after `claim_idle`) and acknowledges them without
/// applying them to the state (or writing their outputs) a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_committed_but_not_yet_acknowledged_when_a_worker_dies_are_not_applied_twice() {
    for consumer in ["consumer = \"w\"\n", ""] {
        not_applied_twice_after_a_crash(consumer).await;
    }
}

async fn not_applied_twice_after_a_crash(consumer: &str) {
    use crate::support::{Cuttable, assert_counts, counting_pipeline, die_after_an_unheard_checkpoint, lines_out};
    const N: usize = 100;
    let server = RedisServer::start();
    let mut con = connect(&server);
    let entries: Vec<_> = (0..N).map(|i| vec![("value", format!("incr:k{}", i % 5))]).collect();
    add(&mut con, "in", &entries);
    let network = Cuttable::to(server.port()).await;
    let scratch = Scratch::new();
    let source = format!(
        "[source.redis]\nurl = \"redis://127.0.0.1:{}\"\nstream = \"in\"\ngroup = \"g\"\n{consumer}claim_idle = \"1s\"\n",
        network.port
    );
    scratch.write("pipeline.toml", counting_pipeline(&source));
    die_after_an_unheard_checkpoint(&scratch, &network, N).await;
    assert_eq!(pending(&mut con, "in", "g").0, N as u64, "Redis heard no acknowledgement");

    let give_up = Instant::now() + Duration::from_secs(60);
    let again = Worker::start(&scratch, "again.log");
    while pending(&mut con, "in", "g").0 > 0 {
        assert!(Instant::now() < give_up, "not all acknowledged: {}", again.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, log) = again.interrupt();
    assert_eq!(status.code(), Some(130), "{log}");
    assert_eq!(lines_out(&scratch), N, "each entry's output written once");
    assert_counts(&scratch, N / 5);
    assert!(log.contains(&format!("{N} inputs delivered again")), "{log}");
}

//! The source/sink seam: the connector kinds a pipeline file names, and the
//! in-memory source and sink an embedding program uses, with every input
//! acknowledged once what it led to is delivered.

use crate::support::{Scratch, guests, header, stage_with};
use sluice::{Acknowledged, Delivered, MemorySink, MemorySource, Message};
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::mpsc::{Receiver, UnboundedReceiver};

fn message(value: &str) -> Message {
    Message { key: None, value: value.as_bytes().to_vec(), headers: Vec::new(), timestamp: None }
}

/// A pipeline file whose file connectors are replaced in code.
fn pipeline(extra: &str) -> String {
    header("lines") + &stage_with("t", guests::TEST_STAGE, "", extra)
}

/// Everything that came out of an embedded run, in the order it was seen.
#[derive(Default)]
struct Seen {
    /// Outputs by input index.
    outputs: BTreeMap<u64, Vec<String>>,
    dead: Vec<serde_json::Value>,
    acks: Vec<Acknowledged>,
    /// For each ack: whether every output and dead letter its input led to
    /// had already arrived.
    acked_after_delivery: Vec<bool>,
}

/// Reads the three channels until they close. When an ack arrives, whatever
/// was sent before it is already in the other channels: take that first.
async fn watch(
    mut outputs: Receiver<Delivered>,
    mut dead: Receiver<Delivered>,
    mut acks: UnboundedReceiver<Acknowledged>,
    expected: impl Fn(u64) -> (usize, usize),
) -> Seen {
    let mut seen = Seen::default();
    let mut dead_by_input: BTreeMap<u64, usize> = BTreeMap::new();
    let (mut outputs_open, mut dead_open, mut acks_open) = (true, true, true);
    let take = |d: Delivered, seen: &mut Seen| {
        seen.outputs.entry(d.input).or_default().push(String::from_utf8(d.message.value).unwrap());
    };
    while outputs_open || dead_open || acks_open {
        tokio::select! {
            out = outputs.recv(), if outputs_open => match out {
                Some(d) => take(d, &mut seen),
                None => outputs_open = false,
            },
            letter = dead.recv(), if dead_open => match letter {
                Some(d) => {
                    *dead_by_input.entry(d.input).or_default() += 1;
                    seen.dead.push(serde_json::from_slice(&d.message.value).unwrap());
                }
                None => dead_open = false,
            },
            ack = acks.recv(), if acks_open => match ack {
                Some(ack) => {
                    while let Ok(d) = outputs.try_recv() {
                        take(d, &mut seen);
                    }
                    while let Ok(d) = dead.try_recv() {
                        *dead_by_input.entry(d.input).or_default() += 1;
                        seen.dead.push(serde_json::from_slice(&d.message.value).unwrap());
                    }
                    let (outs, letters) = expected(ack.input);
                    let got = seen.outputs.get(&ack.input).map_or(0, Vec::len);
                    let got_dead = dead_by_input.get(&ack.input).copied().unwrap_or(0);
                    seen.acked_after_delivery.push(got == outs && got_dead == letters);
                    seen.acks.push(ack);
                }
                None => acks_open = false,
            },
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn an_embedded_pipeline_reads_a_stream_and_delivers_on_channels() {
    let scratch = Scratch::new();
    // Unordered, so inputs finish out of order; a small sink channel, so the
    // receiver's pace reaches the source.
    let built = scratch.build(&pipeline("concurrency = 4\norder = \"unordered\"")).await.unwrap();
    let commands: Vec<String> = (0..200)
        .map(|i| match i % 5 {
            0 => format!("split:{}", i % 4),
            1 => format!("invalid:bad {i}"),
            2 => format!("sleep:{}:slept {i}", (i * 7) % 13),
            _ => format!("echo {i}"),
        })
        .collect();
    let expected = {
        let commands = commands.clone();
        move |input: u64| {
            let command = &commands[input as usize];
            match command.split_once(':') {
                Some(("split", n)) => (n.parse().unwrap(), 0),
                Some(("invalid", _)) => (0, 1),
                _ => (1, 0),
            }
        }
    };
    let mut source = MemorySource::from_iter(commands.iter().map(|c| message(c)).collect::<Vec<_>>());
    let acks = source.acknowledged();
    let (sink, outputs) = MemorySink::channel(4);
    let (dead_letters, dead) = MemorySink::channel(4);
    let run = tokio::spawn(built.with_source(source).with_sink(sink).with_dead_letters(dead_letters).run());
    let seen = watch(outputs, dead, acks, expected.clone()).await;
    let report = run.await.unwrap().unwrap();

    assert_eq!(report.read, 200);
    for (i, command) in commands.iter().enumerate() {
        let got = seen.outputs.get(&(i as u64)).cloned().unwrap_or_default();
        let want: Vec<String> = match command.split_once(':') {
            Some(("split", n)) => (0..n.parse::<u32>().unwrap()).map(|k| k.to_string()).collect(),
            Some(("invalid", _)) => vec![],
            Some(("sleep", rest)) => vec![rest.split_once(':').unwrap().1.to_string()],
            _ => vec![command.clone()],
        };
        assert_eq!(got, want, "the outputs of input {i} ({command})");
    }
    let dead: BTreeSet<u64> = seen.dead.iter().map(|d| d["input"]["index"].as_u64().unwrap()).collect();
    assert_eq!(dead, (0..200).filter(|i| i % 5 == 1).collect(), "the `invalid` inputs, each once");
    assert!(seen.dead.iter().all(|d| d["error"] == "invalid" && d["input"]["source"] == "memory"), "{:?}", seen.dead);

    // Every input acknowledged once, as delivered, and only once all it led to had arrived.
    let acked: BTreeSet<u64> = seen.acks.iter().map(|a| a.input).collect();
    assert_eq!(seen.acks.len(), 200, "one acknowledgement per input");
    assert_eq!(acked, (0..200).collect(), "every input acknowledged");
    assert!(seen.acks.iter().all(|a| a.delivered));
    assert!(seen.acked_after_delivery.iter().all(|&ok| ok), "an input was acknowledged before its outputs arrived");
    // Out of order, with a mark that only moves forward and ends at the last input.
    assert!(seen.acks.windows(2).any(|w| w[1].input < w[0].input), "unordered inputs finish out of order");
    let marks: Vec<u64> = seen.acks.iter().filter_map(|a| a.all_up_to).collect();
    assert!(marks.windows(2).all(|w| w[0] <= w[1]), "the contiguous mark went back: {marks:?}");
    assert_eq!(marks.last(), Some(&199));
    for ack in &seen.acks {
        if let Some(mark) = ack.all_up_to {
            let earlier: BTreeSet<u64> = seen.acks.iter().take_while(|a| a != &ack).map(|a| a.input).collect();
            assert!((0..=mark).all(|i| i == ack.input || earlier.contains(&i)), "mark {mark} passed an open input");
        }
    }
    // Nothing was written to the files the pipeline file names.
    assert!(!scratch.path("out").exists() && !scratch.path("dead.jsonl").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_embedded_run_never_acknowledges_what_it_did_not_deliver() {
    let scratch = Scratch::new();
    let built = scratch.build(&pipeline("")).await.unwrap();
    let mut source = MemorySource::from_iter((0..500).map(|i| message(&format!("echo {i}"))).collect::<Vec<_>>());
    let mut acks = source.acknowledged();
    let (sink, mut outputs) = MemorySink::channel(1);
    let (dead_letters, _dead) = MemorySink::channel(1);
    let run = tokio::spawn(built.with_source(source).with_sink(sink).with_dead_letters(dead_letters).run());
    // The receiver takes ten outputs and goes away: the sink can deliver no more.
    let mut received = BTreeSet::new();
    for _ in 0..10 {
        received.insert(outputs.recv().await.unwrap().input);
    }
    drop(outputs);
    let err = run.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("<memory>") && err.contains("dropped"), "{err}");
    let mut seen = BTreeSet::new();
    while let Some(ack) = acks.recv().await {
        assert!(seen.insert(ack.input), "input {} acknowledged twice", ack.input);
        if ack.delivered {
            assert!(received.contains(&ack.input), "input {} acknowledged but its output never arrived", ack.input);
        }
        if let Some(mark) = ack.all_up_to {
            assert!((0..=mark).all(|i| received.contains(&i)), "the mark {mark} passed an undelivered input");
        }
    }
}

#[tokio::test]
async fn connector_kinds_are_checked_with_their_settings() {
    let scratch = Scratch::new();
    let stage = stage_with("t", guests::TEST_STAGE, "", "");
    let cases = [
        (
            "[source]\ntype = \"stdin\"\npath = \"input\"\n",
            "<dir>/pipeline.toml:4:8: a `stdin` source reads standard input: remove `path`, or set `type = \"file\"`",
        ),
        ("[source]\ntype = \"file\"\n", "<dir>/pipeline.toml:3:8: a `file` source needs `path`: the file to read"),
        ("[sink]\ntype = \"file\"\n", "<dir>/pipeline.toml:3:8: a `file` sink needs `path`: the file to write"),
        (
            "[source]\ntype = \"kafka\"\n",
            "<dir>/pipeline.toml:3:8: `type` must be one of \"file\", \"stdin\", \"nats\" or \"redis\", not `\"kafka\"`",
        ),
        (
            "[source]\ntype = \"nats\"\n",
            "<dir>/pipeline.toml:3:8: a `nats` source needs its settings: add a [source.nats] table",
        ),
        (
            "[sink]\ntype = \"redis\"\n[sink.nats]\nsubject = \"out\"\n",
            "<dir>/pipeline.toml:3:8: `type = \"redis\"` but the settings are for nats: remove `type`, or the [sink.nats] table",
        ),
        (
            "[dead_letter]\npath = \"dead.jsonl\"\n[dead_letter.redis]\nstream = \"dead\"\n",
            "<dir>/pipeline.toml:4:1: [dead_letter] has both `path` and [dead_letter.redis]: keep one",
        ),
        (
            "[source.nats]\nstream = \"ORDERS\"\nconsumer = \"c\"\nkey_token = 0\nkey_header = \"my key\"\n",
            "<dir>/pipeline.toml:2:1: [source.nats] key_token counts the subject's tokens from 1: `key_token = 1` is the first\n\
             <dir>/pipeline.toml:2:1: [source.nats] key_header \"my key\" is not a NATS header name (letters, digits and punctuation but `:`)",
        ),
        (
            "[source.redis]\nstream = \"s\"\ngroup = \"g\"\nclaim_idle = \"100ms\"\n",
            "<dir>/pipeline.toml:2:1: [source.redis] claim_idle must be at least 1s: live workers' entries would be claimed from them",
        ),
        (
            "[source.nats]\nstream = \"ORDERS\"\n",
            "<dir>/pipeline.toml:2:1: missing key `consumer` in `nats`: add it, e.g. `consumer = \"enrich\"`",
        ),
    ];
    for (section, want) in cases {
        let err = scratch.build(&format!("version = 1\n{section}{stage}")).await.err().unwrap();
        assert_eq!(err, want, "for {section}");
    }
    // The kind a path implies, or says outright, runs the same.
    scratch.write("input", "a\nb\n");
    let explicit = "version = 1\n[source]\ntype = \"file\"\npath = \"input\"\nformat = \"lines\"\n\
                    [sink]\ntype = \"file\"\npath = \"out\"\nformat = \"lines\"\n\
                    [dead_letter]\ntype = \"file\"\npath = \"dead.jsonl\"\n";
    let report = scratch.build(&format!("{explicit}{stage}")).await.unwrap().run().await.unwrap();
    assert_eq!(report.written, 2);
    assert_eq!(std::fs::read_to_string(scratch.path("out")).unwrap(), "a\nb\n");
}

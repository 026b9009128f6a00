//! `sluice call PLUGIN MESSAGE...`: one stage run on messages given on the
//! command line, for trying a stage without writing a pipeline (as
//! `wasmtime run --invoke` or Fluvio's `smdk test --text`).
//!
//! It is a pipeline built in code (one stage, a memory source and memory
//! sinks), so the stage runs with the same sandbox, limits, errors and dead
//! letters as under `sluice run`. `sluice test` runs its cases through the
//! same [`run_messages`].

use super::outcome::{BadArgument, Outcome};
use anyhow::{Context, Result};
use sluice::{
    Delivered, Format, MemorySink, MemorySource, Message, Pipeline, PipelineConfig, StageConfig, StateBackend,
};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// Run one stage on messages given here, and print what it made of each:
/// its outputs, one per line, or its dead letter as `! <kind>: <reason>`
/// (both on stdout); what the stage logs goes to stderr. Exits 0 if every
/// message succeeded, 1 if any was dead-lettered, 78 if the plugin or its
/// config is wrong.
#[derive(clap::Args)]
pub(crate) struct CallCommand {
    /// The stage's component (a `.wasm` file).
    plugin: PathBuf,

    /// The stage's config, a JSON object, e.g. '{"field": "amount", "gte": 100}'.
    #[arg(long)]
    config: Option<String>,

    /// How messages are read and outputs written: `jsonl` (each message a
    /// JSON document; one that is not is an `input` dead letter) or `lines`
    /// (bytes as they are).
    #[arg(long, default_value = "jsonl", value_parser = parse_format)]
    format: Format,

    /// The messages, one per argument; `-` reads more from standard input,
    /// one per line.
    #[arg(required = true)]
    messages: Vec<String>,
}

impl CallCommand {
    pub(crate) async fn execute(self) -> Result<Outcome> {
        let mut stage = StageConfig::new(stage_name(&self.plugin), &self.plugin);
        if let Some(config) = &self.config {
            let value: serde_json::Value = serde_json::from_str(config).map_err(|e| {
                BadArgument(format!("--config is not JSON: {e}; give a JSON object, e.g. '{{\"k\": 1}}'"))
            })?;
            stage.set_config(value);
        }
        let mut config = PipelineConfig::new();
        config.push_stage(stage);
        config.source_mut().format = self.format;
        config.sink_mut().format = self.format;
        // Nothing of a trial run is kept.
        config.state_mut().backend = StateBackend::Memory;

        let messages = read_messages(&self.messages)?;
        let ran = run_messages(config, messages).await?;

        let mut out = std::io::stdout().lock();
        let mut failed = false;
        for input in 0..ran.inputs {
            for output in ran.outputs.iter().filter(|o| o.input == input) {
                out.write_all(&output.message.value)?;
                out.write_all(b"\n")?;
            }
            for dead in ran.dead_letters.iter().filter(|d| d.input == input) {
                // A stage's reason, escaped as the log has it: one line per
                // dead letter, and nothing that moves the terminal's cursor.
                writeln!(out, "! {}: {}", dead.error, sluice::log_safe(&dead.reason))?;
                failed = true;
            }
        }
        out.flush()?;
        Ok(if failed { Outcome::Failed } else { Outcome::Success })
    }
}

fn parse_format(text: &str) -> Result<Format, String> {
    match text {
        "jsonl" => Ok(Format::Jsonl),
        "lines" => Ok(Format::Lines),
        _ => Err("`jsonl` or `lines`".into()),
    }
}

/// A stage name from the plugin's file name: stage names are ASCII letters,
/// digits, `-` and `_`, so anything else becomes `-`.
pub(super) fn stage_name(plugin: &Path) -> String {
    let stem = plugin.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    if name.is_empty() { "stage".into() } else { name }
}

/// The arguments as messages, `-` standing for the lines of standard input.
fn read_messages(args: &[String]) -> Result<Vec<Vec<u8>>> {
    let mut messages = Vec::new();
    for arg in args {
        if arg == "-" {
            for line in std::io::stdin().lock().split(b'\n') {
                let mut line = line.context("reading messages from standard input")?;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                messages.push(line);
            }
        } else {
            messages.push(arg.clone().into_bytes());
        }
    }
    Ok(messages)
}

/// What a pipeline made of some messages.
pub(super) struct Ran {
    /// How many messages went in; outputs and dead letters name theirs by
    /// index.
    pub(super) inputs: u64,
    /// Every output, in the order the sink got them.
    pub(super) outputs: Vec<Delivered>,
    /// Every dead letter, in the order they were written.
    pub(super) dead_letters: Vec<DeadLetter>,
}

/// A dead letter, read from its record.
pub(super) struct DeadLetter {
    /// The input it came from.
    pub(super) input: u64,
    /// The stage that failed it (none for one the source refused).
    pub(super) stage: Option<String>,
    /// `invalid`, `transient`, `trap`, `limit`, `input` or `output`.
    pub(super) error: String,
    pub(super) reason: String,
}

/// Builds the pipeline `config` describes and runs it on `messages`, with
/// its source and sinks replaced by memory ones. Errors are the build's or
/// the run's, as `sluice run` has them (a bad plugin is a config error).
pub(super) async fn run_messages(config: PipelineConfig, messages: Vec<Vec<u8>>) -> Result<Ran> {
    let inputs = messages.len() as u64;
    let source = MemorySource::from_iter(messages.into_iter().map(Message::from_value));
    let (sink, outputs) = MemorySink::channel(64);
    let (dead_sink, dead) = MemorySink::channel(64);
    let pipeline = Pipeline::build(config).await?.with_source(source).with_sink(sink).with_dead_letters(dead_sink);
    // The channels are bounded: drain them while the run goes on.
    let outputs = tokio::spawn(drain(outputs));
    let dead = tokio::spawn(drain(dead));
    let run = pipeline.run().await;
    let outputs = outputs.await.context("collecting outputs")?;
    let dead = dead.await.context("collecting dead letters")?;
    run?;
    let dead_letters = dead.into_iter().map(read_dead_letter).collect::<Result<_>>()?;
    Ok(Ran { inputs, outputs, dead_letters })
}

async fn drain(mut rx: tokio::sync::mpsc::Receiver<Delivered>) -> Vec<Delivered> {
    let mut all = Vec::new();
    while let Some(delivered) = rx.recv().await {
        all.push(delivered);
    }
    all
}

/// What `call` and `test` read of a dead-letter record. Only these fields:
/// the record also holds the message, whose JSON need not fit serde_json's
/// numbers (`1e400`), and is skipped unread.
#[derive(serde::Deserialize)]
struct Record {
    stage: Option<String>,
    #[serde(default)]
    error: String,
    #[serde(default)]
    reason: String,
}

fn read_dead_letter(delivered: Delivered) -> Result<DeadLetter> {
    let record: Record =
        serde_json::from_slice(&delivered.message.value).context("a dead-letter record that is not JSON")?;
    Ok(DeadLetter { input: delivered.input, stage: record.stage, error: record.error, reason: record.reason })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn a_dead_letter_is_read_whatever_numbers_its_message_holds() {
        let text = br#"{"stage":"s","error":"invalid","reason":"too big","message":{"amount":1e400}}"#;
        let record: super::Record = serde_json::from_slice(text).unwrap();
        assert_eq!((record.stage.as_deref(), &*record.error, &*record.reason), (Some("s"), "invalid", "too big"));
    }

    #[test]
    fn a_plugin_file_name_becomes_a_valid_stage_name() {
        assert_eq!(super::stage_name(Path::new("target/plugins/json-filter.wasm")), "json-filter");
        assert_eq!(super::stage_name(Path::new("my stage.v2.wasm")), "my-stage-v2");
        assert_eq!(super::stage_name(Path::new("")), "stage");
    }
}

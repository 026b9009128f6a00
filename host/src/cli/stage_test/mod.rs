//! `sluice test [FILE]`: cases declared in a TOML file beside a stage or a
//! pipeline (as `vector test` and `rpk connect test` have them), each run on
//! a fresh pipeline through the library, so a stage is tested with the same
//! sandbox, limits and dead letters as it runs under `sluice run`.
//!
//! ```toml
//! plugin = "target/upper.wasm"     # a stage, or `pipeline = "pipeline.toml"`
//! config = { field = "amount" }    # the stage's config (plugin only)
//! format = "jsonl"                 # how inputs and outputs are written
//!
//! [[case]]
//! name = "keeps large orders"
//! input = ['{"amount": 150}', '{"amount": 5}']
//! output = ['{"amount": 150}']
//! dead_letters = [{ error = "invalid", reason = "a substring" }]
//! state_before = { "k" = "1" }     # the state the case starts from
//! state = { "k" = "3" }            # the state after
//! ```
//!
//! `state_before` and `state` are written alike: for a plugin, key = value;
//! for a pipeline, one table per stage (`{ count = { k = "1" } }`); a keyed
//! stage's (`partition_by = "key"`) keys are `partition/key`, the message key
//! first (`/k` for messages without one, as `sluice test`'s inputs are).
//! Values are text: a string as it is, any other TOML value as TOML writes
//! it (`3`, `1.5`). A case without `state_before` starts from empty state.

mod diff;
mod state;

use super::call::{DeadLetter, run_messages, stage_name};
use super::outcome::{Decided, Outcome};
use anyhow::{Context, Result};
use diff::{diff, lists_match};
use serde::Deserialize;
use sluice::{ConfigError, DeadLetterErrorKind, Format, PipelineConfig, StageConfig, StateBackend};
use state::{Seeds, seeds_of, state_problems};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Run the cases of a test file against a stage or a pipeline, and print
/// `ok` or `FAILED` (with what was expected and what came) for each. Exits
/// 0 if all pass, 1 if any fails, 78 if the file (or the stage or pipeline
/// it names) is wrong.
#[derive(clap::Args)]
pub(crate) struct TestCommand {
    /// The cases file (TOML).
    #[arg(default_value = "sluice-test.toml")]
    file: PathBuf,
}

/// The cases file. Paths in it are relative to it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    /// The stage's component, tested alone...
    plugin: Option<Spanned<PathBuf>>,
    /// ...or a pipeline file, whose source and sinks the cases replace.
    pipeline: Option<Spanned<PathBuf>>,
    /// The stage's config (with `plugin`).
    config: Option<Spanned<toml::Table>>,
    /// How inputs are read and outputs written: default `jsonl`, or for a
    /// pipeline, its own source and sink formats.
    format: Option<Format>,
    #[serde(rename = "case", default)]
    cases: Vec<Spanned<Case>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    input: Vec<String>,
    /// Every output, in order; none if left out.
    #[serde(default)]
    output: Vec<String>,
    /// Every dead letter, in order; none if left out.
    #[serde(default)]
    dead_letters: Vec<ExpectedDeadLetter>,
    /// The state the case starts from, written as `state` is.
    state_before: Option<Spanned<toml::Table>>,
    /// The state after the case: for a plugin, key = value; for a pipeline,
    /// stage = { key = value }. Compared only if given.
    state: Option<Spanned<toml::Table>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedDeadLetter {
    /// The error kind: a misspelt one is the file's mistake, not a case
    /// that fails.
    error: DeadLetterErrorKind,
    /// A substring of the reason.
    #[serde(default)]
    reason: String,
    /// The stage that failed it (any, if left out).
    stage: Option<Spanned<String>>,
}

/// What a dead letter's `stage` is for what its source and sink refused.
const SOURCE_AND_SINK: [&str; 2] = ["source", "sink"];

/// What the cases run against.
enum Target {
    Plugin { name: String, plugin: PathBuf, config: Option<serde_json::Value> },
    Pipeline(Box<PipelineConfig>),
}

impl Target {
    /// Each stage's name, and whether it is keyed (`partition_by`).
    fn stages(&self) -> Vec<(String, bool)> {
        match self {
            Target::Plugin { name, .. } => vec![(name.clone(), false)],
            Target::Pipeline(config) => {
                config.stages().iter().map(|s| (s.name().to_string(), s.execution().partition_by.is_some())).collect()
            }
        }
    }
}

impl TestCommand {
    pub(crate) async fn execute(self) -> Result<Outcome> {
        let text = std::fs::read_to_string(&self.file).map_err(|e| Decided {
            outcome: Outcome::ConfigError,
            message: format!("{}: cannot read the cases file: {e}", self.file.display()),
        })?;
        let bad = |span: Option<Range<usize>>, message: String| -> anyhow::Error {
            // `file:line:col: message`, as the pipeline file's errors are written.
            let message = ConfigError::new(Some(&self.file), Some(&text), span, message).to_string();
            Decided { outcome: Outcome::ConfigError, message }.into()
        };
        let file: CasesFile = toml::from_str(&text).map_err(|e| bad(e.span(), e.message().to_string()))?;
        let dir = self.file.parent().unwrap_or(Path::new("")).to_path_buf();
        let target = match (&file.plugin, &file.pipeline) {
            (Some(plugin), None) => {
                let path = dir.join(plugin.get_ref());
                if !path.is_file() {
                    return Err(bad(
                        Some(plugin.span()),
                        format!(
                            "plugin {} not found (a path here is relative to the cases file): build the stage \
                             first (`sluice build`)",
                            path.display()
                        ),
                    ));
                }
                Target::Plugin {
                    name: stage_name(plugin.get_ref()),
                    plugin: path,
                    config: file.config.as_ref().map(|c| serde_json::to_value(c.get_ref())).transpose()?,
                }
            }
            (None, Some(pipeline)) => {
                if let Some(config) = &file.config {
                    return Err(bad(
                        Some(config.span()),
                        "`config` is for a `plugin`: a pipeline's stages have theirs in the pipeline file".into(),
                    ));
                }
                Target::Pipeline(Box::new(PipelineConfig::from_file(dir.join(pipeline.get_ref()))?))
            }
            (Some(_), Some(pipeline)) => {
                return Err(bad(Some(pipeline.span()), "give `plugin` or `pipeline`, not both".into()));
            }
            (None, None) => {
                return Err(bad(None, "no `plugin = \"stage.wasm\"` or `pipeline = \"pipeline.toml\"` to test".into()));
            }
        };
        if file.cases.is_empty() {
            return Err(bad(None, "no cases: add a [[case]] table with a `name` and an `input`".into()));
        }
        let stages = target.stages();
        let names: Vec<&str> = stages.iter().map(|(name, _)| name.as_str()).collect();
        for case in &file.cases {
            // A stage that is not there would make the case fail whatever
            // the stage does: the file is wrong, not the stage.
            for expected in &case.get_ref().dead_letters {
                let Some(stage) = &expected.stage else { continue };
                if !names.contains(&stage.get_ref().as_str()) && !SOURCE_AND_SINK.contains(&stage.get_ref().as_str()) {
                    return Err(bad(
                        Some(stage.span()),
                        format!(
                            "a dead letter's `stage` is `{}`, but the stages are: {} (or `source`, `sink` for what they refuse)",
                            stage.get_ref(),
                            names.join(", ")
                        ),
                    ));
                }
            }
            let (Some(state), Target::Pipeline(_)) = (&case.get_ref().state, &target) else { continue };
            if let Some((stage, _)) = state.get_ref().iter().find(|(_, v)| !v.is_table()) {
                return Err(bad(
                    Some(state.span()),
                    format!(
                        "a pipeline's `state` is per stage: `state = {{ \"<stage>\" = {{ key = \"value\" }} }}`, but `{stage}` is not a table"
                    ),
                ));
            }
            if let Some((stage, _)) = state.get_ref().iter().find(|(stage, _)| !names.contains(&stage.as_str())) {
                return Err(bad(
                    Some(state.span()),
                    format!("`state` names stage `{stage}`, but the pipeline's stages are: {}", names.join(", ")),
                ));
            }
        }

        // Every case's initial state is checked before any runs: a mistake
        // in the file is found at once, not after the cases before it.
        let pipeline = matches!(target, Target::Pipeline(_));
        let mut seeds = Vec::with_capacity(file.cases.len());
        for case in &file.cases {
            seeds.push(match &case.get_ref().state_before {
                Some(table) => seeds_of(&stages, pipeline, table.get_ref()).map_err(|m| bad(Some(table.span()), m))?,
                None => Seeds::new(),
            });
        }

        let (mut passed, mut failed) = (0, 0);
        for (case, seeds) in file.cases.iter().zip(&seeds) {
            let case = case.get_ref();
            let problems = run_case(&target, &stages, file.format, case, seeds).await.map_err(|e| {
                // A plugin that cannot be built is placed at its line here;
                // a pipeline's errors name their line in the pipeline file.
                match (&file.plugin, Outcome::of_error(&e)) {
                    (Some(plugin), Outcome::ConfigError) => bad(Some(plugin.span()), format!("{e:#}")),
                    _ => e,
                }
            })?;
            if problems.is_empty() {
                println!("ok {}", case.name);
                passed += 1;
            } else {
                println!("FAILED {}", case.name);
                for problem in problems {
                    println!("{problem}");
                }
                failed += 1;
            }
        }
        println!("{passed} passed, {failed} failed");
        Ok(if failed == 0 { Outcome::Success } else { Outcome::Failed })
    }
}

/// Runs one case on a fresh pipeline; what differs from what it expects, as
/// readable diffs (none: it passed). `stages`: each stage's name and whether it
/// is keyed.
async fn run_case(
    target: &Target,
    stages: &[(String, bool)],
    format: Option<Format>,
    case: &Case,
    seeds: &Seeds,
) -> Result<Vec<String>> {
    let mut config = match target {
        Target::Plugin { name, plugin, config: stage_config } => {
            let mut stage = StageConfig::new(name.as_str(), plugin);
            if let Some(c) = stage_config {
                stage.set_config(c.clone());
            }
            let mut config = PipelineConfig::new();
            config.push_stage(stage);
            let format = format.unwrap_or_default();
            config.source_mut().format = format;
            config.sink_mut().format = format;
            config
        }
        Target::Pipeline(config) => {
            let mut config = PipelineConfig::clone(config);
            if let Some(format) = format {
                config.source_mut().format = format;
                config.sink_mut().format = format;
            }
            config
        }
    };
    let output_format = config.sink().format;
    // A fresh store for every case. Initial state is written into the store
    // file before the run and state after is read back from it once the run
    // committed, so a case with either gets one.
    let store = tempfile::tempdir().context("creating a directory for the case's state")?;
    let store_file = store.path().join("state.redb");
    if case.state.is_some() || !seeds.is_empty() {
        config.state_mut().backend = StateBackend::Redb;
        config.state_mut().path = Some(store_file.clone());
        for (stage, entries) in seeds {
            sluice::state::write_state(&store_file, stage, entries)
                .with_context(|| format!("writing the initial state of `{stage}` for case `{}`", case.name))?;
        }
    } else {
        config.state_mut().backend = StateBackend::Memory;
    }
    let inputs = case.input.iter().map(|i| i.clone().into_bytes()).collect();
    let ran = match run_messages(config, inputs).await {
        Ok(ran) => ran,
        // A stage or config that cannot be built is the file's problem;
        // a run that fails is this case's.
        Err(e) if Outcome::of_error(&e) == Outcome::ConfigError => return Err(e),
        Err(e) => return Ok(vec![format!("  the run failed: {e:#}")]),
    };

    let mut problems = Vec::new();
    // The source's dead letters and each stage's reach the sink by
    // different paths: in input order, they compare the same from run to run.
    let mut dead_letters = ran.dead_letters;
    dead_letters.sort_by_key(|d| d.input);
    let got: Vec<String> = ran.outputs.iter().map(|o| String::from_utf8_lossy(&o.message.value).into_owned()).collect();
    let same_output = |a: &String, b: &String| match output_format {
        Format::Jsonl => {
            match (serde_json::from_str::<serde_json::Value>(a), serde_json::from_str::<serde_json::Value>(b)) {
                (Ok(a), Ok(b)) => a == b,
                _ => a == b,
            }
        }
        _ => a == b,
    };
    if !lists_match(&case.output, &got, same_output) {
        problems.push(format!(
            "  outputs (- expected, + got):\n{}",
            diff(&case.output, &got, same_output, |s| s.clone(), |s| s.clone())
        ));
    }

    let matches = |want: &ExpectedDeadLetter, got: &DeadLetter| {
        want.error.name() == got.error
            && got.reason.contains(&want.reason)
            && want.stage.as_ref().is_none_or(|s| got.stage.as_deref() == Some(s.get_ref()))
    };
    if !lists_match(&case.dead_letters, &dead_letters, matches) {
        let want = |d: &ExpectedDeadLetter| match &d.stage {
            Some(stage) => format!("[{}] {}: …{}…", stage.get_ref(), d.error.name(), d.reason),
            None => format!("{}: …{}…", d.error.name(), d.reason),
        };
        // A stage's reason, escaped as the log has it: it cannot break the
        // diff's lines or reach the terminal as control sequences.
        let got = |d: &DeadLetter| match &d.stage {
            Some(stage) => format!("[{stage}] {}: {} (input {})", d.error, sluice::log_safe(&d.reason), d.input + 1),
            None => format!("{}: {} (input {})", d.error, sluice::log_safe(&d.reason), d.input + 1),
        };
        problems.push(format!(
            "  dead letters (- expected, + got):\n{}",
            diff(&case.dead_letters, &dead_letters, matches, want, got)
        ));
    }

    if let Some(expected) = &case.state {
        problems.extend(state_problems(target, expected.get_ref(), stages, &store_file)?);
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_names_the_file_line_and_column() {
        let text = "plugin = \"x.wasm\"\nbogus = 1\n";
        let at = text.find("bogus").unwrap();
        let error = sluice::ConfigError::new(
            Some(std::path::Path::new("t.toml")),
            Some(text),
            Some(at..at + 5),
            "unknown field",
        );
        let message = error.to_string();
        assert_eq!(message, "t.toml:2:1: unknown field");
    }
}

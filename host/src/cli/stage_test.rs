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

use super::call::{DeadLetter, run_messages, stage_name};
use super::outcome::{Decided, Outcome};
use anyhow::{Context, Result};
use serde::Deserialize;
use sluice::state::StateEntry;
use sluice::{Format, PipelineConfig, StageConfig, StateBackend};
use std::collections::BTreeMap;
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
    /// The error kind: `invalid`, `transient`, `trap`, `limit`, `input`, `output`.
    error: String,
    /// A substring of the reason.
    #[serde(default)]
    reason: String,
    /// The stage that failed it (any, if left out).
    stage: Option<String>,
}

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

/// The entries to write into each stage's state before a case runs.
type Seeds = Vec<(String, Vec<StateEntry>)>;

impl TestCommand {
    pub(crate) async fn execute(self) -> Result<Outcome> {
        let text = std::fs::read_to_string(&self.file).map_err(|e| Decided {
            outcome: Outcome::ConfigError,
            message: format!("{}: cannot read the cases file: {e}", self.file.display()),
        })?;
        let bad = |span: Option<Range<usize>>, message: String| -> anyhow::Error {
            Decided { outcome: Outcome::ConfigError, message: locate(&self.file, &text, span, &message) }.into()
        };
        let file: CasesFile = toml::from_str(&text).map_err(|e| bad(e.span(), e.message().to_string()))?;
        let dir = self.file.parent().unwrap_or(Path::new("")).to_path_buf();
        let target = match (&file.plugin, &file.pipeline) {
            (Some(plugin), None) => Target::Plugin {
                name: stage_name(plugin.get_ref()),
                plugin: dir.join(plugin.get_ref()),
                config: file.config.as_ref().map(|c| serde_json::to_value(c.get_ref())).transpose()?,
            },
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
        for case in &file.cases {
            let (Some(state), Target::Pipeline(_)) = (&case.get_ref().state, &target) else { continue };
            if let Some((stage, _)) = state.get_ref().iter().find(|(_, v)| !v.is_table()) {
                return Err(bad(
                    Some(state.span()),
                    format!(
                        "a pipeline's `state` is per stage: `state = {{ \"<stage>\" = {{ key = \"value\" }} }}`, but `{stage}` is not a table"
                    ),
                ));
            }
        }

        // Every case's initial state is checked before any runs: a mistake
        // in the file is found at once, not after the cases before it.
        let stages = target.stages();
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
            let problems = run_case(&target, file.format, case, seeds).await?;
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

/// `file:line:col: message`, as the pipeline file's errors are written.
fn locate(file: &Path, text: &str, span: Option<Range<usize>>, message: &str) -> String {
    match span {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{}:{line}:{col}: {message}", file.display())
        }
        None => format!("{}: {message}", file.display()),
    }
}

/// Runs one case on a fresh pipeline; what differs from what it expects, as
/// readable diffs (none: it passed).
async fn run_case(target: &Target, format: Option<Format>, case: &Case, seeds: &Seeds) -> Result<Vec<String>> {
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
    let stages = target.stages();

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
        want.error == got.error
            && got.reason.contains(&want.reason)
            && want.stage.as_ref().is_none_or(|s| got.stage.as_deref() == Some(s))
    };
    if !lists_match(&case.dead_letters, &dead_letters, matches) {
        let want = |d: &ExpectedDeadLetter| match &d.stage {
            Some(stage) => format!("[{stage}] {}: …{}…", d.error, d.reason),
            None => format!("{}: …{}…", d.error, d.reason),
        };
        let got = |d: &DeadLetter| match &d.stage {
            Some(stage) => format!("[{stage}] {}: {} (input {})", d.error, d.reason, d.input + 1),
            None => format!("{}: {} (input {})", d.error, d.reason, d.input + 1),
        };
        problems.push(format!(
            "  dead letters (- expected, + got):\n{}",
            diff(&case.dead_letters, &dead_letters, matches, want, got)
        ));
    }

    if let Some(expected) = &case.state {
        let expected = expected_state(target, expected.get_ref());
        let mut got = BTreeMap::new();
        for (stage, keyed) in &stages {
            if !expected.contains_key(stage) {
                continue;
            }
            let entries =
                if store_file.exists() { sluice::state::read_state(&store_file, stage, *keyed)? } else { Vec::new() };
            let entries: BTreeMap<String, String> = entries
                .into_iter()
                .map(|e| {
                    let key = String::from_utf8_lossy(&e.key).into_owned();
                    let key = match e.partition {
                        Some(p) => format!("{}/{key}", String::from_utf8_lossy(&p)),
                        None => key,
                    };
                    (key, String::from_utf8_lossy(&e.value).into_owned())
                })
                .collect();
            got.insert(stage.clone(), entries);
        }
        for (stage, want) in &expected {
            let have = got.remove(stage).unwrap_or_default();
            if *want != have {
                let lines =
                    |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>();
                let (want, have) = (lines(want), lines(&have));
                let title = match target {
                    Target::Plugin { .. } => "  state after (- expected, + got):".to_string(),
                    Target::Pipeline(_) => format!("  state of `{stage}` after (- expected, + got):"),
                };
                problems.push(format!("{title}\n{}", diff(&want, &have, |a, b| a == b, |s| s.clone(), |s| s.clone())));
            }
        }
    }
    Ok(problems)
}

/// The entries `state_before` writes, per stage, or what is wrong with it.
/// `stages`: each stage's name and whether it is keyed; `pipeline`: the
/// table is per stage (else it is the one stage's key = value).
fn seeds_of(stages: &[(String, bool)], pipeline: bool, table: &toml::Table) -> Result<Seeds, String> {
    let entries = |stage: &str, keyed: bool, t: &toml::Table| -> Result<Vec<StateEntry>, String> {
        t.iter()
            .map(|(k, v)| {
                if v.is_table() {
                    return Err(if pipeline {
                        format!("`{stage}.{k}` is a table, but a state value is text, a number or a boolean")
                    } else {
                        format!(
                            "`{k}` is a table, but a plugin's `state_before` is key = value (tables per stage are for a `pipeline`)"
                        )
                    });
                }
                let (partition, key) = if keyed {
                    let (partition, key) = k.split_once('/').ok_or_else(|| {
                        format!(
                            "`{k}`: stage `{stage}` is keyed (`partition_by`), so its state's keys are written `partition/key`, the message key first (`/{k}` for messages without a key)"
                        )
                    })?;
                    (Some(partition.as_bytes().to_vec()), key)
                } else {
                    (None, k.as_str())
                };
                Ok(StateEntry { partition, key: key.as_bytes().to_vec(), value: as_text(v).into_bytes() })
            })
            .collect()
    };
    if !pipeline {
        let Some((stage, keyed)) = stages.first() else { return Ok(Seeds::new()) };
        return Ok(vec![(stage.clone(), entries(stage, *keyed, table)?)]);
    }
    let mut seeds = Seeds::new();
    for (stage, value) in table {
        let Some((_, keyed)) = stages.iter().find(|(name, _)| name == stage) else {
            let names: Vec<&str> = stages.iter().map(|(name, _)| name.as_str()).collect();
            return Err(format!(
                "`state_before` names stage `{stage}`, but the pipeline's stages are: {}",
                names.join(", ")
            ));
        };
        let Some(t) = value.as_table() else {
            return Err(format!(
                "a pipeline's `state_before` is per stage: `state_before = {{ \"<stage>\" = {{ key = \"value\" }} }}`, but `{stage}` is not a table"
            ));
        };
        seeds.push((stage.clone(), entries(stage, *keyed, t)?));
    }
    Ok(seeds)
}

/// The expected state, per stage (a plugin's is named after its file). Values are
/// compared as text (a number is written as TOML writes it).
fn expected_state(target: &Target, table: &toml::Table) -> BTreeMap<String, BTreeMap<String, String>> {
    let entries = |t: &toml::Table| t.iter().map(|(k, v)| (k.clone(), as_text(v))).collect();
    match target {
        Target::Plugin { name, .. } => BTreeMap::from([(name.clone(), entries(table))]),
        Target::Pipeline(_) => {
            table.iter().filter_map(|(stage, v)| v.as_table().map(|t| (stage.clone(), entries(t)))).collect()
        }
    }
}

fn as_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn lists_match<A, B>(want: &[A], got: &[B], same: impl Fn(&A, &B) -> bool) -> bool {
    want.len() == got.len() && want.iter().zip(got).all(|(a, b)| same(a, b))
}

/// A line diff of `want` against `got` (longest common subsequence): `  `
/// for a line in both, `- ` expected only, `+ ` got only.
fn diff<A, B>(
    want: &[A],
    got: &[B],
    same: impl Fn(&A, &B) -> bool,
    show_want: impl Fn(&A) -> String,
    show_got: impl Fn(&B) -> String,
) -> String {
    let (n, m) = (want.len(), got.len());
    // lcs[i][j]: the longest common subsequence of want[i..] and got[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if same(&want[i], &got[j]) { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut lines = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && same(&want[i], &got[j]) {
            lines.push(format!("      {}", show_got(&got[j])));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            lines.push(format!("    - {}", show_want(&want[i])));
            i += 1;
        } else {
            lines.push(format!("    + {}", show_got(&got[j])));
            j += 1;
        }
    }
    if lines.is_empty() {
        lines.push("    (none)".into());
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::diff;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_diff_marks_what_is_missing_and_what_is_extra() {
        let want = strings(&["a", "b", "c"]);
        let got = strings(&["a", "x", "c", "d"]);
        let text = diff(&want, &got, |a, b| a == b, |s| s.clone(), |s| s.clone());
        assert_eq!(text, "      a\n    - b\n    + x\n      c\n    + d");
    }

    fn seeds(stages: &[(&str, bool)], pipeline: bool, toml: &str) -> Result<Vec<(String, Vec<String>)>, String> {
        let stages: Vec<(String, bool)> = stages.iter().map(|(s, k)| (s.to_string(), *k)).collect();
        let table: toml::Table = toml.parse().unwrap();
        let seeds = super::seeds_of(&stages, pipeline, &table)?;
        let show = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        Ok(seeds
            .into_iter()
            .map(|(stage, entries)| {
                let entries = entries
                    .iter()
                    .map(|e| match &e.partition {
                        Some(p) => format!("[{}] {} = {}", show(p), show(&e.key), show(&e.value)),
                        None => format!("{} = {}", show(&e.key), show(&e.value)),
                    })
                    .collect();
                (stage, entries)
            })
            .collect())
    }

    #[test]
    fn initial_state_values_are_text_and_keyed_keys_split_at_the_first_slash() {
        let got = seeds(&[("count", false)], false, "a = \"x y\"\nb = 3\nc = 1.5\nd = true").unwrap();
        assert_eq!(got, vec![("count".into(), strings(&["a = x y", "b = 3", "c = 1.5", "d = true"]))]);
        let got = seeds(
            &[("plain", false), ("keyed", true)],
            true,
            "plain = { k = \"1\" }\nkeyed = { \"user-1/k\" = 2, \"/k\" = 3, \"u/a/b\" = 4 }",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("keyed".into(), strings(&["[] k = 3", "[u] a/b = 4", "[user-1] k = 2"])),
                ("plain".into(), strings(&["k = 1"])),
            ]
        );
    }

    #[test]
    fn initial_state_for_a_stage_that_is_not_there_or_not_as_a_table_is_refused() {
        let stages = [("large-orders", false), ("tag", false)];
        assert_eq!(
            seeds(&stages, true, "tga = { k = \"1\" }").unwrap_err(),
            "`state_before` names stage `tga`, but the pipeline's stages are: large-orders, tag"
        );
        assert!(seeds(&stages, true, "tag = \"1\"").unwrap_err().contains("but `tag` is not a table"));
        assert!(seeds(&stages, true, "tag = { k = { a = 1 } }").unwrap_err().contains("`tag.k` is a table"));
        assert!(
            seeds(&[("s", false)], false, "s = { k = 1 }")
                .unwrap_err()
                .contains("tables per stage are for a `pipeline`")
        );
        let keyed = seeds(&[("s", true)], true, "s = { k = 1 }").unwrap_err();
        assert!(keyed.contains("`partition/key`") && keyed.contains("`/k`"), "{keyed}");
    }

    #[test]
    fn an_error_names_the_file_line_and_column() {
        let text = "plugin = \"x.wasm\"\nbogus = 1\n";
        let at = text.find("bogus").unwrap();
        let message = super::locate(std::path::Path::new("t.toml"), text, Some(at..at + 5), "unknown field");
        assert_eq!(message, "t.toml:2:1: unknown field");
    }
}

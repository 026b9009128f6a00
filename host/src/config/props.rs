//! Property tests: whatever text a pipeline file holds, parsing it never
//! panics, and every problem comes back as a `ConfigErrors` naming the file,
//! with locations that point inside the text.

use super::plain_words::rust_words;
use super::{ConfigErrors, PipelineConfig};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

/// A pipeline file using every section, one line per key, with what kind of
/// value each key takes, so a mutation can give it a value of another kind.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// A header, comment or blank line: no value.
    Other,
    Int,
    Str,
    /// A string or an integer: byte sizes such as `"64MiB"` or `1024`.
    StrOrInt,
    Bool,
    Table,
    Array,
}

const SEED: &[(&str, Kind)] = &[
    ("# every section, every kind of value", Kind::Other),
    ("version = 1", Kind::Int),
    ("shutdown_timeout = \"5s\"", Kind::Str),
    ("", Kind::Other),
    ("[source]", Kind::Other),
    ("path = \"input.jsonl\"", Kind::Str),
    ("format = \"jsonl\"", Kind::Str),
    ("max_line_bytes = 4096", Kind::Int),
    ("skip_lines = 0", Kind::Int),
    ("[sink]", Kind::Other),
    ("path = \"output.jsonl\"", Kind::Str),
    ("format = \"lines\"", Kind::Str),
    ("[dead_letter]", Kind::Other),
    ("path = \"dead.jsonl\"", Kind::Str),
    ("[engine]", Kind::Other),
    ("allocator = \"on-demand\"", Kind::Str),
    ("[state]", Kind::Other),
    ("backend = \"memory\"", Kind::Str),
    ("checkpoint_every = 100", Kind::Int),
    ("checkpoint_interval = \"1s\"", Kind::Str),
    ("[limits]", Kind::Other),
    ("timeout = \"10s\"", Kind::Str),
    ("memory = \"64MiB\"", Kind::StrOrInt),
    ("max_outputs = 100", Kind::Int),
    ("[[stages]]", Kind::Other),
    ("name = \"first\"", Kind::Str),
    ("plugin = \"stage.wasm\"", Kind::Str),
    ("config = { field = \"amount\", gte = 100, nested = { list = [1, \"é\", true] } }", Kind::Table),
    ("limits = { fuel = 1000000, max_output_bytes = \"1MiB\" }", Kind::Table),
    ("grants = { env = { TZ = \"UTC\" }, allow_http = [\"127.0.0.1:8080\"] }", Kind::Table),
    ("concurrency = 4", Kind::Int),
    ("order = \"unordered\"", Kind::Str),
    ("buffer = 16", Kind::Int),
    ("retries = { max = 2, backoff = \"10ms\", max_backoff = \"1s\" }", Kind::Table),
    ("emit = \"on-success\"", Kind::Str),
    ("[[stages]]", Kind::Other),
    ("name = \"second\"", Kind::Str),
    ("plugin = \"stage.wasm\"", Kind::Str),
    ("isolate = true", Kind::Bool),
    ("partition_by = \"key\"", Kind::Str),
];

/// A value of each kind, some of them awkward: unicode, huge and negative
/// numbers, dates, empty and nested containers.
fn value_of(kind: Kind) -> BoxedStrategy<String> {
    match kind {
        Kind::Other => Just(String::new()).boxed(),
        Kind::Int => prop_oneof![
            Just("0".to_string()),
            Just("-1".to_string()),
            Just("18446744073709551616".to_string()),
            Just("9223372036854775807".to_string()),
            Just("0x7fff_ffff".to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
        ]
        .boxed(),
        Kind::Str | Kind::StrOrInt => prop_oneof![
            Just("\"\"".to_string()),
            Just("\"🦀 ünïcödé\"".to_string()),
            Just("'''multi\nline'''".to_string()),
            any::<String>().prop_map(|s| toml::Value::String(s).to_string()),
        ]
        .boxed(),
        Kind::Bool => prop_oneof![Just("true".to_string()), Just("false".to_string())].boxed(),
        Kind::Table => prop_oneof![
            Just("{}".to_string()),
            Just("{ a = { b = { c = [] } } }".to_string()),
            Just("{ \"ключ\" = 1.5e300 }".to_string()),
        ]
        .boxed(),
        Kind::Array => prop_oneof![
            Just("[]".to_string()),
            Just("[1, \"two\", 3.0, [4]]".to_string()),
            Just("[1979-05-27T07:32:00Z]".to_string()),
            Just("[{ x = 1 }, nan, -inf]".to_string()),
        ]
        .boxed(),
    }
}

fn kinds_other_than(kind: Kind) -> Vec<Kind> {
    let accepted: &[Kind] = match kind {
        Kind::StrOrInt => &[Kind::Str, Kind::Int],
        _ => &[kind],
    };
    [Kind::Int, Kind::Str, Kind::Bool, Kind::Table, Kind::Array].into_iter().filter(|k| !accepted.contains(k)).collect()
}

/// A plugin file for the seed to name, so the unmutated seed is valid.
fn dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stage.wasm"), b"").unwrap();
        dir
    })
    .path()
}

fn pipeline_file() -> PathBuf {
    dir().join("pipeline.toml")
}

fn seed_lines() -> Vec<String> {
    SEED.iter().map(|(line, _)| line.to_string()).collect()
}

/// The largest char boundary at or before `at`.
fn floor_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

/// Parses `text` and checks what every outcome must satisfy; returns the errors.
fn parse_checked(text: &str) -> Result<Option<ConfigErrors>, TestCaseError> {
    let file = pipeline_file();
    let errors = match PipelineConfig::parse(text, Some(&file)) {
        Ok(_) => return Ok(None),
        Err(errors) => errors,
    };
    prop_assert!(!errors.0.is_empty(), "an Err with no error in it");
    let lines: Vec<&str> = text.split('\n').collect();
    for e in &errors.0 {
        prop_assert_eq!(e.file.as_deref(), Some(file.as_path()));
        prop_assert!(!e.message.trim().is_empty(), "an error without a message: {:?}", e);
        if let Some((line, col)) = e.location {
            prop_assert!(
                line >= 1 && line <= lines.len(),
                "line {} outside the text ({} lines): {}",
                line,
                lines.len(),
                e
            );
            let chars = lines[line - 1].chars().count();
            prop_assert!(col >= 1 && col <= chars + 1, "column {} outside line {} ({} chars): {}", col, line, chars, e);
        }
        let shown = e.to_string();
        prop_assert!(shown.starts_with(&format!("{}:", file.display())), "the error does not name the file: {}", shown);
        let rust = rust_words(&e.message);
        prop_assert!(rust.is_empty(), "the error speaks Rust ({:?}): {}", rust, shown);
    }
    Ok(Some(errors))
}

/// One change to the seed file.
#[derive(Debug, Clone)]
enum Mutation {
    /// Line `.0` gets a value of another kind.
    WrongType(usize, String),
    /// A line `key = value` with a key no section knows, before line `.0`.
    UnknownKey(usize, String, String),
    /// The text is cut after `.0` bytes.
    Truncate(usize),
    /// `.1` is inserted at byte `.0`.
    Insert(usize, String),
    /// Line `.0` is removed.
    DeleteLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let valued: Vec<usize> = (0..SEED.len()).filter(|&i| SEED[i].1 != Kind::Other).collect();
    let text_len = seed_lines().join("\n").len();
    let wrong_type = proptest::sample::select(valued).prop_flat_map(|i| {
        proptest::sample::select(kinds_other_than(SEED[i].1))
            .prop_flat_map(value_of)
            .prop_map(move |v| Mutation::WrongType(i, v))
    });
    let unknown_key = (0..=SEED.len(), "x_[a-z]{1,8}", value_of(Kind::Int))
        .prop_map(|(i, key, value)| Mutation::UnknownKey(i, key, value));
    let junk = prop_oneof![
        any::<String>(),
        "[\\[\\]{}=\"',.#\\n a-z0-9_-]{1,12}",
        Just("\u{0}".to_string()),
        Just("\u{feff}".to_string()),
        Just("é".to_string()),
        Just("\r\n".to_string()),
    ];
    prop_oneof![
        wrong_type,
        unknown_key,
        (0..=text_len).prop_map(Mutation::Truncate),
        ((0..=text_len), junk).prop_map(|(at, s)| Mutation::Insert(at, s)),
        (0..SEED.len()).prop_map(Mutation::DeleteLine),
    ]
}

fn apply(m: &Mutation) -> String {
    let mut lines = seed_lines();
    match m {
        Mutation::WrongType(i, value) => {
            let key = lines[*i].split(" = ").next().unwrap().to_string();
            lines[*i] = format!("{key} = {value}");
        }
        Mutation::UnknownKey(i, key, value) => lines.insert(*i, format!("{key} = {value}")),
        Mutation::DeleteLine(i) => {
            lines.remove(*i);
        }
        Mutation::Truncate(at) => {
            let text = lines.join("\n");
            return text[..floor_boundary(&text, *at)].to_string();
        }
        Mutation::Insert(at, junk) => {
            let mut text = lines.join("\n");
            text.insert_str(floor_boundary(&text, *at), junk);
            return text;
        }
    }
    lines.join("\n")
}

#[test]
fn the_seed_is_a_valid_pipeline() {
    let config = PipelineConfig::parse(&seed_lines().join("\n"), Some(&pipeline_file())).unwrap();
    assert_eq!(config.stages().len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        parse_checked(&text)?;
    }

    #[test]
    fn toml_like_text_never_panics(text in "[\\[\\]{}=\"'.,#\\n\\r\\t a-z0-9_é🦀-]{0,200}") {
        parse_checked(&text)?;
    }

    #[test]
    fn mutated_pipelines_fail_with_located_errors(m in mutation()) {
        let text = apply(&m);
        let errors = parse_checked(&text)?;
        // Mutations that must be refused, at the line they touched.
        let must_fail_at = match &m {
            Mutation::WrongType(i, _) => Some(i + 1),
            Mutation::UnknownKey(i, _, _) => Some(i + 1),
            _ => None,
        };
        if let Some(line) = must_fail_at {
            let errors = errors.ok_or_else(|| TestCaseError::fail(format!("accepted:\n{text}")))?;
            prop_assert!(
                errors.0.iter().any(|e| e.location.map(|(l, _)| l) == Some(line)),
                "no error at line {}: {}\n{}", line, errors, text
            );
        }
    }
}

//! Pipeline-file errors speak the user's words: no Rust type names, no
//! serde phrases, whatever is wrong in the file.

use super::PipelineConfig;
use std::path::Path;

/// Rust type names and serde's phrases in `message`, outside the text in
/// backticks or quotes (what the user wrote, or an example).
pub(super) fn rust_words(message: &str) -> Vec<String> {
    const TYPES: &[&str] = &[
        "usize",
        "isize",
        "u8",
        "u16",
        "u32",
        "u64",
        "u128",
        "i8",
        "i16",
        "i32",
        "i64",
        "i128",
        "f32",
        "f64",
        "bool",
        "str",
        "String",
        "PathBuf",
        "Option",
        "Vec",
        "Duration",
        "ByteSize",
        "SocketAddr",
        "Spanned",
        "struct",
        "enum",
        "map",
        "sequence",
        "variant",
        "untagged",
        "field",
    ];
    const PHRASES: &[&str] = &["invalid type", "invalid value", "invalid length", "parsable", "wanted string"];
    let mut plain = String::new();
    let mut quoted = None;
    for c in message.chars() {
        match (quoted, c) {
            (None, '`' | '"') => quoted = Some(c),
            (Some(q), c) if c == q => quoted = None,
            (None, c) => plain.push(c),
            (Some(_), _) => {}
        }
    }
    let tokens = plain.split(|c: char| !(c.is_alphanumeric() || c == '_'));
    let mut found: Vec<String> = tokens.filter(|t| TYPES.contains(t)).map(str::to_string).collect();
    found.extend(PHRASES.iter().filter(|p| plain.contains(*p)).map(|p| p.to_string()));
    found
}

#[test]
fn rust_words_are_found_outside_quotes_only() {
    assert_eq!(rust_words("invalid type: string \"x\", expected usize"), ["usize", "invalid type"]);
    assert_eq!(rust_words("expected struct LimitsConfig"), ["struct"]);
    assert!(rust_words("`concurrency` must be a whole number, e.g. `concurrency = 4`, not `\"u64\"`").is_empty());
}

/// Every key given a value of each wrong kind, and broken files besides:
/// no message speaks Rust.
#[test]
fn no_error_speaks_rust() {
    let stage = "[[stages]]\nname = \"a\"\nplugin = \"a.wasm\"\n";
    // Every top-level key, every section's and a stage's, given a value of
    // each wrong kind, and then some.
    let mut broken: Vec<String> = Vec::new();
    let values = ["\"text\"", "-1", "2.5", "true", "1979-05-27", "[1]", "{ a = 1 }", "18446744073709551615"];
    let keys = [
        ("", "version"),
        ("", "shutdown_timeout"),
        ("", "source"),
        ("", "sink"),
        ("", "dead_letter"),
        ("", "limits"),
        ("", "engine"),
        ("", "state"),
        ("", "metrics"),
        ("", "stages"),
        ("[source]\n", "type"),
        ("[source]\n", "path"),
        ("[source]\n", "format"),
        ("[source]\n", "max_line_bytes"),
        ("[source]\n", "skip_lines"),
        ("[sink]\n", "type"),
        ("[sink]\n", "flush_interval"),
        ("[dead_letter]\npath = \"d.jsonl\"\n", "type"),
        ("[engine]\n", "allocator"),
        ("[engine]\n", "memory_budget"),
        ("[state]\n", "backend"),
        ("[state]\n", "checkpoint_every"),
        ("[state]\n", "checkpoint_interval"),
        ("[state]\n", "max_pending_bytes"),
        ("[metrics]\n", "addr"),
        ("[limits]\n", "fuel"),
        ("[limits]\n", "timeout"),
        ("[limits]\n", "memory"),
        ("[limits]\n", "max_outputs"),
        ("[limits]\n", "max_log_records"),
        ("[limits]\n", "init_timeout"),
        ("[limits]\n", "max_state_bytes"),
        ("[limits]\n", "max_http_requests"),
    ];
    for (section, key) in keys {
        for value in values {
            broken.push(match key {
                "version" => format!("version = {value}\n{stage}"),
                "stages" => format!("version = 1\nstages = {value}\n"),
                _ => format!("version = 1\n{section}{key} = {value}\n{stage}"),
            });
        }
    }
    let stage_keys = [
        "name",
        "plugin",
        "config",
        "limits",
        "grants",
        "concurrency",
        "order",
        "partition_by",
        "buffer",
        "retries",
        "batch",
        "isolate",
        "recycle_after",
        "batch_window",
        "emit",
    ];
    for key in stage_keys {
        for value in values {
            broken.push(format!("version = 1\n[[stages]]\nname = \"a\"\nplugin = \"a.wasm\"\n{key} = {value}\n"));
        }
    }
    for value in values {
        for inner in ["max", "backoff", "max_backoff"] {
            broken.push(format!("version = 1\n{stage}retries = {{ {inner} = {value} }}\n"));
        }
        for inner in ["read_dirs", "env", "allow_http"] {
            broken.push(format!("version = 1\n{stage}grants = {{ {inner} = {value} }}\n"));
            broken.push(format!("version = 1\n{stage}grants = {{ {inner} = {{ x = {value} }} }}\n"));
        }
    }
    broken.extend(
        [
            "",
            "version = 1\nstages = [[]]\n",
            "version = 1\nstages = [1]\n",
            "version = 1\n[[stages]]\n",
            "version = 1\n[dead_letter]\n",
            "version = 1\n[metrics]\naddr = \"nowhere\"\n",
            "version = 1\nversion = 1\n",
            "version = \n",
            "version = 1\n[source\n",
            "version = 1\nsource = { path = \"a\", path = \"b\" }\n",
            "version = 99999999999999999999\n",
        ]
        .map(String::from),
    );
    let file = Path::new("pipeline.toml");
    for text in &broken {
        let errors = PipelineConfig::parse(text, Some(file)).err().unwrap_or_else(|| panic!("accepted:\n{text}"));
        for e in &errors.0 {
            let rust = rust_words(&e.message);
            assert!(rust.is_empty(), "{rust:?} in {e}\nfor:\n{text}");
        }
    }
}

//! The stage author's loop (issue 15): `sluice call` runs one stage on
//! messages given on the command line; `sluice test` runs the cases of a
//! TOML file against a stage or a whole pipeline. The real binary, on the
//! plugins the test build makes (`target/plugins`).

use crate::resume::sluice_binary;
use crate::support::{Scratch, guests, root};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn plugin(name: &str) -> String {
    root().join("target/plugins").join(name).display().to_string()
}

/// `sluice <args>` in `dir`, to the end.
fn sluice(dir: &Path, args: &[&str]) -> Output {
    Command::new(sluice_binary())
        .args(args)
        .current_dir(dir)
        .env("SLUICE_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn call_prints_each_output_of_a_stage() {
    let scratch = Scratch::new();
    let upper = plugin("upper.wasm");
    let out = sluice(scratch.dir.path(), &["call", &upper, r#"{"name": "ada"}"#, r#"["x"]"#]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "{\"NAME\": \"ADA\"}\n[\"X\"]\n");
}

#[test]
fn call_reads_messages_from_stdin_with_a_dash() {
    let scratch = Scratch::new();
    let mut child = Command::new(sluice_binary())
        .args(["call", "--format", "lines", &plugin("upper.wasm"), "first", "-"])
        .current_dir(scratch.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"second\nthird\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "FIRST\nSECOND\nTHIRD\n");
}

#[test]
fn call_prints_a_dead_letter_and_exits_1() {
    let scratch = Scratch::new();
    let filter = plugin("json-filter.wasm");
    let out = sluice(
        scratch.dir.path(),
        &[
            "call",
            &filter,
            "--config",
            r#"{"field": "amount", "gte": 100}"#,
            r#"{"amount": 150}"#,
            r#"{"amount": "lots"}"#,
            r#"{"amount": 5}"#,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // In input order: the first passes, the second is rejected, the third dropped.
    assert_eq!(
        stdout, "{\"amount\": 150}\n! invalid: field `amount` is a string, but `gte` needs a number\n",
        "{stderr}"
    );
}

#[test]
fn call_escapes_the_control_characters_of_a_reason() {
    let scratch = Scratch::new();
    // A reason that would break the one-line-per-message output and clear
    // the user's terminal.
    let out =
        sluice(scratch.dir.path(), &["call", "--format", "lines", guests::TEST_STAGE, "invalid:\n\x1b[2Jrrr", "x"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stdout, "! invalid: \\n\\u{1b}[2Jrrr\nx\n");
}

#[test]
fn test_escapes_the_control_characters_of_a_reason() {
    let scratch = Scratch::new();
    scratch.write(
        "cases.toml",
        format!(
            "plugin = {:?}\nformat = \"lines\"\n\n[[case]]\nname = \"r\"\ninput = [\"invalid:\\n\\u001b[2Jrrr\"]\n",
            guests::TEST_STAGE
        ),
    );
    let out = sluice(scratch.dir.path(), &["test", "cases.toml"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("] invalid: \\n\\u{1b}[2Jrrr (input 1)\n"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "{stdout}");
}

#[test]
fn call_with_a_config_the_stage_refuses_is_a_config_error() {
    let scratch = Scratch::new();
    let out = sluice(scratch.dir.path(), &["call", &plugin("json-filter.wasm"), "--config", r#"{"feild": "a"}"#, "{}"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stdout}{stderr}");
    assert!(stderr.contains("unknown field `feild`"), "{stderr}");
}

/// A cases file for json-filter (keeps `amount >= 100`) with `cases` after it.
fn filter_cases(cases: &str) -> String {
    format!("plugin = {:?}\nconfig = {{ field = \"amount\", gte = 100 }}\n\n{cases}", plugin("json-filter.wasm"))
}

#[test]
fn test_passes_when_every_case_does() {
    let scratch = Scratch::new();
    // Outputs compare as JSON: spacing and key order do not matter.
    scratch.write(
        "sluice-test.toml",
        filter_cases(
            r#"
[[case]]
name = "keeps large orders"
input = ['{"amount": 150, "id": 1}', '{"amount": 5}']
output = ['{"id":1,"amount":150}']

[[case]]
name = "rejects a string amount"
input = ['{"amount": "lots"}', '{"amount": 200}']
output = ['{"amount": 200}']
dead_letters = [{ error = "invalid", reason = "is a string" }]
"#,
        ),
    );
    let out = sluice(scratch.dir.path(), &["test"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, "ok keeps large orders\nok rejects a string amount\n2 passed, 0 failed\n");
}

#[test]
fn test_fails_with_a_diff_of_expected_and_got() {
    let scratch = Scratch::new();
    let file = scratch.write(
        "cases.toml",
        filter_cases(
            r#"
[[case]]
name = "passes"
input = ['{"amount": 100}']
output = ['{"amount": 100}']

[[case]]
name = "wrong threshold"
input = ['{"amount": 150}', '{"amount": 500}']
output = ['{"amount": 150}', '{"amount": 5}']

[[case]]
name = "expects a dead letter that does not come"
input = ['{"amount": 1}']
dead_letters = [{ error = "invalid", reason = "too small" }]
"#,
        ),
    );
    let out = sluice(scratch.dir.path(), &["test", file.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let expected = "\
ok passes
FAILED wrong threshold
  outputs (- expected, + got):
      {\"amount\": 150}
    - {\"amount\": 5}
    + {\"amount\": 500}
FAILED expects a dead letter that does not come
  dead letters (- expected, + got):
    - invalid: …too small…
1 passed, 2 failed
";
    assert_eq!(stdout, expected, "{stderr}");
}

#[test]
fn test_checks_the_state_a_stage_leaves() {
    let scratch = Scratch::new();
    let file = scratch.write(
        "cases.toml",
        format!(
            r#"plugin = {:?}
config = {{ field = "user" }}

[[case]]
name = "counts per user"
input = ['{{"user": "a"}}', '{{"user": "b"}}', '{{"user": "a"}}']
output = ['{{"user": "a", "count": 1}}', '{{"user": "b", "count": 1}}', '{{"user": "a", "count": 2}}']
state = {{ a = "2", b = "1" }}

[[case]]
name = "each case starts from empty state"
input = ['{{"user": "a"}}']
output = ['{{"user": "a", "count": 1}}']
state = {{ a = "2" }}
"#,
            plugin("count-by-key.wasm")
        ),
    );
    let out = sluice(scratch.dir.path(), &["test", file.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let expected = "\
ok counts per user
FAILED each case starts from empty state
  state after (- expected, + got):
    - a = 2
    + a = 1
1 passed, 1 failed
";
    assert_eq!(stdout, expected, "{stderr}");
}

#[test]
fn a_bad_cases_file_names_its_line_and_exits_78() {
    let scratch = Scratch::new();
    let file = scratch.write("cases.toml", filter_cases("[[case]]\nname = \"typo\"\ninptu = ['{\"amount\": 1}']\n"));
    let out = sluice(scratch.dir.path(), &["test", "cases.toml"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stdout}{stderr}");
    let line = 1 + std::fs::read_to_string(&file).unwrap().lines().position(|l| l.starts_with("inptu")).unwrap();
    assert!(stderr.contains(&format!("cases.toml:{line}:1: unknown field `inptu`")), "{stderr}");
    assert_eq!(stdout, "");
}

#[test]
fn test_runs_cases_through_a_whole_pipeline() {
    let scratch = Scratch::new();
    let quickstart = root().join("examples/quickstart");
    let quote = |line: &str| format!("'{line}'");
    let inputs: Vec<String> =
        std::fs::read_to_string(quickstart.join("input.jsonl")).unwrap().lines().map(quote).collect();
    // What the README shows the quickstart writing.
    let outputs = [
        r#"{"id": 1, "card": "****1111", "customer": {"name": "Ada", "email": "****.com"}, "amount_eur": 250.0, "review": {"queue": "large-orders"}}"#,
        r#"{"id": 3, "card": "****0009", "customer": {"name": "Chen", "email": "****.org"}, "amount_eur": 980, "review": {"queue": "large-orders"}}"#,
        r#"{"id": 5, "card": "****0000", "customer": {"name": "Emeka", "email": "****.com"}, "amount_eur": 100, "review": {"queue": "large-orders"}}"#,
        r#"{"id": 7, "card": "****2222", "customer": {"name": "Goran"}, "amount_eur": 1500, "review": {"queue": "large-orders"}}"#,
        r#"{"id": 10, "card": "****5556", "customer": {"name": "Ivo", "email": "****.com"}, "amount_eur": 310.4, "review": {"queue": "large-orders"}}"#,
    ];
    let outputs: Vec<String> = outputs.iter().map(|l| quote(l)).collect();
    scratch.write(
        "sluice-test.toml",
        format!(
            "pipeline = {:?}\n\n[[case]]\nname = \"the quickstart\"\ninput = [\n{}\n]\noutput = [\n{}\n]\n\
             dead_letters = [\n  {{ error = \"invalid\", stage = \"large-orders\", reason = \"`amount` is a string\" }},\n  \
             {{ error = \"input\", reason = \"not JSON\" }},\n]\n",
            quickstart.join("pipeline.toml").display().to_string(),
            inputs.join(",\n"),
            outputs.join(",\n"),
        ),
    );
    let out = sluice(scratch.dir.path(), &["test"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, "ok the quickstart\n1 passed, 0 failed\n");
}

#[test]
fn a_case_starts_from_the_state_it_declares() {
    let scratch = Scratch::new();
    let file = scratch.write(
        "cases.toml",
        format!(
            r#"plugin = {:?}
config = {{ field = "user" }}

[[case]]
name = "counts on from the seeded state"
state_before = {{ a = "5", c = 7 }}
input = ['{{"user": "a"}}', '{{"user": "b"}}', '{{"user": "a"}}']
output = ['{{"user": "a", "count": 6}}', '{{"user": "b", "count": 1}}', '{{"user": "a", "count": 7}}']
state = {{ a = "7", b = "1", c = "7" }}

[[case]]
name = "expects the seed ignored"
state_before = {{ a = "5" }}
input = ['{{"user": "a"}}']
output = ['{{"user": "a", "count": 1}}']
state = {{ a = "1" }}
"#,
            plugin("count-by-key.wasm")
        ),
    );
    let out = sluice(scratch.dir.path(), &["test", file.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let expected = "\
ok counts on from the seeded state
FAILED expects the seed ignored
  outputs (- expected, + got):
    - {\"user\": \"a\", \"count\": 1}
    + {\"count\":6,\"user\":\"a\"}
  state after (- expected, + got):
    - a = 1
    + a = 6
1 passed, 1 failed
";
    assert_eq!(stdout, expected, "{stderr}");
}

/// A pipeline of two counting stages, the second keyed, for `sluice test`.
fn two_counters(scratch: &Scratch) {
    scratch.write(
        "pipeline.toml",
        format!(
            r#"version = 1

[source]
path = "input.jsonl"

[[stages]]
name = "all"
plugin = {plugin:?}
config = {{ field = "user" }}

[[stages]]
name = "keyed"
plugin = {plugin:?}
config = {{ field = "user" }}
partition_by = "key"
"#,
            plugin = plugin("count-by-key.wasm")
        ),
    );
}

#[test]
fn a_pipeline_case_seeds_each_stage_and_a_keyed_stage_by_message_key() {
    let scratch = Scratch::new();
    two_counters(&scratch);
    // The cases' messages have no key: the keyed stage's partition is empty.
    scratch.write(
        "sluice-test.toml",
        r#"pipeline = "pipeline.toml"

[[case]]
name = "both stages count on"
state_before = { all = { a = "1" }, keyed = { "/a" = "10" } }
input = ['{"user": "a"}', '{"user": "a"}']
output = ['{"user": "a", "count": 11}', '{"user": "a", "count": 12}']
state = { all = { a = "3" }, keyed = { "/a" = "12" } }
"#,
    );
    let out = sluice(scratch.dir.path(), &["test"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, "ok both stages count on\n1 passed, 0 failed\n");
}

#[test]
fn initial_state_for_a_stage_the_pipeline_lacks_names_its_line_and_exits_78() {
    let scratch = Scratch::new();
    two_counters(&scratch);
    scratch.write(
        "sluice-test.toml",
        "pipeline = \"pipeline.toml\"\n\n[[case]]\nname = \"typo\"\ninput = ['{\"user\": \"a\"}']\n\
         state_before = { al = { a = \"1\" } }\n",
    );
    let out = sluice(scratch.dir.path(), &["test"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "sluice-test.toml:6:16: `state_before` names stage `al`, but the pipeline's stages are: all, keyed"
        ),
        "{stderr}"
    );
    assert_eq!(stdout, "");
}

/// `sluice test` of a cases file for the two-counter pipeline whose one case
/// ends with `line` (a mistake in it); its stderr, after checking it exits
/// 78 having run nothing.
fn a_wrong_case(line: &str) -> String {
    let scratch = Scratch::new();
    two_counters(&scratch);
    scratch.write(
        "sluice-test.toml",
        format!("pipeline = \"pipeline.toml\"\n\n[[case]]\nname = \"typo\"\ninput = ['{{\"user\": \"a\"}}']\n{line}\n"),
    );
    let out = sluice(scratch.dir.path(), &["test"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stdout}{stderr}");
    assert_eq!(stdout, "");
    stderr
}

#[test]
fn a_case_naming_a_stage_or_error_that_is_not_there_names_its_line_and_exits_78() {
    let stderr = a_wrong_case("state = { all = { a = \"1\" }, nosuch = { k = \"1\" } }");
    assert!(
        stderr
            .contains("sluice-test.toml:6:9: `state` names stage `nosuch`, but the pipeline's stages are: all, keyed"),
        "{stderr}"
    );
    let stderr = a_wrong_case("dead_letters = [{ error = \"invalid\", stage = \"nosuch\" }]");
    assert!(stderr.contains("sluice-test.toml:6:46: a dead letter's `stage` is `nosuch`"), "{stderr}");
    let stderr = a_wrong_case("dead_letters = [{ error = \"invalidd\" }]");
    assert!(stderr.contains("sluice-test.toml:6:27: unknown variant `invalidd`"), "{stderr}");
}

#[test]
fn a_missing_plugin_is_named_at_its_line_in_the_cases_file() {
    let scratch = Scratch::new();
    scratch.write("cases.toml", "plugin = \"nothere.wasm\"\n\n[[case]]\nname = \"x\"\ninput = ['{}']\n");
    let out = sluice(scratch.dir.path(), &["test", "cases.toml"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(78), "{stdout}{stderr}");
    assert!(stderr.contains("cases.toml:1:10: plugin nothere.wasm not found"), "{stderr}");
}

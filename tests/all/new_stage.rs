//! The stage author's loop from outside the repository (issue 15): `sluice
//! new --lang L` in a temporary directory, `sluice build` there with the
//! toolchain it needs (installing what needs no root in sluice's cache), then
//! the built stage through `sluice run`, `sluice test` and `sluice call`. The
//! real binary, as a user would run it.
//!
//! A first build installs componentize-py or componentize-js (about a minute
//! each) or Zig (Zig then builds its translate-c, a minute and a half), and
//! builds Rust's standard library for the stage (minutes): one test per
//! language, each doing the whole loop.

use crate::resume::sluice_binary;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `sluice <args>` in `dir`, to the end.
fn sluice(dir: &Path, args: &[&str]) -> Output {
    // The toolchains `sluice build` installs without root (componentize-py,
    // componentize-js, Zig) go where the plugins' builds put theirs: the
    // same versions, installed once per checkout instead of twice.
    let toolchains = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/toolchains");
    Command::new(sluice_binary())
        .args(args)
        .current_dir(dir)
        .env("SLUICE_TOOLCHAINS", toolchains)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn succeeds(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// new → build → run → test → call, for one language, in a fresh directory
/// outside the repository.
fn the_loop(lang: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("shout-{lang}");
    succeeds(&sluice(tmp.path(), &["new", "--lang", lang, &name]), "sluice new");
    let project = tmp.path().join(&name);

    let built = succeeds(&sluice(&project, &["build"]), "sluice build");
    let wasm = project.join("target").join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "{} missing after: {built}", wasm.display());

    // The pipeline it made runs the stage over its two lines of input.
    let run = succeeds(&sluice(&project, &["run", "pipeline.toml"]), "sluice run");
    assert_eq!(run, "HELLO, WORLD\n{\"NAME\": \"ADA\", \"CITY\": \"ZüRICH\"}\n");

    // Its cases pass as written.
    let test = succeeds(&sluice(&project, &["test"]), "sluice test");
    assert!(test.contains("2 passed, 0 failed"), "{test}");

    // And its error path works: an empty message is dead-lettered.
    let plugin = wasm.display().to_string();
    let call = sluice(&project, &["call", "--log", "sluice::stage=debug", "--format", "lines", &plugin, "ok", ""]);
    let stderr = String::from_utf8_lossy(&call.stderr);
    assert_eq!(call.status.code(), Some(1), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&call.stdout), "OK\n! invalid: empty message\n");
    // What `init` logs reaches the host's log. The C and Zig stages format it
    // with libc (snprintf) or std.fmt: C's stdio imports WASI preview 1, which
    // `sluice build` adapts.
    assert!(stderr.contains(&format!("{name} starting with config {{}}")), "{stderr}");
}

#[test]
fn a_new_rust_stage_builds_runs_and_passes_its_tests() {
    the_loop("rust");
}

#[test]
fn a_new_python_stage_builds_runs_and_passes_its_tests() {
    the_loop("python");
}

#[test]
fn a_new_javascript_stage_builds_runs_and_passes_its_tests() {
    the_loop("js");
}

#[test]
fn a_new_c_stage_builds_runs_and_passes_its_tests() {
    the_loop("c");
}

#[test]
fn a_new_zig_stage_builds_runs_and_passes_its_tests() {
    the_loop("zig");
}

/// `sluice build --dir NAME` from the project's parent: a relative `--dir`
/// builds as `--dir .` does from inside (it once named the project twice for
/// the toolchains that run in it: `st-c/st-c/...`).
fn builds_from_a_relative_dir(lang: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("st-{lang}");
    succeeds(&sluice(tmp.path(), &["new", "--lang", lang, &name]), "sluice new");
    succeeds(&sluice(tmp.path(), &["build", "--dir", &name]), "sluice build --dir");
    let wasm = tmp.path().join(&name).join("target").join(format!("{name}.wasm"));
    let plugin = wasm.display().to_string();
    let call = succeeds(&sluice(tmp.path(), &["call", "--format", "lines", &plugin, "ok"]), "sluice call");
    assert_eq!(call, "OK\n");
}

#[test]
fn a_c_stage_builds_from_a_relative_dir() {
    builds_from_a_relative_dir("c");
}

#[test]
fn a_javascript_stage_builds_from_a_relative_dir() {
    builds_from_a_relative_dir("js");
}

#[test]
fn new_refuses_a_directory_that_is_not_empty() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("mine")).unwrap();
    std::fs::write(tmp.path().join("mine/notes.txt"), "keep me").unwrap();
    let out = sluice(tmp.path(), &["new", "--lang", "python", "mine"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists and is not empty"));
    assert_eq!(std::fs::read_dir(tmp.path().join("mine")).unwrap().count(), 1, "nothing written");
}

#[test]
fn build_names_the_install_command_for_a_missing_system_toolchain() {
    // No node or npm on PATH, and no componentize-js in the (empty) cache:
    // `sluice build` cannot install node itself, so it says how, exit 69.
    let stderr = build_with_nothing_installed("js");
    assert!(stderr.contains("sudo apt-get install nodejs npm"), "{stderr}");
}

/// `sluice build` of a new `lang` project with nothing on PATH and an empty
/// toolchain cache: it must exit 69 (`EX_UNAVAILABLE`); its stderr.
fn build_with_nothing_installed(lang: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    succeeds(&sluice(tmp.path(), &["new", "--lang", lang, "x"]), "sluice new");
    let out = Command::new(sluice_binary())
        .arg("build")
        .current_dir(tmp.path().join("x"))
        .env("PATH", tmp.path().join("no-bin"))
        .env("SLUICE_TOOLCHAINS", tmp.path().join("toolchains"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    stderr
}

#[test]
fn build_of_a_zig_stage_names_the_install_command_when_python_is_missing() {
    // Zig comes from PyPI: without python3 (nothing on PATH) and with an empty
    // cache, `sluice build` cannot install it, and says what would let it.
    let stderr = build_with_nothing_installed("zig");
    assert!(stderr.contains("cannot build a Zig stage"), "{stderr}");
    assert!(stderr.contains("sudo apt-get install python3 python3-venv"), "{stderr}");
}

#[test]
fn doctor_lists_every_language() {
    let tmp = tempfile::tempdir().unwrap();
    let out = succeeds(&sluice(tmp.path(), &["doctor"]), "sluice doctor");
    for lang in ["Rust", "Python", "JavaScript", "C", "Zig"] {
        assert!(out.lines().any(|l| l.starts_with(&format!("{lang} ("))), "{lang} missing:\n{out}");
    }
}

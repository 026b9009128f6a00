//! The command line's own behaviour. (End-to-end runs, with real stages, are
//! in `tests/all`, which also runs this binary for the crash-and-resume test.)

use std::process::Command;

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().expect("the sluice binary runs")
}

#[test]
fn a_missing_pipeline_file_is_named() {
    let out = sluice(&["check", "no-such-pipeline.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-pipeline.toml: cannot read the pipeline file"), "{err}");
}

#[test]
fn state_of_a_memory_backend_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(dir.path().join("s.wasm"), "").unwrap();
    let text = "version = 1\n[state]\nbackend = \"memory\"\n[[stages]]\nname = \"s\"\nplugin = \"s.wasm\"\n";
    std::fs::write(&file, text).unwrap();
    let out = sluice(&["state", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the state backend is `memory`: nothing is kept after a run"), "{err}");
}

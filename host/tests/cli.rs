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

/// `sluice check` on `pipeline` (TOML, written as `<dir>/p.toml` beside an
/// empty `s.wasm`): its stderr, with the directory written as `<dir>`.
fn check(dir: &std::path::Path, pipeline: &str) -> String {
    let file = dir.join("p.toml");
    std::fs::write(&file, pipeline).unwrap();
    let out = sluice(&["check", file.to_str().unwrap()]);
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).replace(&dir.display().to_string(), "<dir>")
}

#[test]
fn a_plugin_path_that_is_a_directory_or_a_fifo_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let made = Command::new("mkfifo").arg(dir.path().join("pipe.wasm")).status().unwrap();
    assert!(made.success(), "mkfifo");
    let stage = |name: &str, plugin: &str| format!("[[stages]]\nname = \"{name}\"\nplugin = \"{plugin}\"\n");
    let err = check(dir.path(), &format!("version = 1\n{}{}", stage("d", "plugins"), stage("f", "pipe.wasm")));
    // Both stages, at once; the FIFO is not opened (that would wait for a writer forever).
    assert!(
        err.contains("stage `d`: <dir>/plugins is a directory: give the path of the stage's component (.wasm) file"),
        "{err}"
    );
    assert!(
        err.contains("stage `f`: <dir>/pipe.wasm is a FIFO, not a file: give the path of the stage's component"),
        "{err}"
    );
    assert!(!err.contains("not found"), "{err}");
}

/// A directory this process cannot create files in: a read-only one, or, for
/// root (who can write anywhere), sysfs.
fn unwritable_dir(parent: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = parent.join("read-only");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    if tempfile::tempfile_in(&dir).is_ok() { "/sys".into() } else { dir }
}

#[test]
fn check_names_a_missing_source_and_output_directories_that_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.wasm"), "").unwrap();
    let read_only = unwritable_dir(dir.path());
    let pipeline = format!(
        "version = 1\n[source]\npath = \"no-such-input.jsonl\"\n[sink]\npath = \"{}/out.jsonl\"\n\
         [dead_letter]\npath = \"missing/dead.jsonl\"\n[[stages]]\nname = \"s\"\nplugin = \"s.wasm\"\n",
        read_only.display()
    );
    let err = check(dir.path(), &pipeline);
    let read_only = read_only.display().to_string().replace(&dir.path().display().to_string(), "<dir>");
    for expected in [
        "<dir>/p.toml: [source] path: cannot read <dir>/no-such-input.jsonl: it does not exist".to_string(),
        format!("<dir>/p.toml: [sink] path: cannot write {read_only}/out.jsonl: cannot create a file in directory {read_only}: "),
        "<dir>/p.toml: [dead_letter] path: cannot write <dir>/missing/dead.jsonl: directory <dir>/missing does not exist"
            .to_string(),
        // The stage is still loaded and its problem reported with the rest.
        "stage `s`: <dir>/s.wasm is not a WebAssembly component: the file is empty".to_string(),
    ] {
        assert!(err.contains(&expected), "expected {expected:?} in:\n{err}");
    }
}

#[test]
fn an_error_found_at_build_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.wasm"), "").unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "version = 1\n[[stages]]\nname = \"s\"\nplugin = \"s.wasm\"\n").unwrap();
    let same = dir.path().join("x.jsonl");
    let same = same.to_str().unwrap();
    let out = sluice(&["run", file.to_str().unwrap(), "-o", same, "--dead-letter", same]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).replace(&dir.path().display().to_string(), "<dir>");
    assert_eq!(
        err,
        "error: <dir>/p.toml: the sink and the dead-letter file are both <dir>/x.jsonl: give them different paths\n"
    );
}

#[test]
fn state_without_a_state_file_says_no_stage_has_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.wasm"), "").unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "version = 1\n[[stages]]\nname = \"s\"\nplugin = \"s.wasm\"\n").unwrap();
    for args in [&["state"][..], &["state", "--clear"]] {
        let out = sluice(&[args, &[file.to_str().unwrap()]].concat());
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).replace(&dir.path().display().to_string(), "<dir>");
        assert_eq!(
            err,
            "error: state store <dir>/p.state.redb: no such file: no stage has committed state (the file is created \
             when a stage first writes state)\n"
        );
    }
}

#[test]
fn plugin_paths_are_printed_as_written_resolved_against_the_pipeline_directory_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.wasm"), "").unwrap();
    let stage = |name: &str, plugin: &str| format!("[[stages]]\nname = \"{name}\"\nplugin = \"{plugin}\"\n");
    std::fs::write(dir.path().join("p.toml"), format!("version = 1\n{}", stage("s", "./s.wasm"))).unwrap();
    std::fs::write(dir.path().join("q.toml"), format!("version = 1\n{}", stage("t", "t.wasm"))).unwrap();
    let check = |pipeline: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["check", pipeline])
            .current_dir(dir.path())
            .output()
            .expect("the sluice binary runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = check("./p.toml");
    assert_eq!(err, "error: ./p.toml:3:8: stage `s`: ./s.wasm is not a WebAssembly component: the file is empty\n");
    let err = check("q.toml");
    assert_eq!(err, "error: q.toml:4:10: stage `t`: plugin file t.wasm not found\n");
}

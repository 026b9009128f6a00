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
    assert_eq!(err, "error: ./p.toml:4:10: stage `s`: ./s.wasm is not a WebAssembly component: the file is empty\n");
    let err = check("q.toml");
    assert!(err.starts_with("error: q.toml:4:10: stage `t`: plugin file t.wasm not found: "), "{err}");
}

/// A pipeline in `dir` whose stage is an empty file: it parses, and fails
/// to build (a config error), after `--skip-lines` without `--append` has
/// logged a warning about `out`, which holds a line. So one run logs a
/// warning and ends with an error, without any guest.
fn warn_then_fail(dir: &std::path::Path) -> Command {
    std::fs::write(dir.join("s.wasm"), "").unwrap();
    std::fs::write(dir.join("out"), "kept\n").unwrap();
    let file = dir.join("p.toml");
    std::fs::write(&file, "version = 1\n[[stages]]\nname = \"s\"\nplugin = \"s.wasm\"\n").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
    command.args(["run", file.to_str().unwrap(), "--skip-lines", "1", "-o"]).arg(dir.join("out"));
    command.env("SLUICE_LOG", "info").env_remove("SLUICE_LOG_FORMAT").env_remove("NO_COLOR");
    command
}

/// Whether `text` starts with an RFC 3339 UTC timestamp as the logs write
/// it: `2025-01-31T09:14:03.123456Z`.
fn starts_with_a_timestamp(text: &str) -> bool {
    let Some(stamp) = text.get(..27) else { return false };
    stamp.char_indices().all(|(i, c)| match i {
        4 | 7 => c == '-',
        10 => c == 'T',
        13 | 16 => c == ':',
        19 => c == '.',
        26 => c == 'Z',
        _ => c.is_ascii_digit(),
    })
}

#[test]
fn json_logs_from_the_environment_are_one_object_per_line_the_final_error_included() {
    let dir = tempfile::tempdir().unwrap();
    let out = warn_then_fail(dir.path()).env("SLUICE_LOG_FORMAT", "json").output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert_eq!(events.len(), 2, "{stderr}");
    let (warning, error) = (&events[0], &events[1]);
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert!(warning["message"].as_str().unwrap().starts_with("--skip-lines without --append: "), "{warning}");
    assert_eq!(error["level"], "ERROR", "{error}");
    assert!(error["message"].as_str().unwrap().contains("s.wasm is not a WebAssembly component"), "{error}");
    assert_eq!((error["outcome"].as_str(), error["exit_code"].as_u64()), (Some("config_error"), Some(78)));
    for event in &events {
        assert!(starts_with_a_timestamp(event["timestamp"].as_str().unwrap()), "{event}");
    }
}

#[test]
fn text_logs_in_a_file_have_timestamps_and_no_colour() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let status = warn_then_fail(dir.path()).stderr(log).status().unwrap();
    assert_eq!(status.code(), Some(78));
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(!log.contains('\x1b'), "{log:?}");
    let warning = log.lines().next().unwrap();
    assert!(starts_with_a_timestamp(warning), "{warning}");
    assert!(warning[27..].starts_with("  WARN --skip-lines without --append: "), "{warning}");
}

#[test]
fn text_logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    // `script` runs the command with a terminal (a pty) as its stderr.
    let dir = tempfile::tempdir().unwrap();
    let command = warn_then_fail(dir.path());
    let words: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|w| shlex::try_quote(&w.to_string_lossy()).unwrap().into_owned())
        .collect();
    let on_a_terminal = |no_color: Option<&str>| {
        let mut script = Command::new("script");
        script.args(["--quiet", "--return", "--command", &words.join(" "), "/dev/null"]);
        script.env("SLUICE_LOG", "info").env_remove("SLUICE_LOG_FORMAT").env_remove("NO_COLOR");
        if let Some(value) = no_color {
            script.env("NO_COLOR", value);
        }
        let out = script.output().expect("`script` (util-linux) runs");
        assert_eq!(out.status.code(), Some(78), "{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_a_terminal(None);
    assert!(coloured.contains("\x1b["), "{coloured:?}");
    // NO_COLOR set to anything but "" turns colour off (no-color.org).
    let plain = on_a_terminal(Some("1"));
    assert!(plain.contains("--skip-lines without --append") && !plain.contains("\x1b["), "{plain:?}");
}

#[test]
fn config_errors_and_wrong_arguments_exit_78_help_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.wasm"), "").unwrap();
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "version = 1\n[[stages]]\nname = \"s\"\nplugin = \"s.wasm\"\n").unwrap();
    let file = file.to_str().unwrap();
    let report = dir.path().join("report.json");
    let cases: [&[&str]; 5] = [
        // The stage is not a component: the file is wrong, for check as for run.
        &["check", file],
        &["run", file, "--report-json", report.to_str().unwrap()],
        &["run", file, "--no-such-flag"],
        &["run", file, "--log-format", "xml"],
        &["run", file, "--report-json", "no-such-dir/report.json"],
    ];
    for args in cases {
        let out = sluice(args);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The run that could name a report file wrote one, saying why it stopped.
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!((written["outcome"].as_str(), written["exit_code"].as_u64()), (Some("config_error"), Some(78)));
    assert!(written["error"].as_str().unwrap().contains("s.wasm is not a WebAssembly component"), "{written}");
    for args in [&["--help"][..], &["run", "--help"], &["--version"]] {
        assert_eq!(sluice(args).status.code(), Some(0), "{args:?}");
    }
}

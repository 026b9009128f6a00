//! Hot reload: a stage's plugin file replaced under a running `sluice run`
//! (stdin held open, and fed all along) is swapped in once it has stopped
//! changing: every line comes out once, in order, through the old component
//! up to one point and the new one after it. A file that does not load is
//! refused with the reason, and the running component goes on; so on SIGHUP.

use crate::metrics::Sluice;
use crate::resume::sluice_binary;
use crate::support::{Scratch, guests, root};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Waits until the log holds `text`; a minute at most (a bound for a broken
/// build, not a measure of speed).
fn wait_for_log(scratch: &Scratch, text: &str) -> String {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(scratch.path("sluice.log")).unwrap_or_default();
        if log.contains(text) {
            return log;
        }
        assert!(Instant::now() < give_up, "the log never said {text:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Puts `from` at `to` in one step, as a deploy would (a copy, then a rename).
fn replace(from: &std::path::Path, to: &std::path::Path) {
    let temp = to.with_extension("new");
    std::fs::copy(from, &temp).unwrap();
    std::fs::rename(&temp, to).unwrap();
}

#[test]
fn a_changed_plugin_is_swapped_in_with_every_message_once_and_in_order() {
    let scratch = Scratch::new();
    let plugin = scratch.path("stage.wasm");
    // The test stage echoes what it does not know.
    std::fs::copy(guests::TEST_STAGE, &plugin).unwrap();
    scratch.write(
        "pipeline.toml",
        "version = 1\n[source]\ntype = \"stdin\"\nformat = \"lines\"\n[sink]\ntype = \"stdout\"\nformat = \"lines\"\n\
         [dead_letter]\npath = \"dead.jsonl\"\n\
         [[stages]]\nname = \"shout\"\nplugin = \"stage.wasm\"\nconcurrency = 4\norder = \"ordered\"\n",
    );
    let mut child = Sluice(
        Command::new(sluice_binary())
            .args(["run", "pipeline.toml", "--progress", "0"])
            .current_dir(scratch.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(scratch.path("sluice.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut stdin = child.0.stdin.take().unwrap();
    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    let (lines, out) = std::sync::mpsc::channel();
    std::thread::spawn(move || stdout.lines().map(Result::unwrap).for_each(|line| lines.send(line).unwrap()));
    let mut fed = 0;
    let mut feed = |stdin: &mut std::process::ChildStdin, n: usize| {
        for _ in 0..n {
            writeln!(stdin, "line {fed}").unwrap();
            fed += 1;
        }
        stdin.flush().unwrap();
    };
    feed(&mut stdin, 500);
    // Once the old component has run them, the new one comes.
    let mut got: Vec<String> = out.iter().take(500).collect();
    replace(&root().join("target/plugins/upper.wasm"), &plugin);
    // Lines keep coming while the new one loads and the swap waits for those in flight.
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(scratch.path("sluice.log")).unwrap();
        if log.contains("reloaded") {
            break;
        }
        assert!(Instant::now() < give_up, "never reloaded:\n{log}");
        feed(&mut stdin, 20);
        std::thread::sleep(Duration::from_millis(10));
    }
    feed(&mut stdin, 500);

    // A file that is not a component is refused; `upper` goes on.
    std::fs::write(scratch.path("broken.wasm"), b"not a component").unwrap();
    replace(&scratch.path("broken.wasm"), &plugin);
    let log = wait_for_log(&scratch, "was refused");
    assert!(log.contains("stage `shout`: the new stage.wasm was refused, the running one goes on"), "{log}");
    feed(&mut stdin, 100);
    // SIGHUP reloads every stage now: the broken file again, refused again.
    Command::new("kill").args(["-HUP", &child.0.id().to_string()]).status().unwrap();
    wait_for_log(&scratch, "SIGHUP: reloading");
    feed(&mut stdin, 100);
    drop(stdin);
    let status = child.0.wait().unwrap();
    let log = std::fs::read_to_string(scratch.path("sluice.log")).unwrap();
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("was refused").count(), 2, "{log}");

    got.extend(out.iter());
    let out = got;
    assert_eq!(out.len(), fed, "every line out once");
    let switch = out.iter().position(|l| l.starts_with("LINE")).expect("the new component ran");
    assert!(switch >= 500, "the old component ran the first 500 lines");
    for (i, line) in out.iter().enumerate() {
        let want = if i < switch { format!("line {i}") } else { format!("LINE {i}") };
        assert_eq!(line, &want, "line {i}: in order, the old component up to {switch}, the new one after");
    }
}

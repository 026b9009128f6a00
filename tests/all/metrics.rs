//! `sluice run --metrics-addr`: Prometheus metrics, `/health` and `/ready` of
//! a real `sluice` process reading stdin held open, scraped over HTTP as
//! Prometheus would.

use crate::resume::sluice_binary;
use crate::support::{Scratch, guests, stage_with};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// An address on 127.0.0.1 that nothing listens on now.
pub(crate) fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `GET path`: the status and the body, or `None` while nothing answers.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The value of the series `series` (name and labels, as exposed) in a scrape.
pub(crate) fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Asks `addr` for `path` until `done` holds for the answer, and returns
/// it. Gives up (failing the test, with the last answer) only after a
/// minute: a bound for a broken build, not a measure of speed.
pub(crate) fn poll(addr: SocketAddr, path: &str, done: impl Fn(u16, &str) -> bool) -> String {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = get(addr, path);
        if let Some((status, body)) = &answer
            && done(*status, body)
        {
            return body.clone();
        }
        assert!(Instant::now() < give_up, "{path} never got there; the last answer: {answer:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `sluice` process, killed if a test fails before it ends.
pub(crate) struct Sluice(pub(crate) Child);

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sluice run` on `pipeline` (in `scratch`), reading stdin (piped,
/// held open) and serving metrics at `addr`.
pub(crate) fn start(scratch: &Scratch, pipeline: &str, addr: SocketAddr) -> Sluice {
    let file = scratch.write("pipeline.toml", pipeline);
    let child = Command::new(sluice_binary())
        .args(["run", file.to_str().unwrap(), "--metrics-addr", &addr.to_string(), "--progress", "0"])
        .current_dir(scratch.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Sluice(child)
}

/// Lines from stdin to stdout, dead letters beside the pipeline, with the
/// top-level keys `top`.
pub(crate) fn stdin_to_stdout(top: &str) -> String {
    format!(
        "version = 1\n{top}\n\
         [source]\ntype = \"stdin\"\nformat = \"lines\"\n\
         [sink]\ntype = \"stdout\"\nformat = \"lines\"\n\
         [dead_letter]\npath = \"dead.jsonl\"\n"
    )
}

/// `first` and `second` (both the test stage) reading stdin held open, fed
/// 20 lines once ready: `first` drops 4 and dead-letters 1, 15 go through
/// both. Returns the lines fed too; closing the returned stdin ends the run.
pub(crate) fn two_stages_fed(scratch: &Scratch) -> (Sluice, ChildStdin, SocketAddr, Vec<String>) {
    let pipeline = stdin_to_stdout("")
        + &stage_with("first", guests::TEST_STAGE, "", "")
        + &stage_with("second", guests::TEST_STAGE, "prefix = \">\"", "limits = { fuel = 1000000000 }");
    let addr = free_addr();
    let mut child = start(scratch, &pipeline, addr);
    poll(addr, "/ready", |status, _| status == 200);
    let lines: Vec<String> = (0..20)
        .map(|i| match i {
            7 => "invalid:seven".to_string(),
            i if i % 5 == 0 => "drop".to_string(),
            i => format!("m{i}"),
        })
        .collect();
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    (child, stdin, addr, lines)
}

#[test]
fn a_running_pipeline_is_scraped_with_its_counts_per_stage_and_exits_0_when_stdin_closes() {
    let scratch = Scratch::new();
    let (mut child, stdin, addr, lines) = two_stages_fed(&scratch);
    assert_eq!(get(addr, "/health").map(|(status, _)| status), Some(200));

    let scrape = poll(addr, "/metrics", |_, body| {
        sample(body, "sluice_written_total") == Some(15.0)
            && sample(body, "sluice_dead_lettered_total{kind=\"invalid\"}") == Some(1.0)
    });
    let expected = [
        ("sluice_read_total", 20.0),
        ("sluice_dead_lettered_total{kind=\"trap\"}", 0.0),
        ("sluice_stage_input_total{stage=\"first\"}", 20.0),
        ("sluice_stage_output_total{stage=\"first\"}", 15.0),
        ("sluice_stage_dropped_total{stage=\"first\"}", 4.0),
        ("sluice_stage_dead_lettered_total{stage=\"first\",kind=\"invalid\"}", 1.0),
        ("sluice_stage_input_total{stage=\"second\"}", 15.0),
        ("sluice_stage_output_total{stage=\"second\"}", 15.0),
        ("sluice_stage_dropped_total{stage=\"second\"}", 0.0),
        ("sluice_stage_dead_lettered_total{stage=\"second\",kind=\"invalid\"}", 0.0),
        ("sluice_stage_in_flight{stage=\"first\"}", 0.0),
        ("sluice_stage_latency_seconds_count{stage=\"second\"}", 15.0),
    ];
    for (series, value) in expected {
        assert_eq!(sample(&scrape, series), Some(value), "{series} in\n{scrape}");
    }
    for family in ["sluice_stage_input_total counter", "sluice_stage_latency_seconds summary"] {
        assert!(scrape.contains(&format!("# TYPE {family}\n")), "{family} in\n{scrape}");
    }
    assert!(scrape.contains("# HELP sluice_read_total "), "{scrape}");
    // Fuel is counted where it is metered: `second` has a fuel limit, so every stage is metered.
    for stage in ["first", "second"] {
        let fuel = sample(&scrape, &format!("sluice_stage_fuel_used_total{{stage=\"{stage}\"}}"));
        assert!(fuel.is_some_and(|f| f > 1000.0), "{stage}: {fuel:?}");
        assert_eq!(sample(&scrape, &format!("sluice_stage_waiting{{stage=\"{stage}\"}}")), Some(0.0));
    }
    assert_eq!(get(addr, "/ready").map(|(status, _)| status), Some(200), "still running: stdin is open");

    drop(stdin);
    let status = child.0.wait().unwrap();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.0.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let written: Vec<&str> = stdout.lines().collect();
    let through: Vec<String> = lines.iter().filter(|l| l.starts_with('m')).map(|l| format!(">{l}")).collect();
    assert_eq!(written, through);
}

#[test]
fn ready_says_503_while_the_pipeline_drains_after_a_signal_and_health_stays_200() {
    let scratch = Scratch::new();
    // A message that waits ten minutes keeps the drain going until the test
    // kills the process.
    let pipeline = stdin_to_stdout("shutdown_timeout = \"10m\"")
        + &stage_with("slow", guests::TEST_STAGE, "", "limits = { timeout = \"10m\" }");
    let addr = free_addr();
    let mut child = start(&scratch, &pipeline, addr);
    poll(addr, "/ready", |status, _| status == 200);
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all(b"sleep:600000\n").unwrap();
    stdin.flush().unwrap();
    poll(addr, "/metrics", |_, body| sample(body, "sluice_stage_in_flight{stage=\"slow\"}") == Some(1.0));

    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let body = poll(addr, "/ready", |status, _| status == 503);
    assert_eq!(body, "draining\n");
    assert_eq!(get(addr, "/health").map(|(status, _)| status), Some(200));
    assert_eq!(
        get(addr, "/metrics").and_then(|(_, body)| sample(&body, "sluice_stage_in_flight{stage=\"slow\"}")),
        Some(1.0),
        "still draining"
    );
}

#[test]
fn signals_while_the_stages_are_built_are_answered_and_sigterm_ends_it_as_interrupted() {
    use std::io::BufRead;
    let scratch = Scratch::new();
    // The stage's `init` waits 50 s (within init_timeout): the pipeline stays in its build.
    let pipeline = stdin_to_stdout("") + &stage_with("slow-start", guests::TEST_STAGE, "init_sleep_ms = 50000", "");
    let file = scratch.write("pipeline.toml", &pipeline);
    let addr = free_addr();
    let child = Command::new(sluice_binary())
        .args(["run", file.to_str().unwrap(), "--metrics-addr", &addr.to_string(), "--report-json", "report.json"])
        .current_dir(scratch.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Sluice(child);
    poll(addr, "/ready", |status, _| status == 503);
    let mut stderr = std::io::BufReader::new(child.0.stderr.take().unwrap()).lines();
    let pid = child.0.id().to_string();
    let mut send = |signal: &str, answer: &str| {
        assert!(Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success());
        let line = stderr.by_ref().map(Result::unwrap).find(|line| line.contains(answer));
        assert!(line.is_some(), "no answer to SIG{signal} ({answer:?}) before stderr ended");
    };
    // Their default action would end the process: they are answered instead.
    send("HUP", "SIGHUP: the pipeline is still being built");
    send("USR1", "the pipeline is still being built (");
    send("TERM", "interrupted while the pipeline was being built");

    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(130), "as an interrupted run");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(scratch.dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["outcome"], "interrupted");
}

#[test]
fn a_metrics_address_that_cannot_be_served_is_a_config_error_naming_where_it_was_given() {
    let scratch = Scratch::new();
    // Held for the whole test: the port is in use.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let stage = stage_with("first", guests::TEST_STAGE, "", "");
    let cases = [
        (stdin_to_stdout("") + &stage, vec!["--metrics-addr".to_string(), addr.to_string()], "--metrics-addr"),
        (stdin_to_stdout(&format!("[metrics]\naddr = \"{addr}\"")) + &stage, vec![], "pipeline.toml: [metrics] addr"),
    ];
    for (pipeline, args, setting) in cases {
        scratch.write("pipeline.toml", &pipeline);
        let out = Command::new(sluice_binary())
            .args(["run", "pipeline.toml", "--progress", "0"])
            .args(&args)
            .current_dir(scratch.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        assert!(stderr.contains(&format!("{setting} {addr}: cannot serve metrics there: ")), "{stderr}");
        assert!(stderr.contains("Give a free port"), "{stderr}");
    }
    drop(taken);
}

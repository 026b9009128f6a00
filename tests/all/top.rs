//! `sluice top ADDR`: the per-stage table of a real running `sluice run
//! --metrics-addr ADDR`, and its error when nothing answers there.

use crate::metrics::{free_addr, poll, sample, two_stages_fed};
use crate::resume::sluice_binary;
use crate::support::Scratch;
use std::process::Command;

#[test]
fn top_once_prints_a_row_per_stage_with_its_counts_and_rates() {
    let scratch = Scratch::new();
    let (mut child, stdin, addr, _) = two_stages_fed(&scratch);
    poll(addr, "/metrics", |_, body| sample(body, "sluice_written_total") == Some(15.0));

    let out = Command::new(sluice_binary())
        .args(["top", &addr.to_string(), "--once", "--interval", "500ms"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("read 20 (0.0/s), written 15 (0.0/s), dead letters 1"), "{stdout}");
    // Every message was through before the first scrape, so nothing moved
    // during the interval: every rate is 0.
    let rows: Vec<Vec<&str>> = stdout.lines().skip(2).map(|l| l.split_whitespace().collect()).collect();
    let columns = |row: &[&str]| -> Vec<String> {
        // Stage, in/s, out/s, in, out, in flight, queued, (p99 varies), dead letters.
        [0, 1, 2, 3, 4, 5, 6, 8].iter().map(|&i| row[i].to_string()).collect()
    };
    assert_eq!(rows.len(), 2, "{stdout}");
    assert_eq!(columns(&rows[0]), ["first", "0.0", "0.0", "20", "15", "0", "0", "1"], "{stdout}");
    assert_eq!(columns(&rows[1]), ["second", "0.0", "0.0", "15", "15", "0", "0", "0"], "{stdout}");
    assert!(rows.iter().all(|row| row[7].ends_with('s')), "a p99 latency for both: {stdout}");
    drop(stdin);
    assert!(child.0.wait().unwrap().success());
}

#[test]
fn top_against_an_address_where_nothing_listens_exits_1_saying_so() {
    let addr = free_addr().to_string();
    let out = Command::new(sluice_binary()).args(["top", &addr, "--once", "--interval", "10ms"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot reach {addr}: ")), "{stderr}");
    assert!(stderr.contains(&format!("is `sluice run --metrics-addr {addr}` running?")), "{stderr}");
}

#[test]
fn top_ends_with_0_saying_so_when_the_pipeline_it_watches_ends() {
    use std::io::BufRead;
    let scratch = Scratch::new();
    let (mut child, stdin, addr, _) = two_stages_fed(&scratch);
    let mut top = Command::new(sluice_binary())
        .args(["top", &addr.to_string(), "--interval", "50ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A table printed: top has seen the pipeline.
    let mut first = String::new();
    let mut tables = std::io::BufReader::new(top.stdout.take().unwrap());
    tables.read_line(&mut first).unwrap();
    assert!(first.starts_with(&format!("sluice top {addr}: ")), "{first}");
    // Read on: a closed stdout would end top with a broken pipe.
    std::thread::spawn(move || std::io::copy(&mut tables, &mut std::io::sink()));
    drop(stdin);
    assert!(child.0.wait().unwrap().success());
    let out = top.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("the pipeline at {addr} ended")), "{stderr}");
    assert!(!stderr.contains("running?"), "{stderr}");
}

#[test]
fn top_with_an_address_that_is_not_one_exits_78_and_at_another_server_exits_1() {
    let out = Command::new(sluice_binary()).args(["top", "nonsense", "--once"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("`nonsense` is not an address: give the IP:PORT"), "{stderr}");

    let server = crate::server::TestServer::start();
    let addr = server.addr.to_string();
    let out = Command::new(sluice_binary()).args(["top", &addr, "--once"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{addr} does not answer like a sluice metrics server")), "{stderr}");
}

#[test]
fn top_shows_as_queued_the_messages_waiting_in_front_of_a_busy_stage() {
    use std::io::Write;
    let scratch = Scratch::new();
    // One message at a time, each waiting ten minutes: the first is in
    // flight, the others wait in front of the stage.
    let pipeline = crate::metrics::stdin_to_stdout("")
        + &crate::support::stage_with(
            "slow",
            crate::support::guests::TEST_STAGE,
            "",
            "batch = 1\nlimits = { timeout = \"10m\" }",
        );
    let addr = free_addr();
    let mut child = crate::metrics::start(&scratch, &pipeline, addr);
    poll(addr, "/ready", |status, _| status == 200);
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all("sleep:600000\n".repeat(5).as_bytes()).unwrap();
    stdin.flush().unwrap();
    let series = |name: &str| format!("sluice_stage_{name}{{stage=\"slow\"}}");
    poll(addr, "/metrics", |_, body| {
        sample(body, "sluice_read_total") == Some(5.0) && sample(body, &series("waiting")) >= Some(3.0)
    });

    let out = Command::new(sluice_binary())
        .args(["top", &addr.to_string(), "--once", "--interval", "100ms"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> =
        stdout.lines().find(|l| l.starts_with("slow ")).unwrap_or_default().split_whitespace().collect();
    // Nothing moves now: what top showed is what the metrics still say.
    let scrape = poll(addr, "/metrics", |_, _| true);
    let queued = sample(&scrape, &series("waiting")).unwrap() + sample(&scrape, &series("queued")).unwrap();
    // Stage, in/s, out/s, in, out, in flight, queued.
    assert_eq!(row.get(5..7), Some(&["1", queued.to_string().as_str()][..]), "{stdout}");
}

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

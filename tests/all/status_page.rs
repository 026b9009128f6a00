//! The status page at `sluice run --metrics-addr`, loaded in a real browser
//! (headless Chromium): the numbers it shows for a running pipeline are the
//! ones `/metrics` has.

use crate::metrics::{free_addr, poll, sample, start, stdin_to_stdout};
use crate::support::{Scratch, guests, stage_with};
use sluice_tests::thousands;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Lines fed: enough for thousands separators. Every 100th from the 8th is
/// dead-lettered by `first` (24), every 5th dropped (469): 1,852 go through.
const LINES: usize = 2345;

/// A number the page shows: the element's text and its `data-value`.
#[derive(Debug)]
struct Shown {
    text: String,
    value: String,
}

/// The page at `url` as Chromium has it after running its script for three
/// seconds of virtual time (a few polls), or `None` if Chromium failed or
/// hung. Its profile lives in `profile`, so runs do not share one.
fn dump_dom(url: &str, profile: &Path) -> Option<String> {
    let mut child = match Command::new("chromium")
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!("chromium is not installed: run scripts/bootstrap"),
        Err(e) => panic!("cannot start chromium: {e}"),
    };
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        stdout.read_to_string(&mut dom).map(|_| dom)
    });
    // A bound for a wedged browser, not a measure of speed: a first start
    // on a loaded 2-core machine can take a while.
    let give_up = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > give_up {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap().ok()
}

/// Every element with a `data-metric` in `dom`: its key to what it shows.
fn shown(dom: &str) -> HashMap<String, Shown> {
    let mut found = HashMap::new();
    for piece in dom.split("data-metric=\"").skip(1) {
        let Some((key, rest)) = piece.split_once('"') else { continue };
        let Some((tag, after)) = rest.split_once('>') else { continue };
        let value = tag.split("data-value=\"").nth(1).and_then(|v| v.split('"').next()).unwrap_or("").to_string();
        let text = after.split('<').next().unwrap_or("").to_string();
        found.insert(key.to_string(), Shown { text, value });
    }
    found
}

#[test]
fn the_status_page_in_chromium_shows_each_stages_numbers_as_metrics_has_them() {
    let scratch = Scratch::new();
    let pipeline = stdin_to_stdout("")
        + &stage_with("first", guests::TEST_STAGE, "", "")
        + &stage_with("second", guests::TEST_STAGE, "prefix = \">\"", "");
    let addr: SocketAddr = free_addr();
    let mut child = start(&scratch, &pipeline, addr);
    poll(addr, "/ready", |status, _| status == 200);
    let lines: Vec<String> = (0..LINES)
        .map(|i| match i {
            i if i % 100 == 7 => format!("invalid:{i}"),
            i if i % 5 == 0 => "drop".to_string(),
            i => format!("m{i}"),
        })
        .collect();
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    let metrics = poll(addr, "/metrics", |_, body| {
        sample(body, "sluice_written_total") == Some(1852.0)
            && sample(body, "sluice_dead_lettered_total{kind=\"invalid\"}") == Some(24.0)
    });

    // The page polls once a second and shows a rate once it has two
    // answers: wait for the last box's rate, the last thing drawn.
    let url = format!("http://{addr}/");
    let give_up = Instant::now() + Duration::from_secs(240);
    let mut attempt = 0;
    let page = loop {
        attempt += 1;
        let dom = dump_dom(&url, &scratch.path(&format!("chromium-{attempt}")));
        let page = shown(dom.as_deref().unwrap_or(""));
        if page.get("@sink.written_rate").is_some_and(|r| r.text.ends_with("/s") && !r.text.starts_with('–')) {
            assert!(dom.unwrap().contains("data-phase=\"running\""), "the page says the pipeline runs");
            break page;
        }
        assert!(Instant::now() < give_up, "the page never showed the pipeline's rates; the last DOM:\n{dom:?}");
    };

    let number = |series: &str| -> u64 {
        let v = sample(&metrics, series).unwrap_or_else(|| panic!("{series} in\n{metrics}"));
        v as u64
    };
    let dead = |stage: &str| -> u64 {
        ["invalid", "transient", "trap", "limit"]
            .iter()
            .map(|kind| number(&format!("sluice_stage_dead_lettered_total{{stage=\"{stage}\",kind=\"{kind}\"}}")))
            .sum()
    };
    let mut expected: Vec<(String, u64)> = vec![
        ("@source.read".into(), number("sluice_read_total")),
        ("@source.skipped".into(), number("sluice_skipped_total")),
        ("@sink.written".into(), number("sluice_written_total")),
        ("@dead_letters.invalid".into(), number("sluice_dead_lettered_total{kind=\"invalid\"}")),
        ("@dead_letters.trap".into(), number("sluice_dead_lettered_total{kind=\"trap\"}")),
    ];
    for stage in ["first", "second"] {
        let series = |name: &str| format!("sluice_stage_{name}{{stage=\"{stage}\"}}");
        expected.extend([
            (format!("{stage}.in"), number(&series("input_total"))),
            (format!("{stage}.out"), number(&series("output_total"))),
            (format!("{stage}.dropped"), number(&series("dropped_total"))),
            (format!("{stage}.dead"), dead(stage)),
            (format!("{stage}.retried"), number(&series("retried_total"))),
            (format!("{stage}.trapped"), number(&series("trapped_total"))),
            (format!("{stage}.in_flight"), number(&series("in_flight"))),
            (format!("{stage}.queued"), number(&series("waiting")) + number(&series("queued"))),
        ]);
    }
    for (key, value) in &expected {
        let on_page = page.get(key).unwrap_or_else(|| panic!("no data-metric=\"{key}\" on the page: {page:?}"));
        assert_eq!(on_page.text, thousands(value), "{key}: {on_page:?}");
        assert_eq!(on_page.value, value.to_string(), "{key}: {on_page:?}");
    }
    // The counts are the pipeline's: with thousands separators.
    assert_eq!(page["first.in"].text, "2,345");
    assert_eq!((page["first.out"].text.as_str(), page["first.dead"].text.as_str()), ("1,852", "24"));

    for stage in ["first", "second"] {
        // The p99 is the one Prometheus reads, shown as a latency.
        let p99 = sample(&metrics, &format!("sluice_stage_latency_seconds{{stage=\"{stage}\",quantile=\"0.99\"}}"));
        let on_page = &page[&format!("{stage}.p99")];
        assert_eq!(on_page.value.parse::<f64>().ok(), p99, "{stage}.p99: {on_page:?}");
        assert!(on_page.text.ends_with('s') && on_page.text.len() > 2, "{stage}.p99: {on_page:?}");
        // Everything was through before the page loaded, so its rates (over
        // the last poll, not since the start) are 0.
        for rate in ["in_rate", "out_rate"] {
            assert_eq!(page[&format!("{stage}.{rate}")].text, "0.0/s", "{stage}.{rate}");
        }
    }

    // `/status` is the same page, for a proxy that forwards a path.
    assert_eq!(poll(addr, "/status", |status, _| status == 200), poll(addr, "/", |status, _| status == 200));

    drop(stdin);
    assert!(child.0.wait().unwrap().success());
}

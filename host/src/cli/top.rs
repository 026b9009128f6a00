//! `sluice top ADDR`: a live per-stage table of a running pipeline, read
//! from the Prometheus text its `sluice run --metrics-addr ADDR` serves at
//! `/metrics` (the names are in `metrics.rs`).
//!
//! Rates are the difference of two scrapes over the time between them, so
//! a table says what the pipeline did during the last interval, not since
//! it started.

use super::outcome::{BadArgument, Outcome};
use anyhow::{Context, Result, anyhow};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Show a live table of a running pipeline's stages.
#[derive(clap::Args)]
pub(crate) struct TopCommand {
    /// The metrics address of the running pipeline (what its
    /// `sluice run --metrics-addr` says), e.g. 127.0.0.1:9898.
    addr: String,

    /// Time between two refreshes, and the span each rate is measured over.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,

    /// Print one table (rates over one interval) and exit.
    #[arg(long)]
    once: bool,
}

/// A scrape that does not answer within this is taken as no answer: an
/// address that drops packets would otherwise hang `sluice top`.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

impl TopCommand {
    pub(crate) async fn execute(self) -> Result<Outcome> {
        if self.interval.is_zero() {
            return Err(BadArgument("--interval must be longer than 0, e.g. 1s or 500ms".into()).into());
        }
        let addr = super::tap::metrics_address(&self.addr)?;
        let mut before = Scrape::take(&addr).await.map_err(|e| match e {
            Unanswered::NotSluice(e) => e,
            Unanswered::Unreachable(e) => {
                anyhow!("cannot reach {addr}: {e:#}: is `sluice run --metrics-addr {addr}` running?")
            }
        })?;
        let redraw = std::io::stdout().is_terminal() && !self.once;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                _ = tokio::signal::ctrl_c() => return Ok(Outcome::Success),
            }
            let now = match Scrape::take(&addr).await {
                Ok(now) => now,
                // It answered before: the run ended, and its metrics server
                // with it (as `sluice tap` says when the stream ends).
                Err(Unanswered::Unreachable(e)) => {
                    tracing::info!("the pipeline at {addr} ended (it no longer answers: {e:#})");
                    return Ok(Outcome::Success);
                }
                Err(Unanswered::NotSluice(e)) => return Err(e),
            };
            let table = render(&addr, &before, &now);
            let mut out = std::io::stdout().lock();
            // Clear the screen and go home: the table replaces the last one.
            if redraw {
                write!(out, "\x1b[2J\x1b[H")?;
            }
            write!(out, "{table}")?;
            out.flush()?;
            if self.once {
                return Ok(Outcome::Success);
            }
            before = now;
        }
    }
}

/// A series' labels: (name, value) pairs.
type Labels = Vec<(String, String)>;

/// The samples of one `/metrics` answer, and when it came.
struct Scrape {
    at: Instant,
    /// Series (name and its labels, in the order given) to value.
    samples: HashMap<(String, Labels), f64>,
    /// Stage names in pipeline order (the order the server lists them).
    stages: Vec<String>,
}

/// Why a scrape has no samples.
enum Unanswered {
    /// No answer (nothing listens, the connection broke, or a timeout).
    Unreachable(anyhow::Error),
    /// An answer, but not from a sluice metrics server (or not a 200).
    NotSluice(anyhow::Error),
}

impl Scrape {
    async fn take(addr: &str) -> Result<Scrape, Unanswered> {
        let text = match tokio::time::timeout(SCRAPE_TIMEOUT, fetch(addr)).await {
            Err(_) => Err(Unanswered::Unreachable(anyhow!("no answer within {}s", SCRAPE_TIMEOUT.as_secs()))),
            Ok(result) => result,
        }?;
        Ok(Scrape::parse(&text, Instant::now()))
    }

    fn parse(text: &str, at: Instant) -> Scrape {
        let mut samples = HashMap::new();
        let mut stages = Vec::new();
        for (name, labels, value) in text.lines().filter_map(parse_line) {
            if name == "sluice_stage_input_total"
                && let Some((_, stage)) = labels.iter().find(|(k, _)| k == "stage")
                && !stages.contains(stage)
            {
                stages.push(stage.clone());
            }
            samples.insert((name, labels), value);
        }
        Scrape { at, samples, stages }
    }

    /// The sum of every series of `name` whose labels include `labels`
    /// (dead letters of a stage: every kind), or `None` if there is none.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for ((n, ls), v) in &self.samples {
            if n == name && labels.iter().all(|(k, want)| ls.iter().any(|(lk, lv)| lk == k && lv == want)) {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }
}

/// `GET http://addr/metrics` over HTTP/1.1: the body, if sluice answers 200.
async fn fetch(addr: &str) -> Result<String, Unanswered> {
    let unreachable = |e: hyper::Error| Unanswered::Unreachable(e.into());
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| Unanswered::Unreachable(e.into()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(unreachable)?;
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, addr)
        .body(Empty::<Bytes>::new())
        .context("building the request")
        .map_err(Unanswered::Unreachable)?;
    let response = sender.send_request(request).await.map_err(unreachable)?;
    let status = response.status();
    if !super::tap::from_sluice(&response) {
        conn.abort();
        return Err(Unanswered::NotSluice(super::tap::not_sluice(addr, &format!("GET /metrics answered {status}"))));
    }
    let body = response.into_body().collect().await.map_err(unreachable)?.to_bytes();
    conn.abort();
    if !status.is_success() {
        return Err(Unanswered::NotSluice(anyhow!("{addr}: /metrics answered {status}")));
    }
    String::from_utf8(body.to_vec()).context("/metrics answered text that is not UTF-8").map_err(Unanswered::NotSluice)
}

/// One sample line of the Prometheus text format: `name{k="v",...} value
/// [timestamp]`. Comments, blank and malformed lines give `None`: only the
/// few series `sluice top` shows are read, so what it cannot read it skips.
fn parse_line(line: &str) -> Option<(String, Labels, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = inner.split_once('=')?;
            let mut chars = after.strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.trim().to_string(), value));
            inner = &after[1 + end + 1..];
        }
    }
    let value = match rest.split_whitespace().next()? {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

/// The table of what happened between `before` and `now`.
fn render(addr: &str, before: &Scrape, now: &Scrape) -> String {
    let secs = now.at.duration_since(before.at).as_secs_f64().max(1e-9);
    // Per second over the interval; a counter that went down is a restarted
    // pipeline, whose count started again from 0.
    let rate = |name: &str, labels: &[(&str, &str)]| -> String {
        let Some(n) = now.sum(name, labels) else { return "-".into() };
        let b = before.sum(name, labels).unwrap_or(0.0);
        let delta = if n >= b { n - b } else { n };
        format!("{:.1}", delta / secs)
    };
    let count = |name: &str, labels: &[(&str, &str)]| -> String {
        now.sum(name, labels).map_or_else(|| "-".into(), |v| format!("{v}"))
    };
    let mut rows = vec![
        ["STAGE", "IN/s", "OUT/s", "IN", "OUT", "IN FLIGHT", "QUEUED", "P99", "DEAD LETTERS"]
            .map(String::from)
            .to_vec(),
    ];
    for stage in &now.stages {
        let l = [("stage", stage.as_str())];
        let p99 = match now.sum("sluice_stage_latency_seconds_count", &l) {
            Some(n) if n > 0.0 => now
                .sum("sluice_stage_latency_seconds", &[("stage", stage), ("quantile", "0.99")])
                .filter(|v| v.is_finite())
                .map_or_else(|| "-".into(), latency),
            _ => "-".into(),
        };
        rows.push(vec![
            stage.clone(),
            rate("sluice_stage_input_total", &l),
            rate("sluice_stage_output_total", &l),
            count("sluice_stage_input_total", &l),
            count("sluice_stage_output_total", &l),
            count("sluice_stage_in_flight", &l),
            // Its queue: in the channel in front of it, and behind a busy key.
            match (now.sum("sluice_stage_waiting", &l), now.sum("sluice_stage_queued", &l)) {
                (None, None) => "-".into(),
                (waiting, queued) => format!("{}", waiting.unwrap_or(0.0) + queued.unwrap_or(0.0)),
            },
            p99,
            count("sluice_stage_dead_lettered_total", &l),
        ]);
    }
    let mut widths = vec![0; rows[0].len()];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice top {addr}: read {} ({}/s), written {} ({}/s), dead letters {}, over the last {}",
        count("sluice_read_total", &[]),
        rate("sluice_read_total", &[]),
        count("sluice_written_total", &[]),
        rate("sluice_written_total", &[]),
        count("sluice_dead_lettered_total", &[]),
        humantime::format_duration(Duration::from_millis((secs * 1000.0) as u64)),
    );
    if now.stages.is_empty() {
        let _ = writeln!(out, "(no stages yet: the pipeline is still being built)");
        return out;
    }
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            // The stage name on the left, numbers on the right.
            if i == 0 {
                let _ = write!(line, "{cell:<w$}");
            } else {
                let _ = write!(line, "  {cell:>w$}");
            }
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

/// Seconds as a readable latency: `850µs`, `12.3ms`, `1.50s`.
fn latency(secs: f64) -> String {
    if secs < 1e-3 {
        format!("{:.0}µs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.1}ms", secs * 1e3)
    } else {
        format!("{secs:.2}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines_are_read_with_their_labels_and_comments_are_skipped() {
        let own = |s: &[(&str, &str)]| s.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(parse_line("sluice_read_total 20"), Some(("sluice_read_total".into(), vec![], 20.0)));
        assert_eq!(
            parse_line(r#"sluice_stage_dead_lettered_total{stage="a \"b\"\\c",kind="invalid"} 3 1700000000"#),
            Some((
                "sluice_stage_dead_lettered_total".into(),
                own(&[("stage", r#"a "b"\c"#), ("kind", "invalid")]),
                3.0
            ))
        );
        let (_, _, nan) = parse_line(r#"x{quantile="0.99",} NaN"#).unwrap();
        assert!(nan.is_nan());
        assert_eq!(parse_line("# TYPE sluice_read_total counter"), None);
        assert_eq!(parse_line(r#"x{stage="unterminated} 1"#), None);
    }

    #[test]
    fn the_table_has_a_row_per_stage_in_order_with_rates_over_the_interval() {
        let text = |n: u32| {
            format!(
                "sluice_read_total {n}\n\
                 sluice_stage_input_total{{stage=\"b\"}} {n}\n\
                 sluice_stage_input_total{{stage=\"a\"}} {}\n\
                 sluice_stage_dead_lettered_total{{stage=\"b\",kind=\"invalid\"}} 1\n\
                 sluice_stage_dead_lettered_total{{stage=\"b\",kind=\"trap\"}} 2\n\
                 sluice_stage_latency_seconds{{stage=\"b\",quantile=\"0.99\"}} 0.0123\n\
                 sluice_stage_latency_seconds_count{{stage=\"b\"}} {n}\n",
                n / 2
            )
        };
        let start = Instant::now();
        let before = Scrape::parse(&text(10), start);
        let now = Scrape::parse(&text(30), start + Duration::from_secs(2));
        let table = render("x", &before, &now);
        let rows: Vec<Vec<&str>> = table.lines().skip(2).map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            rows,
            [
                vec!["b", "10.0", "-", "30", "-", "-", "-", "12.3ms", "3"],
                vec!["a", "5.0", "-", "15", "-", "-", "-", "-", "-"]
            ]
        );
        assert!(table.starts_with("sluice top x: read 30 (10.0/s)"), "{table}");
    }
}

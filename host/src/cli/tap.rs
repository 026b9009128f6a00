//! `sluice tap ADDR STAGE`: a live sample of the messages leaving a stage of
//! a running pipeline, one JSON object per line on stdout, read from
//! `GET /tap/{stage}` at its `sluice run --metrics-addr ADDR`.
//!
//! Tapping is read-only, and its cost to the pipeline is bounded: the stage
//! copies at most `--rate` messages a second (at most 1,000, over every
//! `sluice tap` of the stage), and a tap that reads too slowly misses
//! samples rather than slowing the stage (see `pipeline/tap.rs`).

use super::outcome::{BadArgument, Outcome};
use anyhow::{Context, Result, anyhow};
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sluice::{DEFAULT_TAP_RATE, MAX_TAP_RATE};
use std::io::Write;
use std::time::Duration;

/// Print a live sample of the messages leaving a stage of a running pipeline.
#[derive(clap::Args)]
pub(crate) struct TapCommand {
    /// The metrics address of the running pipeline (what its
    /// `sluice run --metrics-addr` says), e.g. 127.0.0.1:9898.
    addr: String,

    /// The stage whose outputs to sample.
    stage: String,

    /// At most this many messages a second (1 to 1000). A stage tapped by
    /// several copies at once samples for the fastest.
    #[arg(long, default_value_t = DEFAULT_TAP_RATE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_TAP_RATE)))]
    rate: u32,

    /// Stop after this many messages (default: until Ctrl-C, or until the
    /// pipeline ends).
    #[arg(long)]
    count: Option<u64>,
}

/// The answer to the request must start within this: an address that drops
/// packets would otherwise hang `sluice tap`. The stream itself may be
/// quiet for as long as the stage sends nothing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl TapCommand {
    pub(crate) async fn execute(self) -> Result<Outcome> {
        if self.count == Some(0) {
            return Ok(Outcome::Success);
        }
        let addr = metrics_address(&self.addr)?;
        let path = format!("/tap/{}?rate={}", encode(&self.stage), self.rate);
        let response = tokio::time::timeout(CONNECT_TIMEOUT, request(&addr, &path))
            .await
            .map_err(|_| anyhow!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))
            .and_then(|r| r)
            .map_err(|e| anyhow!("cannot reach {addr}: {e:#}: is `sluice run --metrics-addr {addr}` running?"))?;
        let status = response.status();
        // Another server's 404 is not an unknown stage, and its page is not
        // worth printing.
        if !from_sluice(&response) {
            return Err(not_sluice(&addr, &format!("GET /tap/… answered {status}")));
        }
        let mut body = response.into_body();
        if status != StatusCode::OK {
            let text = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_string();
            return Err(match status {
                // The stage is not there, or a wrong rate: the command line is wrong.
                StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => {
                    BadArgument(format!("cannot tap `{}` at {addr}: {text}", self.stage)).into()
                }
                _ => anyhow!("cannot tap `{}` at {addr}: it answered {status}: {text}", self.stage),
            });
        }
        tracing::info!("tapping stage `{}` at {addr}, at most {} messages a second", self.stage, self.rate);

        let mut printed = 0u64;
        let mut pending: Vec<u8> = Vec::new();
        let mut out = std::io::stdout();
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                _ = tokio::signal::ctrl_c() => return Ok(Outcome::Success),
            };
            let data = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                // The stage finished (a clean end), or the process serving
                // the tap ended with it (the connection closed).
                None | Some(Err(_)) => {
                    tracing::info!("the pipeline at {addr} ended; {printed} messages tapped");
                    return Ok(Outcome::Success);
                }
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                // A reader that went away (`| head`) ends the tap, quietly.
                if out.write_all(&line).and_then(|()| out.flush()).is_err() {
                    return Ok(Outcome::Success);
                }
                printed += 1;
                if self.count.is_some_and(|count| printed >= count) {
                    return Ok(Outcome::Success);
                }
            }
        }
    }
}

/// `GET http://addr/path` over HTTP/1.1: the response, its body still to read.
async fn request(addr: &str, path: &str) -> Result<hyper::Response<hyper::body::Incoming>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection is driven for as long as the process reads the body.
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr)
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    Ok(sender.send_request(request).await?)
}

/// The address of a `sluice run --metrics-addr`, as given (`IP:PORT` or
/// `HOST:PORT`, with or without `http://`): what to connect to, or a bad
/// argument if it cannot be one.
pub(crate) fn metrics_address(given: &str) -> Result<String> {
    let addr = given.trim_start_matches("http://").trim_end_matches('/');
    let has_port = addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !has_port {
        return Err(BadArgument(format!(
            "`{given}` is not an address: give the IP:PORT that `sluice run --metrics-addr` serves at, e.g. \
             127.0.0.1:9898"
        ))
        .into());
    }
    Ok(addr.to_string())
}

/// Whether `response` came from a sluice metrics server (its `Server` header).
pub(crate) fn from_sluice<B>(response: &hyper::Response<B>) -> bool {
    response.headers().get(hyper::header::SERVER).is_some_and(|v| v == super::metrics::SERVER)
}

/// Something answers at `addr`, but not sluice: `answered` says what it did.
pub(crate) fn not_sluice(addr: &str, answered: &str) -> anyhow::Error {
    anyhow!(
        "{addr} does not answer like a sluice metrics server ({answered}): give the address `sluice run \
         --metrics-addr` serves at"
    )
}

/// A stage name as one path segment: stage names are letters, digits, `-`
/// and `_`, but a mistyped one may be anything.
fn encode(stage: &str) -> String {
    stage
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => char::from(b).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_address_needs_a_port_and_may_start_with_http() {
        assert_eq!(super::metrics_address("http://127.0.0.1:9898/").unwrap(), "127.0.0.1:9898");
        assert_eq!(super::metrics_address("[::1]:9898").unwrap(), "[::1]:9898");
        assert_eq!(super::metrics_address("localhost:9898").unwrap(), "localhost:9898");
        for bad in ["nonsense", "127.0.0.1", ":9898", "host:99999"] {
            assert!(super::metrics_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stage_name_is_one_path_segment() {
        assert_eq!(super::encode("redact-pii_2"), "redact-pii_2");
        assert_eq!(super::encode("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
    }
}

//! Logs on stderr: readable text for a person, or one JSON object per line
//! for a log shipper or `jq` (`--log-format`).

use std::sync::atomic::{AtomicBool, Ordering};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Readable: an RFC 3339 UTC timestamp, the level, the fields, the
    /// message. Coloured only on a terminal, and not with `NO_COLOR` set.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`,
    /// `message`, and the event's fields (`stage`, `position`, ...) beside them.
    Json,
}

/// Set once, before anything is logged: whether stderr is for a machine.
static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber. `filter` is an `EnvFilter` directive
/// (`--log`); a bad one is reported, in the chosen format, and `info` used.
pub(crate) fn init(filter: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let (mut env_filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    // The NATS client tells of every (re)connection at `info`: only its
    // warnings, unless asked for by name.
    if !filter.contains("async_nats") {
        env_filter = env_filter.add_directive("async_nats=warn".parse().expect("a valid directive"));
    }
    // wasmtime-wasi-http warns of each failed connection, without the stage,
    // in Rust's debug format; the stage gets the error as a value and says
    // what it makes of it.
    if !filter.contains("wasmtime_wasi_http") {
        env_filter = env_filter.add_directive("wasmtime_wasi_http=error".parse().expect("a valid directive"));
    }
    // Through the progress bar, when one is shown: cleared, the line written, redrawn.
    // A log line that cannot be written (stderr closed) is dropped: the
    // subscriber's own report of it would panic, in whatever task logged.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(|| super::progress::LogWriter)
        .log_internal_errors(false);
    match format {
        // The default timer writes RFC 3339 in UTC with microseconds
        // (`2025-01-31T09:14:03.123456Z`): one clock for every host.
        LogFormat::Text => builder.with_target(false).with_ansi(colour()).init(),
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            // Fields beside `message`, not under `fields`: `jq 'select(.stage == "x")'`.
            builder.json().flatten_event(true).with_current_span(false).with_span_list(false).with_ansi(false).init();
        }
    }
    if let Some(e) = bad {
        tracing::warn!("bad log filter `{filter}` ({e}); using `info`");
    }
}

/// Colour is for a person at a terminal: never in a file or a pipe, and
/// never when `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether logs are JSON: then whatever the CLI tells the user on stderr
/// goes through the log too, so that every line of stderr is one object.
pub(crate) fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Tells the user `text` on stderr: as it is, or, when logs are JSON, as a
/// log event at `level` (only these three are used).
pub(crate) fn tell(level: tracing::Level, text: &str) {
    if !json() {
        stderr!("{text}");
    } else if level == tracing::Level::ERROR {
        tracing::error!("{text}");
    } else if level == tracing::Level::WARN {
        tracing::warn!("{text}");
    } else {
        tracing::info!("{text}");
    }
}

//! Every limit a stage runs under, in one place: the settings in the pipeline
//! file, their safe defaults, and how each is enforced.
//!
//! | setting                    | default   | enforced by                                        |
//! |----------------------------|-----------|----------------------------------------------------|
//! | `fuel`                     | unlimited | wasmtime fuel, reset before every call             |
//! | `timeout`                  | 30s       | epoch deadline (wasm) + tokio timer (host waits)   |
//! | `memory`                   | 128 MiB   | [`StageLimiter`], per instance                     |
//! | `max_outputs`              | 10000     | checked on each result                             |
//! | `max_output_bytes`         | 16 MiB    | checked on each result, per output message         |
//! | `max_total_output_bytes`   | 64 MiB    | all outputs of one input, emitted ones included    |
//! | `max_log_records`          | 100       | log and stdio lines per message; the rest dropped  |
//! | `max_consecutive_failures` | 1000      | circuit breaker: stops the pipeline                |
//! | `init_timeout`             | 60s       | instantiation and `init` of every instance         |
//! | `max_state_key_bytes`      | 4 KiB     | on each state `set`/`delete`                       |
//! | `max_state_value_bytes`    | 1 MiB     | on each state `set`                                |
//! | `max_state_bytes`          | 64 MiB    | keys + values per stage (per message key if keyed) |
//! | `max_http_requests`        | 64        | outbound HTTP in flight per stage; more wait       |
//! | `max_http_requests_per_instance` | 16  | in flight per instance; more fail (error value)    |
//!
//! Strings a guest hands the host (error reasons, `init` refusals) are cut to
//! [`MAX_REASON_BYTES`], and log records and stdio lines to 4 KiB, with a
//! marker. Control characters in anything a guest writes to the host's log
//! are escaped ([`log_safe`]), so that a stage cannot forge a host log line.
//!
//! A batch (`batch` in the pipeline file) runs under the fuel, timeout and log
//! records of that many messages; if it breaks one, its messages run again
//! one by one under the per-message limits, so the message at fault is named.
//!
//! Fixed caps, not configurable: core instances, tables and memories per
//! instance, table elements, resource-table entries, and the bytes held for
//! an instance's wasi:http resources.
//!
//! Guest code also yields to the async runtime at every epoch tick, so a
//! CPU-bound stage never stalls the others. Fuel is opt-in: its accounting
//! costs 1.2x to 1.5x on JSON-heavy stages, epochs about 1.1x (docs/benchmarks.md).

mod breach;
mod limiter;
mod outputs;
mod text;

pub(crate) use breach::Breach;
pub(crate) use limiter::StageLimiter;
pub(crate) use outputs::{OutputCaps, OutputTally, message_bytes};
pub(crate) use text::clamp_reason;
pub use text::log_safe;

use bytesize::ByteSize;
use serde::Deserialize;
use std::time::Duration;

/// Without epochs (no stage has a timeout) but with fuel, guest code yields to
/// the async runtime after this much fuel (≈ 1 ms of CPU).
pub(crate) const YIELD_INTERVAL_FUEL: u64 = 1_000_000;
/// How often the epoch ticks: guest code yields at every tick, and timeouts
/// are checked then.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Fuel and time for instantiation and `init`, which run guest start-up code
/// (an interpreter's, for Python or JavaScript stages).
const INIT_FUEL: u64 = 50_000_000_000;
const INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest error reason or `init` refusal kept from a guest, in bytes.
pub(crate) const MAX_REASON_BYTES: usize = 4096;
/// What the host holds for each header beyond its name and value bytes (the
/// `String` and `Vec` of `Header`): a message of a million empty headers is
/// not free.
pub(crate) const HEADER_OVERHEAD: usize = std::mem::size_of::<crate::bindings::Header>();
pub(crate) const MAX_INSTANCES: usize = 100;
pub(crate) const MAX_TABLES: usize = 100;
pub(crate) const MAX_MEMORIES: usize = 20;
pub(crate) const MAX_TABLE_ELEMENTS: usize = 1_000_000;
/// Bytes the host holds for one set of HTTP header fields (wasi:http
/// `fields`, a request's or a response's headers), in memory; wasmtime's
/// default is 128 KiB, which over thousands of handles is too much.
pub(crate) const MAX_HTTP_FIELDS_BYTES: usize = 32 * 1024;
/// Bytes the host holds for one instance's wasi:http resources: header
/// fields, requests not yet sent (their strings, headers and body buffers)
/// and responses held. A stage sends at most
/// `max_http_requests_per_instance` (16) requests at once, each with at most
/// 32 KiB of headers and 160 KiB of body buffered: 16 MiB is several times
/// that, and bounds a stage that hoards handles (10,000 of them could hold
/// gigabytes).
pub(crate) const MAX_HTTP_HELD_BYTES: usize = 16 << 20;
/// Longest method, scheme, authority or path-with-query of an outgoing
/// request: 8 KiB is the request line most servers accept (nginx, Apache).
pub(crate) const MAX_HTTP_REQUEST_PART_BYTES: usize = 8 * 1024;
/// Resource handles (streams, pollables, ...) a stage may hold at once.
pub(crate) const MAX_RESOURCES: usize = 10_000;
/// An instance holding more handles than this after a call is replaced
/// before its next message: a guest that leaks handles (jco's `fetch` leaks
/// about 7 per request) would otherwise fail a message when the table fills.
/// A quarter of the table is left for the call in progress.
pub(crate) const RECYCLE_AT_RESOURCES: usize = MAX_RESOURCES / 4 * 3;

/// A limit that can be switched off with `"unlimited"` / `"none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit<T> {
    /// At most this much.
    Max(T),
    /// No limit.
    Unlimited,
}

impl<T: Copy> Limit<T> {
    fn get(self) -> Option<T> {
        match self {
            Limit::Max(v) => Some(v),
            Limit::Unlimited => None,
        }
    }
}

/// A limit as written: a number, or text (`"unlimited"`, `"64MiB"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

impl NumberOrText {
    /// The limit: `number` for a number, `text` parses anything but `"unlimited"`.
    fn limit<T, E: serde::de::Error>(
        self,
        number: impl FnOnce(u64) -> T,
        text: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Limit<T>, E> {
        match self {
            NumberOrText::Number(n) => Ok(Limit::Max(number(n))),
            NumberOrText::Text(t) if t == "unlimited" => Ok(Limit::Unlimited),
            NumberOrText::Text(t) => text(&t).map(Limit::Max).map_err(E::custom),
        }
    }
}

impl<'de> Deserialize<'de> for Limit<u64> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        NumberOrText::deserialize(d)?
            .limit(|n| n, |t| Err(format!("expected a number or \"unlimited\", found \"{t}\"")))
    }
}

impl<'de> Deserialize<'de> for Limit<ByteSize> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        NumberOrText::deserialize(d)?.limit(ByteSize, |t| {
            t.parse().map_err(|e| format!("expected a size such as \"8GiB\", or \"unlimited\": {e}"))
        })
    }
}

impl<'de> Deserialize<'de> for Limit<Duration> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "none" {
            return Ok(Limit::Unlimited);
        }
        humantime::parse_duration(&text).map(Limit::Max).map_err(|e| {
            serde::de::Error::custom(format!("expected a duration such as \"500ms\" or \"30s\", or \"none\": {e}"))
        })
    }
}

/// Limits as written in the pipeline file: per stage (`limits = {...}`) and
/// pipeline-wide (`[limits]`); a stage's own setting wins, then the
/// pipeline's, then the default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LimitsConfig {
    /// Fuel (roughly, WebAssembly instructions) per message, or `"unlimited"`.
    pub fuel: Option<Limit<u64>>,
    /// Wall-clock time per message, including host I/O, e.g. `"5s"`, or `"none"`.
    pub timeout: Option<Limit<Duration>>,
    /// Linear memory per instance, e.g. `"64MiB"`.
    pub memory: Option<ByteSize>,
    /// Outputs one input may produce.
    pub max_outputs: Option<usize>,
    /// Bytes of one output message (value, key and headers).
    pub max_output_bytes: Option<ByteSize>,
    /// Log records (and stdout/stderr lines) per message; more are dropped.
    pub max_log_records: Option<u32>,
    /// Failures in a row (errors or traps) after which the pipeline stops; 0 never stops.
    pub max_consecutive_failures: Option<u32>,
    /// Bytes of all the outputs of one input together (emitted ones included).
    pub max_total_output_bytes: Option<ByteSize>,
    /// Wall-clock time for a fresh instance's start-up and `init`, or `"none"`.
    pub init_timeout: Option<Limit<Duration>>,
    /// Bytes of one state key (as the stage writes it).
    pub max_state_key_bytes: Option<ByteSize>,
    /// Bytes of one state value.
    pub max_state_value_bytes: Option<ByteSize>,
    /// Bytes of state (keys and values) a stage may hold: per message key
    /// with `partition_by = "key"`.
    pub max_state_bytes: Option<ByteSize>,
    /// Outbound HTTP requests in flight at once over all of a stage's
    /// instances; more wait for one to finish.
    pub max_http_requests: Option<usize>,
    /// Outbound HTTP requests in flight at once in one instance; more fail
    /// with an error value.
    pub max_http_requests_per_instance: Option<usize>,
}

impl LimitsConfig {
    /// These settings, with `fallback`'s where these have none.
    pub fn or(&self, fallback: &LimitsConfig) -> LimitsConfig {
        LimitsConfig {
            fuel: self.fuel.or(fallback.fuel),
            timeout: self.timeout.or(fallback.timeout),
            memory: self.memory.or(fallback.memory),
            max_outputs: self.max_outputs.or(fallback.max_outputs),
            max_output_bytes: self.max_output_bytes.or(fallback.max_output_bytes),
            max_log_records: self.max_log_records.or(fallback.max_log_records),
            max_consecutive_failures: self.max_consecutive_failures.or(fallback.max_consecutive_failures),
            max_total_output_bytes: self.max_total_output_bytes.or(fallback.max_total_output_bytes),
            init_timeout: self.init_timeout.or(fallback.init_timeout),
            max_state_key_bytes: self.max_state_key_bytes.or(fallback.max_state_key_bytes),
            max_state_value_bytes: self.max_state_value_bytes.or(fallback.max_state_value_bytes),
            max_state_bytes: self.max_state_bytes.or(fallback.max_state_bytes),
            max_http_requests: self.max_http_requests.or(fallback.max_http_requests),
            max_http_requests_per_instance: self
                .max_http_requests_per_instance
                .or(fallback.max_http_requests_per_instance),
        }
    }

    /// The limits in force, defaults filled in.
    pub fn resolve(&self) -> Limits {
        Limits {
            fuel: self.fuel.unwrap_or(Limit::Unlimited).get(),
            timeout: self.timeout.unwrap_or(Limit::Max(Duration::from_secs(30))).get(),
            memory: self.memory.unwrap_or(ByteSize::mib(128)).as_u64() as usize,
            max_outputs: self.max_outputs.unwrap_or(10_000),
            max_output_bytes: self.max_output_bytes.unwrap_or(ByteSize::mib(16)).as_u64() as usize,
            max_log_records: self.max_log_records.unwrap_or(100),
            max_consecutive_failures: self.max_consecutive_failures.unwrap_or(1000),
            max_total_output_bytes: self.max_total_output_bytes.unwrap_or(ByteSize::mib(64)).as_u64() as usize,
            init_timeout: self.init_timeout.unwrap_or(Limit::Max(INIT_TIMEOUT)).get(),
            max_state_key_bytes: self.max_state_key_bytes.unwrap_or(ByteSize::kib(4)).as_u64() as usize,
            max_state_value_bytes: self.max_state_value_bytes.unwrap_or(ByteSize::mib(1)).as_u64() as usize,
            max_state_bytes: self.max_state_bytes.unwrap_or(ByteSize::mib(64)).as_u64(),
            max_http_requests: self.max_http_requests.unwrap_or(64),
            max_http_requests_per_instance: self.max_http_requests_per_instance.unwrap_or(16),
        }
    }
}

/// The limits one stage runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per message; `None`: unlimited.
    pub fuel: Option<u64>,
    /// Wall-clock time per message; `None`: none.
    pub timeout: Option<Duration>,
    /// Bytes of linear memory per instance.
    pub memory: usize,
    /// Outputs per input.
    pub max_outputs: usize,
    /// Bytes per output message (value, key and headers).
    pub max_output_bytes: usize,
    /// Log records and stdio lines per message.
    pub max_log_records: u32,
    /// Failures in a row before the pipeline stops; 0: never.
    pub max_consecutive_failures: u32,
    /// Bytes of all the outputs of one input together.
    pub max_total_output_bytes: usize,
    /// Wall-clock time for instantiation and `init`; `None`: none.
    pub init_timeout: Option<Duration>,
    /// Bytes of one state key.
    pub max_state_key_bytes: usize,
    /// Bytes of one state value.
    pub max_state_value_bytes: usize,
    /// Bytes of state per stage, or per message key for keyed stages.
    pub max_state_bytes: u64,
    /// Outbound HTTP requests in flight at once, per stage (the rest wait).
    pub max_http_requests: usize,
    /// Outbound HTTP requests in flight at once, per instance (the rest fail).
    pub max_http_requests_per_instance: usize,
}

impl Limits {
    /// The caps on one input's outputs.
    pub(crate) fn output_caps(&self) -> OutputCaps {
        OutputCaps {
            max_outputs: self.max_outputs,
            max_output_bytes: self.max_output_bytes,
            max_total_output_bytes: self.max_total_output_bytes,
        }
    }

    /// The budget for instantiation and `init`.
    pub(crate) fn init_fuel(&self) -> Option<u64> {
        self.fuel.map(|f| f.max(INIT_FUEL))
    }

    pub(crate) fn init_timeout(&self) -> Option<Duration> {
        self.init_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_settings_win_over_pipeline_ones_then_defaults() {
        let pipeline: LimitsConfig = toml::from_str("fuel = 5\ntimeout = \"2s\"").unwrap();
        let stage: LimitsConfig = toml::from_str("fuel = \"unlimited\"\nmemory = \"64MiB\"").unwrap();
        let limits = stage.or(&pipeline).resolve();
        assert_eq!(limits.fuel, None);
        assert_eq!(limits.timeout, Some(Duration::from_secs(2)));
        assert_eq!(limits.memory, 64 << 20);
        assert_eq!(limits.max_outputs, 10_000, "the default");
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let err = toml::from_str::<LimitsConfig>("timeout = \"soon\"").unwrap_err();
        assert!(err.message().starts_with("expected a duration such as \"500ms\" or \"30s\", or \"none\""), "{err}");
        let err = toml::from_str::<LimitsConfig>("fuel = \"lots\"").unwrap_err();
        assert_eq!(err.message(), "expected a number or \"unlimited\", found \"lots\"");
    }

    #[test]
    fn a_stage_with_no_settings_has_a_deadline_and_caps() {
        let limits = LimitsConfig::default().resolve();
        assert_eq!(limits.timeout, Some(Duration::from_secs(30)), "no settings cannot hang");
        assert_eq!(limits.memory, 128 << 20, "no settings cannot exhaust memory");
        assert_eq!((limits.max_outputs, limits.max_output_bytes), (10_000, 16 << 20), "nor flood the pipeline");
        assert_eq!(limits.max_log_records, 100);
        assert_eq!(limits.fuel, None, "fuel is opt-in");
    }
}

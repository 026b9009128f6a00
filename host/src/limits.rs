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
//! instance, table elements, and resource-table entries.
//!
//! Guest code also yields to the async runtime at every epoch tick, so a
//! CPU-bound stage never stalls the others. Fuel is opt-in: its accounting
//! costs 1.2x to 1.5x on JSON-heavy stages, epochs about 1.1x (docs/benchmarks.md).

use bytesize::ByteSize;
use serde::Deserialize;
use std::fmt;
use std::time::Duration;
use wasmtime::ResourceLimiter;

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
/// Resource handles (streams, pollables, ...) a stage may hold at once.
pub(crate) const MAX_RESOURCES: usize = 10_000;
/// An instance holding more handles than this after a call is replaced
/// before its next message: a guest that leaks handles (jco's `fetch` leaks
/// about 7 per request) would otherwise fail a message when the table fills.
/// A quarter of the table is left for the call in progress.
pub(crate) const RECYCLE_AT_RESOURCES: usize = MAX_RESOURCES / 4 * 3;

/// A message's size for the output caps: value, key and headers, each
/// header counted with what the host holds for it.
pub(crate) fn message_bytes(m: &crate::bindings::Message) -> usize {
    m.value.len()
        + m.key.as_ref().map_or(0, Vec::len)
        + m.headers.iter().map(|h| h.name.len() + h.value.len() + HEADER_OVERHEAD).sum::<usize>()
}

/// Cuts a string from a guest to `max` bytes, on a character boundary,
/// saying how much was cut.
pub(crate) fn cut(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let more = text.len() - end;
    text.truncate(end);
    text.push_str(&format!(" [cut: {more} more bytes]"));
}

/// A reason (an error, a refusal) from a guest, cut to [`MAX_REASON_BYTES`].
pub(crate) fn clamp_reason(mut reason: String) -> String {
    cut(&mut reason, MAX_REASON_BYTES);
    reason
}

/// Guest text for the host's log or terminal: control characters escaped,
/// so that it stays on one line and cannot pass for the host's own output
/// (or move a terminal's cursor).
pub(crate) fn log_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_default());
            escaped.into_iter().flatten().chain((!c.is_control()).then_some(c))
        })
        .collect::<String>()
        .into()
}

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
    /// The budget for instantiation and `init`.
    pub(crate) fn init_fuel(&self) -> Option<u64> {
        self.fuel.map(|f| f.max(INIT_FUEL))
    }

    pub(crate) fn init_timeout(&self) -> Option<Duration> {
        self.init_timeout
    }
}

/// Which limit a message broke, for the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Breach {
    Fuel(u64),
    Timeout(Duration),
    Memory {
        limit: usize,
        asked: usize,
    },
    Table {
        limit: usize,
        asked: usize,
    },
    StackOverflow,
    Outputs {
        limit: usize,
        produced: usize,
    },
    /// wasmtime's cap on the bytes copied between guest and host in one call.
    CallData,
    OutputBytes {
        limit: usize,
        produced: usize,
        index: usize,
    },
    /// All the outputs of one input, emitted and returned.
    TotalOutputBytes {
        limit: usize,
        produced: usize,
    },
    /// Instantiation and `init` took too long.
    InitTimeout(Duration),
    /// A state key longer than allowed.
    StateKey {
        limit: usize,
        len: usize,
    },
    /// A state value longer than allowed.
    StateValue {
        limit: usize,
        len: usize,
    },
    /// A write that would take the stage's (or the message key's) state past its quota.
    StateBytes {
        limit: u64,
        total: u64,
        keyed: bool,
    },
    /// A write that would take the uncommitted state of the pipeline past its budget.
    StatePending {
        limit: usize,
        pending: usize,
    },
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Breach::Fuel(fuel) => write!(f, "used all {fuel} units of fuel allowed per message (limits.fuel)"),
            Breach::Timeout(t) => {
                write!(
                    f,
                    "took longer than the {} allowed per message (limits.timeout)",
                    humantime::format_duration(*t)
                )
            }
            Breach::Memory { limit, asked } => write!(
                f,
                "tried to grow its memory to {}, over the {} allowed per instance (limits.memory)",
                ByteSize(*asked as u64).display().iec(),
                ByteSize(*limit as u64).display().iec()
            ),
            Breach::Table { limit, asked } => {
                write!(f, "tried to grow a table to {asked} elements, over the {limit} allowed")
            }
            Breach::StackOverflow => f.write_str("overflowed its call stack (too deep a recursion)"),
            Breach::CallData => f.write_str(
                "returned more than 128 MiB from one call, more than wasmtime copies between a guest and the host",
            ),
            Breach::Outputs { limit, produced } => {
                write!(f, "produced {produced} outputs for one input, over the {limit} allowed (limits.max_outputs)")
            }
            Breach::OutputBytes { limit, produced, index } => write!(
                f,
                "produced an output of {} (output {index}), over the {} allowed (limits.max_output_bytes)",
                ByteSize(*produced as u64).display().iec(),
                ByteSize(*limit as u64).display().iec()
            ),
            Breach::TotalOutputBytes { limit, produced } => write!(
                f,
                "produced at least {} of outputs for one input, over the {} allowed (limits.max_total_output_bytes)",
                ByteSize(*produced as u64).display().iec(),
                ByteSize(*limit as u64).display().iec()
            ),
            Breach::InitTimeout(t) => write!(
                f,
                "took longer than the {} allowed to start an instance and run `init` (limits.init_timeout)",
                humantime::format_duration(*t)
            ),
            Breach::StateKey { limit, len } => {
                write!(f, "wrote a state key of {len} bytes, over the {limit} allowed (limits.max_state_key_bytes)")
            }
            Breach::StateValue { limit, len } => write!(
                f,
                "wrote a state value of {}, over the {} allowed (limits.max_state_value_bytes)",
                exact(*len as u64),
                exact(*limit as u64)
            ),
            Breach::StateBytes { limit, total, keyed } => write!(
                f,
                "would hold {} of state {}, over the {} allowed (limits.max_state_bytes)",
                exact(*total),
                if *keyed { "for this message key" } else { "for this stage" },
                exact(*limit)
            ),
            Breach::StatePending { limit, pending } => write!(
                f,
                "would leave {} of state uncommitted, over the {} the pipeline holds until a checkpoint \
                 (state.max_pending_bytes)",
                exact(*pending as u64),
                exact(*limit as u64)
            ),
        }
    }
}

/// A size in bytes, exact (a quota breached by one byte must not read
/// "1.0 KiB, over the 1.0 KiB allowed"), with IEC units when large.
fn exact(bytes: u64) -> String {
    if bytes < 10 * 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{bytes} bytes ({})", ByteSize(bytes).display().iec())
    }
}

/// The store's resource limiter: caps memory and tables, and remembers which
/// cap a guest hit so the trap can say so.
pub(crate) struct StageLimiter {
    memory: usize,
    /// Bytes of all the instance's linear memories together: the cap is per
    /// instance, however many memories a component has.
    used: usize,
    pub(crate) breach: Option<Breach>,
}

impl StageLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        StageLimiter { memory: limits.memory, used: 0, breach: None }
    }
}

impl ResourceLimiter for StageLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.memory {
            self.breach = Some(Breach::Memory { limit: self.memory, asked: total });
            // A trap, not a failed `memory.grow`: the reason is then exact
            // instead of whatever the guest's allocator does on failure.
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.breach = Some(Breach::Table { limit: MAX_TABLE_ELEMENTS, asked: desired });
            return Err(wasmtime::Error::msg("table limit reached"));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
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

    #[test]
    fn memory_growth_past_the_cap_is_a_named_breach() {
        let limits = LimitsConfig { memory: Some(ByteSize::mib(1)), ..Default::default() }.resolve();
        let mut limiter = StageLimiter::new(&limits);
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(limiter.memory_growing(1 << 20, 2 << 20, None).is_err());
        assert_eq!(
            limiter.breach.as_ref().unwrap().to_string(),
            "tried to grow its memory to 2.0 MiB, over the 1.0 MiB allowed per instance (limits.memory)"
        );
    }

    #[test]
    fn the_memory_cap_counts_every_memory_of_the_instance() {
        let limits = LimitsConfig { memory: Some(ByteSize::mib(3)), ..Default::default() }.resolve();
        let mut limiter = StageLimiter::new(&limits);
        assert!(limiter.memory_growing(0, 2 << 20, None).unwrap(), "first memory: 2 MiB");
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap(), "second memory: 1 MiB, 3 in all");
        assert!(limiter.memory_growing(0, 1 << 20, None).is_err(), "a third would make 4 MiB");
    }
}

//! Which limit a message broke, named for its dead-letter reason.

use bytesize::ByteSize;
use std::fmt;
use std::time::Duration;

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
    /// An outgoing HTTP request's method, scheme, authority or path longer than the host keeps.
    HttpRequestPart {
        part: &'static str,
        len: usize,
        limit: usize,
    },
    /// More bytes held for an instance's wasi:http resources than allowed.
    HttpHeld {
        limit: usize,
        held: usize,
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
                exact(*produced as u64),
                exact(*limit as u64)
            ),
            Breach::TotalOutputBytes { limit, produced } => write!(
                f,
                "produced at least {} of outputs for one input, over the {} allowed (limits.max_total_output_bytes)",
                exact(*produced as u64),
                exact(*limit as u64)
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
            Breach::HttpRequestPart { part, len, limit } => write!(
                f,
                "set an outgoing HTTP request's {part} of {}, over the {} allowed for a request's method, \
                 scheme, authority or path (a fixed cap)",
                exact(*len as u64),
                exact(*limit as u64)
            ),
            Breach::HttpHeld { limit, held } => write!(
                f,
                "held {} in wasi:http fields, unsent requests and responses, over the {} an instance may hold \
                 (a fixed cap); drop the ones it no longer needs",
                exact(*held as u64),
                exact(*limit as u64)
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

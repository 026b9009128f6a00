//! `sluice:pipeline/log`: stage log records into the host's `tracing` log.

mod host;

use crate::bindings::sluice::pipeline::log as wit;
use crate::stage::StoreData;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker};

/// Longest log record kept, in bytes; longer ones are cut with a marker.
pub(crate) const MAX_RECORD_BYTES: usize = 4096;

/// Per-instance state of the log capability.
pub(crate) struct LogCtx {
    /// The stage's name, attached to every record.
    pub(crate) stage: Arc<str>,
}

pub(crate) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    wit::add_to_linker::<StoreData, HasSelf<LogCtx>>(linker, |d| &mut d.log)
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

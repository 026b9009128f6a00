//! `sluice:pipeline/log`: stage log records into the host's `tracing` log.

mod host;

use crate::bindings::sluice::pipeline::log as wit;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use wasmtime::component::{HasSelf, Linker};

/// Longest log record kept, in bytes; longer ones are cut with a marker.
pub(crate) const MAX_RECORD_BYTES: usize = 4096;

/// Per-instance state of the log capability.
pub(crate) struct LogCtx {
    /// The stage's name, attached to every record.
    pub(crate) stage: Arc<str>,
    /// Records this message may still write (shared with guest stdio).
    pub(crate) budget: LogBudget,
}

/// How many log records (including stdout/stderr lines) the message being
/// processed may still write; the rest are counted and dropped, so a stage
/// cannot flood the host's log.
#[derive(Clone, Default)]
pub(crate) struct LogBudget(Arc<Budget>);

#[derive(Default)]
struct Budget {
    left: AtomicU32,
    dropped: AtomicU32,
}

impl LogBudget {
    pub(crate) fn new(max: u32) -> Self {
        let budget = LogBudget::default();
        budget.reset(max);
        budget
    }

    /// Starts a new message: `max` records allowed. Returns how many the
    /// previous message had dropped.
    pub(crate) fn reset(&self, max: u32) -> u32 {
        self.0.left.store(max, Relaxed);
        self.0.dropped.swap(0, Relaxed)
    }

    /// Whether one more record may be written; counts it as dropped if not.
    pub(crate) fn take(&self) -> bool {
        let ok = self.0.left.fetch_update(Relaxed, Relaxed, |l| l.checked_sub(1)).is_ok();
        if !ok {
            self.0.dropped.fetch_add(1, Relaxed);
        }
        ok
    }
}

/// Access to the log capability's context in a store's data.
pub(crate) trait LogView: Send {
    fn log(&mut self) -> &mut LogCtx;
}

/// Links `sluice:pipeline/log` for a store whose data gives a [`LogView`].
pub(crate) fn add_to_linker<T: LogView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<LogCtx>>(linker, T::log)
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

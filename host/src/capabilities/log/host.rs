use super::{LogCtx, MAX_RECORD_BYTES, truncate};
use crate::bindings::sluice::pipeline::log::{Host, Level};
use crate::limits::log_safe;

impl Host for LogCtx {
    async fn log(&mut self, level: Level, message: String) {
        if !self.budget.take() {
            return;
        }
        let stage = &*self.stage;
        let cut = if message.len() > MAX_RECORD_BYTES { " [truncated]" } else { "" };
        // One line of the host's log per record: a stage cannot forge others.
        let text = log_safe(truncate(&message, MAX_RECORD_BYTES));
        match level {
            Level::Trace => tracing::trace!(target: "sluice::stage", stage, "{text}{cut}"),
            Level::Debug => tracing::debug!(target: "sluice::stage", stage, "{text}{cut}"),
            Level::Info => tracing::info!(target: "sluice::stage", stage, "{text}{cut}"),
            Level::Warn => tracing::warn!(target: "sluice::stage", stage, "{text}{cut}"),
            Level::Error => tracing::error!(target: "sluice::stage", stage, "{text}{cut}"),
        }
    }
}

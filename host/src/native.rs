//! Stages written in Rust and run in the host process, for pipelines built in
//! code. They share the pipeline's channels, ordering, retries, output caps and
//! dead letters with WebAssembly stages, but not the sandbox: a native stage
//! is trusted code, with no fuel, timeout or memory limit.
//!
//! A leaf module, beside `bindings`: a pipeline built in code carries its
//! native stages in its config, and the pipeline's jobs call them, so both
//! `config` (low) and `pipeline` (high) need this type; in `stage/` it would
//! make `config` import a layer above it.

use crate::bindings::{Message, StageError};
use std::fmt;
use std::sync::Arc;

type StageFn = dyn Fn(&Message) -> Result<Vec<Message>, StageError> + Send + Sync;

/// A native stage's function: one message in, its outputs (or why not) out.
#[derive(Clone)]
pub struct NativeStage(Arc<StageFn>);

impl NativeStage {
    pub(crate) fn new(f: impl Fn(&Message) -> Result<Vec<Message>, StageError> + Send + Sync + 'static) -> Self {
        NativeStage(Arc::new(f))
    }

    /// Runs the function. A panic is caught and reported as the reason, as a
    /// trap would be: it loses that message only.
    pub(crate) fn call(&self, message: &Message) -> Result<Result<Vec<Message>, StageError>, String> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.0)(message))).map_err(|panic| {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            format!("the native stage panicked: {text}")
        })
    }
}

impl fmt::Debug for NativeStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NativeStage")
    }
}

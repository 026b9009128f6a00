//! What can go wrong with a stage: its component cannot be loaded
//! ([`LoadError`]), or a call into it fails at the WebAssembly level
//! ([`Trap`]), and how a wasmtime error is turned into either.

use super::budget::Budget;
use super::store::StoreData;
use crate::bindings::STAGE_EXPORT;
use crate::limits::{Breach, log_safe};
use std::fmt;
use std::path::PathBuf;
use wasmtime::Store;

/// Why a stage's component could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The component file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The path is not a regular file: a directory, a FIFO, a device.
    #[error("{} {what}: give the path of the stage's component (.wasm) file", path.display())]
    NotAFile {
        /// The plugin path.
        path: PathBuf,
        /// What it is instead, e.g. "is a directory".
        what: &'static str,
    },
    /// The file is not WebAssembly at all.
    #[error("{} is not a WebAssembly component: {what}", path.display())]
    NotWasm {
        /// The component file.
        path: PathBuf,
        /// What it looks like instead.
        what: String,
    },
    /// The file is a core WebAssembly module, not a component.
    #[error(
        "{} is a core WebAssembly module, not a component: build the stage for the \
         wasm32-wasip2 target, or wrap the module with `wasm-tools component new`",
        path.display()
    )]
    CoreModule {
        /// The component file.
        path: PathBuf,
    },
    /// The component is malformed (truncated, corrupt) or cannot be compiled.
    #[error("{} is not a valid component: {reason}", path.display())]
    Invalid {
        /// The component file.
        path: PathBuf,
        /// The validator's or compiler's message.
        reason: String,
    },
    /// The component does not export the stage interface.
    #[error(
        "{} is a component, but not a sluice stage: it does not export `{STAGE_EXPORT}` \
         (it exports {exports}). Build it against the `plugin` world in sluice's wit/ directory",
        path.display()
    )]
    WrongWorld {
        /// The component file.
        path: PathBuf,
        /// What it exports, for the message.
        exports: String,
    },
    /// The component imports something sluice does not provide.
    #[error(
        "{} imports `{import}`, which sluice does not provide. Stages may import `sluice:pipeline/*` and \
         WASI 0.2: `wasi:cli`, `wasi:io`, `wasi:clocks`, `wasi:random`, `wasi:filesystem` (only \
         `grants.read_dirs`), `wasi:http` (only `grants.allow_http`) and `wasi:sockets` (so that components \
         from standard toolchains load; every socket call fails)",
        path.display()
    )]
    UnknownImport {
        /// The component file.
        path: PathBuf,
        /// The import's name.
        import: String,
    },
    /// Linking failed for another reason (e.g. a type mismatch).
    #[error("{} cannot be linked: {reason}", path.display())]
    Link {
        /// The component file.
        path: PathBuf,
        /// wasmtime's message.
        reason: String,
    },
    /// `init` refused the stage's configuration.
    #[error("the stage refused its config: {0}")]
    InitRefused(String),
    /// `init` trapped.
    #[error("the stage trapped in init: {0}")]
    InitTrapped(Trap),
    /// A grant (e.g. a directory) could not be given to the stage.
    #[error("cannot grant the stage what its config asks: {0}")]
    Grant(String),
}

/// Why a call into a stage failed at the WebAssembly level. The instance it
/// happened in cannot be entered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trap {
    /// Whether a limit (fuel, timeout, memory, stack) stopped the call, as
    /// opposed to the guest crashing (panic, `unreachable`, bad access).
    pub limit: bool,
    /// What happened.
    pub reason: String,
    /// What the guest wrote to stderr during the failed call (a panic
    /// message, a traceback), if anything.
    pub stderr: String,
}

impl Trap {
    pub(crate) fn breach(breach: Breach) -> Self {
        Trap { limit: true, reason: breach.to_string(), stderr: String::new() }
    }
}

impl fmt::Display for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if !self.stderr.is_empty() {
            // The guest's text, on one line wherever a trap is printed (the
            // terminal, the log): its line breaks and escapes are shown, not sent.
            write!(f, "; guest stderr: {}", log_safe(&self.stderr))?;
        }
        Ok(())
    }
}

/// Explains a failed call: which limit it broke, or what trapped.
pub(super) fn trap(e: &wasmtime::Error, store: &mut Store<StoreData>, stderr_mark: u64, budget: Budget) -> Trap {
    let stderr = store.data().stderr.tail_since(stderr_mark);
    let code = e.downcast_ref::<wasmtime::Trap>();
    let breach = store.data_mut().limiter.breach.take().or(match code {
        Some(wasmtime::Trap::OutOfFuel) => budget.fuel.map(Breach::Fuel),
        Some(wasmtime::Trap::Interrupt) => budget.timeout.map(|t| budget.timed_out(t)),
        Some(wasmtime::Trap::StackOverflow) => Some(Breach::StackOverflow),
        // wasmtime's (private) error for its per-call copy cap.
        None if e.chain().any(|c| c.to_string().starts_with("too much data is being copied")) => Some(Breach::CallData),
        _ => None,
    });
    match breach {
        Some(breach) => Trap { limit: true, reason: breach.to_string(), stderr },
        None => {
            let mut reason = code.map_or_else(|| root_cause(e), ToString::to_string);
            if code == Some(&wasmtime::Trap::MemoryOutOfBounds) {
                reason.push_str(
                    " (in a stage written in Rust or C this is usually its own stack overflowing: too deep a recursion)",
                );
            }
            Trap { limit: false, reason, stderr }
        }
    }
}

/// The innermost cause of a wasmtime error: the useful part for users.
pub(crate) fn root_cause(e: &wasmtime::Error) -> String {
    e.root_cause().to_string()
}

/// Every cause of a wasmtime error, outermost first, joined by ": ".
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

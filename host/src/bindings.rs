//! Host bindings for the `sluice:pipeline` WIT package, generated once.
#![allow(missing_docs, unreachable_pub)]

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wit",
    imports: {
        "sluice:pipeline/state": async | trappable,
        "sluice:pipeline/emit": async | trappable,
        default: async,
    },
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
});

pub use self::exports::sluice::pipeline::stage::Outcome;
pub use self::sluice::pipeline::types::{Header, Message, StageError};

impl Message {
    /// A message of `value` alone: no key, no headers, no timestamp (what a
    /// line of a file becomes).
    pub fn from_value(value: impl Into<Vec<u8>>) -> Self {
        Message { key: None, value: value.into(), headers: Vec::new(), timestamp: None }
    }
}

/// The export every stage must have, for error messages.
pub const STAGE_EXPORT: &str = "sluice:pipeline/stage@0.1.0";

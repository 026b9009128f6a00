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

/// The export every stage must have, for error messages.
pub const STAGE_EXPORT: &str = "sluice:pipeline/stage@0.1.0";

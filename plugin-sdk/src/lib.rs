//! Write [sluice](https://github.com/sluice-rs/sluice) pipeline stages in Rust.
//!
//! A stage is a type that implements [`Stage`], exported with one
//! [`export_stage!`] line. sluice calls [`Stage::new`] once per instance with the
//! stage's `config` table from the pipeline file, then [`Stage::process`] for
//! every message. The batch entry point of the WIT contract is provided for you.
//!
//! ```no_run
//! use serde::Deserialize;
//! use sluice_sdk::{Message, Stage, StageError};
//!
//! /// Upper-cases one string field of each JSON message.
//! struct Shout {
//!     field: String,
//! }
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     field: String,
//! }
//!
//! impl Stage for Shout {
//!     type Config = Config;
//!
//!     fn new(config: Config) -> Result<Self, String> {
//!         Ok(Shout { field: config.field })
//!     }
//!
//!     fn process(&mut self, mut message: Message) -> Result<Vec<Message>, StageError> {
//!         let mut doc = message.json()?;
//!         let Some(text) = doc.get(&self.field).and_then(|v| v.as_str()) else {
//!             return Err(StageError::invalid(format!("no string field `{}`", self.field)));
//!         };
//!         doc[&self.field] = text.to_uppercase().into();
//!         message.set_json(&doc)?;
//!         Ok(vec![message])
//!     }
//! }
//!
//! sluice_sdk::export_stage!(Shout);
//! ```
//!
//! A stage that only reads a field need not build the whole document:
//! `message.json_field(&path)?` (a [`json::FieldPath`]) checks the value is
//! JSON and builds that field alone (`json-filter` runs 1.4x faster for it,
//! docs/benchmarks.md).
//!
//! A stage that changes a field or two can do it in the message's text:
//! [`Message::set_json_field`] and [`Message::remove_json_field`] keep the rest
//! of the document as it came (key order, spacing).
//!
//! Build it as a component with `cargo build --target wasm32-wasip2` (see the
//! sluice README for machines where that target cannot be installed).
//!
//! Besides [`Stage`], a stage may call the host: [`log`] (and the [`info!`]
//! family of macros), [`http::get`], key-value [`state`] that lasts across
//! messages and runs, and [`emit`] to send outputs downstream before
//! `process` returns. Natively (a stage's unit tests), `state` and `emit`
//! work on per-thread in-memory stand-ins; see their docs.

extern crate self as sluice_sdk;

mod emit;
mod message;

pub mod http;
pub mod json;
pub mod log;
pub mod state;

pub use emit::emit;
#[cfg(not(target_arch = "wasm32"))]
pub use emit::take_emitted;

/// Bindings generated from `wit/` (the `sluice:pipeline` package).
///
/// Most stages never need these directly: the crate root re-exports the types.
#[allow(missing_docs, unreachable_pub)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "sluice_sdk::bindings",
        runtime_path: "sluice_sdk::__private::wit_bindgen::rt",
        additional_derives: [PartialEq, Clone],
    });
}

pub use bindings::sluice::pipeline::types::{Header, Message, StageError};
use serde::de::DeserializeOwned;

/// A pipeline stage.
///
/// One value of this type lives in each instance of the stage. sluice may run
/// several instances side by side, so state kept here is per instance.
pub trait Stage: Sized + 'static {
    /// The stage's settings: the `config` table of the stage in the pipeline
    /// file, deserialised from JSON. Use `#[serde(deny_unknown_fields)]` so a
    /// typo in the pipeline file is an error, and [`NoConfig`] for none.
    type Config: DeserializeOwned;

    /// Builds the stage from its settings. An `Err` stops the pipeline before
    /// it starts, with the message shown to the user next to the stage name.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Processes one message: returns the messages to send downstream (none
    /// to drop it, several to split it), or why it failed.
    fn process(&mut self, message: Message) -> Result<Vec<Message>, StageError>;

    /// Processes a batch, one outcome per input in order. The default calls
    /// [`Stage::process`] for each; override it only to share work across a
    /// batch.
    fn process_batch(&mut self, messages: Vec<Message>) -> Vec<Result<Vec<Message>, StageError>> {
        messages.into_iter().map(|m| self.process(m)).collect()
    }
}

/// Settings type for a stage that takes none: any key in its `config` table
/// is an error.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

impl StageError {
    /// The message is bad; it goes to the dead-letter sink and is never retried.
    pub fn invalid(reason: impl Into<String>) -> Self {
        StageError::Invalid(reason.into())
    }

    /// A dependency failed; the host may retry the message.
    pub fn transient(reason: impl Into<String>) -> Self {
        StageError::Transient(reason.into())
    }
}

impl std::fmt::Display for StageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StageError::Invalid(reason) => write!(f, "invalid: {reason}"),
            StageError::Transient(reason) => write!(f, "transient: {reason}"),
        }
    }
}

impl std::error::Error for StageError {}

/// Exports a [`Stage`] implementation as the component's `stage` interface.
///
/// Write it once, at the root of the stage's crate: `sluice_sdk::export_stage!(MyStage);`
#[macro_export]
macro_rules! export_stage {
    ($stage:ty) => {
        const _: () = {
            struct __SluiceExport;

            ::std::thread_local! {
                static __SLUICE_STAGE: $crate::__private::Slot<$stage> = const { $crate::__private::Slot::new() };
            }

            impl $crate::__private::Guest for __SluiceExport {
                fn init(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    __SLUICE_STAGE.with(|slot| slot.init(&config))
                }

                fn process(message: $crate::Message) -> $crate::__private::Outcome {
                    __SLUICE_STAGE.with(|slot| slot.with(|stage| $crate::Stage::process(stage, message)))
                }

                fn process_batch(
                    messages: ::std::vec::Vec<$crate::Message>,
                ) -> ::std::vec::Vec<$crate::__private::Outcome> {
                    __SLUICE_STAGE.with(|slot| slot.with(|stage| $crate::Stage::process_batch(stage, messages)))
                }
            }

            // The exports only exist in a component; on the host target the stage
            // still compiles, so its unit tests run natively.
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::__export_plugin!(__SluiceExport with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use super::*;
    use std::cell::RefCell;

    pub use bindings::exports::sluice::pipeline::stage::{Guest, Outcome};
    pub use wit_bindgen;

    /// Holds the one stage value of this instance.
    pub struct Slot<S>(RefCell<Option<S>>);

    impl<S: Stage> Slot<S> {
        pub const fn new() -> Self {
            Slot(RefCell::new(None))
        }

        pub fn init(&self, config: &str) -> Result<(), String> {
            let config: S::Config = serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))?;
            *self.0.borrow_mut() = Some(S::new(config)?);
            Ok(())
        }

        pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
            let mut slot = self.0.borrow_mut();
            // The host always calls `init` first; reaching this is a host bug.
            let stage = slot.as_mut().expect("sluice called the stage before `init`");
            f(stage)
        }
    }
}

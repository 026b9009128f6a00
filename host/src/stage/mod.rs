//! A stage at run time: its compiled component linked once (`StagePre`), and
//! the instances made from it, each in its own `Store`.
//!
//! One way down: `load` (the `StagePre`) makes instances (`instance`), whose
//! calls run under a `budget`; `check` and `error` name what went wrong;
//! `store` is the data every `Store` carries, below them all.

mod budget;
mod check;
mod error;
mod instance;
mod load;
mod store;

pub(crate) use error::chain;
pub use error::{LoadError, Trap};
pub(crate) use instance::{Batch, StageInstance};
pub(crate) use load::{StagePre, StageSpec};
pub(crate) use store::{StoreData, linker};

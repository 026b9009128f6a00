//! A stage at run time: its compiled component linked once (`StagePre`), and
//! the instances made from it, each in its own `Store`.

mod instance;
mod load;
mod native;
mod store;

pub(crate) use instance::StageInstance;
pub use instance::Trap;
pub use load::LoadError;
pub(crate) use load::{StagePre, StageSpec, chain};
pub use native::NativeStage;
pub(crate) use store::StoreData;

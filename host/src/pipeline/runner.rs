//! What runs a stage's messages: instances of a component, or a Rust function.

use crate::limits::Limits;
use crate::native::NativeStage;
use crate::stage::StagePre;
use std::sync::Arc;

/// What runs a stage's messages.
#[derive(Clone)]
pub(in crate::pipeline) enum Runner {
    /// A WebAssembly component, in instances from `StagePre`.
    Wasm(Arc<StagePre>),
    /// A Rust function (`StageConfig::native`).
    Native(NativeRunner),
}

#[derive(Clone)]
pub(in crate::pipeline) struct NativeRunner {
    pub(in crate::pipeline) name: Arc<str>,
    pub(in crate::pipeline) limits: Limits,
    pub(in crate::pipeline) stage: NativeStage,
}

impl Runner {
    pub(in crate::pipeline) fn name(&self) -> &Arc<str> {
        match self {
            Runner::Wasm(pre) => pre.name(),
            Runner::Native(native) => &native.name,
        }
    }

    pub(in crate::pipeline) fn limits(&self) -> &Limits {
        match self {
            Runner::Wasm(pre) => pre.limits(),
            Runner::Native(native) => &native.limits,
        }
    }
}

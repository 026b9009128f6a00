//! Host capabilities: one module per WIT interface a stage may import.
//!
//! Adding a capability means a new module here with its `*Ctx` and
//! `add_to_linker`, a field in [`crate::stage::StoreData`], and one line in
//! [`add_to_linker`].

pub(crate) mod emit;
pub(crate) mod http;
pub(crate) mod log;
pub(crate) mod state;
pub(crate) mod stdio;

use crate::bindings;
use crate::stage::StoreData;
use wasmtime::component::{HasSelf, Linker};

/// Links every capability sluice offers to stages.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    // The full WASI p2 set: guests built by componentize-py and jco import all of it. Authority
    // comes from each store's `WasiCtx`, which grants nothing (see `stage::store`).
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    bindings::sluice::pipeline::types::add_to_linker::<StoreData, HasSelf<StoreData>>(linker, |d| d)?;
    log::add_to_linker(linker)?;
    http::add_to_linker(linker)?;
    emit::add_to_linker(linker)?;
    state::add_to_linker(linker)?;
    Ok(())
}

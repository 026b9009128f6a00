//! Host capabilities: one module per WIT interface a stage may import.
//!
//! Each capability has its `*Ctx` (its per-instance state), a `*View` trait
//! that reaches the ctx in a store's data (wasmtime-wasi's pattern), and an
//! `add_to_linker` generic over that view, so capabilities do not know the
//! store's data type: `stage::StoreData` implements the views. Adding a
//! capability means a new module here, a field and a view impl in the store
//! data, and one line in [`add_to_linker`].

pub(crate) mod emit;
pub(crate) mod http;
pub(crate) mod log;
pub(crate) mod state;
pub(crate) mod stdio;

use crate::bindings::sluice::pipeline::types;
use emit::EmitView;
use log::LogView;
use state::StateView;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::WasiView;

/// Links every capability sluice offers to stages.
pub(crate) fn add_to_linker<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: WasiView + http::HttpView + LogView + StateView + EmitView + 'static,
{
    // The full WASI p2 set: guests built by componentize-py and jco import all of it. Authority
    // comes from each store's `WasiCtx`, which grants nothing (see `stage::store`).
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    types::add_to_linker::<T, Types>(linker, |_| Types)?;
    log::add_to_linker(linker)?;
    http::add_to_linker(linker)?;
    state::add_to_linker(linker)?;
    emit::add_to_linker(linker)?;
    Ok(())
}

/// `sluice:pipeline/types` only declares types: its host holds nothing.
struct Types;

impl HasData for Types {
    type Data<'a> = Types;
}

impl types::Host for Types {}

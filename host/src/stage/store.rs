//! The data every stage `Store` carries: one context per capability.

use crate::bindings::sluice::pipeline::types;
use crate::capabilities::log::LogCtx;
use crate::capabilities::stdio::{GuestOutput, Stream};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub(crate) struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) log: LogCtx,
    /// The guest's stderr, kept to explain traps.
    pub(crate) stderr: GuestOutput,
}

impl StoreData {
    /// A store for one instance of `stage`, with no ambient authority: no
    /// preopened directories, no environment, no arguments, no network
    /// (wasmtime-wasi denies every socket address and name lookup unless
    /// allowed). Clocks and randomness are available.
    pub(crate) fn new(stage: &Arc<str>) -> Self {
        let stderr = GuestOutput::new(stage.clone(), Stream::Stderr);
        let wasi = WasiCtx::builder()
            .stdout(GuestOutput::new(stage.clone(), Stream::Stdout))
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        StoreData { wasi, table: ResourceTable::new(), log: LogCtx { stage: stage.clone() }, stderr }
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// `sluice:pipeline/types` only declares types.
impl types::Host for StoreData {}

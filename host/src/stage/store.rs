//! The data every stage `Store` carries: one context per capability, and the
//! limiter; the capabilities' views of it, and the linker over it.

use crate::capabilities;
use crate::capabilities::emit::{EmitCtx, EmitView};
use crate::capabilities::http::{HeldView, HttpCtx, HttpView, StageHttp};
use crate::capabilities::log::{LogBudget, LogCtx, LogView};
use crate::capabilities::state::{StateCtx, StateCtxView, StateView};
use crate::capabilities::stdio::{GuestOutput, Stream};
use crate::config::Grants;
use crate::limits::{Breach, Limits, MAX_RESOURCES, StageLimiter};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::Engine;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

pub(crate) struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) log: LogCtx,
    http: HttpCtx,
    /// The guest's stderr, kept to explain traps.
    pub(crate) stderr: GuestOutput,
    pub(crate) limiter: StageLimiter,
    /// When the current call must end, and the limit it then breaks, for the epoch callback.
    pub(crate) deadline: Option<(Instant, Breach)>,
    pub(crate) emit: EmitCtx,
    pub(crate) state: StateCtx,
}

impl StoreData {
    /// A store for one instance of `stage`. It has no ambient authority: no
    /// directories, environment, arguments or network, unless `grants` says
    /// so. Clocks and randomness are available. `http` is what the stage's
    /// instances share of outbound HTTP.
    pub(crate) fn new(stage: &Arc<str>, limits: &Limits, grants: &Grants, http: &StageHttp) -> wasmtime::Result<Self> {
        let budget = LogBudget::new(limits.max_log_records);
        let stderr = GuestOutput::new(stage.clone(), Stream::Stderr, budget.clone());
        let mut wasi = WasiCtx::builder();
        wasi.stdout(GuestOutput::new(stage.clone(), Stream::Stdout, budget.clone()))
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false);
        for (guest, host) in &grants.read_dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)?;
        }
        for (key, value) in &grants.env {
            wasi.env(key, value);
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Ok(StoreData {
            wasi: wasi.build(),
            table,
            log: LogCtx { stage: stage.clone(), budget },
            http: HttpCtx::new(http),
            stderr,
            limiter: StageLimiter::new(limits),
            deadline: None,
            emit: EmitCtx::new(limits.output_caps()),
            state: StateCtx::default(),
        })
    }
}

impl StoreData {
    /// Resource handles the guest holds, of [`MAX_RESOURCES`]. It counts the
    /// table's slots (a freed slot is reused before the table grows).
    pub(crate) fn resources(&mut self) -> usize {
        self.table.iter_mut().count()
    }
}

/// The linker every stage is linked with: each capability, over this data.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<StoreData>> {
    let mut linker = Linker::new(engine);
    capabilities::add_to_linker(&mut linker)?;
    Ok(linker)
}

// The capabilities' views: plain field accesses, monomorphised into each
// host function (no dynamic dispatch on a call's path).

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for StoreData {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.http.view(&mut self.table)
    }
}

impl HttpView for StoreData {
    fn http_held(&mut self) -> HeldView<'_> {
        self.http.held_view(&mut self.table, &mut self.limiter.breach)
    }
}

impl EmitView for StoreData {
    fn emit(&mut self) -> &mut EmitCtx {
        &mut self.emit
    }
}

impl LogView for StoreData {
    fn log(&mut self) -> &mut LogCtx {
        &mut self.log
    }
}

impl StateView for StoreData {
    fn state(&mut self) -> StateCtxView<'_> {
        StateCtxView { ctx: &mut self.state, limiter: &mut self.limiter }
    }
}

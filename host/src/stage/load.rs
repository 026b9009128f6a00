//! Loading a stage's component: check the file, compile it, check its world,
//! and link it once into an `InstancePre`.

use super::instance::{Budget, StageInstance, Trap, trap};
use super::store::StoreData;
use crate::bindings::{PluginPre, STAGE_EXPORT};
use crate::capabilities::http::StageHttp;
use crate::config::Grants;
use crate::engine::{CompileCache, Instrumentation};
use crate::limits::Limits;
use crate::state::StateScope;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

/// Why a stage's component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The component file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The path is not a regular file: a directory, a FIFO, a device.
    #[error("{} {what}: give the path of the stage's component (.wasm) file", path.display())]
    NotAFile {
        /// The plugin path.
        path: PathBuf,
        /// What it is instead, e.g. "is a directory".
        what: &'static str,
    },
    /// The file is not WebAssembly at all.
    #[error("{} is not a WebAssembly component: {what}", path.display())]
    NotWasm {
        /// The component file.
        path: PathBuf,
        /// What it looks like instead.
        what: String,
    },
    /// The file is a core WebAssembly module, not a component.
    #[error(
        "{} is a core WebAssembly module, not a component: build the stage for the \
         wasm32-wasip2 target, or wrap the module with `wasm-tools component new`",
        path.display()
    )]
    CoreModule {
        /// The component file.
        path: PathBuf,
    },
    /// The component is malformed (truncated, corrupt) or cannot be compiled.
    #[error("{} is not a valid component: {reason}", path.display())]
    Invalid {
        /// The component file.
        path: PathBuf,
        /// The validator's or compiler's message.
        reason: String,
    },
    /// The component does not export the stage interface.
    #[error(
        "{} is a component, but not a sluice stage: it does not export `{STAGE_EXPORT}` \
         (it exports {exports}). Build it against the `plugin` world in sluice's wit/ directory",
        path.display()
    )]
    WrongWorld {
        /// The component file.
        path: PathBuf,
        /// What it exports, for the message.
        exports: String,
    },
    /// The component imports something sluice does not provide.
    #[error(
        "{} imports `{import}`, which sluice does not provide. Stages may import `sluice:pipeline/*` and \
         WASI 0.2: `wasi:cli`, `wasi:io`, `wasi:clocks`, `wasi:random`, `wasi:filesystem` (only \
         `grants.read_dirs`), `wasi:http` (only `grants.allow_http`) and `wasi:sockets` (so that components \
         from standard toolchains load; every socket call fails)",
        path.display()
    )]
    UnknownImport {
        /// The component file.
        path: PathBuf,
        /// The import's name.
        import: String,
    },
    /// Linking failed for another reason (e.g. a type mismatch).
    #[error("{} cannot be linked: {reason}", path.display())]
    Link {
        /// The component file.
        path: PathBuf,
        /// wasmtime's message.
        reason: String,
    },
    /// `init` refused the stage's configuration.
    #[error("the stage refused its config: {0}")]
    InitRefused(String),
    /// `init` trapped.
    #[error("the stage trapped in init: {0}")]
    InitTrapped(Trap),
    /// A grant (e.g. a directory) could not be given to the stage.
    #[error("cannot grant the stage what its config asks: {0}")]
    Grant(String),
}

/// A stage's component, compiled and linked, ready to instantiate.
pub(crate) struct StagePre {
    name: Arc<str>,
    engine: Engine,
    pre: PluginPre<StoreData>,
    /// The stage's `config` table as JSON text, passed to `init`.
    config: String,
    limits: Limits,
    grants: Grants,
    inst: Instrumentation,
    /// Whether the compiled component came from the compile cache.
    from_cache: bool,
    /// Whether the component imports `sluice:pipeline/emit` / `state`.
    uses_emit: bool,
    uses_state: bool,
    /// The stage's view of the state store, given to every instance.
    state: Option<StateScope>,
    /// What the stage's instances share of outbound HTTP (its count of
    /// requests in flight).
    http: StageHttp,
}

/// What a stage is made of, besides its component file.
pub(crate) struct StageSpec {
    pub(crate) name: Arc<str>,
    /// The `config` table as JSON, for `init`.
    pub(crate) config: String,
    pub(crate) limits: Limits,
    pub(crate) grants: Grants,
    pub(crate) inst: Instrumentation,
}

impl StagePre {
    /// Reads, checks, compiles and links `path`. CPU-heavy (compilation): call
    /// it from a blocking thread.
    pub(crate) fn load(
        engine: &Engine,
        linker: &Linker<StoreData>,
        path: &Path,
        spec: StageSpec,
    ) -> Result<Self, LoadError> {
        check_file_type(path)?;
        let bytes = std::fs::read(path).map_err(|error| LoadError::Read { path: path.into(), error })?;
        check_header(path, &bytes)?;
        let (component, from_cache) = CompileCache::from_env()
            .component(engine, &bytes)
            .map_err(|e| LoadError::Invalid { path: path.into(), reason: root_cause(&e) })?;
        check_world(engine, path, &component)?;
        let imports =
            |interface: &str| component.component_type().imports(engine).any(|(name, _)| name.starts_with(interface));
        let (uses_emit, uses_state) = (imports("sluice:pipeline/emit"), imports("sluice:pipeline/state"));
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| link_error(path, &e))?;
        let pre =
            PluginPre::new(instance_pre).map_err(|e| LoadError::Link { path: path.into(), reason: root_cause(&e) })?;
        let StageSpec { name, config, limits, grants, inst } = spec;
        let http = StageHttp::new(grants.allow_http.iter().cloned(), &limits);
        Ok(StagePre {
            name,
            engine: engine.clone(),
            pre,
            config,
            limits,
            grants,
            inst,
            from_cache,
            uses_emit,
            uses_state,
            state: None,
            http,
        })
    }

    /// Whether the stage emits messages while processing (imports `emit`).
    pub(crate) fn uses_emit(&self) -> bool {
        self.uses_emit
    }

    /// Whether the stage keeps state (imports `state`).
    pub(crate) fn uses_state(&self) -> bool {
        self.uses_state
    }

    /// Gives every instance made from now on this view of the state store.
    pub(crate) fn set_state(&mut self, scope: StateScope) {
        self.state = Some(scope);
    }

    /// Whether the compiled component came from the compile cache.
    pub(crate) fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// The stage's name from the pipeline file.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The limits the stage runs under.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A fresh, initialised instance. Instantiation and `init` run guest code,
    /// under the (larger) start-up budget.
    pub(crate) async fn instantiate(&self) -> Result<StageInstance, LoadError> {
        let data = StoreData::new(&self.name, &self.limits, &self.grants, &self.http)
            .map_err(|e| LoadError::Grant(root_cause(&e)))?;
        let mut store = Store::new(&self.engine, data);
        let budget = Budget { fuel: self.limits.init_fuel(), timeout: self.limits.init_timeout(), init: true };
        StageInstance::arm_store(&mut store, self.inst, budget);
        let plugin = match self.pre.instantiate_async(&mut store).await {
            Ok(plugin) => plugin,
            Err(e) => return Err(LoadError::InitTrapped(trap(&e, &mut store, 0, budget))),
        };
        let mut instance = StageInstance::new(store, plugin, self.limits, self.inst);
        if let Some(scope) = &self.state {
            instance.set_state(scope.clone());
        }
        instance.init(&self.config, budget).await?;
        Ok(instance)
    }
}

/// A plugin path that is not a regular file is named for what it is: reading
/// a directory fails with a bare "Is a directory", and reading a FIFO would
/// wait for a writer forever.
fn check_file_type(path: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::FileTypeExt;
    // A path that cannot be looked up is reported by the read that follows.
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    let ty = meta.file_type();
    let what = if ty.is_file() {
        return Ok(());
    } else if ty.is_dir() {
        "is a directory"
    } else if ty.is_fifo() {
        "is a FIFO, not a file"
    } else if ty.is_char_device() {
        "is a character device, not a file"
    } else if ty.is_block_device() {
        "is a block device, not a file"
    } else if ty.is_socket() {
        "is a socket, not a file"
    } else {
        "is not a regular file"
    };
    Err(LoadError::NotAFile { path: path.into(), what })
}

/// Tells apart "not wasm", "core module" and "component" from the preamble,
/// so each gets its own message instead of a parser error.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE: [u8; 4] = [1, 0, 0, 0];
    const COMPONENT_LAYER: [u8; 2] = [1, 0];
    if bytes.len() < 8 {
        let what = if bytes.is_empty() {
            "the file is empty".to_string()
        } else {
            format!("the file is only {} bytes long", bytes.len())
        };
        return Err(LoadError::NotWasm { path: path.into(), what });
    }
    if &bytes[..4] != MAGIC {
        let what = if bytes.starts_with(b"\x7fELF") {
            "it is an ELF executable or library (a native build, not wasm32-wasip2)".to_string()
        } else {
            format!(
                "it does not start with the wasm magic bytes `\\0asm` (it starts with {:?})",
                String::from_utf8_lossy(&bytes[..8])
            )
        };
        return Err(LoadError::NotWasm { path: path.into(), what });
    }
    if bytes[4..8] == CORE {
        return Err(LoadError::CoreModule { path: path.into() });
    }
    if bytes[6..8] != COMPONENT_LAYER {
        return Err(LoadError::Invalid {
            path: path.into(),
            reason: format!("unknown WebAssembly version/layer {:?}", &bytes[4..8]),
        });
    }
    Ok(())
}

fn check_world(engine: &Engine, path: &Path, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    if !exports.iter().any(|e| e == STAGE_EXPORT) {
        let exports = if exports.is_empty() {
            "nothing".to_string()
        } else {
            exports.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
        };
        return Err(LoadError::WrongWorld { path: path.into(), exports });
    }
    Ok(())
}

/// Turns `instantiate_pre`'s error into [`LoadError::UnknownImport`] when an
/// import is simply not provided, naming it, and [`LoadError::Link`] otherwise
/// (e.g. a provided interface with a different signature).
fn link_error(path: &Path, e: &wasmtime::Error) -> LoadError {
    // wasmtime: "component imports instance `NAME`, but a matching
    // implementation was not found in the linker", caused by "... implementation is missing".
    let missing = e.chain().any(|c| c.to_string().ends_with("implementation is missing"));
    let import = e.to_string().split('`').nth(1).map(str::to_string);
    match (missing, import) {
        (true, Some(import)) => LoadError::UnknownImport { path: path.into(), import },
        _ => LoadError::Link { path: path.into(), reason: chain(e) },
    }
}

/// The innermost cause of a wasmtime error: the useful part for users.
pub(crate) fn root_cause(e: &wasmtime::Error) -> String {
    e.root_cause().to_string()
}

/// Every cause of a wasmtime error, outermost first, joined by ": ".
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

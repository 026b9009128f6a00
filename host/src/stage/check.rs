//! What a component file is, when it is not a sluice stage: each way a file
//! can fail to load gets its own message, naming the file and what to do.

use super::error::{LoadError, chain};
use crate::bindings::STAGE_EXPORT;
use std::path::Path;
use wasmtime::Engine;
use wasmtime::component::Component;

/// A plugin path that is not a regular file is named for what it is: reading
/// a directory fails with a bare "Is a directory", and reading a FIFO would
/// wait for a writer forever.
pub(super) fn check_file_type(path: &Path) -> Result<(), LoadError> {
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
pub(super) fn check_header(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
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

pub(super) fn check_world(engine: &Engine, path: &Path, component: &Component) -> Result<(), LoadError> {
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
pub(super) fn link_error(path: &Path, e: &wasmtime::Error) -> LoadError {
    // wasmtime: "component imports instance `NAME`, but a matching
    // implementation was not found in the linker", caused by "... implementation is missing".
    let missing = e.chain().any(|c| c.to_string().ends_with("implementation is missing"));
    let import = e.to_string().split('`').nth(1).map(str::to_string);
    match (missing, import) {
        (true, Some(import)) => LoadError::UnknownImport { path: path.into(), import },
        _ => LoadError::Link { path: path.into(), reason: chain(e) },
    }
}

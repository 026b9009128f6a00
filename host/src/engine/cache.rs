//! Compiled components cached on disk, so that a stage compiles once per
//! machine rather than once per run: a Python or JavaScript component takes
//! seconds to compile and tens of milliseconds to load precompiled.
//!
//! An entry is keyed by the SHA-256 of the component's bytes and by wasmtime's
//! compatibility hash (its version and every engine setting that affects code),
//! so a changed component or engine never reuses a stale entry. Each entry
//! ends with the SHA-256 of its contents, checked before it is loaded: a
//! truncated or corrupt entry is deleted and rebuilt, never run.
//!
//! Location: `$SLUICE_CACHE` if set (`off` disables the cache), else
//! `$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

const DIGEST: usize = 32;

/// Where compiled components are kept, if anywhere.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: Option<PathBuf>,
}

impl CompileCache {
    /// The cache the environment asks for.
    pub(crate) fn from_env() -> Self {
        let dir = match std::env::var_os("SLUICE_CACHE") {
            Some(v) if v == "off" => None,
            Some(v) => Some(PathBuf::from(v)),
            None => std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|base| base.join("sluice")),
        };
        CompileCache { dir }
    }

    /// The component for `wasm`: from the cache, or compiled (and cached).
    /// Failing to read or write the cache is never an error: it compiles.
    /// The flag says whether it came from the cache.
    pub(crate) fn component(&self, engine: &Engine, wasm: &[u8]) -> wasmtime::Result<(Component, bool)> {
        let Some(dir) = &self.dir else { return Ok((Component::new(engine, wasm)?, false)) };
        let path = dir.join(entry_name(engine, wasm));
        if let Some(component) = load(engine, &path) {
            return Ok((component, true));
        }
        let artifact = engine.precompile_component(wasm)?;
        if let Err(e) = store(dir, &path, &artifact) {
            tracing::debug!("cannot write the compile cache at {}: {e}", path.display());
        }
        // SAFETY: `artifact` was produced just now by this engine.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &artifact)? };
        Ok((component, false))
    }
}

fn entry_name(engine: &Engine, wasm: &[u8]) -> String {
    let content = Sha256::digest(wasm);
    let mut engine_hash = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    format!("{}-{:016x}.cwasm", hex(&content[..16]), engine_hash.finish())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A verified entry, or `None` (missing, corrupt or stale entries are removed).
fn load(engine: &Engine, path: &Path) -> Option<Component> {
    let bytes = std::fs::read(path).ok()?;
    let intact = bytes.len() > DIGEST && {
        let (artifact, digest) = bytes.split_at(bytes.len() - DIGEST);
        Sha256::digest(artifact).as_slice() == digest
    };
    if !intact {
        tracing::warn!("compile cache entry {} is corrupt: recompiling", path.display());
        let _ = std::fs::remove_file(path);
        return None;
    }
    let artifact = &bytes[..bytes.len() - DIGEST];
    // SAFETY: the entry's checksum matches, so these are the exact bytes this
    // cache wrote after `Engine::precompile_component`; wasmtime checks that
    // they match this engine's version and settings and refuses them if not.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, artifact) };
    match component {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!("compile cache entry {} is stale ({e}): recompiling", path.display());
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// Writes an entry atomically: a temporary file, renamed into place.
fn store(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(artifact)?;
    temp.write_all(&Sha256::digest(artifact))?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The smallest component: `(component)`.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn cache(dir: &Path) -> CompileCache {
        CompileCache { dir: Some(dir.to_path_buf()) }
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
    }

    #[test]
    fn a_compiled_component_is_stored_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let (_, cached) = cache(dir.path()).component(&engine, EMPTY_COMPONENT).unwrap();
        assert!(!cached, "compiled the first time");
        let stored = entries(dir.path());
        assert_eq!(stored.len(), 1);
        assert!(load(&engine, &stored[0]).is_some(), "the entry loads");
        let (_, cached) = cache(dir.path()).component(&engine, EMPTY_COMPONENT).unwrap();
        assert!(cached, "loaded from the cache the second time");
    }

    #[test]
    fn a_corrupt_entry_is_removed_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = cache(dir.path());
        cache.component(&engine, EMPTY_COMPONENT).unwrap();
        let entry = entries(dir.path()).remove(0);
        let mut bytes = std::fs::read(&entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&entry, &bytes).unwrap();
        assert!(load(&engine, &entry).is_none(), "a flipped byte is caught by the checksum");
        assert!(!entry.exists(), "and the entry is removed");
        cache.component(&engine, EMPTY_COMPONENT).unwrap();
        assert!(load(&engine, &entry).is_some(), "then rebuilt");
    }

    #[test]
    fn a_different_engine_configuration_uses_another_entry() {
        let dir = tempfile::tempdir().unwrap();
        let plain = Engine::default();
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let fuel = Engine::new(&config).unwrap();
        assert_ne!(entry_name(&plain, EMPTY_COMPONENT), entry_name(&fuel, EMPTY_COMPONENT));
        cache(dir.path()).component(&plain, EMPTY_COMPONENT).unwrap();
        cache(dir.path()).component(&fuel, EMPTY_COMPONENT).unwrap();
        assert_eq!(entries(dir.path()).len(), 2);
    }
}

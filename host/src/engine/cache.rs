//! Compiled components cached on disk, so that a stage compiles once per
//! machine rather than once per run: a Python or JavaScript component takes
//! seconds to compile and tens of milliseconds to load precompiled.
//!
//! Why our own cache and not wasmtime's (`Config::cache`, measured on
//! wasmtime 48.0.8 for issue 12; figures in docs/benchmarks.md, "Compile
//! cache"). Its cache does not serve on either count that matters here:
//! - It does not reject a corrupt entry. Entries are zstd frames written
//!   without a content checksum, and nothing else checks them: of 400 entries
//!   with one bit flipped (the `upper` plugin's), 265 loaded as the component,
//!   1 panicked inside wasmtime (`type_registry.rs`), and only 134 were
//!   refused and recompiled. A truncated entry is refused. Corrupt machine
//!   code that loads is code that runs.
//! - Warm start is slower: every load decompresses the whole entry (zstd; the
//!   level cannot be set to "none"). `sluice check` of a Python + JavaScript
//!   pipeline, warm, median of 15 alternating runs of one binary: 0.14 s
//!   wall / 0.16 s CPU with this cache, 0.22 s / 0.23 s with wasmtime's.
//!
//! So this cache keeps the host's one `unsafe` block (loading a verified
//! entry: `Component::deserialize` has no safe form), allowed here alone; the
//! workspace lints say `unsafe_code = "deny"`, since `"forbid"` would refuse
//! that `allow`.
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
use std::ffi::OsString;
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
        Self::from_vars(|name| std::env::var_os(name))
    }

    /// The cache these environment variables ask for (a function, so that
    /// tests need not change the process's environment).
    fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let dir = match var("SLUICE_CACHE") {
            Some(v) if v == "off" => None,
            Some(v) => Some(PathBuf::from(v)),
            None => var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
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
        // Compiled, then serialized for the cache: the component in hand is
        // the one compiled, never bytes read back (which would need `unsafe`).
        let component = Component::new(engine, wasm)?;
        let stored = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|artifact| store(dir, &path, &artifact).map_err(|e| e.to_string()));
        if let Err(e) = stored {
            tracing::debug!("cannot write the compile cache at {}: {e}", path.display());
        }
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
    // cache wrote from `Component::serialize`; wasmtime checks that
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
    use std::collections::HashMap;

    // The smallest component: `(component)`.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn cache(dir: &Path) -> CompileCache {
        CompileCache { dir: Some(dir.to_path_buf()) }
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
    }

    /// The cache's directory for these environment variables.
    fn dir_for(vars: &[(&str, &str)]) -> Option<PathBuf> {
        let vars: HashMap<&str, OsString> = vars.iter().map(|&(k, v)| (k, v.into())).collect();
        CompileCache::from_vars(|name| vars.get(name).cloned()).dir
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
        bytes[middle] ^= 0x01;
        std::fs::write(&entry, &bytes).unwrap();
        assert!(load(&engine, &entry).is_none(), "one flipped bit is caught by the checksum");
        assert!(!entry.exists(), "and the entry is removed");
        let (_, cached) = cache.component(&engine, EMPTY_COMPONENT).unwrap();
        assert!(!cached, "the component is compiled again");
        assert!(load(&engine, &entry).is_some(), "and its entry rebuilt");
    }

    #[test]
    fn a_truncated_entry_is_removed_and_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = cache(dir.path());
        cache.component(&engine, EMPTY_COMPONENT).unwrap();
        let entry = entries(dir.path()).remove(0);
        let bytes = std::fs::read(&entry).unwrap();
        // Cut anywhere, the entry's last 32 bytes are no longer its checksum.
        for len in [0, DIGEST, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&entry, &bytes[..len]).unwrap();
            let (_, cached) = cache.component(&engine, EMPTY_COMPONENT).unwrap();
            assert!(!cached, "an entry cut to {len} of {} bytes was loaded", bytes.len());
            assert_eq!(std::fs::read(&entry).unwrap(), bytes, "the entry is rebuilt whole");
        }
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

    #[test]
    fn the_environment_chooses_the_directory_and_off_disables_the_cache() {
        let home = [("HOME", "/home/u")];
        assert_eq!(dir_for(&home), Some("/home/u/.cache/sluice".into()));
        let xdg = [("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg")];
        assert_eq!(dir_for(&xdg), Some("/xdg/sluice".into()));
        let set = [("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg"), ("SLUICE_CACHE", "/c")];
        assert_eq!(dir_for(&set), Some("/c".into()), "$SLUICE_CACHE is the directory itself");
        let off = [("HOME", "/home/u"), ("XDG_CACHE_HOME", "/xdg"), ("SLUICE_CACHE", "off")];
        assert_eq!(dir_for(&off), None);
        assert_eq!(dir_for(&[]), None, "nowhere to put it: no cache, not the current directory");
    }

    #[test]
    fn without_a_cache_every_load_compiles() {
        let cache = CompileCache { dir: None };
        let engine = Engine::default();
        for _ in 0..2 {
            let (_, cached) = cache.component(&engine, EMPTY_COMPONENT).unwrap();
            assert!(!cached);
        }
    }
}

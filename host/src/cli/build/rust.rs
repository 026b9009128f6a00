//! The Rust route of `sluice build`: rustup's toolchain when it has the
//! `wasm32-wasip2` target, else Debian's with `-Zbuild-std`, installing the
//! component linker (wasm-component-ld) into sluice's cache when it is nowhere.

use super::super::outcome::Unavailable;
use super::{RUST_APT, WASI_LIBC, clean_env, run, toolchains};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const WASI_TARGET: &str = "wasm32-wasip2";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library";

/// How Rust stages get built on this machine.
pub(crate) enum RustToolchain {
    /// rustup's toolchain has the target: plain `cargo build`.
    Rustup,
    /// Debian's toolchain with `-Zbuild-std` (rustup cannot download the
    /// target everywhere); `linker` is the directory of wasm-component-ld,
    /// if it is anywhere yet.
    Debian { linker: Option<PathBuf> },
}

/// The Debian files the Debian route needs, each with what it is.
pub(crate) fn debian_rust_parts() -> [(&'static str, &'static str); 4] {
    [
        ("cargo (cargo-web)", DEBIAN_CARGO),
        ("rustc (rustc-web)", DEBIAN_RUSTC),
        ("std sources (rust-web-src)", DEBIAN_RUST_SRC),
        ("wasi-libc", WASI_LIBC),
    ]
}

impl RustToolchain {
    pub(crate) fn detect() -> Result<Self, Unavailable> {
        if let Some(sysroot) = rustc_sysroot("rustc") {
            if sysroot.join("lib/rustlib").join(WASI_TARGET).is_dir() {
                return Ok(RustToolchain::Rustup);
            }
        }
        let missing: Vec<&str> =
            debian_rust_parts().into_iter().filter(|(_, p)| !Path::new(p).exists()).map(|(what, _)| what).collect();
        if !missing.is_empty() {
            return Err(Unavailable(format!(
                "cannot build a Rust stage: rustup has no `{WASI_TARGET}` target (`rustup target add \
                 {WASI_TARGET}` adds it where rustup can download it) and Debian's Rust toolchain is missing \
                 ({}). Install it with:\n  {RUST_APT}",
                missing.join(", ")
            )));
        }
        Ok(RustToolchain::Debian { linker: component_linker() })
    }
}

fn rustc_sysroot(rustc: &str) -> Option<PathBuf> {
    let out = Command::new(rustc).args(["--print", "sysroot"]).output().ok()?;
    out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The directory holding `wasm-component-ld` (the linker of `wasm32-wasip2`,
/// which Debian does not package): rustup's toolchain, PATH, or what
/// `sluice build` installed.
pub(crate) fn component_linker() -> Option<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(sysroot) = rustc_sysroot("rustc") {
        let host = Command::new("rustc").arg("-vV").output().ok().and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        });
        if let Some(host) = host {
            dirs.push(sysroot.join("lib/rustlib").join(host).join("bin"));
        }
    }
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    if let Ok(cache) = toolchains() {
        dirs.push(cache.join("rust/bin"));
    }
    dirs.into_iter().find(|d| d.join("wasm-component-ld").is_file())
}

pub(super) fn build_rust(dir: &Path, name: &str, out: &Path) -> Result<()> {
    let toolchain = RustToolchain::detect()?;
    // Debian's route builds std from source (`-Zbuild-std`) into the target
    // directory: one shared by every project, in sluice's cache, builds it
    // once per machine instead of once per project (3 minutes each).
    let target_dir = match toolchain {
        RustToolchain::Rustup => dir.join("target"),
        RustToolchain::Debian { .. } => toolchains()?.join("rust-target"),
    };
    let mut cmd = match &toolchain {
        RustToolchain::Rustup => Command::new("cargo"),
        RustToolchain::Debian { .. } => Command::new(DEBIAN_CARGO),
    };
    clean_env(&mut cmd);
    cmd.current_dir(dir).arg("build").args(["--release", "--target", WASI_TARGET]).arg("--target-dir").arg(&target_dir);
    if let RustToolchain::Debian { linker } = toolchain {
        let linker = match linker {
            Some(dir) => dir,
            None => install_component_linker()?,
        };
        let mut path = vec![PathBuf::from("/usr/bin")];
        path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
        path.push(linker);
        cmd.env("PATH", std::env::join_paths(path).context("PATH")?)
            .env("RUSTC", DEBIAN_RUSTC)
            .env("RUSTC_BOOTSTRAP", "1")
            // RUSTFLAGS overrides the project's `.cargo/config.toml`: say
            // SIMD again (`sluice new` writes it there for the rustup route).
            .env("RUSTFLAGS", format!("-C target-feature=+simd128 -C link-self-contained=no -L {WASI_LIBC}"))
            .arg("-Zbuild-std=std,panic_abort");
    }
    // Held from the build to the copy: in a shared target directory, two
    // projects' crates of one name write the same file (cargo's own lock
    // ends with cargo).
    std::fs::create_dir_all(&target_dir).with_context(|| format!("creating {}", target_dir.display()))?;
    let lock_path = target_dir.join(".sluice-build.lock");
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
    run(&mut cmd, "cargo build")?;
    let built = target_dir.join(WASI_TARGET).join("release").join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::copy(&built, out).with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    Ok(())
}

/// `cargo install wasm-component-ld` into the cache: it needs no root.
fn install_component_linker() -> Result<PathBuf> {
    let root = toolchains()?.join("rust");
    stderr!("installing wasm-component-ld into {} (once)", root.display());
    let mut cmd = Command::new(DEBIAN_CARGO);
    clean_env(&mut cmd);
    cmd.args(["install", "--locked", "wasm-component-ld", "--root"]).arg(&root);
    run(&mut cmd, "cargo install wasm-component-ld")?;
    Ok(root.join("bin"))
}

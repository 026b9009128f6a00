//! Builds Rust guests as `wasm32-wasip2` components.
//!
//! Used by `cargo xtask` and by the integration tests' build script, so the
//! components under test are always built from the sources next to them.
//!
//! Where rustup has the `wasm32-wasip2` target, the normal toolchain builds
//! the guests. Where it cannot be installed (no network for rustup), Debian's
//! Rust toolchain builds them with `-Zbuild-std` against Debian's wasi-libc;
//! `scripts/bootstrap` installs it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cargo profile guests are built with (see the workspace `Cargo.toml`).
pub const PROFILE: &str = "guest";
const TARGET: &str = "wasm32-wasip2";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_WASI_LIBC: &str = "/usr/lib/wasm32-wasi";
/// Guests are built with WebAssembly SIMD: wasmtime runs it on every machine
/// sluice runs on, and byte loops (upper-casing, scanning JSON) vectorise: a
/// batched call of 64 records measured 108 ns a record without it and 18 ns
/// with it (issue 17's probe; the pipelines, in docs/benchmarks.md).
const SIMD: &str = "-C target-feature=+simd128";

/// One guest package to build.
#[derive(Debug, Clone)]
pub struct Guest {
    /// Cargo package name, e.g. `json-filter`.
    pub package: String,
    /// Where the built component ends up.
    pub wasm: PathBuf,
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// The package names of every crate directly under `dir` (e.g. `plugins/`)
/// that has a `Cargo.toml`, sorted.
pub fn packages_in(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let manifest = entry?.path().join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest) {
            if let Some(name) = package_name(&text) {
                names.push(name);
            }
        }
    }
    names.sort();
    Ok(names)
}

fn package_name(manifest: &str) -> Option<String> {
    let package = manifest.split("[package]").nth(1)?;
    let line = package.lines().find(|l| l.trim_start().starts_with("name"))?;
    Some(line.split('"').nth(1)?.to_string())
}

/// Builds `packages` into `target_dir` and returns where each component is.
pub fn build(packages: &[String], target_dir: &Path) -> Result<Vec<Guest>, String> {
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    let root = workspace_root();
    let toolchain = Toolchain::detect()?;
    let mut cmd = toolchain.cargo_build();
    cmd.current_dir(&root).arg("--target-dir").arg(target_dir).args(["--profile", PROFILE, "--target", TARGET]);
    for p in packages {
        cmd.args(["--package", p]);
    }
    let status = cmd.status().map_err(|e| format!("could not run cargo for the guests: {e}"))?;
    if !status.success() {
        return Err(format!("building guests {packages:?} failed ({status}); see the cargo output above"));
    }
    let out = target_dir.join(TARGET).join(PROFILE);
    Ok(packages
        .iter()
        .map(|p| Guest { package: p.clone(), wasm: out.join(format!("{}.wasm", p.replace('-', "_"))) })
        .collect())
}

/// Builds every example stage under `plugins/` into
/// `target/plugins/<name>.wasm`, where the example pipelines expect them:
/// Rust crates with cargo, the others (Python, JavaScript, C) with their own
/// `build.sh OUT_WASM`.
pub fn build_plugins() -> Result<Vec<Guest>, String> {
    let root = workspace_root();
    let packages = packages_in(&root.join("plugins")).map_err(|e| format!("reading plugins/: {e}"))?;
    let built = build(&packages, &root.join("target/guests"))?;
    let dist = root.join("target/plugins");
    std::fs::create_dir_all(&dist).map_err(|e| format!("creating {}: {e}", dist.display()))?;
    let mut guests = built
        .into_iter()
        .map(|g| {
            let to = dist.join(format!("{}.wasm", g.package));
            std::fs::copy(&g.wasm, &to)
                .map_err(|e| format!("copying {} to {}: {e}", g.wasm.display(), to.display()))?;
            Ok(Guest { package: g.package, wasm: to })
        })
        .collect::<Result<Vec<_>, String>>()?;
    for dir in scripted_plugins(&root.join("plugins")).map_err(|e| format!("reading plugins/: {e}"))? {
        let name = dir.file_name().expect("a directory entry has a name").to_string_lossy().into_owned();
        let wasm = dist.join(format!("{name}.wasm"));
        if !up_to_date(&wasm, &dir) {
            let mut cmd = Command::new(dir.join("build.sh"));
            clean_env(&mut cmd);
            // Toolchains (a Python venv, the C component tool) live under target/.
            cmd.arg(&wasm)
                .env("SLUICE_TOOLCHAINS", root.join("target/toolchains"))
                .env("CARGO_TARGET_DIR", root.join("target/tools"));
            let status = cmd.status().map_err(|e| format!("running {}/build.sh: {e}", dir.display()))?;
            if !status.success() {
                return Err(format!("{}/build.sh failed ({status}); see its output above", dir.display()));
            }
        }
        guests.push(Guest { package: name, wasm });
    }
    Ok(guests)
}

/// Plugin directories built by a `build.sh` rather than cargo, sorted.
fn scripted_plugins(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.join("build.sh").is_file() && !path.join("Cargo.toml").exists() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Whether `out` is newer than every source file in `dir` (dependencies such
/// as `node_modules` aside), the WIT contract and the shared `plugins/*-lib`.
fn up_to_date(out: &Path, dir: &Path) -> bool {
    let Ok(built) = std::fs::metadata(out).and_then(|m| m.modified()) else { return false };
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    // Its own sources, the WIT, and what stages share (plugins/*-lib: build
    // scripts and modules for each language).
    let mut stack = vec![dir.to_path_buf(), workspace_root().join("wit")];
    let shared = std::fs::read_dir(workspace_root().join("plugins")).into_iter().flatten().flatten();
    stack.extend(shared.map(|e| e.path()).filter(|p| p.is_dir() && p.to_string_lossy().ends_with("-lib")));
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { return false };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name == "node_modules" || name == "__pycache__" {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(modified);
            }
        }
    }
    built > newest
}

/// Removes the outer cargo's settings, so that a cargo run from a build
/// script (or from a plugin's build.sh) does not inherit its rustc, flags,
/// jobserver or target dir.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let outer = key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE"
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || key == "RUSTFLAGS"
            || key == "RUSTUP_TOOLCHAIN"
            || key == "CARGO";
        if outer {
            cmd.env_remove(&*key);
        }
    }
}

enum Toolchain {
    /// rustup's toolchain has the target: plain `cargo build`.
    Rustup { cargo: OsString },
    /// Debian's toolchain with -Zbuild-std; `linker_dir` holds wasm-component-ld.
    Debian { linker_dir: PathBuf },
}

impl Toolchain {
    fn detect() -> Result<Self, String> {
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let sysroot = Command::new(&rustc)
            .args(["--print", "sysroot"])
            .output()
            .map_err(|e| format!("could not run rustc: {e}"))?;
        let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
        if sysroot.join("lib/rustlib").join(TARGET).is_dir() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            return Ok(Toolchain::Rustup { cargo });
        }
        let missing: Vec<&str> =
            [DEBIAN_CARGO, DEBIAN_RUSTC, DEBIAN_WASI_LIBC].into_iter().filter(|p| !Path::new(p).exists()).collect();
        if !missing.is_empty() {
            return Err(format!(
                "cannot build wasm32-wasip2 guests: rustup has no `{TARGET}` target and Debian's \
                 toolchain is missing ({}). Run `scripts/bootstrap` once, then build again.",
                missing.join(", ")
            ));
        }
        let host = sysroot.join("lib/rustlib").join(host_triple(&rustc)?).join("bin");
        if !host.join("wasm-component-ld").exists() {
            return Err(format!("wasm-component-ld not found in {}", host.display()));
        }
        Ok(Toolchain::Debian { linker_dir: host })
    }

    fn cargo_build(&self) -> Command {
        let mut cmd = match self {
            Toolchain::Rustup { cargo } => Command::new(cargo),
            Toolchain::Debian { .. } => Command::new(DEBIAN_CARGO),
        };
        clean_env(&mut cmd);
        cmd.arg("build").env("RUSTFLAGS", SIMD);
        if let Toolchain::Debian { linker_dir } = self {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![PathBuf::from("/usr/bin")];
            dirs.extend(std::env::split_paths(&path));
            dirs.push(linker_dir.clone());
            cmd.env("PATH", std::env::join_paths(dirs).expect("PATH entries are valid"))
                .env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1")
                .env("RUSTFLAGS", format!("{SIMD} -C link-self-contained=no -L {DEBIAN_WASI_LIBC}"))
                .arg("-Zbuild-std=std,panic_abort");
        }
        cmd
    }
}

fn host_triple(rustc: &OsString) -> Result<String, String> {
    let out = Command::new(rustc).arg("-vV").output().map_err(|e| format!("could not run rustc: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or_else(|| "rustc -vV printed no host triple".to_string())
}

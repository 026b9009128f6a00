//! The Zig route of `sluice build`, the C route with Zig for clang: Zig from
//! PyPI (the `ziglang` wheel, in a venv in sluice's cache: no root, no system
//! package but python3), the C bindings translated into a Zig module by
//! `zig translate-c` (Zig 0.17 has no `@cImport`), `zig build-exe` into a
//! reactor core module, and the C route's encoder with the WASI preview 1
//! adapter, which Zig's libc needs.

use super::c::{c_bindings, componentize};
use super::scripted::pip_install;
use super::{lock_toolchain, run, toolchains, version_of};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `ziglang` wheel, pinned: the Zig the repository's Zig stage is built
/// and tested with. Zig changes its language and CLI between releases.
pub(crate) const ZIGLANG: &str = "0.17.1";

/// The venv Zig lives in, and its Python (`python -m ziglang` is `zig`).
pub(crate) fn zig_venv() -> Result<(PathBuf, PathBuf)> {
    let venv = toolchains()?.join("zig-venv");
    let python = venv.join("bin/python");
    Ok((venv, python))
}

/// The installed Zig's version, if there is one.
pub(crate) fn zig_version(python: &Path) -> Option<String> {
    version_of(python, &["-m", "ziglang", "version"])
}

/// `zig` as a command: the venv's `python -m ziglang`, with Zig's global
/// cache (the compiled libc, and translate-c, which Zig builds on first use:
/// about a minute and a half) in sluice's cache beside it.
fn zig(python: &Path, venv: &Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "ziglang"]).env("ZIG_GLOBAL_CACHE_DIR", venv.with_file_name("zig-cache"));
    cmd
}

pub(super) fn build_zig(dir: &Path, out: &Path) -> Result<()> {
    let (venv, python) = zig_venv()?;
    let installing = lock_toolchain(&venv)?;
    if zig_version(&python).as_deref() != Some(ZIGLANG) {
        pip_install(&venv, "ziglang", ZIGLANG, "a Zig stage")?;
    }
    drop(installing);
    let gen_dir = dir.join("target/gen");
    c_bindings(&dir.join("wit"), &gen_dir)?;

    let header = gen_dir.join("plugin.h");
    let translated = zig(&python, &venv)
        .args(["translate-c", "-target", "wasm32-wasi", "-lc"])
        .arg(&header)
        .stderr(Stdio::inherit())
        .output()
        .context("could not start zig translate-c")?;
    if !translated.status.success() {
        bail!("zig translate-c {} failed ({}); see its output above", header.display(), translated.status);
    }
    let module = gen_dir.join("plugin.zig");
    std::fs::write(&module, translated.stdout).with_context(|| format!("writing {}", module.display()))?;

    // The stage is the root module; the bindings are the module `plugin` it
    // imports, and their C half (plugin.c, the component type) is linked in.
    // Per-module settings come before each -M.
    let core = dir.join("target/core.wasm");
    let mut cmd = zig(&python, &venv);
    cmd.current_dir(dir)
        .args(["build-exe", "-target", "wasm32-wasi", "-mcpu", "generic+simd128", "-O", "ReleaseSmall", "-fstrip"])
        .args(["-fno-entry", "-mexec-model=reactor", "-lc", "--dep", "plugin", "-Mroot=stage.zig", "-I"])
        .arg(&gen_dir)
        .arg(gen_dir.join("plugin.c"))
        .arg(gen_dir.join("plugin_component_type.o"))
        .arg(format!("-Mplugin={}", module.display()))
        .arg("--cache-dir")
        .arg(dir.join("target/zig-cache"))
        .arg(format!("-femit-bin={}", core.display()));
    run(&mut cmd, "zig build-exe")?;
    componentize(&core, out)
}

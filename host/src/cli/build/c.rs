//! The C route of `sluice build`: Debian's clang-16 compiles the stage with
//! wit-bindgen's C bindings of the `plugin` world into a core module, which
//! wit-component then encodes as a component.

use super::super::outcome::Unavailable;
use super::{C_APT, WASI_LIBC, run};
use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

/// The Debian files C stages need, each with what it is.
pub(crate) fn c_parts() -> [(&'static str, &'static str); 4] {
    [
        ("clang-16", "/usr/bin/clang-16"),
        ("wasm-ld-16 (lld-16)", "/usr/bin/wasm-ld-16"),
        ("wasi-libc", WASI_LIBC),
        ("wasm32 compiler runtime (libclang-rt-16-dev-wasm32)", "/usr/lib/llvm-16/lib/clang/16/lib/wasi"),
    ]
}

pub(super) fn build_c(dir: &Path, out: &Path) -> Result<()> {
    let missing: Vec<&str> = c_parts().into_iter().filter(|(_, p)| !Path::new(p).exists()).map(|(w, _)| w).collect();
    if !missing.is_empty() {
        return Err(Unavailable(format!(
            "cannot build a C stage: {} missing. Install them with:\n  {C_APT}",
            missing.join(", ")
        ))
        .into());
    }
    let gen_dir = dir.join("target/gen");
    c_bindings(&dir.join("wit"), &gen_dir)?;
    let core = dir.join("target/core.wasm");
    let mut cmd = Command::new("clang-16");
    cmd.current_dir(dir)
        .args([
            "--target=wasm32-wasi",
            "--sysroot=/usr",
            "-O2",
            "-msimd128",
            "-mexec-model=reactor",
            "-Wall",
            "-Wextra",
        ])
        .arg("-I")
        .arg(&gen_dir)
        .arg("-Wl,--strip-all")
        .arg("-o")
        .arg(&core)
        .arg("stage.c")
        .arg(gen_dir.join("plugin.c"))
        .arg(gen_dir.join("plugin_component_type.o"));
    run(&mut cmd, "clang-16")?;
    componentize(&core, out)
}

/// Encodes the core module at `core` (built against [`c_bindings`]) as a
/// component at `out`. libc's stdio (printf, snprintf, fopen) imports WASI
/// preview 1: the reactor adapter of our wasmtime's release turns those
/// imports into WASI 0.2 ones, which the host links (stdout and stderr
/// become the stage's log lines). A module that imports none of it gets no
/// adapter.
pub(super) fn componentize(core: &Path, out: &Path) -> Result<()> {
    use wasi_preview1_component_adapter_provider::{
        WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    };
    let module = std::fs::read(core).with_context(|| format!("reading {}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|e| e.adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER))
        .and_then(|e| e.encode())
        .with_context(|| format!("making a component of {}", core.display()))?;
    std::fs::write(out, component).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// The wit-bindgen C bindings of the `plugin` world (`plugin.h`, `plugin.c`,
/// `plugin_component_type.o`) into `out_dir`.
pub(super) fn c_bindings(wit: &Path, out_dir: &Path) -> Result<()> {
    let mut resolve = wit_parser::Resolve::default();
    let (pkg, _) = resolve.push_path(wit).with_context(|| format!("reading the WIT in {}", wit.display()))?;
    let world = resolve.select_world(&[pkg], Some("plugin"))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default().build().generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for (name, contents) in files.iter() {
        let path = out_dir.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

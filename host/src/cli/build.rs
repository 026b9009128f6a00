//! `sluice build`: builds the stage project in a directory (made by `sluice
//! new`) into `target/<name>.wasm`, with the toolchain its language needs.
//!
//! What installs without root is installed here, once, in sluice's cache
//! (`toolchains()`): componentize-py in a venv, componentize-js from npm,
//! wasm-component-ld with cargo. What needs system packages is detected and
//! named with the command that installs it (exit 69, `EX_UNAVAILABLE`): a
//! build tool must not run `sudo` behind the user's back.

use super::new::{Lang, PIPELINE_WIT};
use super::outcome::{BadArgument, Unavailable};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// componentize-py, pinned: the version the repository's Python stages are built
/// and tested with.
const COMPONENTIZE_PY: &str = "0.25.1";
/// componentize-js, pinned likewise.
const COMPONENTIZE_JS: &str = "0.23.0";
/// The npm project the JavaScript toolchain is installed from. jco is pinned
/// to 1.15.1 (componentize-js's own lower bound): newer jco lists optional
/// platform packages that were never published, and the install fails.
const JS_TOOLCHAIN_PACKAGE: &str = r#"{
  "name": "sluice-js-toolchain",
  "private": true,
  "devDependencies": { "@bytecodealliance/componentize-js": "0.23.0" },
  "overrides": { "@bytecodealliance/jco": "1.15.1" }
}
"#;

/// The Debian packages each language needs, installed as one command.
pub(crate) const RUST_APT: &str = "sudo apt-get install rustc-web cargo-web rust-web-src wasi-libc";
pub(crate) const C_APT: &str = "sudo apt-get install clang-16 lld-16 wasi-libc libclang-rt-16-dev-wasm32";
pub(crate) const PYTHON_APT: &str = "sudo apt-get install python3 python3-venv";
pub(crate) const JS_APT: &str = "sudo apt-get install nodejs npm";

/// Build the stage project in a directory into `target/<name>.wasm`.
#[derive(clap::Args)]
pub(crate) struct BuildCommand {
    /// The project's directory (default: the current one).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

impl BuildCommand {
    pub(crate) async fn execute(self) -> Result<()> {
        let dir = self.dir;
        let lang = detect(&dir)?;
        let name = project_name(&dir)?;
        let out = dir.join("target").join(format!("{name}.wasm"));
        if !wit_is_current(&dir) {
            eprintln!(
                "warning: {} is not the contract this sluice runs stages against: copy it from a \
                 project made by `sluice new` if the build or the run fails",
                dir.join("wit/pipeline.wit").display()
            );
        }
        std::fs::create_dir_all(dir.join("target")).context("creating target/")?;
        // Toolchains take seconds to minutes: off the async runtime.
        let (d, o) = (dir.clone(), out.clone());
        tokio::task::spawn_blocking(move || match lang {
            Lang::Rust => build_rust(&d, &name, &o),
            Lang::Python => build_python(&d, &o),
            Lang::Js => build_js(&d, &o),
            Lang::C => build_c(&d, &o),
        })
        .await??;
        let size = std::fs::metadata(&out).with_context(|| format!("{} was not written", out.display()))?.len();
        println!("built {} ({size} bytes)", out.display());
        Ok(())
    }
}

/// The project's language, from the one marker file it has.
fn detect(dir: &Path) -> Result<Lang> {
    let found: Vec<Lang> = Lang::ALL.into_iter().filter(|l| dir.join(l.marker()).is_file()).collect();
    match found[..] {
        [lang] => Ok(lang),
        [] => Err(BadArgument(format!(
            "{} is not a stage project: it has none of {} (create one with `sluice new --lang LANG NAME`)",
            dir.display(),
            Lang::ALL.map(|l| l.marker()).join(", ")
        ))
        .into()),
        _ => Err(BadArgument(format!(
            "{} has the files of several languages ({}): keep one",
            dir.display(),
            found.iter().map(|l| l.marker()).collect::<Vec<_>>().join(", ")
        ))
        .into()),
    }
}

/// The stage's name: its directory's, as `sluice new` made it.
fn project_name(dir: &Path) -> Result<String> {
    let full = dir.canonicalize().with_context(|| format!("reading {}", dir.display()))?;
    Ok(full.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "stage".into()))
}

/// Where toolchains that need no root go: `$SLUICE_TOOLCHAINS`, else
/// `$XDG_CACHE_HOME/sluice/toolchains`, else `~/.cache/sluice/toolchains`.
pub(crate) fn toolchains() -> Result<PathBuf> {
    let var = |n: &str| std::env::var_os(n).filter(|v| !v.is_empty());
    if let Some(dir) = var("SLUICE_TOOLCHAINS") {
        return Ok(PathBuf::from(dir));
    }
    let base =
        var("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")));
    Ok(base
        .context("neither SLUICE_TOOLCHAINS, XDG_CACHE_HOME nor HOME is set: set SLUICE_TOOLCHAINS")?
        .join("sluice/toolchains"))
}

/// Runs `cmd`, its output going to ours; fails naming `what`.
fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("could not start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); see its output above");
    }
    Ok(())
}

/// The first line `program args` prints, if it runs and succeeds.
pub(crate) fn version_of(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    out.status.success().then(|| String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_string())
}

/// Removes a calling cargo's settings (`sluice build` run from a cargo build
/// script or test), so they do not leak into the stage's build.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let outer = key.starts_with("CARGO_") && key != "CARGO_HOME"
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

// ---- Rust ----------------------------------------------------------------

const WASI_TARGET: &str = "wasm32-wasip2";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library";
const WASI_LIBC: &str = "/usr/lib/wasm32-wasi";

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

fn build_rust(dir: &Path, name: &str, out: &Path) -> Result<()> {
    let toolchain = RustToolchain::detect()?;
    let target_dir = dir.join("target");
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
            .env("RUSTFLAGS", format!("-C link-self-contained=no -L {WASI_LIBC}"))
            .arg("-Zbuild-std=std,panic_abort");
    }
    run(&mut cmd, "cargo build")?;
    let built = target_dir.join(WASI_TARGET).join("release").join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::copy(&built, out).with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    Ok(())
}

/// `cargo install wasm-component-ld` into the cache: it needs no root.
fn install_component_linker() -> Result<PathBuf> {
    let root = toolchains()?.join("rust");
    eprintln!("installing wasm-component-ld into {} (once)", root.display());
    let mut cmd = Command::new(DEBIAN_CARGO);
    clean_env(&mut cmd);
    cmd.args(["install", "--locked", "wasm-component-ld", "--root"]).arg(&root);
    run(&mut cmd, "cargo install wasm-component-ld")?;
    Ok(root.join("bin"))
}

// ---- Python --------------------------------------------------------------

/// The venv componentize-py lives in, and its command.
pub(crate) fn componentize_py() -> Result<(PathBuf, PathBuf)> {
    let venv = toolchains()?.join("python-venv");
    let bin = venv.join("bin/componentize-py");
    Ok((venv, bin))
}

pub(crate) fn python_ok() -> Option<String> {
    let version = version_of("python3", &["--version"])?;
    // A venv needs the venv module and ensurepip (Debian: python3-venv).
    version_of("python3", &["-c", "import venv, ensurepip"]).map(|_| version)
}

fn build_python(dir: &Path, out: &Path) -> Result<()> {
    let (venv, componentize) = componentize_py()?;
    if version_of(&componentize, &["--version"]).as_deref() != Some(&format!("componentize-py {COMPONENTIZE_PY}")) {
        if python_ok().is_none() {
            return Err(Unavailable(format!(
                "cannot build a Python stage: python3 with its venv module is missing. Install it with:\n  {PYTHON_APT}"
            ))
            .into());
        }
        eprintln!("installing componentize-py {COMPONENTIZE_PY} into {} (once)", venv.display());
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv")?;
        run(
            Command::new(venv.join("bin/python")).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("componentize-py=={COMPONENTIZE_PY}"),
            ]),
            "pip install componentize-py",
        )?;
    }
    // componentize-py writes __pycache__ beside the modules it imports:
    // build from a scratch copy, not from the user's directory.
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, scratch.path().join(path.file_name().expect("a file has a name")))?;
        }
    }
    let mut cmd = Command::new(&componentize);
    cmd.env("RUST_BACKTRACE", "0")
        .arg("-d")
        .arg(dir.join("wit"))
        .args(["-w", "plugin", "componentize", "-p"])
        .arg(scratch.path())
        .arg("app")
        .arg("-o")
        .arg(out);
    run(&mut cmd, "componentize-py")
}

// ---- JavaScript ----------------------------------------------------------

/// The npm prefix componentize-js is installed in, and its command.
pub(crate) fn componentize_js() -> Result<(PathBuf, PathBuf)> {
    let prefix = toolchains()?.join("js");
    let bin = prefix.join("node_modules/.bin/componentize-js");
    Ok((prefix, bin))
}

/// The installed componentize-js's version, from its package.json.
pub(crate) fn componentize_js_version(prefix: &Path) -> Option<String> {
    let manifest = prefix.join("node_modules/@bytecodealliance/componentize-js/package.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).ok()?).ok()?;
    json["version"].as_str().map(str::to_string)
}

fn build_js(dir: &Path, out: &Path) -> Result<()> {
    let (prefix, componentize) = componentize_js()?;
    if componentize_js_version(&prefix).as_deref() != Some(COMPONENTIZE_JS) || !componentize.exists() {
        if version_of("node", &["--version"]).is_none() || version_of("npm", &["--version"]).is_none() {
            return Err(Unavailable(format!(
                "cannot build a JavaScript stage: node and npm are missing. Install them with:\n  {JS_APT}"
            ))
            .into());
        }
        eprintln!("installing componentize-js {COMPONENTIZE_JS} into {} (once)", prefix.display());
        std::fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
        std::fs::write(prefix.join("package.json"), JS_TOOLCHAIN_PACKAGE)?;
        run(Command::new("npm").current_dir(&prefix).args(["install", "--no-audit", "--no-fund"]), "npm install")?;
    }
    let mut cmd = Command::new(&componentize);
    cmd.current_dir(dir)
        .arg("app.js")
        .arg("--wit")
        .arg(dir.join("wit"))
        .args(["--world-name", "plugin", "--out"])
        .arg(absolute(out)?);
    run(&mut cmd, "componentize-js")
}

fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}

// ---- C -------------------------------------------------------------------

/// The Debian files C stages need, each with what it is.
pub(crate) fn c_parts() -> [(&'static str, &'static str); 4] {
    [
        ("clang-16", "/usr/bin/clang-16"),
        ("wasm-ld-16 (lld-16)", "/usr/bin/wasm-ld-16"),
        ("wasi-libc", WASI_LIBC),
        ("wasm32 compiler runtime (libclang-rt-16-dev-wasm32)", "/usr/lib/llvm-16/lib/clang/16/lib/wasi"),
    ]
}

fn build_c(dir: &Path, out: &Path) -> Result<()> {
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
        .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-mexec-model=reactor", "-Wall", "-Wextra"])
        .arg("-I")
        .arg(&gen_dir)
        .arg("-Wl,--strip-all")
        .arg("-o")
        .arg(&core)
        .arg("stage.c")
        .arg(gen_dir.join("plugin.c"))
        .arg(gen_dir.join("plugin_component_type.o"));
    run(&mut cmd, "clang-16")?;
    let module = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
    let mut encoder = wit_component::ComponentEncoder::default();
    let component = encoder.validate(true).module(&module).and_then(|e| e.encode()).with_context(|| {
        format!(
            "making a component of {}: a stage that uses stdio (printf, fopen) imports WASI preview 1, \
             which `sluice build` does not adapt: log with sluice_pipeline_log_log instead",
            core.display()
        )
    })?;
    std::fs::write(out, component).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// The wit-bindgen C bindings of the `plugin` world (`plugin.h`, `plugin.c`,
/// `plugin_component_type.o`) into `out_dir`.
fn c_bindings(wit: &Path, out_dir: &Path) -> Result<()> {
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

/// Whether the project's WIT is the one this binary carries (not so for a
/// stage made by another sluice): said, never overwritten.
fn wit_is_current(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("wit/pipeline.wit")).is_ok_and(|t| t == PIPELINE_WIT)
}

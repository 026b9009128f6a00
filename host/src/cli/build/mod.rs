//! `sluice build`: builds the stage project in a directory (made by `sluice
//! new`) into `target/<name>.wasm`, with the toolchain its language needs.
//!
//! What installs without root is installed here, once, in sluice's cache
//! (`toolchains()`): componentize-py in a venv, componentize-js from npm,
//! wasm-component-ld with cargo, Zig from PyPI in a venv. What needs system packages is detected and
//! named with the command that installs it (exit 69, `EX_UNAVAILABLE`): a
//! build tool must not run `sudo` behind the user's back.

mod c;
mod rust;
mod scripted;
mod zig;

pub(crate) use c::c_parts;
pub(crate) use rust::{RustToolchain, component_linker, debian_rust_parts};
pub(crate) use scripted::{componentize_js, componentize_js_version, componentize_py, python_ok};
pub(crate) use zig::{ZIGLANG, zig_venv, zig_version};

use super::new::{Lang, PIPELINE_WIT};
use super::outcome::BadArgument;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian packages each language needs, installed as one command.
pub(crate) const RUST_APT: &str = "sudo apt-get install rustc-web cargo-web rust-web-src wasi-libc";
pub(crate) const C_APT: &str = "sudo apt-get install clang-16 lld-16 wasi-libc libclang-rt-16-dev-wasm32";
pub(crate) const PYTHON_APT: &str = "sudo apt-get install python3 python3-venv";
pub(crate) const JS_APT: &str = "sudo apt-get install nodejs npm";
/// Debian's wasi-libc, which the Rust and C routes both link against.
const WASI_LIBC: &str = "/usr/lib/wasm32-wasi";

/// Build the stage project in a directory into `target/<name>.wasm`.
#[derive(clap::Args)]
pub(crate) struct BuildCommand {
    /// The project's directory (default: the current one).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

impl BuildCommand {
    pub(crate) async fn execute(self) -> Result<()> {
        // Absolute once, here: the toolchains run in the project's directory
        // (`current_dir`) and are handed paths under it, which a relative
        // `--dir` would name twice (`st-c/st-c/...`).
        let dir = std::path::absolute(&self.dir).with_context(|| format!("reading {}", self.dir.display()))?;
        let lang = detect(&dir)?;
        let name = project_name(&dir)?;
        let out = dir.join("target").join(format!("{name}.wasm"));
        if !wit_is_current(&dir) {
            stderr!(
                "warning: {} is not the contract this sluice runs stages against: copy it from a \
                 project made by `sluice new` if the build or the run fails",
                dir.join("wit/pipeline.wit").display()
            );
        }
        std::fs::create_dir_all(dir.join("target")).context("creating target/")?;
        // Toolchains take seconds to minutes: off the async runtime.
        let (d, o) = (dir.clone(), out.clone());
        tokio::task::spawn_blocking(move || match lang {
            Lang::Rust => rust::build_rust(&d, &name, &o),
            Lang::Python => scripted::build_python(&d, &o),
            Lang::Js => scripted::build_js(&d, &o),
            Lang::C => c::build_c(&d, &o),
            Lang::Zig => zig::build_zig(&d, &o),
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

/// An exclusive lock on the toolchain at `dir` in sluice's cache, to hold
/// while it is checked and installed: two `sluice build`s at once (two
/// terminals, a test suite) must not install into one directory together.
/// The second waits, then finds it installed.
pub(super) fn lock_toolchain(dir: &Path) -> Result<std::fs::File> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parent = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let lock_path = parent.join(format!(".{name}.lock"));
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
    Ok(lock)
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

/// Whether the project's WIT is the one this binary carries (not so for a
/// stage made by another sluice): said, never overwritten.
fn wit_is_current(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("wit/pipeline.wit")).is_ok_and(|t| t == PIPELINE_WIT)
}

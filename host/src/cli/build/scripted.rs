//! The scripted routes of `sluice build`: Python stages with componentize-py
//! (installed into a venv in sluice's cache) and JavaScript stages with
//! componentize-js (installed from npm likewise), each pinned to the version
//! the repository's stages are built and tested with. `pip_install` also
//! installs Zig (zig.rs).

use super::super::outcome::Unavailable;
use super::{JS_APT, PYTHON_APT, lock_toolchain, run, toolchains, version_of};
use anyhow::{Context, Result};
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

/// Installs `package==version` from PyPI into the venv at `venv` (made
/// first), which `stage` needs: without root, in sluice's cache.
pub(super) fn pip_install(venv: &Path, package: &str, version: &str, stage: &str) -> Result<()> {
    if python_ok().is_none() {
        return Err(Unavailable(format!(
            "cannot build {stage}: python3 with its venv module is missing. Install it with:\n  {PYTHON_APT}"
        ))
        .into());
    }
    stderr!("installing {package} {version} into {} (once)", venv.display());
    run(Command::new("python3").args(["-m", "venv"]).arg(venv), "python3 -m venv")?;
    run(
        Command::new(venv.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("{package}=={version}"),
        ]),
        &format!("pip install {package}"),
    )
}

pub(super) fn build_python(dir: &Path, out: &Path) -> Result<()> {
    let (venv, componentize) = componentize_py()?;
    let installing = lock_toolchain(&venv)?;
    if version_of(&componentize, &["--version"]).as_deref() != Some(&format!("componentize-py {COMPONENTIZE_PY}")) {
        pip_install(&venv, "componentize-py", COMPONENTIZE_PY, "a Python stage")?;
    }
    drop(installing);
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

pub(super) fn build_js(dir: &Path, out: &Path) -> Result<()> {
    let (prefix, componentize) = componentize_js()?;
    let installing = lock_toolchain(&prefix)?;
    if componentize_js_version(&prefix).as_deref() != Some(COMPONENTIZE_JS) || !componentize.exists() {
        if version_of("node", &["--version"]).is_none() || version_of("npm", &["--version"]).is_none() {
            return Err(Unavailable(format!(
                "cannot build a JavaScript stage: node and npm are missing. Install them with:\n  {JS_APT}"
            ))
            .into());
        }
        stderr!("installing componentize-js {COMPONENTIZE_JS} into {} (once)", prefix.display());
        std::fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
        std::fs::write(prefix.join("package.json"), JS_TOOLCHAIN_PACKAGE)?;
        run(Command::new("npm").current_dir(&prefix).args(["install", "--no-audit", "--no-fund"]), "npm install")?;
    }
    drop(installing);
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

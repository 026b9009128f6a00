//! `sluice doctor`: per language, what building a stage needs, what of it is
//! here (with versions) and how to install what is not. Reports only: it
//! installs nothing, and exits 0 whatever it finds.

use super::build::{
    C_APT, JS_APT, PYTHON_APT, RUST_APT, RustToolchain, ZIGLANG, c_parts, component_linker, componentize_js,
    componentize_js_version, componentize_py, debian_rust_parts, python_ok, toolchains, version_of, zig_venv,
    zig_version,
};
use super::new::Lang;
use anyhow::Result;
use std::path::Path;

/// Show, per language, which toolchains are present and how to install the rest.
#[derive(clap::Args)]
pub(crate) struct DoctorCommand {}

/// One thing a language needs: what it is, and its version or what to do.
struct Item {
    what: String,
    found: Result<String, String>,
}

/// What `sluice build` installs itself is not missing, only not there yet.
const LATER: &str = "not yet: `sluice build` installs it the first time";

impl DoctorCommand {
    pub(crate) async fn execute(self) -> Result<()> {
        let report = tokio::task::spawn_blocking(|| Lang::ALL.map(|l| (l, items(l)))).await?;
        let mut out = String::new();
        for (lang, items) in report {
            let ready = items.iter().all(|i| i.found.is_ok() || i.found.as_ref().is_err_and(|e| e == LATER));
            out += &format!("{} ({}):\n", lang.title(), if ready { "ready" } else { "missing something" });
            for item in items {
                match item.found {
                    Ok(version) => out += &format!("  ok       {}: {version}\n", item.what),
                    Err(todo) if todo == LATER => out += &format!("  later    {}: {todo}\n", item.what),
                    Err(todo) => out += &format!("  missing  {}: {todo}\n", item.what),
                }
            }
        }
        if let Ok(dir) = toolchains() {
            out += &format!("`sluice build` installs what it can into {}\n", dir.display());
        }
        print!("{out}");
        Ok(())
    }
}

fn file(what: &str, path: &str, install: &str) -> Item {
    let found = if Path::new(path).exists() { Ok(path.to_string()) } else { Err(format!("run `{install}`")) };
    Item { what: what.to_string(), found }
}

fn items(lang: Lang) -> Vec<Item> {
    match lang {
        Lang::Rust => rust(),
        Lang::Python => {
            let python = Item {
                what: "python3 with venv".into(),
                found: python_ok().ok_or_else(|| format!("run `{PYTHON_APT}`")),
            };
            let tool = componentize_py().ok().and_then(|(_, bin)| version_of(bin, &["--version"]));
            let tool = Item { what: "componentize-py".into(), found: tool.ok_or_else(|| LATER.into()) };
            vec![python, tool]
        }
        Lang::Js => {
            let node = version_of("node", &["--version"]).zip(version_of("npm", &["--version"]));
            let node = Item {
                what: "node and npm".into(),
                found: node.map(|(n, m)| format!("node {n}, npm {m}")).ok_or_else(|| format!("run `{JS_APT}`")),
            };
            let tool = componentize_js().ok().and_then(|(prefix, _)| componentize_js_version(&prefix));
            let tool = Item { what: "componentize-js".into(), found: tool.ok_or_else(|| LATER.into()) };
            vec![node, tool]
        }
        Lang::C => c_parts().into_iter().map(|(what, path)| file(what, path, C_APT)).collect(),
        Lang::Zig => {
            // Zig installs from PyPI: python3 with venv is all it needs of the system.
            let python = Item {
                what: "python3 with venv".into(),
                found: python_ok().ok_or_else(|| format!("run `{PYTHON_APT}`")),
            };
            let zig = zig_venv().ok().and_then(|(_, python)| zig_version(&python));
            let zig = Item {
                what: format!("Zig {ZIGLANG} (the ziglang wheel, in a venv)"),
                found: zig.map(|v| format!("zig {v}")).ok_or_else(|| LATER.into()),
            };
            vec![python, zig]
        }
    }
}

fn rust() -> Vec<Item> {
    let with_version = |program: &str| version_of(program, &["--version"]).unwrap_or_else(|| program.to_string());
    match RustToolchain::detect() {
        Ok(RustToolchain::Rustup) => {
            vec![Item { what: "rustup toolchain with wasm32-wasip2".into(), found: Ok(with_version("rustc")) }]
        }
        _ => {
            let mut items: Vec<Item> = debian_rust_parts()
                .into_iter()
                .map(|(what, path)| {
                    let mut item = file(what, path, RUST_APT);
                    if item.found.is_ok() && path.starts_with("/usr/bin/") {
                        item.found = Ok(with_version(path));
                    }
                    item
                })
                .collect();
            items.push(Item {
                what: "wasm-component-ld".into(),
                found: component_linker()
                    .map(|d| d.join("wasm-component-ld").display().to_string())
                    .ok_or_else(|| LATER.into()),
            });
            items
        }
    }
}

//! `wasm-c`: the two steps of building a C pipeline stage that otherwise need the
//! `wit-bindgen` and `wasm-tools` command-line tools, done with their libraries.
//!
//! ```text
//! wasm-c bindings <wit-dir> <world> <out-dir>
//!     writes the wit-bindgen C bindings of <world> (<world>.h, <world>.c and
//!     <world>_component_type.o) into <out-dir>
//! wasm-c component <core.wasm> <out.wasm> [--adapter <path>]
//!     wraps a core module built against those bindings into a validated component;
//!     --adapter names the wasi_snapshot_preview1 adapter, needed only when the
//!     module imports `wasi_snapshot_preview1`
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use wasmparser::{Parser, Payload};
use wit_bindgen_core::Files;
use wit_component::ComponentEncoder;
use wit_parser::Resolve;

const USAGE: &str = "usage:
  wasm-c bindings <wit-dir> <world> <out-dir>
  wasm-c component <core.wasm> <out.wasm> [--adapter <path>]";

/// The module name whose imports the preview1 adapter satisfies.
const PREVIEW1: &str = "wasi_snapshot_preview1";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bindings") if args.len() == 4 => bindings(Path::new(&args[1]), &args[2], Path::new(&args[3])),
        Some("component") => {
            component_args(&args[1..]).and_then(|(core, out, adapter)| component(&core, &out, adapter.as_deref()))
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasm-c: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn component_args(args: &[String]) -> Result<(PathBuf, PathBuf, Option<PathBuf>)> {
    let mut positional = Vec::new();
    let mut adapter = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--adapter" {
            adapter = Some(PathBuf::from(it.next().context("--adapter needs a path")?));
        } else if let Some(p) = a.strip_prefix("--adapter=") {
            adapter = Some(PathBuf::from(p));
        } else if a.starts_with("--") {
            bail!("unknown option `{a}`\n{USAGE}");
        } else {
            positional.push(PathBuf::from(a));
        }
    }
    match <[PathBuf; 2]>::try_from(positional) {
        Ok([core, out]) => Ok((core, out, adapter)),
        Err(_) => bail!("`component` takes <core.wasm> <out.wasm>\n{USAGE}"),
    }
}

/// Generates the C bindings of `world` in the WIT package at `wit` into `out_dir`.
fn bindings(wit: &Path, world: &str, out_dir: &Path) -> Result<()> {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve.push_path(wit).with_context(|| format!("parsing WIT at {}", wit.display()))?;
    let world_id = resolve.select_world(&[pkg], Some(world))?;

    let mut files = Files::default();
    wit_bindgen_c::Opts::default().build().generate(&mut resolve, world_id, &mut files)?;

    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for (name, contents) in files.iter() {
        let path = out_dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// Encodes the core module at `core` (with its embedded component-type section) as a
/// component, validates it and writes it to `out`.
fn component(core: &Path, out: &Path, adapter: Option<&Path>) -> Result<()> {
    let module = std::fs::read(core).with_context(|| format!("reading {}", core.display()))?;
    let mut encoder = ComponentEncoder::default();
    encoder.validate(true).module(&module)?;
    match adapter {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("reading adapter {}", path.display()))?;
            encoder.adapter(PREVIEW1, &bytes)?;
        }
        None if module_imports(&module)?.iter().any(|m| m == PREVIEW1) => {
            bail!("{} imports `{PREVIEW1}`: pass --adapter <wasi_snapshot_preview1.reactor.wasm>", core.display())
        }
        None => {}
    }
    let bytes = encoder.encode().context("encoding the component")?;
    // `validate(true)` already checked it; check once more what we write, with the full feature set.
    wasmparser::Validator::new().validate_all(&bytes).context("validating the component")?;
    std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;

    println!("{}: {} bytes", out.display(), bytes.len());
    for import in component_imports(&bytes)? {
        println!("  import {import}");
    }
    Ok(())
}

/// The module names a core module imports from.
fn module_imports(module: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::ImportSection(section) = payload? {
            for import in section.into_imports() {
                let name = import?.module.to_string();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    Ok(names)
}

/// The top-level imports of a component (nested components' imports are skipped).
fn component_imports(component: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(component) {
        match payload? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    names.push(import?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

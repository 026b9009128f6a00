//! `cargo xtask plugins`: builds every example stage under `plugins/` into `target/plugins/`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("plugins") => match plugins() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: cargo xtask plugins    build plugins/* into target/plugins/<name>.wasm");
            ExitCode::from(2)
        }
    }
}

fn plugins() -> Result<(), String> {
    let root = xtask::workspace_root();
    let packages = xtask::packages_in(&root.join("plugins")).map_err(|e| format!("reading plugins/: {e}"))?;
    let guests = xtask::build(&packages, &root.join("target/guests"))?;
    let dist = root.join("target/plugins");
    std::fs::create_dir_all(&dist).map_err(|e| format!("creating {}: {e}", dist.display()))?;
    for g in guests {
        let to = dist.join(format!("{}.wasm", g.package));
        std::fs::copy(&g.wasm, &to).map_err(|e| format!("copying {} to {}: {e}", g.wasm.display(), to.display()))?;
        eprintln!("built {}", to.strip_prefix(&root).unwrap_or(&to).display());
    }
    Ok(())
}

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
    for g in xtask::build_plugins()? {
        eprintln!("built {}", g.wasm.strip_prefix(&root).unwrap_or(&g.wasm).display());
    }
    Ok(())
}

//! The `sluice` command line.

/// `eprintln!` that does not panic when stderr is closed: a reader that went
/// away (`sluice run p.toml 2>&1 | head -1`) is no reason to lose a run, and
/// std's `eprintln!` panics on a write error.
macro_rules! stderr {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;

// Every message is a few allocations per stage, freed on other threads:
// mimalloc's per-thread heaps make that about a fifth cheaper than glibc's
// malloc (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}

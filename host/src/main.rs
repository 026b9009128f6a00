//! The `sluice` command line.

mod cli;

// Every message is a few allocations per stage, freed on other threads:
// mimalloc's per-thread heaps make that about a fifth cheaper than glibc's
// malloc (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}

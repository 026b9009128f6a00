//! `sluice <command>`: one module per command.

mod check;
mod compile;
mod metrics;
mod run;
mod state;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Run WebAssembly pipeline stages over a stream of messages.
#[derive(Parser)]
#[command(name = "sluice", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log filter, e.g. `warn` or `info,sluice::stage=debug` (also from SLUICE_LOG).
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "info")]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    Run(run::RunCommand),
    Check(check::CheckCommand),
    Compile(compile::CompileCommand),
    State(state::StateCommand),
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(cmd) => cmd.execute().await,
            Command::Check(cmd) => cmd.execute().await,
            Command::Compile(cmd) => cmd.execute().await,
            Command::State(cmd) => cmd.execute().await,
        }
    });
    // Do not wait for blocking reads still parked on a quiet stdin or pipe.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: bad log filter `{filter}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}

//! `sluice <command>`: one module per command.

mod build;
mod call;
mod check;
mod compile;
mod doctor;
mod logging;
mod metrics;
mod new;
mod outcome;
mod progress;
mod reload;
mod report;
mod run;
mod signals;
mod stage_test;
mod state;
mod tap;
mod top;

use clap::{Parser, Subcommand};
use logging::LogFormat;
use outcome::Outcome;
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

    /// Log format: `text` (readable, with RFC 3339 UTC timestamps; colour
    /// only on a terminal without NO_COLOR) or `json` (one object per line,
    /// everything on stderr included). Also from SLUICE_LOG_FORMAT.
    #[arg(long, global = true, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    Run(run::RunCommand),
    Check(check::CheckCommand),
    Compile(compile::CompileCommand),
    State(state::StateCommand),
    Top(top::TopCommand),
    Tap(tap::TapCommand),
    Call(call::CallCommand),
    Test(stage_test::TestCommand),
    New(new::NewCommand),
    Build(build::BuildCommand),
    Doctor(doctor::DoctorCommand),
}

pub(crate) fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A wrong argument is a config error (78), as a wrong pipeline file
        // is; `--help` and `--version` are not errors.
        Err(e) => {
            let _ = e.print();
            let outcome = if e.use_stderr() { Outcome::ConfigError } else { Outcome::Success };
            return ExitCode::from(outcome.exit_code());
        }
    };
    logging::init(&cli.log, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            logging::tell(tracing::Level::ERROR, &format!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(Outcome::Failed.exit_code());
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(cmd) => cmd.execute().await,
            Command::Check(cmd) => cmd.execute().await.map(|()| Outcome::Success),
            Command::Compile(cmd) => cmd.execute().await.map(|()| Outcome::Success),
            Command::State(cmd) => cmd.execute().await.map(|()| Outcome::Success),
            Command::Top(cmd) => cmd.execute().await,
            Command::Tap(cmd) => cmd.execute().await,
            Command::New(cmd) => cmd.execute().await.map(|()| Outcome::Success),
            Command::Build(cmd) => cmd.execute().await.map(|()| Outcome::Success),
            Command::Doctor(cmd) => cmd.execute().await.map(|()| Outcome::Success),
            Command::Call(cmd) => cmd.execute().await,
            Command::Test(cmd) => cmd.execute().await,
        }
    });
    // Do not wait for blocking reads still parked on a quiet stdin or pipe.
    runtime.shutdown_background();
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            let outcome = Outcome::of_error(&e);
            if logging::json() {
                tracing::error!(outcome = outcome.name(), exit_code = outcome.exit_code(), "{e:#}");
            } else {
                stderr!("error: {e:#}");
            }
            outcome
        }
    };
    ExitCode::from(outcome.exit_code())
}

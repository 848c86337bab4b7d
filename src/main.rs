//! The `fencelock` binary: parse the command line, start logging, run the command.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use fencelock::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => match {
            fencelock::telemetry::init(config.log_format);
            fencelock::server::serve(config).await
        } {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(%err, "fencelock could not start");
                ExitCode::FAILURE
            }
        },
    }
}

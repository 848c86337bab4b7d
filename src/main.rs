//! The `fencelock` binary: parse the command line, then serve (with logging) or run a
//! client command.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use fencelock::cli::{Cli, Command};

// The AWS SDK and hyper allocate many small buffers per request; jemalloc serves them
// with less CPU than glibc's malloc (measured in docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            fencelock::telemetry::init(config.log_format);
            if let Err(err) = fencelock::server::serve(config).await {
                tracing::error!(%err, "fencelock could not start");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Command::Client(command) => fencelock::cli::execute(command).await,
    }
}

//! The `fencelock` command line.

use clap::{Parser, Subcommand};

use crate::config::ServeConfig;

/// fencelock: named locks with leases and fences, over HTTP, on DynamoDB.
#[derive(Debug, Parser)]
#[command(name = "fencelock", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the lock API over HTTP (configured by flags or FENCELOCK_* variables).
    Serve(ServeConfig),
}

//! The `fencelock` command line: `serve`, and the client commands that take, hold and
//! inspect locks on a running server (`acquire`, `heartbeat`, `update`, `release`,
//! `status`, `list`, `watch`), `run`, which holds a lock while a command runs, and
//! `elect`, which runs a command while this process leads an election.

mod admin;
mod commands;
mod holder;
mod output;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::{AdminAction, Client, ClientConfig, ClientError, DEFAULT_URL, Holding, Kind};
use crate::config::{ServeConfig, duration};
use crate::domain::{Fence, LockName};

/// Exit status: the lock is held by another holder (and any `--wait` ran out).
pub const EXIT_HELD: u8 = 75;
/// Exit status: the lock was lost: its fence no longer holds it.
pub const EXIT_LOST: u8 = 76;
/// Exit status: the server could not be reached, or answered that it is unavailable.
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit status: any other failure (the server refused the request, a lock has no record, …).
pub const EXIT_FAILED: u8 = 1;

const EXIT_CODES: &str = "\
Exit status of the client commands:
  0    success (`run`: the command's own exit status)
  1    failure: the server refused the request, or the lock has no record
  2    usage error: the command line is not valid
  69   the server could not be reached, or answered that it is unavailable
  75   the lock is held by another holder (and any --wait ran out)
  76   the lock was lost: its fence no longer holds it
  126  `run`: the command could not be started
  127  `run`: the command was not found";

/// fencelock: named locks with leases and fences, over HTTP, on DynamoDB.
#[derive(Debug, Parser)]
#[command(name = "fencelock", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
// Parsed once per process: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the lock API over HTTP (configured by flags or FENCELOCK_* variables).
    Serve(ServeConfig),
    #[command(flatten)]
    Client(ClientCommand),
}

/// The commands that talk to a running server.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Take a lock and print its fence.
    Acquire(AcquireArgs),
    /// Extend the lease of a fence.
    Heartbeat(HeartbeatArgs),
    /// Replace the body (recovery value) of a lock its fence holds, extending the lease.
    Update(UpdateArgs),
    /// Release a lock its fence holds.
    Release(FenceArgs),
    /// Show a lock: who holds it, until when, and its body.
    Status(NameArgs),
    /// List locks.
    List(ListArgs),
    /// Hold a lock while a command runs: acquire, run, heartbeat, release.
    #[command(after_help = run::ABOUT_RUN)]
    Run(RunArgs),
    /// Campaign in an election, and run a command while this process leads.
    #[command(after_help = run::ABOUT_ELECT)]
    Elect(ElectArgs),
    /// Print each change of a lock (or, with --semaphore, of a semaphore, or with
    /// --election, of an election's leaders) as it happens, one line each, until
    /// interrupted.
    Watch(WatchArgs),
    /// Break glass: end the lease of each lock NAME at once (or, with --slot, of a
    /// semaphore's slot); the holder loses it on its next heartbeat, the body is kept,
    /// and the next acquire gets a fence above the holder's. Needs a token with the
    /// admin right.
    #[command(name = "force-release")]
    ForceRelease(ForceReleaseArgs),
    /// Break glass: refuse every acquire of each lock NAME until it is enabled; a
    /// holder keeps its lease until it ends or is force-released. Needs the admin right.
    Disable(AdminArgs),
    /// Let each disabled lock NAME be acquired again. Needs the admin right.
    Enable(AdminArgs),
    /// Ask the holder of each lock NAME to release it: the holder sees it on its next
    /// heartbeat's answer (`fencelock run` then stops CMD as on loss, and releases).
    /// Needs the admin right.
    #[command(name = "ask-release")]
    AskRelease(AdminArgs),
}

/// How to reach the server, shared by the client commands.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The fencelock server.
    #[arg(long, env = "FENCELOCK_URL", default_value = DEFAULT_URL)]
    pub server: String,
    /// How long one request may take, beyond any waiting it asks for.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub timeout: Duration,
    /// The bearer token, for a server that lists tokens.
    #[arg(long, env = "FENCELOCK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust for HTTPS besides the system's roots.
    #[arg(long, env = "FENCELOCK_CA")]
    pub ca: Option<PathBuf>,
}

/// How the commands that print a result print it.
#[derive(Debug, Clone, Copy, Args)]
pub struct PrintArgs {
    /// Print JSON (the API's own shapes) instead of sentences.
    #[arg(long)]
    pub json: bool,
}

impl ClientArgs {
    fn client(&self) -> Result<Client, ClientError> {
        let ca_pem = match &self.ca {
            Some(path) => Some(std::fs::read(path).map_err(|err| ClientError::Refused {
                status: reqwest::StatusCode::BAD_REQUEST,
                code: "invalid_ca".to_owned(),
                message: format!("cannot read the CA file {}: {err}", path.display()),
            })?),
            None => None,
        };
        let config = ClientConfig {
            token: self.token.clone(),
            ca_pem,
        };
        Ok(Client::with_config(&self.server, config)?.with_timeout(self.timeout))
    }
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The lock's name: 1–255 of [A-Za-z0-9._:-].
    #[arg(value_parser = lock_name)]
    pub name: LockName,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub print: PrintArgs,
}

#[derive(Debug, Args)]
pub struct FenceArgs {
    /// The lock's name: 1–255 of [A-Za-z0-9._:-].
    #[arg(value_parser = lock_name)]
    pub name: LockName,
    /// The fence the lock was acquired with.
    pub fence: Fence,
    /// The nonce the lock was acquired with, sent as proof of holding (needed when the
    /// server runs with FENCELOCK_REQUIRE_NONCE=true).
    #[arg(long, env = "FENCELOCK_NONCE", hide_env_values = true)]
    pub nonce: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub print: PrintArgs,
}

impl FenceArgs {
    /// The holding these arguments name.
    pub fn holding(&self) -> Holding<'_> {
        Holding {
            kind: Kind::Lock,
            name: &self.name,
            fence: self.fence,
            nonce: self.nonce.as_deref(),
        }
    }
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    /// The lock's name: 1–255 of [A-Za-z0-9._:-].
    #[arg(value_parser = lock_name)]
    pub name: LockName,
    /// This holder's nonce (acquiring again with it renews the same holding);
    /// a fresh one from host, pid and randomness when not given.
    #[arg(long)]
    pub nonce: Option<String>,
    /// Lease length, e.g. 30s (the server's default when not given).
    #[arg(long, value_parser = duration)]
    pub ttl: Option<Duration>,
    /// How long to wait for a held lock, e.g. 5m (default: do not wait).
    #[arg(long, value_parser = duration)]
    pub wait: Option<Duration>,
    /// Who holds the lock, shown by `status` and to waiters.
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub print: PrintArgs,
}

#[derive(Debug, Args)]
pub struct HeartbeatArgs {
    #[command(flatten)]
    pub lock: FenceArgs,
    /// A new lease length, kept for later heartbeats.
    #[arg(long, value_parser = duration)]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub lock: FenceArgs,
    /// The new body; `-` or nothing reads it from standard input.
    pub value: Option<String>,
    /// A new lease length, kept for later heartbeats.
    #[arg(long, value_parser = duration)]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only names that start with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only names in this namespace (the part before the first ':'; "default" also
    /// holds names without one).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only locks whose lease is live.
    #[arg(long)]
    pub held: bool,
    /// At most this many locks (default: all).
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub print: PrintArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The lock's name: 1–255 of [A-Za-z0-9._:-]. Several names: all those locks at
    /// once, or none (a lock group).
    #[arg(value_parser = lock_name, required = true, num_args = 1.., value_name = "NAME")]
    pub names: Vec<LockName>,
    /// Lease length, e.g. 30s (the server's default when not given); heartbeats are
    /// sent every third of it.
    #[arg(long, value_parser = duration)]
    pub ttl: Option<Duration>,
    /// How long to wait for a held lock, e.g. 5m (default: do not wait).
    #[arg(long, value_parser = duration)]
    pub wait: Option<Duration>,
    /// Take a slot of the semaphore NAME, which lets at most this many holders (1–100)
    /// run at once, instead of the lock NAME. Every `run` of NAME must give the same.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: Option<u32>,
    /// After the lock is lost, how long the command has between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub kill_grace: Duration,
    /// Who holds the lock, shown by `status` and to waiters
    /// (default: host, pid and the command).
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ElectArgs {
    /// The election's name: 1–255 of [A-Za-z0-9._:-] (an election and a lock of the
    /// same name are different things).
    #[arg(value_parser = lock_name)]
    pub name: LockName,
    /// What this candidate proclaims once it leads (its address, say), shown to
    /// everyone who asks who leads.
    #[arg(long, default_value = "")]
    pub value: String,
    /// The leader's lease, e.g. 15s (the server's default when not given);
    /// heartbeats are sent every third of it.
    #[arg(long, value_parser = duration)]
    pub ttl: Option<Duration>,
    /// How long to stand as a candidate, e.g. 1h (default: do not wait).
    #[arg(long, value_parser = duration)]
    pub wait: Option<Duration>,
    /// After leadership is lost, how long the command has between SIGTERM and SIGKILL.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub kill_grace: Duration,
    /// Who the candidate is, shown with the leader (default: host, pid and the command).
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The locks' names: 1–255 of [A-Za-z0-9._:-] each; each is acted on in turn.
    #[arg(value_parser = lock_name, required = true, num_args = 1.., value_name = "NAME")]
    pub names: Vec<LockName>,
    /// Why: written in the server's audit line (and shown with a disabled lock).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub print: PrintArgs,
}

#[derive(Debug, Args)]
pub struct ForceReleaseArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Release the slot of this fence of the semaphore NAME (one NAME) instead of
    /// the lock NAME.
    #[arg(long, value_name = "FENCE")]
    pub slot: Option<Fence>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub name: NameArgs,
    /// Watch the election NAME's leaders instead of the lock NAME.
    #[arg(long, conflicts_with = "semaphore")]
    pub election: bool,
    /// Watch the semaphore NAME's slots instead of the lock NAME.
    #[arg(long)]
    pub semaphore: bool,
}

fn lock_name(raw: &str) -> Result<LockName, String> {
    LockName::parse(raw).map_err(|e| e.0)
}

/// Runs a client command, reporting on standard error what went wrong.
pub async fn execute(command: ClientCommand) -> ExitCode {
    let code = match command {
        ClientCommand::Acquire(args) => commands::acquire(args).await,
        ClientCommand::Heartbeat(args) => commands::heartbeat(args).await,
        ClientCommand::Update(args) => commands::update(args).await,
        ClientCommand::Release(args) => commands::release(args).await,
        ClientCommand::Status(args) => commands::status(args).await,
        ClientCommand::List(args) => commands::list(args).await,
        ClientCommand::Run(args) => run::run(args).await,
        ClientCommand::Elect(args) => run::elect(args).await,
        ClientCommand::Watch(args) => commands::watch(args).await,
        ClientCommand::ForceRelease(args) => admin::force_release(args).await,
        ClientCommand::Disable(args) => admin::act(AdminAction::Disable, args).await,
        ClientCommand::Enable(args) => admin::act(AdminAction::Enable, args).await,
        ClientCommand::AskRelease(args) => admin::act(AdminAction::AskRelease, args).await,
    };
    ExitCode::from(code)
}

/// The exit status for a failed request.
pub fn exit_code(err: &ClientError) -> u8 {
    match err {
        ClientError::Held { .. } => EXIT_HELD,
        ClientError::Lost { .. } => EXIT_LOST,
        ClientError::Unavailable { .. } | ClientError::Unreachable { .. } => EXIT_UNAVAILABLE,
        ClientError::NotFound { .. }
        | ClientError::Refused { .. }
        | ClientError::Unexpected { .. } => EXIT_FAILED,
    }
}

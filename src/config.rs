//! The server's configuration: every option is a `fencelock serve` flag and an
//! environment variable (listed with defaults in `.env.example`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use clap::{ArgAction, Args};

use crate::api::request_log::RequestLog;
use crate::domain::{InvalidInput, TtlBounds, parse_duration};
use crate::telemetry::LogFormat;

pub(crate) fn duration(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| e.0)
}

/// The reclaim delay, or none when reclaiming is `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimAfter(pub Option<Duration>);

fn reclaim_after(raw: &str) -> Result<ReclaimAfter, String> {
    if raw.trim().eq_ignore_ascii_case("off") {
        return Ok(ReclaimAfter(None));
    }
    duration(raw)
        .map(|d| ReclaimAfter(Some(d)))
        .map_err(|e| format!("{e}, or \"off\""))
}

/// How records released or expired longer than the reclaim delay ago are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReclaimBy {
    /// Each server scans the table (a quarter of the delay apart, at most an hour)
    /// and deletes each stale record with a conditional `DeleteItem`.
    Scan,
    /// Every write says when DynamoDB's TTL may delete the record, and DynamoDB
    /// deletes it at no cost; no scans.
    Ttl,
}

impl std::fmt::Display for ReclaimBy {
    /// As `FENCELOCK_RECLAIM_BY` spells it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Scan => "scan",
            Self::Ttl => "ttl",
        })
    }
}

/// Where `fencelock serve` listens when `FENCELOCK_LISTEN` does not say: this machine
/// only for an open server (no token file), as Redis's protected mode does, and every
/// interface for one that checks tokens.
pub const OPEN_LISTEN: &str = "127.0.0.1:12345";
pub const GUARDED_LISTEN: &str = "0.0.0.0:12345";

/// Configuration of `fencelock serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to serve HTTP on. Unset: 127.0.0.1:12345 (this machine only) without a
    /// token file, 0.0.0.0:12345 (every interface) with one; an open server is never
    /// reachable from other machines unless this says so.
    #[arg(long, env = "FENCELOCK_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// DynamoDB table holding the locks.
    #[arg(long, env = "FENCELOCK_TABLE", default_value = "fencelock")]
    pub table: String,

    /// DynamoDB endpoint, e.g. http://127.0.0.1:8000 for DynamoDB Local; unset means AWS.
    #[arg(long, env = "FENCELOCK_DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,

    /// AWS region; unset means the standard AWS chain (profile, instance metadata).
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,

    /// Create the table at start-up when it is missing.
    #[arg(long, env = "FENCELOCK_CREATE_TABLE", default_value_t = true, action = ArgAction::Set)]
    pub create_table: bool,

    /// Lease length when a request gives no ttl.
    #[arg(long, env = "FENCELOCK_DEFAULT_TTL", default_value = "30s", value_parser = duration)]
    pub default_ttl: Duration,

    /// Shortest lease a request may ask for.
    #[arg(long, env = "FENCELOCK_MIN_TTL", default_value = "1s", value_parser = duration)]
    pub min_ttl: Duration,

    /// Longest lease a request may ask for.
    #[arg(long, env = "FENCELOCK_MAX_TTL", default_value = "1h", value_parser = duration)]
    pub max_ttl: Duration,

    /// The most the servers' clocks may differ; a lease is taken over only this long
    /// after it ended.
    #[arg(long, env = "FENCELOCK_CLOCK_SKEW", default_value = "500ms", value_parser = duration)]
    pub clock_skew: Duration,

    /// Longest a waiting acquire or long-poll may wait; a longer `wait` is cut to
    /// this. Nothing is sent while a request waits, so it must stay below the idle
    /// timeout of any proxy in front: 50 s fits AWS's load balancers and nginx (60 s).
    #[arg(long, env = "FENCELOCK_MAX_WAIT", default_value = "50s", value_parser = duration)]
    pub max_wait: Duration,

    /// After a lease ends without a release, nobody may take the lock for this long
    /// on top of the skew margin, so that a holder that is merely slow can notice.
    #[arg(long, env = "FENCELOCK_LOCK_DELAY", default_value = "0s", value_parser = duration)]
    pub lock_delay: Duration,

    /// Delete a record whose lease was released or ran out this long ago and whose
    /// body is empty; `off` keeps every record.
    #[arg(long, env = "FENCELOCK_RECLAIM_AFTER", default_value = "7d", value_parser = reclaim_after)]
    pub reclaim_after: ReclaimAfter,

    /// How stale records are deleted: `scan` (each server scans the table) or `ttl`
    /// (DynamoDB's TTL on the attribute `purge_at`, at no cost; the table's TTL must
    /// be on, or FENCELOCK_CREATE_TABLE=true turns it on).
    #[arg(long, env = "FENCELOCK_RECLAIM_BY", value_enum, default_value_t = ReclaimBy::Scan)]
    pub reclaim_by: ReclaimBy,

    /// Largest request body (a lock's body, or an acquire's JSON), e.g. 64KiB.
    #[arg(long, env = "FENCELOCK_MAX_BODY", default_value = "64KiB")]
    pub max_body: ByteSize,

    /// The longest a request may take before it is answered 503; longer than
    /// FENCELOCK_MAX_WAIT.
    #[arg(long, env = "FENCELOCK_REQUEST_TIMEOUT", default_value = "90s", value_parser = duration)]
    pub request_timeout: Duration,

    /// Requests served at once, waiting acquires included; more are answered 503.
    #[arg(
        long,
        env = "FENCELOCK_MAX_CONCURRENT_REQUESTS",
        default_value_t = 10_000
    )]
    pub max_concurrent_requests: usize,

    /// How long a request's line and headers may take to arrive, from their first
    /// byte (a new connection's first request: from its opening); then the
    /// connection is closed.
    #[arg(long, env = "FENCELOCK_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,

    /// How long a connection with no request in progress is kept open; longer than
    /// the idle timeout of a load balancer in front (60 s on AWS's).
    #[arg(long, env = "FENCELOCK_IDLE_TIMEOUT", default_value = "75s", value_parser = duration)]
    pub idle_timeout: Duration,

    /// How often a watched lock's record is read, to see changes made through other
    /// servers: the delay they reach watchers with, and 1 read per watched lock and
    /// server each time, however many watch it.
    #[arg(long, env = "FENCELOCK_WATCH_INTERVAL", default_value = "500ms", value_parser = duration)]
    pub watch_interval: Duration,

    /// How often a followed page of a listing (`GET /events/locks`, the web page's
    /// list) is read, to see changes made through other servers: one listing call per
    /// followed page and server each time, however many follow it.
    #[arg(long, env = "FENCELOCK_WATCH_LIST_INTERVAL", default_value = "2s", value_parser = duration)]
    pub watch_list_interval: Duration,

    /// On SIGINT or SIGTERM, how long requests in flight may still take.
    #[arg(long, env = "FENCELOCK_SHUTDOWN_GRACE", default_value = "10s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// Log lines as text or as JSON objects.
    #[arg(long, env = "FENCELOCK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Which requests get a log line: `all` (a line each, and a span whose fields
    /// every line of the request carries), `failed` (answers of 5xx, 401, 403 and
    /// 429 only, each line with the request's fields) or `off`.
    #[arg(long, env = "FENCELOCK_REQUEST_LOG", value_enum, default_value_t = RequestLog::Failed)]
    pub request_log: RequestLog,

    /// Compare this server's clock with the `Date` of DynamoDB's answers; while it is
    /// certainly off by more than the skew margin, refuse takeovers of leases that
    /// ended unreleased and fail /readyz.
    #[arg(long, env = "FENCELOCK_CLOCK_CHECK", default_value_t = true, action = ArgAction::Set)]
    pub clock_check: bool,

    /// Longest one DynamoDB operation may take, retries included, before the request
    /// answers 503.
    #[arg(long, env = "FENCELOCK_DYNAMODB_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub dynamodb_timeout: Duration,

    /// The token file (TOML): with it, the lock routes need a bearer token it lists;
    /// without it, the server runs open. Read again on SIGHUP.
    #[arg(long, env = "FENCELOCK_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,

    /// The bearer token `/metrics` asks for; open when unset.
    #[arg(long, env = "FENCELOCK_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// On a server without a token file, allow the operators' break-glass actions
    /// (`/admin/…`: force-release, disable, enable, ask-release) to every caller.
    /// Refused otherwise: an open server has no token to grant them to.
    #[arg(long, env = "FENCELOCK_ALLOW_ADMIN_WITHOUT_AUTH", default_value_t = false, action = ArgAction::Set)]
    pub allow_admin_without_auth: bool,

    /// Heartbeat, update and release need the holder's nonce (`Lock-Nonce`) as proof.
    #[arg(long, env = "FENCELOCK_REQUIRE_NONCE", default_value_t = false, action = ArgAction::Set)]
    pub require_nonce: bool,

    /// Requests per second one token may send, with as large a burst; 0 for no limit.
    #[arg(long, env = "FENCELOCK_TOKEN_RATE", default_value_t = 1000)]
    pub token_rate: u32,

    /// Waiting acquires one lock may have at once on one server; more are answered 429.
    #[arg(long, env = "FENCELOCK_MAX_WAITERS_PER_LOCK", default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_waiters_per_lock: u32,

    /// Waiting acquires one token may have at once on one server; more are answered 429.
    #[arg(long, env = "FENCELOCK_MAX_WAITERS_PER_TOKEN", default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_waiters_per_token: u32,

    /// The server's certificate chain (PEM); with FENCELOCK_TLS_KEY, serve HTTPS.
    #[arg(long, env = "FENCELOCK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of FENCELOCK_TLS_CERT.
    #[arg(long, env = "FENCELOCK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServeConfig {
    /// The address to listen on: `FENCELOCK_LISTEN`, or [`OPEN_LISTEN`] without a
    /// token file and [`GUARDED_LISTEN`] with one.
    pub fn listen_addr(&self) -> SocketAddr {
        let default = if self.auth_file.is_some() {
            GUARDED_LISTEN
        } else {
            OPEN_LISTEN
        };
        self.listen
            .unwrap_or_else(|| default.parse().expect("a socket address"))
    }

    /// The lease bounds, checked to be ordered.
    pub fn ttl_bounds(&self) -> Result<TtlBounds, InvalidInput> {
        TtlBounds::new(self.default_ttl, self.min_ttl, self.max_ttl)
    }

    /// The body limit in bytes.
    pub fn max_body_bytes(&self) -> usize {
        usize::try_from(self.max_body.as_u64()).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ServeConfig,
    }

    /// Read by the log filter (tracing's `EnvFilter`), not an option of `serve`.
    const NOT_AN_OPTION: &str = "RUST_LOG";

    /// The variables `text` names where `is_entry` says a line names some, each a
    /// run of capitals, digits and `_` in backquotes or before `=`.
    fn variables(text: &str, is_entry: impl Fn(&str) -> Option<&str>) -> BTreeSet<String> {
        text.lines()
            .filter_map(is_entry)
            .flat_map(|entry| {
                entry.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            })
            .filter(|word| word.len() > 3 && word.contains('_') || *word == NOT_AN_OPTION)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_option_is_in_env_example_and_in_the_docs_table_and_nothing_else_is() {
        use clap::CommandFactory;
        let options: BTreeSet<String> = Cli::command()
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .chain([NOT_AN_OPTION.to_owned()])
            .collect();
        // `NAME=value`, or commented out as `# NAME=value`.
        let example = variables(include_str!("../.env.example"), |line| {
            let line = line.trim_start_matches(['#', ' ']);
            line.split_once('=')
                .map(|(name, _)| name)
                .filter(|name| !name.contains(' '))
        });
        // The first cell of each row of the table under "## Configuration".
        let docs = include_str!("../docs/operations.md");
        let table = docs
            .split("\n## ")
            .find(|section| section.starts_with("Configuration"))
            .expect("docs/operations.md has a Configuration section");
        let documented = variables(table, |line| {
            line.strip_prefix("| `")
                .and_then(|row| row.split(" | ").next())
        });
        assert_eq!(example, options, ".env.example against `fencelock serve`");
        assert_eq!(
            documented, options,
            "docs/operations.md's table against `fencelock serve`"
        );
    }

    #[test]
    fn flags_parse_durations_sizes_and_booleans() {
        let cli = Cli::try_parse_from([
            "fencelock",
            "--default-ttl",
            "10",
            "--clock-skew",
            "250ms",
            "--max-body",
            "1MiB",
            "--create-table",
            "false",
        ])
        .unwrap();
        assert_eq!(cli.config.default_ttl, Duration::from_secs(10));
        assert_eq!(cli.config.clock_skew, Duration::from_millis(250));
        assert_eq!(cli.config.max_body_bytes(), 1 << 20);
        assert!(!cli.config.create_table);
    }

    #[test]
    fn an_open_server_listens_on_this_machine_only_unless_told_otherwise() {
        let listen = |args: &[&str]| {
            let mut argv = vec!["fencelock"];
            argv.extend(args);
            Cli::try_parse_from(argv)
                .unwrap()
                .config
                .listen_addr()
                .to_string()
        };
        assert_eq!(listen(&[]), "127.0.0.1:12345", "no token file: loopback");
        assert_eq!(listen(&["--auth-file", "tokens.toml"]), "0.0.0.0:12345");
        assert_eq!(
            listen(&["--listen", "0.0.0.0:8080"]),
            "0.0.0.0:8080",
            "as told"
        );
        assert_eq!(
            listen(&["--listen", "127.0.0.1:9", "--auth-file", "t.toml"]),
            "127.0.0.1:9"
        );
    }

    #[test]
    fn reclaiming_takes_a_duration_or_off() {
        let parse = |raw: &str| Cli::try_parse_from(["fencelock", "--reclaim-after", raw]);
        let days = Duration::from_secs(7 * 86_400);
        assert_eq!(
            parse("7d").unwrap().config.reclaim_after,
            ReclaimAfter(Some(days))
        );
        assert_eq!(
            parse("off").unwrap().config.reclaim_after,
            ReclaimAfter(None)
        );
        let err = parse("never").err().unwrap().to_string();
        assert!(err.contains("or \"off\""), "{err}");
    }

    #[test]
    fn reclaiming_is_by_scan_unless_told_ttl_and_says_so_as_written() {
        let parse = |args: &[&str]| {
            let mut all = vec!["fencelock"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|cli| cli.config.reclaim_by)
        };
        assert_eq!(parse(&[]).unwrap(), ReclaimBy::Scan);
        let ttl = parse(&["--reclaim-by", "ttl"]).unwrap();
        assert_eq!((ttl, ttl.to_string()), (ReclaimBy::Ttl, "ttl".to_owned()));
        let err = parse(&["--reclaim-by", "sweep"]).err().unwrap().to_string();
        assert!(err.contains("scan") && err.contains("ttl"), "{err}");
    }

    #[test]
    fn a_bad_duration_is_refused_with_what_was_expected() {
        let err = Cli::try_parse_from(["fencelock", "--max-ttl", "forever"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("expected for example"), "{err}");
    }
}

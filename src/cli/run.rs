//! `fencelock run NAME -- CMD…`: hold a lock for exactly as long as a command runs.
//!
//! Acquire (waiting if asked), start CMD in a process group of its own with the lock in
//! its environment, heartbeat every third of the lease, and release when CMD ends. When
//! the lock is lost, CMD's whole group gets SIGTERM and, after the grace, SIGKILL.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

use super::commands::{report, take, take_with};
use super::output::warn;
use super::{ClientArgs, EXIT_FAILED, EXIT_LOST, ElectArgs, RunArgs, holder};
use crate::client::{Acquire, Client, ClientError, Holding, Kind, LockView};
use crate::domain::{LockName, parse_duration};

/// The most time between two tries of a heartbeat that failed.
const MAX_HEARTBEAT_RETRY: Duration = Duration::from_secs(1);

/// How much earlier than the server `run` ends a lease: 1 % of it (the two machines'
/// clocks need not tick at the same rate) and 10 ms (a timer wakes late, and CMD is
/// signalled after that). The Python client keeps the same margin.
fn lease_margin(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(10)
}
/// How long a release may take once CMD has ended.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

pub const ABOUT_RUN: &str = "\
With several NAMEs, `run` takes all those locks at once or none (a lock group),
heartbeats and releases them together, and lists their names and fences, in order
and separated by spaces, in FENCELOCK_NAME and FENCELOCK_FENCE.

With --limit K, `run` takes one of the K slots of the semaphore NAME instead of the
lock NAME, so that at most K copies of CMD run at once (FENCELOCK_LIMIT is then set,
and FENCELOCK_BODY is empty); all else is the same.

If the lock is held (and any --wait ran out), CMD never starts and `run` exits with
75; if the server cannot be reached, with 69.

CMD runs with FENCELOCK_NAME, FENCELOCK_FENCE (pass it to the systems CMD writes to),
FENCELOCK_NONCE, FENCELOCK_BODY (the lock's recovery value, saved with `fencelock
update`), FENCELOCK_TOOK_OVER (only when the lock was taken over from a holder whose
lease ran out without a release: that holder's fence) and FENCELOCK_URL (and
FENCELOCK_TOKEN and FENCELOCK_CA when `run` has them) in its environment. It runs in
a process group of its own, so that
stopping it stops everything it started; it cannot read from the terminal.

SIGINT, SIGTERM and SIGHUP are passed on to CMD. When CMD ends, the lock is released
and `run` exits with CMD's status (128+N if signal N ended it). If the lock is lost
(the server answers that the fence no longer holds it, or no heartbeat succeeds before
the lease would end), CMD gets SIGTERM, then SIGKILL after --kill-grace, and `run`
exits with 76. So too when an operator asks for the lock to be released (`fencelock
ask-release`, seen on a heartbeat's answer), and `run` then releases it.";

pub const ABOUT_ELECT: &str = "\
`elect` campaigns in the election NAME (waiting up to --wait while another candidate
leads), then runs CMD while this process leads, renewing its lease every third of
--ttl, and resigns when CMD ends, so that the next candidate leads at once. It is `run`
for a leader: the same signals, exit statuses and loss handling (75 when another
candidate leads and any --wait ran out; 76 and SIGTERM, then SIGKILL after
--kill-grace, when leadership is lost).

CMD runs with FENCELOCK_NAME, FENCELOCK_TERM (the term: pass it to the systems CMD
writes to, as a fence; FENCELOCK_FENCE holds the same number), FENCELOCK_VALUE,
FENCELOCK_NONCE and FENCELOCK_URL (and FENCELOCK_TOKEN and FENCELOCK_CA when `elect`
has them) in its environment.";

/// Why `run` stopped holding the lock before CMD ended.
enum Loss {
    /// The server answered that the fence no longer holds the lock.
    Taken(String),
    /// No heartbeat succeeded before the lease would end; the last failure, if any.
    Silent(Option<String>),
    /// An operator asked for a release (on a heartbeat's answer): the lock is still
    /// held, and is released once CMD is stopped.
    Asked,
}

impl Loss {
    /// Says on stderr that `what` was lost, and why.
    fn tell(&self, what: &str) {
        match self {
            Self::Taken(reason) => warn(format_args!("lost {what}: {reason}")),
            Self::Silent(last) => warn(format_args!(
                "lost {what}: no heartbeat succeeded before the lease would end{}",
                last.as_deref()
                    .map(|e| format!(" (last failure: {e})"))
                    .unwrap_or_default()
            )),
            Self::Asked => warn(format_args!(
                "an operator asked for {what} to be released (`fencelock ask-release`)"
            )),
        }
    }
}

/// The signals `run` passes on to CMD.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next of them to arrive.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            Some(()) = self.interrupt.recv() => Signal::SIGINT,
            Some(()) = self.terminate.recv() => Signal::SIGTERM,
            Some(()) = self.hangup.recv() => Signal::SIGHUP,
            else => std::future::pending().await,
        }
    }
}

/// Takes the lock (or semaphore slot) of one name, or the lock group of several,
/// waiting up to `wait`; the locks granted, in the order of `names`, and when.
async fn take_all(
    client: &Client,
    names: &[LockName],
    request: Acquire,
    wait: Duration,
) -> Result<(Vec<LockView>, Instant), ClientError> {
    match names {
        [name] => take(client, name, request, wait)
            .await
            .map(|(lock, at)| (vec![lock], at)),
        _ => {
            let refs: Vec<&LockName> = names.iter().collect();
            let what = format!("locks {}", quoted(names));
            take_with(client, &what, None, request, wait, async |request| {
                client.acquire_group(&refs, request).await
            })
            .await
        }
    }
}

/// CMD's environment: the holding, and how to reach the server as `run` does (so
/// that CMD's own `fencelock update` works). With several names, FENCELOCK_NAME and
/// FENCELOCK_FENCE list them in the same order, separated by spaces, and
/// FENCELOCK_BODY is the first lock's.
fn environment(
    names: &[LockName],
    locks: &[LockView],
    nonce: &str,
    client: &Client,
    options: &ClientArgs,
    limit: Option<u32>,
) -> Vec<(&'static str, OsString)> {
    let fences: Vec<String> = locks.iter().map(|lock| lock.fence.to_string()).collect();
    let listed: Vec<&str> = names.iter().map(LockName::as_str).collect();
    let mut env: Vec<(&str, OsString)> = vec![
        ("FENCELOCK_NAME", listed.join(" ").into()),
        ("FENCELOCK_FENCE", fences.join(" ").into()),
        ("FENCELOCK_NONCE", nonce.into()),
        ("FENCELOCK_BODY", locks[0].body.clone().into()),
    ];
    env.extend(connection(client, options));
    if let Some(limit) = limit {
        env.push(("FENCELOCK_LIMIT", limit.to_string().into()));
    }
    if let Some(took_over) = &locks[0].took_over {
        warn(format_args!(
            "took \"{}\" over from fence {}{}, whose lease ran out at {} without a release: it may have stopped in the middle of its work (FENCELOCK_BODY holds what it recorded)",
            names[0],
            took_over.fence,
            took_over
                .owner
                .as_deref()
                .map(|owner| format!(" ({owner})"))
                .unwrap_or_default(),
            took_over.expire_time
        ));
        env.push(("FENCELOCK_TOOK_OVER", took_over.fence.to_string().into()));
    }
    env
}

/// How CMD reaches the server as `run` does: FENCELOCK_URL, and FENCELOCK_TOKEN and
/// FENCELOCK_CA when `run` has them.
fn connection(client: &Client, options: &ClientArgs) -> Vec<(&'static str, OsString)> {
    let mut env: Vec<(&'static str, OsString)> =
        vec![("FENCELOCK_URL", client.base().as_str().into())];
    if let Some(token) = &options.token {
        env.push(("FENCELOCK_TOKEN", token.into()));
    }
    if let Some(ca) = &options.ca {
        env.push(("FENCELOCK_CA", ca.into()));
    }
    env
}

pub async fn run(args: RunArgs) -> u8 {
    let RunArgs {
        names,
        ttl,
        wait,
        limit,
        kill_grace,
        owner,
        client: options,
        command,
    } = args;
    if limit.is_some() && names.len() > 1 {
        warn("--limit takes one NAME, the semaphore's; several names are a group of locks");
        return EXIT_FAILED;
    }
    let client = match options.client() {
        Ok(client) => client,
        Err(err) => {
            warn(&err);
            return EXIT_FAILED;
        }
    };
    let nonce = holder::fresh_nonce();
    let request = Acquire {
        nonce: nonce.clone(),
        ttl,
        owner: Some(owner.unwrap_or_else(|| holder::default_owner(&command))),
        limit,
        ..Acquire::default()
    };
    let kind = request.kind();
    let (locks, granted) = match take_all(&client, &names, request, wait.unwrap_or_default()).await
    {
        Ok(taken) => taken,
        Err(err) => {
            let lock = (kind == Kind::Lock && names.len() == 1).then(|| &names[0]);
            return report(&client, lock, &err).await;
        }
    };
    let held = Held::new(kind, &names, &locks, &nonce);
    let env = environment(&names, &locks, &nonce, &client, &options, limit);
    hold(
        &client,
        &held,
        &locks[0].ttl,
        granted,
        &command,
        env,
        kill_grace,
    )
    .await
}

/// `fencelock elect NAME -- CMD…`: campaign, and run CMD while this process leads.
pub async fn elect(args: ElectArgs) -> u8 {
    let ElectArgs {
        name,
        value,
        ttl,
        wait,
        kill_grace,
        owner,
        client: options,
        command,
    } = args;
    let client = match options.client() {
        Ok(client) => client,
        Err(err) => {
            warn(&err);
            return EXIT_FAILED;
        }
    };
    let nonce = holder::fresh_nonce();
    let request = Acquire {
        nonce: nonce.clone(),
        ttl,
        owner: Some(owner.unwrap_or_else(|| holder::default_owner(&command))),
        ..Acquire::default()
    };
    let what = format!("the leadership of election \"{name}\"");
    let campaign = take_with(
        &client,
        &what,
        None,
        request,
        wait.unwrap_or_default(),
        async |request| client.campaign(&name, request, &value).await,
    )
    .await;
    let (leader, granted) = match campaign {
        Ok((view, granted)) => match view.leader {
            Some(leader) => (leader, granted),
            None => {
                warn("the server answered the campaign with no leader");
                return EXIT_FAILED;
            }
        },
        Err(err) => return report(&client, None, &err).await,
    };
    let held = Held {
        holdings: vec![Holding {
            kind: Kind::Election,
            name: &name,
            fence: leader.term,
            nonce: Some(&nonce),
        }],
    };
    let term = leader.term.to_string();
    let mut env: Vec<(&'static str, OsString)> = vec![
        ("FENCELOCK_NAME", name.as_str().into()),
        ("FENCELOCK_TERM", term.clone().into()),
        ("FENCELOCK_FENCE", term.into()),
        ("FENCELOCK_VALUE", leader.value.clone().into()),
        ("FENCELOCK_NONCE", nonce.clone().into()),
    ];
    env.extend(connection(&client, &options));
    hold(
        &client,
        &held,
        &leader.ttl,
        granted,
        &command,
        env,
        kill_grace,
    )
    .await
}

/// Runs `command` with `env` for as long as `held` lasts, its lease of `ttl` (as the
/// server wrote it) granted by a request sent at `granted`; answers `run`'s status.
async fn hold(
    client: &Client,
    held: &Held<'_>,
    ttl: &str,
    granted: Instant,
    command: &[String],
    env: Vec<(&'static str, OsString)>,
    kill_grace: Duration,
) -> u8 {
    let Ok(ttl) = parse_duration(ttl) else {
        warn(format_args!(
            "the server answered a lease of {ttl:?}, which is not a duration"
        ));
        release(client, held).await;
        return EXIT_FAILED;
    };
    let mut granted = granted;
    if Instant::now() > granted + ttl * 2 / 3 {
        // The answer came so late that the lease, counted from the request's sending,
        // is nearly over: confirm it before CMD relies on it.
        let sent = Instant::now();
        if let Err(err) = held.heartbeat(client, ttl).await {
            warn(format_args!(
                "lost {} before CMD started: {err}",
                held.what()
            ));
            release(client, held).await;
            return EXIT_LOST;
        }
        granted = sent;
    }
    // Listen before CMD starts, so that no signal finds `run` with its default action.
    let Ok(mut signals) = Signals::listen() else {
        warn("cannot listen for signals; CMD was not started");
        release(client, held).await;
        return EXIT_FAILED;
    };
    let mut child = Command::new(&command[0]);
    child.args(&command[1..]).envs(env).process_group(0);
    let mut child = match child.spawn() {
        Ok(child) => child,
        Err(err) => {
            warn(format_args!("cannot start {:?}: {err}", command[0]));
            release(client, held).await;
            // As a shell answers a command it cannot find, or cannot run.
            return if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    let Some(group) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
        warn("CMD ended before it could be watched");
        release(client, held).await;
        return EXIT_FAILED;
    };
    let group = Pid::from_raw(group);
    let keeper = keep(client, held, ttl, granted);
    tokio::pin!(keeper);
    let loss = loop {
        tokio::select! {
            status = child.wait() => {
                let code = status.map_or(EXIT_FAILED, exit_status);
                return finish(client, held, code).await;
            }
            loss = &mut keeper => break loss,
            signal = signals.next() => pass_on(group, signal),
        }
    };
    loss.tell(&held.what());
    warn(format_args!(
        "stopping {:?}: SIGTERM now, SIGKILL in {}",
        command[0],
        humantime::format_duration(kill_grace)
    ));
    stop(&mut child, group, kill_grace).await;
    if let Loss::Silent(_) | Loss::Asked = loss {
        // Asked, the lease is this fence's; silent, it may be, if only the answers
        // were lost.
        release(client, held).await;
    }
    EXIT_LOST
}

/// Heartbeats every third of `ttl` until the lock is lost. The lease is counted from
/// when each heartbeat was sent (and from `granted` for the first), less
/// [`lease_margin`], so `run` gives up before the server lets the lease end.
async fn keep(client: &Client, held: &Held<'_>, ttl: Duration, granted: Instant) -> Loss {
    let what = held.what();
    let interval = ttl / 3;
    let retry = (ttl / 10).min(MAX_HEARTBEAT_RETRY);
    let margin = lease_margin(ttl);
    let mut lease_end = granted + ttl - margin;
    let mut next = granted + interval;
    let mut last_failure = None;
    loop {
        sleep_until(next.min(lease_end)).await;
        let sent = Instant::now();
        match timeout_at(lease_end, held.heartbeat(client, ttl)).await {
            Err(_) => return Loss::Silent(last_failure),
            Ok(Ok(true)) => return Loss::Asked,
            Ok(Ok(false)) => {
                lease_end = sent + ttl - margin;
                next = sent + interval;
                last_failure = None;
            }
            Ok(Err(ClientError::Lost { message, .. })) => return Loss::Taken(message),
            Ok(Err(err)) => {
                let left = lease_end.saturating_duration_since(Instant::now());
                warn(format_args!(
                    "heartbeat of {what} failed: {err}; trying again (the lease ends in {})",
                    humantime::format_duration(Duration::from_millis(left.as_millis() as u64))
                ));
                last_failure = Some(err.to_string());
                next = Instant::now() + retry;
            }
        }
    }
}

/// What `run` holds: one lock, a slot of a semaphore, or a group of locks.
struct Held<'a> {
    holdings: Vec<Holding<'a>>,
}

impl<'a> Held<'a> {
    /// The holdings `locks` grant `nonce`, of `names` in that order.
    fn new(kind: Kind, names: &'a [LockName], locks: &[LockView], nonce: &'a str) -> Self {
        Self {
            holdings: names
                .iter()
                .zip(locks)
                .map(|(name, lock)| Holding {
                    kind,
                    name,
                    fence: lock.fence,
                    nonce: Some(nonce),
                })
                .collect(),
        }
    }

    /// For messages: `lock "x"`, `its slot of semaphore "x"` or `locks "a", "b"`.
    fn what(&self) -> String {
        match self.holdings.as_slice() {
            [one] if one.kind == Kind::Semaphore => {
                format!("its slot of semaphore \"{}\"", one.name)
            }
            [one] if one.kind == Kind::Election => {
                format!(
                    "the leadership of election \"{}\" (term {})",
                    one.name, one.fence
                )
            }
            [one] => format!("lock \"{}\"", one.name),
            many => format!(
                "locks {}",
                quoted(&many.iter().map(|h| h.name.clone()).collect::<Vec<_>>())
            ),
        }
    }

    /// Extends the lease; answers whether an operator asked for a release.
    async fn heartbeat(&self, client: &Client, ttl: Duration) -> Result<bool, ClientError> {
        let asked = |lock: &LockView| lock.release_requested_time.is_some();
        match self.holdings.as_slice() {
            [one] if one.kind == Kind::Election => {
                client.heartbeat_leader(one, Some(ttl)).await.map(|_| false)
            }
            [one] => client
                .heartbeat(one, Some(ttl))
                .await
                .map(|lock| asked(&lock)),
            many => client
                .heartbeat_group(many, Some(ttl))
                .await
                .map(|locks| locks.iter().any(asked)),
        }
    }

    /// Releases what is held; answers what had been lost before, if anything.
    async fn release(&self, client: &Client) -> Result<Option<String>, ClientError> {
        match self.holdings.as_slice() {
            [one] => {
                let release = client.release(one).await?;
                Ok((!release.released).then(|| {
                    format!(
                        "fence {} had lost {} before (the last fence is {})",
                        one.fence,
                        self.what(),
                        release
                            .current_fence
                            .map_or("unknown".to_owned(), |f| f.to_string())
                    )
                }))
            }
            many => {
                let released = client.release_group(many).await?;
                let lost: Vec<String> = released
                    .iter()
                    .filter(|lock| !lock.released)
                    .map(|lock| format!("\"{}\"", lock.name))
                    .collect();
                Ok((!lost.is_empty())
                    .then(|| format!("the group had lost {} before", lost.join(", "))))
            }
        }
    }
}

/// Names as `"a", "b"`.
fn quoted(names: &[LockName]) -> String {
    names
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Releases what `run` holds once CMD ended with `code`; answers `run`'s exit status.
async fn finish(client: &Client, held: &Held<'_>, code: u8) -> u8 {
    let what = held.what();
    match timeout(RELEASE_TIMEOUT, held.release(client)).await {
        Ok(Ok(None)) => code,
        Ok(Ok(Some(lost))) => {
            warn(format_args!(
                "the command ended with status {code}, but {lost}: the command may have overlapped with another holder"
            ));
            EXIT_LOST
        }
        Ok(Err(err)) => {
            warn(format_args!(
                "cannot release {what}: {err}; its lease ends by itself"
            ));
            code
        }
        Err(_) => {
            warn(format_args!(
                "no answer to the release of {what} in time; its lease ends by itself"
            ));
            code
        }
    }
}

/// Releases what `run` holds without CMD having run to its end; failures are only
/// reported.
async fn release(client: &Client, held: &Held<'_>) {
    let what = held.what();
    match timeout(RELEASE_TIMEOUT, held.release(client)).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => warn(format_args!("cannot release {what}: {err}")),
        Err(_) => warn(format_args!("no answer to the release of {what} in time")),
    }
}

/// SIGTERM to CMD's group, then SIGKILL to whatever of it is left after `grace`.
async fn stop(child: &mut Child, group: Pid, grace: Duration) {
    pass_on(group, Signal::SIGTERM);
    let _ = timeout(grace, child.wait()).await;
    // Also reaches what CMD started and left behind; no group left is no error.
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait().await;
}

fn pass_on(group: Pid, signal: Signal) {
    if let Err(err) = killpg(group, signal) {
        warn(format_args!(
            "cannot pass {signal} on to the command: {err}"
        ));
    }
}

/// A shell's view of how a process ended: its code, or 128 + the signal that ended it.
fn exit_status(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(EXIT_FAILED),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(EXIT_FAILED),
        (None, None) => EXIT_FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_ends_a_margin_before_the_servers() {
        assert_eq!(
            lease_margin(Duration::from_secs(3)),
            Duration::from_millis(40)
        );
        assert_eq!(
            lease_margin(Duration::from_secs(30)),
            Duration::from_millis(310)
        );
    }

    #[test]
    fn exit_statuses_read_as_a_shell_reads_them() {
        assert_eq!(exit_status(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_status(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_status(ExitStatus::from_raw(15)), 143);
    }
}

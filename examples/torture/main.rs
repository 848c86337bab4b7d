//! `make torture`: fencelock's safety promises under faults. DynamoDB Local, three
//! fencelock instances on one table, and five mixes of clients through all of them:
//! the fast mix (96 clients, 1,024 locks, leases under a second, short holds: many
//! grants), the long mix (8 clients, 4 locks, leases of seconds: long waits and
//! pauses past a lease), writing to a downstream PostgreSQL that refuses stale fences
//! by docs/fencing.md's recipe ([`downstream`]), and the
//! semaphore mix (16 clients, 4 semaphores of limit 3), and the lock-group mix (16
//! clients taking groups of 2-4 of 8 locks, and single locks among them), and the
//! Python mix (clients of the Python package, [`python`]). `--mode`
//! picks locks, semaphores, groups (`multi`) or all of them (the default). Meanwhile
//! faults from a seeded schedule: instances killed and paused, DynamoDB Local paused,
//! restarted and cut off, a holder paused past its lease, an instance's clock set
//! ahead. Every operation is recorded; the checker ([`check`]) reads the history.
//! Each fault is counted only when it was applied, with the grants made under it.
//!
//! `--break skew` sets one instance's clock ahead by far more than the skew margin:
//! the checker must then report overlaps, and the run fails if it does not. It
//! refuses to start without libfaketime. `--break check-then-write` makes the paused
//! holders use the racy recipe (ask fencelock whether the fence holds, pause, write
//! without the condition): the checker must then report stale writes that PostgreSQL
//! accepted, and the run fails if it does not. It refuses to start without
//! PostgreSQL.

mod check;
mod cluster;
mod downstream;
mod election;
mod linear;
mod python;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use fencelock::client::Client;
use fencelock::domain::LockName;
use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::time::Instant;

use cluster::Cluster;
use downstream::Downstream;
use workload::{FaultWindow, Mix, Shared};

/// The clock offset that stays within the servers' 500 ms skew margin (libfaketime
/// reads it in seconds).
const CLOCK_AHEAD: &str = "+0.3";
/// The limit of the semaphore mix's semaphores.
const SEMAPHORE_LIMIT: u32 = 3;
/// The clock offset of `--break skew`: far past the margin and the leases.
const CLOCK_BROKEN: &str = "+8";

#[derive(Debug, Parser)]
#[command(about = "fencelock's torture run: faults, a recorded history, and its checker")]
struct Args {
    /// How long the workload runs, in seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// The seed of the workload and the fault schedule (random when not given).
    #[arg(long)]
    seed: Option<u64>,
    /// Break the system on purpose, to show a check catches it: `skew` (an
    /// instance's clock far ahead: its clock check must refuse its takeovers, and the
    /// run must stay clean), `skew-unchecked` (the same without the clock check: the
    /// checker must report overlaps) or `check-then-write` (paused holders write
    /// without the fence condition: the checker must report stale writes).
    #[arg(long = "break", value_parser = ["skew", "skew-unchecked", "check-then-write"])]
    breakage: Option<String>,
    /// Clients of the fast mix: short leases and holds on many locks.
    #[arg(long, default_value_t = 96)]
    clients: usize,
    /// Locks of the fast mix.
    #[arg(long, default_value_t = 1024)]
    locks: usize,
    /// Clients of the long mix: leases of 2-6 s held up to 4 s, on few locks, so
    /// waiting, heartbeats and expiry under pauses are exercised.
    #[arg(long, default_value_t = 8)]
    long_clients: usize,
    /// Locks of the long mix.
    #[arg(long, default_value_t = 4)]
    long_locks: usize,
    /// What the clients take: `locks` (the fast, long and Python mixes), `semaphore` (the
    /// semaphore mix), `multi` (the lock-group mix), `election` (the election mix), or
    /// `all` of them at once.
    #[arg(long, default_value = "all", value_parser = ["all", "locks", "semaphore", "multi", "election"])]
    mode: String,
    /// Candidates of the election mix, spread over the three servers (each pinned to
    /// one), leading with leases of 3 s; an observer per server follows each election.
    #[arg(long, default_value_t = 6)]
    election_candidates: usize,
    /// Elections of the election mix.
    #[arg(long, default_value_t = 2)]
    elections: usize,
    /// Clients of the lock-group mix: groups of 2-4 locks (and single locks among
    /// them) of a few names, leases of 0.3-2 s.
    #[arg(long, default_value_t = 16)]
    group_clients: usize,
    /// Locks of the lock-group mix.
    #[arg(long, default_value_t = 8)]
    group_locks: usize,
    /// The longest wait of a waiting acquire in the lock-group mix, ms. A group still
    /// refused after waiting a second reserves its locks, so above 1000 the run
    /// exercises reservations (and loads DynamoDB Local more).
    #[arg(long, default_value_t = 1000)]
    group_wait_ms: u64,
    /// Clients of the semaphore mix: slots of a few semaphores of limit 3, leases
    /// of 0.3-2 s, holds up to 1 s.
    #[arg(long, default_value_t = 16)]
    semaphore_clients: usize,
    /// Semaphores of the semaphore mix.
    #[arg(long, default_value_t = 4)]
    semaphores: usize,
    /// Clients of the Python mix (the Python package, from `target/python-venv`), on
    /// 4 locks with leases of 1-3 s; 0 for none. Part of the `all` and `locks` modes.
    #[arg(long, default_value_t = 4)]
    python_clients: usize,
    /// The fault kinds to apply (comma-separated), or `none` for the workload alone.
    #[arg(long, value_delimiter = ',', default_value = "all", value_parser = fault_kind)]
    faults: Vec<String>,
    /// Where the summary, the history and the logs go.
    #[arg(long, default_value = "target/torture")]
    out: PathBuf,
    /// Check a recorded history (a `history.jsonl` of an earlier run) instead of
    /// running: prints its violations, and fails if there are any.
    #[arg(long, value_name = "HISTORY")]
    check: Option<PathBuf>,
}

/// A fault kind's count, and the grants made while it was in effect or within
/// [`AFTER_FAULT`] after.
#[derive(Debug, Default, Serialize)]
struct FaultTally {
    applied: u64,
    grants_under: usize,
}

/// Every kind of fault, in the order a round starts from.
const FAULT_KINDS: [&str; 7] = [
    "kill_instance",
    "pause_instance",
    "pause_dynamodb",
    "restart_dynamodb",
    "drop_dynamodb_responses",
    "pause_client",
    "clock_ahead",
];

fn fault_kind(kind: &str) -> Result<String, String> {
    if kind == "all" || kind == "none" || FAULT_KINDS.contains(&kind) {
        Ok(kind.to_owned())
    } else {
        Err(format!(
            "expected all, none or some of: {}",
            FAULT_KINDS.join(", ")
        ))
    }
}

/// How long after a fault a grant still counts as made under it.
const AFTER_FAULT: Duration = Duration::from_secs(5);

#[derive(Serialize)]
struct Summary {
    seed: u64,
    duration_s: u64,
    #[serde(rename = "break")]
    breakage: Option<String>,
    operations: BTreeMap<String, BTreeMap<String, u64>>,
    faults: BTreeMap<String, FaultTally>,
    /// Fault kinds that could not be applied here, with why; none of them counted.
    faults_not_possible_here: BTreeMap<String, String>,
    /// Mixes that could not run here, with why.
    mixes_not_possible_here: BTreeMap<String, String>,
    /// Where the lock mixes' downstream writes went.
    downstream_store: String,
    grants: usize,
    grants_by_mix: BTreeMap<String, usize>,
    /// How long each election had no leader after a fault took its leader away.
    failovers: Vec<election::Failover>,
    /// What each instance's clock check did.
    clock_check: Vec<cluster::ClockReport>,
    violations: Vec<check::Violation>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check {
        return check_recorded(path);
    }
    if matches!(args.breakage.as_deref(), Some("skew" | "skew-unchecked"))
        && let Err(why) = Cluster::can_skew_clocks()
    {
        eprintln!("torture: --break skew sets an instance's clock ahead, but {why}");
        return ExitCode::from(2);
    }
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the runtime starts");
    let summary = match runtime.block_on(run(&args, seed)) {
        Ok(summary) => summary,
        Err(why) => {
            eprintln!("torture: {why}");
            return ExitCode::from(2);
        }
    };
    let text = serde_json::to_string_pretty(&summary).expect("the summary is JSON");
    std::fs::write(args.out.join("summary.json"), &text).expect("the summary is written");
    print_summary(&summary);
    match verdict(&summary) {
        Ok(said) => {
            println!("torture: {said}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("torture: {why} (seed {seed})");
            ExitCode::FAILURE
        }
    }
}

/// Whether the run shows what it must: no violation and a clock check that never
/// fired, or the breakage caught by the check meant to catch it.
fn verdict(summary: &Summary) -> Result<String, String> {
    let violations = summary.violations.len();
    let fired: Vec<usize> = summary
        .clock_check
        .iter()
        .filter(|report| report.suspect_episodes > 0)
        .map(|report| report.instance)
        .collect();
    match summary.breakage.as_deref() {
        None if violations > 0 => Err(format!("{violations} violations")),
        None if !fired.is_empty() => Err(format!(
            "the clock check fired in a normal run, on instances {fired:?}"
        )),
        None => Ok("no violations; the clock check never fired".to_owned()),
        Some("skew") => {
            let skewed = summary.clock_check.iter().find(|r| r.instance == 2);
            let refused = skewed.and_then(|r| r.takeovers_refused).unwrap_or(0);
            if fired != [2] || refused == 0 {
                Err(format!(
                    "the clock check did not catch the skewed instance 2 (fired on {fired:?}, {refused} takeovers refused)"
                ))
            } else if violations > 0 {
                Err(format!(
                    "the clock check caught the skewed instance, yet {violations} violations"
                ))
            } else {
                Ok(format!(
                    "the clock check caught the skewed instance 2 and refused {refused} of its takeovers: no violations, as it must"
                ))
            }
        }
        Some("check-then-write")
            if summary
                .violations
                .iter()
                .any(|v| v.kind == "stale_write_accepted") =>
        {
            Ok("the checker caught the breakage, as it must".to_owned())
        }
        Some("skew-unchecked") if violations > 0 => {
            Ok("the checker caught the breakage, as it must".to_owned())
        }
        Some(_) => Err("the system was broken on purpose and the checker saw nothing".to_owned()),
    }
}

/// `--check HISTORY`: the checker on a recorded history.
fn check_recorded(path: &std::path::Path) -> ExitCode {
    let history = match check::read_history(path) {
        Ok(history) => history,
        Err(why) => {
            eprintln!("torture: {}: {why}", path.display());
            return ExitCode::from(2);
        }
    };
    let (violations, holdings) = check::check(&history);
    println!(
        "{} operations, {} grants, {} violations",
        history.len(),
        holdings.len(),
        violations.len()
    );
    for violation in &violations {
        println!("  {}: {}", violation.kind, violation.detail);
    }
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn lock_names(prefix: &str, count: usize) -> Vec<LockName> {
    (0..count)
        .map(|n| LockName::parse(&format!("torture:{prefix}-{n}")).expect("a lock name"))
        .collect()
}

async fn run(args: &Args, seed: u64) -> Result<Summary, String> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = args.out.join("run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("the work folder is made");
    announce(args, seed);
    let table = format!("torture-{seed}");
    let check_then_write = args.breakage.as_deref() == Some("check-then-write");
    let downstream = Downstream::start(&work.join("postgres"), check_then_write)
        .await
        .map_err(|why| format!("the downstream PostgreSQL: {why}"))?;
    println!("torture: downstream writes go to {}", downstream.describe());
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(&repo, &work, 3, &table));
    let skewed = matches!(args.breakage.as_deref(), Some("skew" | "skew-unchecked"));
    if args.breakage.as_deref() == Some("skew-unchecked") {
        cluster.uncheck_clock(2);
    }
    if skewed {
        block(|| cluster.restart_instance(2, Some(CLOCK_BROKEN.to_owned())))
            .map_err(|why| format!("--break skew could not set the clock ahead: {why}"))?;
    }
    let clients = cluster
        .instance_urls()
        .iter()
        .map(|url| {
            Client::new(url)
                .expect("an instance URL")
                .with_timeout(Duration::from_secs(3))
        })
        .collect();
    let shared = Arc::new(Shared {
        started: Instant::now(),
        clients,
        history: Mutex::new(Vec::new()),
        downstream,
        pause_next_holder: AtomicBool::new(false),
        pause_next_leader: AtomicBool::new(false),
        check_then_write,
        faults: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let mixes = mixes(args);
    let workers: Vec<_> = mixes
        .iter()
        .enumerate()
        .map(|(id, mix)| {
            let client = workload::client(shared.clone(), mix.clone(), id, seed ^ (id as u64 + 1));
            tokio::spawn(client)
        })
        .collect();

    let election_mix = (matches!(args.mode.as_str(), "all" | "election")
        && args.election_candidates > 0)
        .then(|| {
            Arc::new(election::Mix {
                names: lock_names("elect", args.elections.max(1)),
                candidates: args.election_candidates,
                first_id: election::FIRST_ID,
            })
        });
    let electing = election_mix
        .as_ref()
        .map(|mix| election::start(&shared, mix, seed))
        .unwrap_or_default();

    let mut mixes_not_possible = BTreeMap::new();
    let python_mix = if matches!(args.mode.as_str(), "all" | "locks") && args.python_clients > 0 {
        match python::python(&repo) {
            Ok(python) => {
                let launch = python::Launch {
                    python: &python,
                    repo: &repo,
                    work: &work,
                    urls: &cluster.instance_urls(),
                    clients: args.python_clients,
                    seconds: args.duration,
                    seed,
                };
                Some(python::start(launch, shared.clone())?)
            }
            Err(why) => {
                println!("torture: no Python mix here: {why}");
                mixes_not_possible.insert("python".to_owned(), why);
                None
            }
        }
    } else {
        None
    };

    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let mut not_possible = BTreeMap::new();
    if let Err(why) = cluster.can_drop_packets() {
        not_possible.insert("drop_dynamodb_responses".to_owned(), why);
    }
    if let Err(why) = Cluster::can_skew_clocks() {
        not_possible.insert("clock_ahead".to_owned(), why);
    }
    schedule(
        &mut cluster,
        &shared,
        seed,
        deadline,
        &args.faults,
        &mut not_possible,
        skewed,
    )
    .await;

    shared.stop.store(true, Ordering::Relaxed);
    for worker in workers.into_iter().chain(electing) {
        let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    }
    if let Some(mix) = python_mix {
        let operations = mix.finish(Duration::from_secs(30)).await?;
        println!("torture: the Python mix recorded {operations} operations");
    }
    let clock_check = cluster.clock_reports().await;
    drop(cluster);

    // What the downstream store itself holds, for the stale-write check.
    let stored = shared
        .downstream
        .stored()
        .await
        .map_err(|why| format!("cannot read the downstream rows back: {why}"))?;
    let mut history = std::mem::take(&mut *shared.history.lock().unwrap());
    history.extend(stored);
    write_history(&args.out.join("history.jsonl"), &history);
    let (violations, holdings) = check::check(&history);
    let windows = std::mem::take(&mut *shared.faults.lock().unwrap());
    let servers = shared.clients.len();
    let failovers = election_mix.as_ref().map_or_else(Vec::new, |mix| {
        election::failovers(&holdings, &windows, |client| {
            (client >= mix.first_id && client < mix.first_id + mix.candidates)
                .then(|| mix.server_of(client, servers))
        })
    });
    Ok(Summary {
        seed,
        duration_s: args.duration,
        breakage: args.breakage.clone(),
        operations: workload::tally(&history),
        faults: tally_faults(&windows, &holdings),
        faults_not_possible_here: not_possible,
        mixes_not_possible_here: mixes_not_possible,
        downstream_store: shared.downstream.describe(),
        grants: holdings.len(),
        grants_by_mix: grants_by_mix(&holdings),
        failovers,
        clock_check,
        violations,
    })
}

/// Says what this run is about to do.
fn announce(args: &Args, seed: u64) {
    let mut mixes_said = Vec::new();
    if matches!(args.mode.as_str(), "all" | "locks") {
        mixes_said.push(format!(
            "{} clients on {} locks (fast mix), {} on {} (long mix)",
            args.clients, args.locks, args.long_clients, args.long_locks
        ));
    }
    if matches!(args.mode.as_str(), "all" | "locks") && args.python_clients > 0 {
        mixes_said.push(format!(
            "{} Python clients on 4 locks (Python mix)",
            args.python_clients
        ));
    }
    if matches!(args.mode.as_str(), "all" | "semaphore") {
        mixes_said.push(format!(
            "{} on {} semaphores of limit {SEMAPHORE_LIMIT} (semaphore mix)",
            args.semaphore_clients, args.semaphores
        ));
    }
    if matches!(args.mode.as_str(), "all" | "multi") {
        mixes_said.push(format!(
            "{} taking groups of 2-4 of {} locks (lock-group mix)",
            args.group_clients, args.group_locks
        ));
    }
    if matches!(args.mode.as_str(), "all" | "election") && args.election_candidates > 0 {
        mixes_said.push(format!(
            "{} candidates and 3 observers of {} elections (election mix)",
            args.election_candidates,
            args.elections.max(1)
        ));
    }
    println!(
        "torture: seed {seed}, {} s, {}{}",
        args.duration,
        mixes_said.join(", "),
        args.breakage
            .as_deref()
            .map(|b| format!(", broken: {b}"))
            .unwrap_or_default()
    );
}

/// The mix of each client, in client order: short leases on many locks, long ones on
/// a few, semaphore slots and lock groups, as `--mode` picks them.
fn mixes(args: &Args) -> Vec<Arc<Mix>> {
    // Short leases and holds on many locks, for many grants; the minimum lease is
    // lowered to 200 ms for this run in the servers' configuration (cluster.rs).
    let fast = Arc::new(Mix {
        names: lock_names("fast", args.locks),
        ttl_ms: 300..1000,
        hold_ms: 0..150,
        wait_ms: 0..500,
        retry_ms: 0..20,
        released_of_10: 6,
        limit: None,
        group_of: None,
        paused_by_faults: false,
    });
    // Leases of seconds on a few locks: long waits, and pauses past a lease.
    let long = Arc::new(Mix {
        names: lock_names("long", args.long_locks),
        ttl_ms: 2000..6001,
        hold_ms: 200..4000,
        wait_ms: 0..3000,
        retry_ms: 0..200,
        released_of_10: 8,
        limit: None,
        group_of: None,
        paused_by_faults: true,
    });
    // Slots of a few semaphores, more clients than slots: at most 3 holders each.
    let semaphores = Arc::new(Mix {
        names: lock_names("sem", args.semaphores),
        ttl_ms: 300..2000,
        hold_ms: 0..1000,
        wait_ms: 0..1000,
        retry_ms: 0..50,
        released_of_10: 7,
        limit: Some(SEMAPHORE_LIMIT),
        group_of: None,
        paused_by_faults: false,
    });
    // Groups of 2-4 of a few locks, with single acquires of the same locks among them.
    let groups = Arc::new(Mix {
        names: lock_names("grp", args.group_locks),
        ttl_ms: 300..2000,
        hold_ms: 0..1000,
        wait_ms: 0..args.group_wait_ms.max(1),
        retry_ms: 0..50,
        released_of_10: 7,
        limit: None,
        group_of: Some(2..5),
        paused_by_faults: false,
    });
    let (locks, slots, multi) = match args.mode.as_str() {
        "locks" => (true, false, false),
        "semaphore" => (false, true, false),
        "multi" => (false, false, true),
        "election" => (false, false, false),
        _ => (true, true, true),
    };
    let count = |on: bool, clients: usize| if on { clients } else { 0 };
    std::iter::repeat_n(&fast, count(locks, args.clients))
        .chain(std::iter::repeat_n(&long, count(locks, args.long_clients)))
        .chain(std::iter::repeat_n(
            &semaphores,
            count(slots, args.semaphore_clients),
        ))
        .chain(std::iter::repeat_n(
            &groups,
            count(multi, args.group_clients),
        ))
        .cloned()
        .collect()
}

/// Writes the history, one JSON operation per line.
fn write_history(path: &Path, history: &[workload::Op]) {
    let mut lines = String::new();
    for op in history {
        lines.push_str(&serde_json::to_string(op).expect("an op is JSON"));
        lines.push('\n');
    }
    std::fs::write(path, lines).expect("the history is written");
}

/// How many grants each mix had, by the prefix of its lock names.
fn grants_by_mix(holdings: &[check::Holding]) -> BTreeMap<String, usize> {
    let mut grants_by_mix = BTreeMap::new();
    for holding in holdings {
        let mix = if holding.name.starts_with("torture:long-") {
            "long"
        } else if holding.name.starts_with("torture:sem-") {
            "semaphore"
        } else if holding.name.starts_with("torture:grp-") {
            "multi"
        } else if holding.name.starts_with("torture:py-") {
            "python"
        } else if check::is_election(&holding.name) {
            "election"
        } else {
            "fast"
        };
        *grants_by_mix.entry(mix.to_owned()).or_default() += 1;
    }
    grants_by_mix
}

/// Each fault kind's count, and the grants answered while one of its kind was in
/// effect or within [`AFTER_FAULT`] after it was undone.
fn tally_faults(
    windows: &[FaultWindow],
    holdings: &[check::Holding],
) -> BTreeMap<String, FaultTally> {
    let after = AFTER_FAULT.as_micros() as u64;
    let mut granted: Vec<u64> = holdings.iter().map(|h| h.from).collect();
    granted.sort_unstable();
    let mut by_kind: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for window in windows {
        by_kind
            .entry(window.kind)
            .or_default()
            .push((window.start, window.end + after));
    }
    by_kind
        .into_iter()
        .map(|(kind, mut spans)| {
            let applied = spans.len() as u64;
            // Overlapping spans merged, so a grant counts once for its kind.
            spans.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::new();
            for (start, end) in spans {
                match merged.last_mut() {
                    Some(last) if start <= last.1 => last.1 = last.1.max(end),
                    _ => merged.push((start, end)),
                }
            }
            let grants_under = merged
                .iter()
                .map(|&(start, end)| {
                    granted.partition_point(|&t| t <= end) - granted.partition_point(|&t| t < start)
                })
                .sum();
            let tally = FaultTally {
                applied,
                grants_under,
            };
            (kind.to_owned(), tally)
        })
        .collect()
}

/// Faults one after another until `deadline`, in an order and with lengths drawn
/// from `seed`, each kind once per round. A fault that cannot be applied is left out
/// from then on, with why, and is not counted.
async fn schedule(
    cluster: &mut Cluster,
    shared: &Shared,
    seed: u64,
    deadline: Instant,
    chosen: &[String],
    not_possible: &mut BTreeMap<String, String>,
    broken: bool,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    // Faults 5-12 s apart, so the workload has time between them to make grants; in
    // a run of two minutes or less (make test's), 1-3 s, so that it sees every kind.
    let short = deadline.duration_since(Instant::now()) <= Duration::from_secs(120);
    let gaps_ms = if short { 1000..3000 } else { 5000..12_000 };
    let mut kinds: Vec<&'static str> = FAULT_KINDS.to_vec();
    let all = chosen.iter().any(|kind| kind == "all");
    kinds.retain(|kind| all || chosen.iter().any(|c| c == kind));
    kinds.retain(|kind| !not_possible.contains_key(*kind));
    if broken {
        // Instance 2 keeps its broken clock.
        kinds.retain(|kind| *kind != "clock_ahead");
    }
    let mut round = Vec::new();
    loop {
        if kinds.is_empty() {
            tokio::time::sleep_until(deadline).await;
            break;
        }
        let gap = Duration::from_millis(rng.u64(gaps_ms.clone()));
        if Instant::now() + gap + Duration::from_secs(10) > deadline {
            // No time for another fault: the workload runs on to the end.
            tokio::time::sleep_until(deadline).await;
            break;
        }
        tokio::time::sleep(gap).await;
        if round.is_empty() {
            round = kinds.clone();
            rng.shuffle(&mut round);
        }
        let kind = round.pop().expect("a round has faults");
        // Instance 2 is left alone when broken, so its clock stays broken.
        let instance = rng.usize(..if broken { 2 } else { 3 });
        let t = Instant::now().duration_since(shared.started).as_secs_f64();
        println!("torture: {t:6.1} s  {kind}");
        let start = Instant::now();
        let (applied, undone) = match kind {
            "kill_instance" => match block(|| cluster.kill_instance(instance)) {
                Ok(()) => {
                    tokio::time::sleep(Duration::from_millis(rng.u64(500..2000))).await;
                    (Ok(()), block(|| cluster.restart_instance(instance, None)))
                }
                Err(why) => (Err(why), Ok(())),
            },
            "pause_instance" => {
                match block(|| cluster.signal_instance(instance, Signal::SIGSTOP)) {
                    Ok(()) => {
                        // Longer than the longest lease (6 s).
                        tokio::time::sleep(Duration::from_millis(rng.u64(7000..9000))).await;
                        (
                            Ok(()),
                            block(|| cluster.signal_instance(instance, Signal::SIGCONT)),
                        )
                    }
                    Err(why) => (Err(why), Ok(())),
                }
            }
            "pause_dynamodb" => match block(|| cluster.signal_dynamodb(Signal::SIGSTOP)) {
                Ok(()) => {
                    // Longer than the servers' DynamoDB timeout (2 s): writes time out
                    // at the servers and are applied when it wakes.
                    tokio::time::sleep(Duration::from_millis(rng.u64(2500..4000))).await;
                    (Ok(()), block(|| cluster.signal_dynamodb(Signal::SIGCONT)))
                }
                Err(why) => (Err(why), Ok(())),
            },
            "restart_dynamodb" => (block(|| cluster.restart_dynamodb()), Ok(())),
            "drop_dynamodb_responses" => match block(|| cluster.drop_packets()) {
                Ok(()) => {
                    tokio::time::sleep(Duration::from_millis(rng.u64(2000..4000))).await;
                    (Ok(()), block(|| cluster.deliver_packets()))
                }
                // A half-made rule must not stay.
                Err(why) => {
                    let _ = block(|| cluster.deliver_packets());
                    (Err(why), Ok(()))
                }
            },
            "pause_client" => {
                // Applied, and counted, by the client (and the leader) that pauses.
                shared.pause_next_holder.store(true, Ordering::Relaxed);
                shared.pause_next_leader.store(true, Ordering::Relaxed);
                continue;
            }
            "clock_ahead" => {
                match block(|| cluster.restart_instance(2, Some(CLOCK_AHEAD.to_owned()))) {
                    Ok(()) => {
                        tokio::time::sleep(Duration::from_millis(rng.u64(4000..8000))).await;
                        (Ok(()), block(|| cluster.restart_instance(2, None)))
                    }
                    Err(why) => {
                        let _ = block(|| cluster.restart_instance(2, None));
                        (Err(why), Ok(()))
                    }
                }
            }
            other => unreachable!("no fault {other}"),
        };
        let struck = matches!(kind, "kill_instance" | "pause_instance").then_some(instance);
        match applied {
            Ok(()) => shared.fault_of(kind, start, struck, None),
            Err(why) => {
                println!("torture: {kind} could not be applied, and is left out: {why}");
                not_possible.insert(kind.to_owned(), why);
                kinds.retain(|k| *k != kind);
                round.retain(|k| *k != kind);
            }
        }
        if let Err(why) = undone {
            eprintln!("torture: {kind} could not be undone: {why}");
        }
    }
}

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn print_summary(summary: &Summary) {
    println!("\noperations (kind: outcome count):");
    for (kind, outcomes) in &summary.operations {
        let outcomes: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
        println!("  {kind:24} {}", outcomes.join(", "));
    }
    println!(
        "faults (times applied; grants made while in effect or within {} s after):",
        AFTER_FAULT.as_secs()
    );
    for (kind, tally) in &summary.faults {
        println!(
            "  {kind:24} {:4}   grants {}",
            tally.applied, tally.grants_under
        );
    }
    for (kind, why) in &summary.faults_not_possible_here {
        println!("  {kind:24} not possible here: {why}");
    }
    let by_mix: Vec<String> = summary
        .grants_by_mix
        .iter()
        .map(|(mix, n)| format!("{mix} mix {n}"))
        .collect();
    println!("grants: {} ({})", summary.grants, by_mix.join(", "));
    println!("downstream store: {}", summary.downstream_store);
    if let Some(paused) = summary.operations.get("downstream_after_pause") {
        let count = |outcome: &str| paused.get(outcome).copied().unwrap_or(0);
        println!(
            "writes of holders paused past their lease: {} refused by the store, {} accepted",
            count("rejected"),
            count("accepted")
        );
    }
    if !summary.failovers.is_empty() {
        let mut by_fault: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for failover in &summary.failovers {
            by_fault
                .entry(&failover.fault)
                .or_default()
                .push(failover.ms);
        }
        let bound = summary.failovers[0].bound_ms;
        let over = summary
            .failovers
            .iter()
            .filter(|f| f.within_bound == Some(false))
            .count();
        let unjudged = summary
            .failovers
            .iter()
            .filter(|f| f.within_bound.is_none())
            .count();
        for (fault, mut ms) in by_fault {
            ms.sort_unstable();
            println!(
                "failover after {fault}: {} times, {}..{} ms (median {} ms)",
                ms.len(),
                ms[0],
                ms[ms.len() - 1],
                ms[ms.len() / 2]
            );
        }
        println!(
            "failover bound {bound} ms (lease + skew + lock-delay + cross-server): {over} over it; \
             {unjudged} under other faults too, not judged"
        );
    }
    let clock: Vec<String> = summary
        .clock_check
        .iter()
        .map(|r| {
            format!(
                "instance {} suspect {} times, {} takeovers refused",
                r.instance,
                r.suspect_episodes,
                r.takeovers_refused
                    .map_or("unknown".to_owned(), |n| n.to_string())
            )
        })
        .collect();
    println!("clock check: {}", clock.join("; "));
    println!("violations: {}", summary.violations.len());
    for violation in summary.violations.iter().take(10) {
        println!("  {}: {}", violation.kind, violation.detail);
    }
    println!("seed: {}", summary.seed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted_at(from: u64) -> check::Holding {
        check::Holding {
            client: 0,
            name: "torture:fast-0".into(),
            fence: from,
            asked: from,
            from,
            until: from + 1,
            limit: None,
        }
    }

    #[test]
    fn grants_count_under_a_fault_while_it_lasts_and_5_s_after_once_per_kind() {
        let s = 1_000_000;
        let windows = [
            FaultWindow {
                kind: "pause_dynamodb",
                start: 10 * s,
                end: 13 * s,
                instance: None,
                name: None,
            },
            // Overlaps the first one's 5 s after: its grants count once.
            FaultWindow {
                kind: "pause_dynamodb",
                start: 16 * s,
                end: 17 * s,
                instance: None,
                name: None,
            },
            FaultWindow {
                kind: "kill_instance",
                start: 40 * s,
                end: 41 * s,
                instance: None,
                name: None,
            },
        ];
        let holdings: Vec<_> = [5, 10, 12, 17, 22, 23, 40, 46, 47]
            .map(|t| granted_at(t * s))
            .to_vec();
        let tally = tally_faults(&windows, &holdings);
        assert_eq!(tally["pause_dynamodb"].applied, 2);
        // 10, 12, 17 and 22 are within 10..=22 s.
        assert_eq!(tally["pause_dynamodb"].grants_under, 4);
        assert_eq!(tally["kill_instance"].applied, 1);
        // 40 and 46 are within 40..=46 s.
        assert_eq!(tally["kill_instance"].grants_under, 2);
        assert!(
            !tally.contains_key("pause_instance"),
            "never applied, never counted"
        );
    }
}

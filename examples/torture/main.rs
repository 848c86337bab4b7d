//! `make torture`: fencelock's safety promises under faults. DynamoDB Local, three
//! fencelock instances on one table, and 32 clients contending for a few locks through
//! all of them, with a downstream store that refuses stale fences; meanwhile faults
//! from a seeded schedule: instances killed and paused, DynamoDB Local paused,
//! restarted and cut off, a holder paused past its lease, an instance's clock set
//! ahead. Every operation is recorded; the checker ([`check`]) reads the history.
//!
//! `--break skew` sets one instance's clock ahead by far more than the skew margin:
//! the checker must then report overlaps, and the run fails if it does not.

mod check;
mod cluster;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use fencelock::client::Client;
use fencelock::domain::LockName;
use serde::Serialize;
use tokio::time::Instant;

use cluster::Cluster;
use workload::{Downstream, Shared};

/// The clock offset that stays within the servers' 500 ms skew margin (libfaketime
/// reads it in seconds).
const CLOCK_AHEAD: &str = "+0.3";
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
    /// Break the system on purpose, to show the checker catches it: `skew`.
    #[arg(long = "break", value_parser = ["skew"])]
    breakage: Option<String>,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 4)]
    locks: usize,
    /// Where the summary, the history and the logs go.
    #[arg(long, default_value = "target/torture")]
    out: PathBuf,
}

#[derive(Serialize)]
struct Summary {
    seed: u64,
    duration_s: u64,
    #[serde(rename = "break")]
    breakage: Option<String>,
    operations: BTreeMap<String, BTreeMap<String, u64>>,
    faults: BTreeMap<String, u64>,
    faults_not_possible_here: Vec<String>,
    grants: usize,
    violations: Vec<check::Violation>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the runtime starts");
    let summary = runtime.block_on(run(&args, seed));
    let text = serde_json::to_string_pretty(&summary).expect("the summary is JSON");
    std::fs::write(args.out.join("summary.json"), &text).expect("the summary is written");
    print_summary(&summary);
    let broken = summary.breakage.is_some();
    match (broken, summary.violations.is_empty()) {
        (false, true) => ExitCode::SUCCESS,
        (false, false) => {
            eprintln!(
                "torture: {} violations (seed {seed})",
                summary.violations.len()
            );
            ExitCode::FAILURE
        }
        (true, false) => {
            println!("torture: the checker caught the breakage, as it must");
            ExitCode::SUCCESS
        }
        (true, true) => {
            eprintln!("torture: the system was broken on purpose and the checker saw nothing");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args, seed: u64) -> Summary {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = args.out.join("run");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("the work folder is made");
    println!(
        "torture: seed {seed}, {} s, {} clients on {} locks{}",
        args.duration,
        args.clients,
        args.locks,
        args.breakage
            .as_deref()
            .map(|b| format!(", broken: {b}"))
            .unwrap_or_default()
    );
    let table = format!("torture-{seed}");
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(&repo, &work, 3, &table));
    if args.breakage.is_some() {
        tokio::task::block_in_place(|| cluster.restart_instance(2, Some(CLOCK_BROKEN.to_owned())));
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
        names: (0..args.locks)
            .map(|n| LockName::parse(&format!("torture:lock-{n}")).expect("a lock name"))
            .collect(),
        history: Mutex::new(Vec::new()),
        downstream: Downstream::default(),
        pause_next_holder: AtomicBool::new(false),
        paused_clients: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let workers: Vec<_> = (0..args.clients)
        .map(|id| tokio::spawn(workload::client(shared.clone(), id, seed ^ (id as u64 + 1))))
        .collect();

    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut not_possible = Vec::new();
    if !cluster.can_drop_packets() {
        not_possible.push("drop_dynamodb_responses".to_owned());
    }
    if !Cluster::can_skew_clocks() {
        not_possible.push("clock_ahead".to_owned());
    }
    schedule(
        &mut cluster,
        &shared,
        seed,
        deadline,
        &not_possible,
        &mut faults,
        args.breakage.is_some(),
    )
    .await;

    shared.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
    }
    faults.insert(
        "pause_client".to_owned(),
        shared.paused_clients.load(Ordering::Relaxed),
    );
    drop(cluster);

    let history = std::mem::take(&mut *shared.history.lock().unwrap());
    let mut lines = String::new();
    for op in &history {
        lines.push_str(&serde_json::to_string(op).expect("an op is JSON"));
        lines.push('\n');
    }
    std::fs::write(args.out.join("history.jsonl"), lines).expect("the history is written");
    let (violations, grants) = check::check(&history);
    Summary {
        seed,
        duration_s: args.duration,
        breakage: args.breakage.clone(),
        operations: workload::tally(&history),
        faults,
        faults_not_possible_here: not_possible,
        grants,
        violations,
    }
}

/// Faults one after another until `deadline`, in an order and with lengths drawn
/// from `seed`, each kind once per round.
async fn schedule(
    cluster: &mut Cluster,
    shared: &Shared,
    seed: u64,
    deadline: Instant,
    not_possible: &[String],
    faults: &mut BTreeMap<String, u64>,
    broken: bool,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kinds: Vec<&str> = vec![
        "kill_instance",
        "pause_instance",
        "pause_dynamodb",
        "restart_dynamodb",
        "drop_dynamodb_responses",
        "pause_client",
        "clock_ahead",
    ];
    kinds.retain(|kind| !not_possible.iter().any(|n| n == kind));
    if broken {
        // Instance 2 keeps its broken clock.
        kinds.retain(|kind| *kind != "clock_ahead");
    }
    let mut round = Vec::new();
    loop {
        let gap = Duration::from_millis(rng.u64(1000..3000));
        if Instant::now() + gap + Duration::from_secs(10) > deadline {
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
        match kind {
            "kill_instance" => {
                block(|| cluster.kill_instance(instance));
                tokio::time::sleep(Duration::from_millis(rng.u64(500..2000))).await;
                block(|| cluster.restart_instance(instance, None));
            }
            "pause_instance" => {
                // Longer than the longest lease (6 s).
                cluster.signal_instance(instance, "STOP");
                tokio::time::sleep(Duration::from_millis(rng.u64(7000..9000))).await;
                cluster.signal_instance(instance, "CONT");
            }
            "pause_dynamodb" => {
                // Longer than the servers' DynamoDB timeout (2 s): writes time out at
                // the servers and are applied when it wakes.
                cluster.signal_dynamodb("STOP");
                tokio::time::sleep(Duration::from_millis(rng.u64(2500..4000))).await;
                cluster.signal_dynamodb("CONT");
            }
            "restart_dynamodb" => block(|| cluster.restart_dynamodb()),
            "drop_dynamodb_responses" => {
                cluster.drop_packets();
                tokio::time::sleep(Duration::from_millis(rng.u64(2000..4000))).await;
                cluster.deliver_packets();
            }
            "pause_client" => {
                shared.pause_next_holder.store(true, Ordering::Relaxed);
                // Counted by the client that pauses.
                continue;
            }
            "clock_ahead" => {
                block(|| cluster.restart_instance(2, Some(CLOCK_AHEAD.to_owned())));
                tokio::time::sleep(Duration::from_millis(rng.u64(4000..8000))).await;
                block(|| cluster.restart_instance(2, None));
            }
            other => unreachable!("no fault {other}"),
        }
        *faults.entry(kind.to_owned()).or_default() += 1;
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
    println!("faults:");
    for (kind, n) in &summary.faults {
        println!("  {kind:24} {n}");
    }
    for kind in &summary.faults_not_possible_here {
        println!("  {kind:24} not possible here");
    }
    println!("grants: {}", summary.grants);
    println!("violations: {}", summary.violations.len());
    for violation in summary.violations.iter().take(10) {
        println!("  {}: {}", violation.kind, violation.detail);
    }
    println!("seed: {}", summary.seed);
}

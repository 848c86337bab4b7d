//! `make bench`: fencelock against the DynamoDB floor, in one run. DynamoDB Local and
//! the release `fencelock serve` binary (logging at `info` to a file, as in
//! production) on this machine; after a warm-up, three rounds, each going through the
//! concurrencies and, for each, the modes one after another for a fixed time:
//!
//! - **floor**: the conditional `UpdateItem`s fencelock issues for acquire and
//!   release, sent straight to DynamoDB Local by the AWS SDK on its defaults, from a
//!   process of its own (this binary with `--floor-worker`), whose CPU time is the
//!   bare SDK's cost of a cycle;
//! - **fencelock**: acquire + release over HTTP with keep-alive, each worker on a
//!   lock name of its own;
//! - **contended**: the same, all workers on 4 names (a refused acquire is an
//!   operation too);
//! - **semaphore**: acquire + release of a slot of a semaphore (limit 4) over HTTP,
//!   each worker on a semaphore of its own: an acquire is a read and a write;
//! - **group3**: acquire + release of a group of 3 locks (`/lock-groups`), each
//!   worker on locks of its own: an acquire is a transaction and a read;
//! - **null-proxy**: acquire + release over HTTP through a minimal server in this
//!   binary (`--null-proxy`, a process of its own: axum on hyper's HTTP/1 as
//!   fencelock serves, one handler per route, no validation, auth, metrics or log
//!   line) that sends exactly the floor's `UpdateItem`s: what any HTTP front to
//!   DynamoDB must cost, the floor fencelock's CPU and throughput are held to;
//! - **heartbeat-0k** to **heartbeat-64k** (at concurrency 1 only): heartbeats of a
//!   held lock whose body is 0, 1, 16 or 64 KiB, for the write units each costs.
//!
//! Each figure is the median of the three rounds. Then the server's idle memory and
//! its memory with 1,000 waiting connections. It prints the tables (throughput and
//! latency; CPU per acquire+release cycle, fencelock's server against the bare SDK)
//! and writes `target/bench/bench.json` and `target/bench/bench.svg`.
//! `make test` builds it; it runs only when given `--bench`, as `cargo bench` does.
//!   BENCH_SECONDS      seconds per run (default 5)
//!   BENCH_CONCURRENCY  the concurrencies to run, e.g. `1,16` (default 1,4,16,64)
//!   BENCH_SERVER_LOG   the server's RUST_LOG (default `info`)
//!   BENCH_REQUEST_LOG  the server's FENCELOCK_REQUEST_LOG (default the server's own,
//!                      `failed`; `all` logs a line per request)

#[path = "../tests/support/dynamodb_local.rs"]
#[allow(dead_code)]
mod dynamodb_local;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fencelock::clock::SystemClock;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

const CONCURRENCY: [usize; 4] = [1, 4, 16, 64];
/// Rounds of every run; each figure is the median of them.
const ROUNDS: usize = 3;
const CONTENDED_NAMES: usize = 4;
const WAITERS: usize = 1000;
/// The routes of a lock cycle, and of a semaphore cycle (one slot of a limit of 4,
/// each worker on a semaphore of its own, as each `fencelock` worker has its lock).
const LOCKS: (&str, &str) = ("locks", "");
const SEMAPHORES: (&str, &str) = ("semaphores", "&limit=4");

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    mode: String,
    concurrency: usize,
    operations: u64,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// DynamoDB requests per HTTP operation (from the server's /metrics).
    dynamodb_per_op: Option<f64>,
    /// DynamoDB write units per HTTP operation (from the server's /metrics, as
    /// DynamoDB Local reports them, refused writes as computed).
    #[serde(default)]
    write_units_per_op: Option<f64>,
    /// Server CPU time per 1,000 operations, in ms.
    server_cpu_ms_per_1000: Option<f64>,
    /// CPU time per acquire+release cycle, in µs: the server's for fencelock, the
    /// floor process's for the floor.
    cpu_us_per_cycle: Option<f64>,
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `workers` loops of `cycle` for `time`; answers every operation's latency.
async fn drive<F, Fut>(workers: usize, time: Duration, cycle: F) -> Vec<Duration>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Vec<Duration>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let cycle = cycle.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    latencies.extend(cycle(worker, round).await);
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(time).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

async fn timed<T>(future: impl std::future::Future<Output = T>) -> Duration {
    let started = Instant::now();
    future.await;
    started.elapsed()
}

fn run_of(mode: &str, concurrency: usize, time: Duration, mut latencies: Vec<Duration>) -> Run {
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Run {
        mode: mode.to_owned(),
        concurrency,
        operations: latencies.len() as u64,
        ops_per_sec: latencies.len() as f64 / time.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        dynamodb_per_op: None,
        write_units_per_op: None,
        server_cpu_ms_per_1000: None,
        cpu_us_per_cycle: None,
    }
}

/// The server's counters that a run's figures are the difference of.
struct Counters {
    http: f64,
    dynamodb: f64,
    write_units: f64,
    cpu_ms: f64,
}

/// The server's `/metrics` scrape.
async fn scrape(http: &reqwest::Client, server: &Server) -> String {
    let response = http.get(format!("{}/metrics", server.base)).send().await;
    response.unwrap().text().await.unwrap()
}

async fn counters(http: &reqwest::Client, server: &Server) -> Counters {
    let text = scrape(http, server).await;
    let sum = |metric: &str| -> f64 {
        text.lines()
            .filter(|line| line.starts_with(metric) && !line.starts_with('#'))
            .filter(|line| !line.contains("route=\"/metrics\""))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Counters {
        http: sum("fencelock_http_requests_total"),
        dynamodb: sum("fencelock_dynamodb_requests_total"),
        write_units: text
            .lines()
            .filter(|line| line.starts_with("fencelock_dynamodb_capacity_units_total{"))
            .filter(|line| line.contains("unit=\"write\""))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
        cpu_ms: cpu_ms(server.child.id()),
    }
}

/// The user and system CPU time of process `pid`, in ms.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // Linux reports CPU time in clock ticks of 1/100 s.
    ticks * 10.0
}

/// `VmRSS` or `VmHWM` of process `pid`, in MiB.
fn memory_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with(field))
        .and_then(|line| line.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn spawn_server(endpoint: &str, table: &str) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fencelock"))
        .arg("serve")
        .env_clear()
        .env("FENCELOCK_LISTEN", format!("127.0.0.1:{port}"))
        .env("FENCELOCK_DYNAMODB_ENDPOINT", endpoint)
        .env("FENCELOCK_TABLE", table)
        .env("FENCELOCK_CREATE_TABLE", "false")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        // The log is written to a file, as in production (BENCH_SERVER_LOG, e.g.
        // `warn`, and BENCH_REQUEST_LOG, e.g. `all`, measure the server otherwise).
        .env(
            "RUST_LOG",
            std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "info".to_owned()),
        )
        .envs(
            std::env::var("BENCH_REQUEST_LOG")
                .map(|log| ("FENCELOCK_REQUEST_LOG", log))
                .ok(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::from(server_log()))
        .spawn()
        .expect("the fencelock binary starts");
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Server {
                child,
                base: format!("http://127.0.0.1:{port}"),
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("fencelock did not listen on {port}");
}

/// The server's log file, in `target/bench/`.
fn server_log() -> std::fs::File {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::File::create(dir.join("server.log")).unwrap()
}

/// What a `--floor-worker` process reports.
#[derive(Debug, Serialize, Deserialize)]
struct FloorReport {
    run: Run,
    cpu_ms: f64,
    cycles: u64,
}

/// `--floor-worker ENDPOINT TABLE CONCURRENCY SECONDS`: the floor's cycles from a
/// process of their own, on an SDK client with its defaults, after a warm-up second;
/// prints a [`FloorReport`].
async fn floor_worker(args: &[String]) {
    let [endpoint, table, concurrency, seconds] = args else {
        panic!("--floor-worker ENDPOINT TABLE CONCURRENCY SECONDS");
    };
    let concurrency: usize = concurrency.parse().unwrap();
    let time = Duration::from_secs(seconds.parse().unwrap());
    let raw = Arc::new(dynamodb_local::Raw::new(endpoint, table));
    let cycle = move |worker: usize, round: u64| {
        let raw = raw.clone();
        async move {
            let name = format!("floor-{concurrency}-{worker}");
            let nonce = format!("n{round}");
            let started = Instant::now();
            let fence = raw.floor_acquire(&name, &nonce).await;
            let mut latencies = vec![started.elapsed()];
            if let Some(fence) = fence {
                latencies.push(timed(raw.floor_release(&name, fence)).await);
            }
            latencies
        }
    };
    drive(concurrency, Duration::from_secs(1), cycle.clone()).await;
    let before = cpu_ms(std::process::id());
    let latencies = drive(concurrency, time, cycle).await;
    let cpu_ms = cpu_ms(std::process::id()) - before;
    let run = run_of("floor", concurrency, time, latencies);
    let cycles = run.operations / 2;
    let report = FloorReport {
        run,
        cpu_ms,
        cycles,
    };
    println!("{}", serde_json::to_string(&report).unwrap());
}

/// A floor run from a `--floor-worker` process.
fn floor_run(endpoint: &str, table: &str, concurrency: usize, seconds: u64) -> Run {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--floor-worker", endpoint, table])
        .args([concurrency.to_string(), seconds.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("the floor worker runs");
    let report: FloorReport = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("the floor worker's report: {e}"));
    let mut run = report.run;
    run.cpu_us_per_cycle = Some(report.cpu_ms * 1000.0 / report.cycles.max(1) as f64);
    run
}

/// One acquire and, when granted, its release: of the lock `name` at `root` =
/// `locks`, or of a slot of the semaphore `name` at `root` = `semaphores` (`extra`
/// holds its limit).
async fn fencelock_cycle(
    http: &reqwest::Client,
    base: &str,
    (root, extra): (&str, &str),
    name: &str,
    nonce: &str,
) -> Vec<Duration> {
    let started = Instant::now();
    let acquired = http
        .post(format!("{base}/{root}/{name}?nonce={nonce}{extra}"))
        .send()
        .await
        .unwrap();
    let status = acquired.status();
    let body: serde_json::Value = acquired.json().await.unwrap_or_default();
    let mut latencies = vec![started.elapsed()];
    if status.is_success() {
        let fence = body["fence"].as_u64().unwrap_or(0);
        latencies.push(timed(http.delete(format!("{base}/{root}/{name}/{fence}")).send()).await);
    }
    latencies
}

/// One acquire of a group of 3 locks (`{name}-0` to `{name}-2`) and, when granted,
/// its release.
async fn group_cycle(http: &reqwest::Client, base: &str, name: &str, nonce: &str) -> Vec<Duration> {
    let names: Vec<String> = (0..3).map(|i| format!("{name}-{i}")).collect();
    let started = Instant::now();
    let acquired = http
        .post(format!("{base}/lock-groups?nonce={nonce}"))
        .json(&json!({ "names": names }))
        .send()
        .await
        .unwrap();
    let status = acquired.status();
    let body: serde_json::Value = acquired.json().await.unwrap_or_default();
    let mut latencies = vec![started.elapsed()];
    if status.is_success() {
        let locks: Vec<serde_json::Value> = body["locks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|lock| json!({"name": lock["name"], "fence": lock["fence"]}))
            .collect();
        let release = http
            .post(format!("{base}/lock-groups/release"))
            .json(&json!({ "locks": locks }))
            .send();
        latencies.push(timed(release).await);
    }
    latencies
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--floor-worker") {
        return floor_worker(&args[at + 1..]).await;
    }
    if let Some(at) = args.iter().position(|arg| arg == "--null-proxy") {
        return null_proxy(&args[at + 1..]).await;
    }
    if !args.iter().any(|arg| arg == "--bench") {
        println!("lock benchmark: built; run it with `make bench`");
        return;
    }
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let time = Duration::from_secs(seconds);
    let concurrencies: Vec<usize> = std::env::var("BENCH_CONCURRENCY").map_or_else(
        |_| CONCURRENCY.to_vec(),
        |list| list.split(',').map(|c| c.trim().parse().unwrap()).collect(),
    );
    let endpoint = dynamodb_local::start("dynamodb-local-lockbench.log");
    let table = format!("fencelock-lockbench-{}", std::process::id());
    let raw = dynamodb_local::Raw::new(&endpoint, &table);
    dynamodb_local::store(&endpoint, &table, Arc::new(SystemClock), Duration::ZERO)
        .await
        .ensure_table()
        .await
        .unwrap();
    let server = spawn_server(&endpoint, &table);
    let proxy = spawn_null_proxy(&endpoint, &table);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    // Warm both paths up (DynamoDB Local's JIT too), then note the server's memory at rest.
    for round in 0..200 {
        fencelock_cycle(&http, &server.base, LOCKS, "warm-up", &format!("w{round}")).await;
        raw.floor_acquire("warm-up-floor", &format!("w{round}"))
            .await;
    }
    floor_run(&endpoint, &table, 16, 2);
    fencelock_run(&http, &server, "fencelock", 16, Duration::from_secs(2)).await;
    null_proxy_run(&http, &proxy, 16, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = memory_mib(server.child.id(), "VmRSS:");

    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        eprintln!("round {round} of {ROUNDS}");
        let mut runs = Vec::new();
        for &concurrency in &concurrencies {
            runs.push(floor_run(&endpoint, &table, concurrency, seconds));
            runs.push(null_proxy_run(&http, &proxy, concurrency, time).await);
            for mode in ["fencelock", "contended", "semaphore", "group3"] {
                runs.push(fencelock_run(&http, &server, mode, concurrency, time).await);
            }
            if concurrency == 1 {
                for kib in HEARTBEAT_BODIES_KIB {
                    runs.push(heartbeat_run(&http, &server, kib, time).await);
                }
            }
        }
        rounds.push(runs);
    }
    let runs = medians(&rounds);
    let peak_rss = memory_mib(server.child.id(), "VmHWM:");
    let waiting_rss = waiting_memory(&http, &server).await;

    report(&runs, &rounds, idle_rss, peak_rss, waiting_rss, seconds);
}

/// One run of `mode` (`fencelock` or `contended`) through the server.
async fn fencelock_run(
    http: &reqwest::Client,
    server: &Server,
    mode: &'static str,
    concurrency: usize,
    time: Duration,
) -> Run {
    let before = counters(http, server).await;
    let (client, base) = (http.clone(), server.base.clone());
    let latencies = drive(concurrency, time, move |worker, round| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let nonce = format!("n{worker}-{round}");
            let (kind, name) = match mode {
                "contended" => (LOCKS, format!("contended-{}", worker % CONTENDED_NAMES)),
                "semaphore" => (SEMAPHORES, format!("bench-{concurrency}-{worker}")),
                "group3" => {
                    let name = format!("group-{concurrency}-{worker}");
                    return group_cycle(&client, &base, &name, &nonce).await;
                }
                _ => (LOCKS, format!("bench-{concurrency}-{worker}")),
            };
            fencelock_cycle(&client, &base, kind, &name, &nonce).await
        }
    })
    .await;
    let after = counters(http, server).await;
    let mut run = run_of(mode, concurrency, time, latencies);
    // The two /metrics scrapes themselves are not lock operations.
    let http_ops = (after.http - before.http - 1.0).max(1.0);
    let cpu_ms_per_op = (after.cpu_ms - before.cpu_ms) / http_ops;
    run.dynamodb_per_op = Some((after.dynamodb - before.dynamodb) / http_ops);
    run.write_units_per_op = Some((after.write_units - before.write_units) / http_ops);
    run.server_cpu_ms_per_1000 = Some(cpu_ms_per_op * 1000.0);
    if mode != "contended" {
        // Every acquire is granted and released: a cycle is two operations.
        run.cpu_us_per_cycle = Some(cpu_ms_per_op * 2.0 * 1000.0);
    }
    run
}

/// `--null-proxy ENDPOINT TABLE`: the null proxy, serving on a free port of
/// 127.0.0.1 (printed on stdout) until it is killed. `POST /locks/{name}?nonce=N`
/// sends the floor's acquire, `DELETE /locks/{name}/{fence}` its release; nothing
/// is checked, counted or logged.
async fn null_proxy(args: &[String]) {
    use axum::extract::{Path, RawQuery, State};
    use axum::routing::{delete, post};
    let [endpoint, table] = args else {
        panic!("--null-proxy ENDPOINT TABLE");
    };
    let raw = Arc::new(dynamodb_local::Raw::new(endpoint, table));
    let acquire = |State(raw): State<Arc<dynamodb_local::Raw>>,
                   Path(name): Path<String>,
                   RawQuery(query): RawQuery| async move {
        let nonce = query
            .as_deref()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("nonce=")))
            .unwrap_or("n")
            .to_owned();
        match raw.floor_acquire(&name, &nonce).await {
            Some(fence) => (
                axum::http::StatusCode::OK,
                axum::Json(json!({ "fence": fence })),
            ),
            None => (axum::http::StatusCode::CONFLICT, axum::Json(json!({}))),
        }
    };
    let release = |State(raw): State<Arc<dynamodb_local::Raw>>,
                   Path((name, fence)): Path<(String, u64)>| async move {
        raw.floor_release(&name, fence).await;
        axum::Json(json!({ "released": true }))
    };
    let app = axum::Router::new()
        .route("/locks/{name}", post(acquire))
        .route("/locks/{name}/{fence}", delete(release))
        .with_state(raw);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    use std::io::Write as _;
    std::io::stdout().flush().unwrap();
    axum_server::from_tcp(listener)
        .unwrap()
        .http1_only()
        .serve(app.into_make_service())
        .await
        .unwrap();
}

/// The null proxy as a process of its own.
fn spawn_null_proxy(endpoint: &str, table: &str) -> Server {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--null-proxy", endpoint, table])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the null proxy starts");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u16 = line.trim().parse().expect("the null proxy's port");
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// One run of acquire + release cycles through the null proxy; its CPU from /proc.
async fn null_proxy_run(
    http: &reqwest::Client,
    proxy: &Server,
    concurrency: usize,
    time: Duration,
) -> Run {
    let before = cpu_ms(proxy.child.id());
    let (client, base) = (http.clone(), proxy.base.clone());
    let latencies = drive(concurrency, time, move |worker, round| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let name = format!("null-{concurrency}-{worker}");
            fencelock_cycle(&client, &base, LOCKS, &name, &format!("n{worker}-{round}")).await
        }
    })
    .await;
    let cpu = cpu_ms(proxy.child.id()) - before;
    let mut run = run_of("null-proxy", concurrency, time, latencies);
    let ops = run.operations.max(1) as f64;
    run.dynamodb_per_op = Some(1.0);
    run.server_cpu_ms_per_1000 = Some(cpu / ops * 1000.0);
    run.cpu_us_per_cycle = Some(cpu / ops * 2.0 * 1000.0);
    run
}

/// The body sizes of the heartbeat runs, in KiB.
const HEARTBEAT_BODIES_KIB: [usize; 4] = [0, 1, 16, 64];

/// Heartbeats of one held lock whose body is `kib` KiB, for `time`.
async fn heartbeat_run(http: &reqwest::Client, server: &Server, kib: usize, time: Duration) -> Run {
    let name = format!("heartbeat-{kib}k-{}", fastrand::u32(..));
    let acquired = http
        .post(format!("{}/locks/{name}?nonce=h&ttl=120s", server.base))
        .send()
        .await
        .unwrap();
    let fence: u64 = acquired.json::<serde_json::Value>().await.unwrap()["fence"]
        .as_u64()
        .expect("the heartbeat run's lock is granted");
    let lock = format!("{}/locks/{name}/{fence}", server.base);
    if kib > 0 {
        let body = "x".repeat(kib * 1024);
        let updated = http.post(&lock).body(body).send().await.unwrap();
        assert!(updated.status().is_success(), "the body is saved");
    }
    let before = counters(http, server).await;
    let (client, url) = (http.clone(), format!("{lock}/heartbeat"));
    let latencies = drive(1, time, move |_, _| {
        let (client, url) = (client.clone(), url.clone());
        async move { vec![timed(client.post(&url).send()).await] }
    })
    .await;
    let after = counters(http, server).await;
    let _ = http.delete(&lock).send().await;
    let mut run = run_of(&format!("heartbeat-{kib}k"), 1, time, latencies);
    let http_ops = (after.http - before.http - 1.0).max(1.0);
    run.dynamodb_per_op = Some((after.dynamodb - before.dynamodb) / http_ops);
    run.write_units_per_op = Some((after.write_units - before.write_units) / http_ops);
    run.server_cpu_ms_per_1000 = Some((after.cpu_ms - before.cpu_ms) / http_ops * 1000.0);
    run
}

/// Each run's figures as the median of its rounds.
fn medians(rounds: &[Vec<Run>]) -> Vec<Run> {
    let median = |values: Vec<f64>| -> f64 {
        let mut values = values;
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let optional = |values: Vec<Option<f64>>| -> Option<f64> {
        values
            .iter()
            .all(Option::is_some)
            .then(|| median(values.into_iter().flatten().collect()))
    };
    (0..rounds[0].len())
        .map(|i| {
            let all: Vec<&Run> = rounds.iter().map(|runs| &runs[i]).collect();
            let field = |f: fn(&Run) -> f64| median(all.iter().map(|r| f(r)).collect());
            let maybe = |f: fn(&Run) -> Option<f64>| optional(all.iter().map(|r| f(r)).collect());
            Run {
                mode: all[0].mode.clone(),
                concurrency: all[0].concurrency,
                operations: field(|r| r.operations as f64) as u64,
                ops_per_sec: field(|r| r.ops_per_sec),
                p50_ms: field(|r| r.p50_ms),
                p99_ms: field(|r| r.p99_ms),
                max_ms: field(|r| r.max_ms),
                dynamodb_per_op: maybe(|r| r.dynamodb_per_op),
                write_units_per_op: maybe(|r| r.write_units_per_op),
                server_cpu_ms_per_1000: maybe(|r| r.server_cpu_ms_per_1000),
                cpu_us_per_cycle: maybe(|r| r.cpu_us_per_cycle),
            }
        })
        .collect()
}

/// The server's resident memory with [`WAITERS`] acquires waiting on a held lock.
async fn waiting_memory(http: &reqwest::Client, server: &Server) -> f64 {
    let held = http
        .post(format!(
            "{}/locks/waited-on?nonce=holder&ttl=120s",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert!(held.status().is_success());
    let waiters = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..WAITERS)
        .map(|i| {
            let waiters = waiters.clone();
            let url = format!("{}/locks/waited-on?nonce=w{i}&wait=50s", server.base);
            tokio::spawn(async move { waiters.post(url).send().await })
        })
        .collect();
    let mut rss = 0.0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let metrics = scrape(http, server).await;
        if metrics
            .lines()
            .any(|l| l == format!("fencelock_waiters {WAITERS}"))
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
            rss = memory_mib(server.child.id(), "VmRSS:");
            break;
        }
    }
    for task in tasks {
        task.abort();
    }
    rss
}

fn report(
    runs: &[Run],
    rounds: &[Vec<Run>],
    idle_rss: f64,
    peak_rss: f64,
    waiting_rss: f64,
    seconds: u64,
) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let by: HashMap<(&str, usize), &Run> = runs
        .iter()
        .map(|r| ((r.mode.as_str(), r.concurrency), r))
        .collect();
    println!(
        "lock benchmark: {seconds} s per run, median of {ROUNDS} rounds, {cores} cores, DynamoDB Local and fencelock on this machine"
    );
    println!(
        "{:<13} {:>4} {:>9} {:>8} {:>8} {:>8} {:>7} {:>9} {:>9} {:>7} {:>7} {:>9}",
        "mode",
        "conc",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "ratio",
        "+p50 ms",
        "+p99 ms",
        "ddb/op",
        "wu/op",
        "cpu/1k ms"
    );
    let mut table = Vec::new();
    for run in runs {
        let floor = by.get(&("floor", run.concurrency));
        let (ratio, added_p50, added_p99) = match (run.mode.as_str(), floor) {
            ("floor", _) | (_, None) => (None, None, None),
            (_, Some(floor)) => (
                Some(run.ops_per_sec / floor.ops_per_sec),
                Some(run.p50_ms - floor.p50_ms),
                Some(run.p99_ms - floor.p99_ms),
            ),
        };
        let show =
            |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
        println!(
            "{:<13} {:>4} {:>9.0} {:>8.2} {:>8.2} {:>8.1} {:>7} {:>9} {:>9} {:>7} {:>7} {:>9}",
            run.mode,
            run.concurrency,
            run.ops_per_sec,
            run.p50_ms,
            run.p99_ms,
            run.max_ms,
            show(ratio, 2),
            show(added_p50, 3),
            show(added_p99, 3),
            show(run.dynamodb_per_op, 2),
            show(run.write_units_per_op, 2),
            show(run.server_cpu_ms_per_1000, 0),
        );
        table.push(json!({
            "run": run,
            "throughput_ratio": ratio,
            "added_p50_ms": added_p50,
            "added_p99_ms": added_p99,
        }));
    }
    let cpu = cpu_table(&by, rounds);
    println!(
        "server memory: idle {idle_rss:.1} MiB, peak {peak_rss:.1} MiB, with {WAITERS} waiting connections {waiting_rss:.1} MiB"
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let document = json!({
        "seconds_per_run": seconds,
        "cores": cores,
        "runs": table,
        "cpu_per_cycle": cpu,
        "rounds": rounds,
        "server_rss_mib": {"idle": idle_rss, "peak": peak_rss, "waiting_1000": waiting_rss},
    });
    std::fs::write(
        dir.join("bench.json"),
        serde_json::to_string_pretty(&document).unwrap(),
    )
    .unwrap();
    chart(runs, &dir.join("bench.svg"));
    println!("wrote target/bench/bench.json and target/bench/bench.svg");
}

/// Prints CPU per acquire+release cycle, the server's against the null proxy's and
/// the bare SDK's, and throughput against both; answers them as JSON.
fn cpu_table(by: &HashMap<(&str, usize), &Run>, rounds: &[Vec<Run>]) -> serde_json::Value {
    println!(
        "CPU per acquire+release cycle (µs) and throughput: fencelock against the null proxy (the goal: CPU ≤ 1.10×, throughput ≥ 0.95×) and the bare SDK, median of {ROUNDS} rounds"
    );
    println!(
        "{:>4} {:>9} {:>11} {:>13} {:>10} {:>18} {:>11} {:>10} {:>11}",
        "conc",
        "bare µs",
        "null µs",
        "fencelock µs",
        "CPU/null",
        "CPU/null by round",
        "thru/null",
        "CPU/bare",
        "thru/floor"
    );
    let mut rows = Vec::new();
    for concurrency in CONCURRENCY {
        let (Some(floor), Some(null), Some(server)) = (
            by.get(&("floor", concurrency)),
            by.get(&("null-proxy", concurrency)),
            by.get(&("fencelock", concurrency)),
        ) else {
            continue;
        };
        let (Some(bare), Some(proxy), Some(ours)) = (
            floor.cpu_us_per_cycle,
            null.cpu_us_per_cycle,
            server.cpu_us_per_cycle,
        ) else {
            continue;
        };
        let by_round: Vec<f64> = rounds
            .iter()
            .filter_map(|runs| {
                let of = |mode: &str| {
                    runs.iter()
                        .find(|r| r.mode == mode && r.concurrency == concurrency)?
                        .cpu_us_per_cycle
                };
                Some(of("fencelock")? / of("null-proxy")?)
            })
            .collect();
        let throughput_null = server.ops_per_sec / null.ops_per_sec;
        let throughput_floor = server.ops_per_sec / floor.ops_per_sec;
        let shown: Vec<String> = by_round.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "{concurrency:>4} {bare:>9.0} {proxy:>11.0} {ours:>13.0} {:>10.2} {:>18} {throughput_null:>11.2} {:>10.2} {throughput_floor:>11.2}",
            ours / proxy,
            shown.join(" "),
            ours / bare,
        );
        rows.push(json!({
            "concurrency": concurrency,
            "bare_sdk_us": bare,
            "null_proxy_us": proxy,
            "fencelock_us": ours,
            "ratio_to_null_proxy": ours / proxy,
            "ratio_to_null_proxy_by_round": by_round,
            "throughput_ratio_to_null_proxy": throughput_null,
            "ratio_to_bare_sdk": ours / bare,
            "throughput_ratio_to_floor": throughput_floor,
        }));
    }
    serde_json::Value::Array(rows)
}

/// Throughput and p99 latency against concurrency, floor and fencelock.
fn chart(runs: &[Run], path: &std::path::Path) {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let (left, right) = root.split_horizontally(500);
    let modes = [
        ("floor", BLUE),
        ("null-proxy", BLACK),
        ("fencelock", RED),
        ("contended", GREEN),
        ("semaphore", MAGENTA),
        ("group3", CYAN),
    ];
    let x_range = 0.0..(CONCURRENCY.len() as f64 - 1.0);
    let x_label = |x: &f64| {
        CONCURRENCY
            .get(x.round() as usize)
            .map_or(String::new(), |c| c.to_string())
    };
    for (area, title, value) in [
        (
            &left,
            "operations per second",
            (|r: &Run| r.ops_per_sec) as fn(&Run) -> f64,
        ),
        (&right, "p99 latency (ms)", |r: &Run| r.p99_ms),
    ] {
        let top = runs.iter().map(value).fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(x_range.clone(), 0.0..top.max(1.0))
            .unwrap();
        chart
            .configure_mesh()
            .x_desc("concurrency")
            .x_labels(CONCURRENCY.len())
            .x_label_formatter(&x_label)
            .draw()
            .unwrap();
        for (mode, color) in modes {
            let points: Vec<(f64, f64)> = CONCURRENCY
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    runs.iter()
                        .find(|r| r.mode == mode && r.concurrency == *c)
                        .map(|r| (i as f64, value(r)))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .unwrap()
                .label(mode)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .unwrap();
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .unwrap();
    }
    root.present().unwrap();
}

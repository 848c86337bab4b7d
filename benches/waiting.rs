//! Benchmark of waiting acquire, run by `make bench-wait` (`cargo bench --bench
//! waiting`): DynamoDB Local and two fencelock servers on one table, measuring
//!
//! - handoff: from sending a release through a server to its next local waiter
//!   receiving the grant;
//! - the DynamoDB requests per second that 100 waiters on one server spend on a lock
//!   held through the other server;
//! - watching: from sending a write to a watcher's event (`GET /locks/{name}/events`)
//!   on the same server and on the other one, and the DynamoDB requests per second of
//!   1 and of 100 watchers of one name.
//!
//! It prints a table and writes `target/bench/waiting.json`. `cargo test` builds it
//! (so it cannot rot) but runs it only when given `--bench`, as `cargo bench` does.

#[path = "../tests/support/dynamodb_local.rs"]
#[allow(dead_code)]
mod dynamodb_local;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fencelock::api::AppState;
use fencelock::clock::SystemClock;
use fencelock::domain::TtlBounds;
use fencelock::metrics::Metrics;
use serde_json::{Value, json};

const HANDOFFS: usize = 100;
const WAITERS: usize = 100;
const RAMP_UP: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(10);
const WATCHED_WRITES: usize = 100;
const WATCHERS: usize = 100;

struct Server {
    base: String,
    /// The metrics of the server's store, whose DynamoDB requests are counted.
    metrics: Arc<Metrics>,
}

async fn spawn_server(endpoint: &str, table: &str) -> Server {
    let store = dynamodb_local::store(
        endpoint,
        table,
        Arc::new(SystemClock),
        Duration::from_millis(500),
    )
    .await;
    let metrics = store.metrics().clone();
    let ttl = TtlBounds::new(
        Duration::from_secs(30),
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )
    .unwrap();
    let state = AppState::new(store, ttl, Duration::from_secs(60), 64 * 1024);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(fencelock::server::run(
        listener,
        state,
        std::future::pending(),
        Duration::from_secs(10),
    ));
    Server { base, metrics }
}

async fn post(http: &reqwest::Client, url: String) -> Value {
    http.post(url).send().await.unwrap().json().await.unwrap()
}

/// Release-to-grant times of a local waiter, and the release round trips alone.
async fn handoffs(http: &reqwest::Client, server: &Server) -> (Vec<Duration>, Vec<Duration>) {
    let (mut handoff, mut release) = (Vec::new(), Vec::new());
    for i in 0..HANDOFFS {
        let base = &server.base;
        let fence = post(
            http,
            format!("{base}/locks/handoff?nonce=holder-{i}&ttl=60s"),
        )
        .await["fence"]
            .clone();
        let waiter = tokio::spawn({
            let (http, url) = (
                http.clone(),
                format!("{base}/locks/handoff?nonce=waiter-{i}&wait=30s"),
            );
            async move {
                let granted: Value = http.post(url).send().await.unwrap().json().await.unwrap();
                (Instant::now(), granted)
            }
        });
        // Let the waiter queue, try once, and settle into its back-off.
        tokio::time::sleep(Duration::from_millis(40)).await;
        let sent = Instant::now();
        http.delete(format!("{base}/locks/handoff/{fence}"))
            .send()
            .await
            .unwrap();
        release.push(sent.elapsed());
        let (granted_at, granted) = waiter.await.unwrap();
        assert!(
            granted["fence"].is_u64(),
            "the waiter was not granted: {granted}"
        );
        handoff.push(granted_at - sent);
        http.delete(format!("{base}/locks/handoff/{}", granted["fence"]))
            .send()
            .await
            .unwrap();
    }
    (handoff, release)
}

/// DynamoDB requests per second from `waiting_on`, where WAITERS wait for a lock
/// held through `holding_on`: during the ramp-up, and in the steady state after.
async fn waiting_cost(
    http: &reqwest::Client,
    holding_on: &Server,
    waiting_on: &Server,
) -> (f64, f64) {
    let holder = post(
        http,
        format!("{}/locks/contended?nonce=holder&ttl=60s", holding_on.base),
    )
    .await;
    let before = waiting_on.metrics.dynamodb_requests_total();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|i| {
            let (http, url) = (
                http.clone(),
                format!(
                    "{}/locks/contended?nonce=waiter-{i}&wait=30s",
                    waiting_on.base
                ),
            );
            tokio::spawn(async move { http.post(url).send().await })
        })
        .collect();
    tokio::time::sleep(RAMP_UP).await;
    let ramped = waiting_on.metrics.dynamodb_requests_total();
    tokio::time::sleep(WINDOW).await;
    let after = waiting_on.metrics.dynamodb_requests_total();
    http.delete(format!(
        "{}/locks/contended/{}",
        holding_on.base, holder["fence"]
    ))
    .send()
    .await
    .unwrap();
    for waiter in waiters {
        waiter.abort();
    }
    (
        (ramped - before) as f64 / RAMP_UP.as_secs_f64(),
        (after - ramped) as f64 / WINDOW.as_secs_f64(),
    )
}

/// The ids of the events of `name`'s stream on `server`, as they arrive, with when.
async fn watch(
    http: &reqwest::Client,
    server: &Server,
    name: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<(Instant, u64)> {
    let mut response = http
        .get(format!("{}/locks/{name}/events", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let at = Instant::now();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let id = block
                    .lines()
                    .find_map(|line| line.strip_prefix("id:")?.trim().parse().ok());
                if let Some(id) = id
                    && tx.send((at, id)).is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

/// From sending a body update through `writer` to the event of its version reaching
/// a watcher on `watched`, one write at a time, each at a random moment of the
/// watch's read interval.
async fn watch_delays(http: &reqwest::Client, watched: &Server, writer: &Server) -> Vec<Duration> {
    let name = format!("watched-{}", fastrand::u64(..));
    let lock = post(
        http,
        format!("{}/locks/{name}?nonce=w&ttl=600s", writer.base),
    )
    .await;
    let fence = lock["fence"].as_u64().unwrap();
    let mut events = watch(http, watched, &name).await;
    let mut delays = Vec::new();
    for i in 0..WATCHED_WRITES {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..500))).await;
        let sent = Instant::now();
        let view: Value = http
            .post(format!("{}/locks/{name}/{fence}", writer.base))
            .body(format!("step {i}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let version = view["version"].as_u64().unwrap();
        loop {
            let (at, id) = events.recv().await.expect("the stream is open");
            if id >= version {
                delays.push(at - sent);
                break;
            }
        }
    }
    delays
}

/// DynamoDB requests per second on `server` while 1 and then WATCHERS watch one name
/// held there, nothing being written.
async fn watch_cost(http: &reqwest::Client, server: &Server) -> (f64, f64) {
    let name = format!("quiet-{}", fastrand::u64(..));
    post(
        http,
        format!("{}/locks/{name}?nonce=q&ttl=600s", server.base),
    )
    .await;
    let mut streams = Vec::new();
    let mut rates = Vec::new();
    for watchers in [1, WATCHERS] {
        while streams.len() < watchers {
            let mut events = watch(http, server, &name).await;
            events.recv().await.expect("the state");
            streams.push(events);
        }
        let before = server.metrics.dynamodb_requests_total();
        tokio::time::sleep(WINDOW).await;
        let after = server.metrics.dynamodb_requests_total();
        rates.push((after - before) as f64 / WINDOW.as_secs_f64());
    }
    (rates[0], rates[1])
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

fn summary(mut samples: Vec<Duration>) -> Value {
    samples.sort();
    json!({
        "samples": samples.len(),
        "p50_ms": percentile(&samples, 0.50),
        "p99_ms": percentile(&samples, 0.99),
        "max_ms": percentile(&samples, 1.0),
    })
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("waiting benchmark: built; run it with `make bench-wait`");
        return;
    }
    let endpoint = std::env::var("FENCELOCK_TEST_DYNAMODB_ENDPOINT")
        .unwrap_or_else(|_| dynamodb_local::start("dynamodb-local-bench.log"));
    let table = format!("fencelock-bench-{}", std::process::id());
    dynamodb_local::store(&endpoint, &table, Arc::new(SystemClock), Duration::ZERO)
        .await
        .ensure_table()
        .await
        .unwrap();
    let (a, b) = (
        spawn_server(&endpoint, &table).await,
        spawn_server(&endpoint, &table).await,
    );
    let http = reqwest::Client::new();

    let (handoff, release) = handoffs(&http, &a).await;
    let (handoff, release) = (summary(handoff), summary(release));
    let (ramp_up, steady) = waiting_cost(&http, &a, &b).await;
    let same_server = summary(watch_delays(&http, &a, &a).await);
    let other_server = summary(watch_delays(&http, &a, &b).await);
    let (one, many) = watch_cost(&http, &b).await;

    println!(
        "waiting acquire, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{:<44} {:>8} {:>8} {:>8}", "", "p50 ms", "p99 ms", "max ms");
    for (label, s) in [
        ("release round trip", &release),
        ("release sent -> local waiter granted", &handoff),
        ("write sent -> event, same server", &same_server),
        ("write sent -> event, other server", &other_server),
    ] {
        println!(
            "{label:<44} {:>8.2} {:>8.2} {:>8.2}",
            s["p50_ms"].as_f64().unwrap(),
            s["p99_ms"].as_f64().unwrap(),
            s["max_ms"].as_f64().unwrap()
        );
    }
    println!("{WAITERS} waiters, lock held through another server:");
    println!(
        "  DynamoDB requests/s, first {}s: {ramp_up:.1}",
        RAMP_UP.as_secs()
    );
    println!(
        "  DynamoDB requests/s, next {}s:  {steady:.1}",
        WINDOW.as_secs()
    );

    println!("one name watched on a server, nothing written (reads every 500 ms):");
    println!("  DynamoDB requests/s, 1 watcher:      {one:.1}");
    println!("  DynamoDB requests/s, {WATCHERS} watchers:  {many:.1}");

    let report = json!({
        "handoff": handoff,
        "release": release,
        "waiters": WAITERS,
        "requests_per_second_ramp_up": ramp_up,
        "requests_per_second_steady": steady,
        "watch": {
            "same_server": same_server,
            "other_server": other_server,
            "requests_per_second_1_watcher": one,
            "watchers": WATCHERS,
            "requests_per_second_many_watchers": many,
        },
    });
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        format!("{dir}/waiting.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("written to target/bench/waiting.json");
}

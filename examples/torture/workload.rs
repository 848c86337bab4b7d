//! The clients of a torture run and what they record: every operation with its
//! start and end (monotonic, from the run's start) and its outcome; and the
//! downstream store that accepts a write only with a fence at least as high as any
//! it has seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fencelock::client::{Acquire, Client, ClientError, Holding};
use fencelock::domain::LockName;
use serde::Serialize;
use tokio::time::Instant;

/// One operation as a client saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub client: usize,
    pub kind: &'static str,
    pub name: String,
    pub fence: Option<u64>,
    /// Microseconds from the run's start, on the monotonic clock.
    pub start: u64,
    pub end: u64,
    pub outcome: String,
    pub ttl_ms: u64,
    /// Acquire: the body seen; update: the body written.
    pub body: Option<String>,
    /// Downstream writes: the order in which the store decided them.
    pub seq: Option<u64>,
}

/// What every client shares.
pub struct Shared {
    pub started: Instant,
    pub clients: Vec<Client>,
    pub names: Vec<LockName>,
    pub history: Mutex<Vec<Op>>,
    pub downstream: Downstream,
    /// Set by the fault schedule: the next client to take a lock pauses past its
    /// lease, then writes downstream with its old fence.
    pub pause_next_holder: AtomicBool,
    pub paused_clients: AtomicU64,
    pub stop: AtomicBool,
}

impl Shared {
    fn micros(&self, at: Instant) -> u64 {
        at.duration_since(self.started).as_micros() as u64
    }

    fn record(&self, op: Op) {
        self.history.lock().unwrap().push(op);
    }
}

/// The downstream store: per name, the highest fence it has seen.
#[derive(Default)]
pub struct Downstream {
    state: Mutex<(HashMap<String, u64>, u64)>,
}

impl Downstream {
    /// Writes with `fence`: accepted if no higher fence was seen. Answers whether it
    /// was, and its place in the store's order.
    pub fn write(&self, name: &str, fence: u64) -> (bool, u64) {
        let mut state = self.state.lock().unwrap();
        let (highest, seq) = &mut *state;
        *seq += 1;
        let seen = highest.entry(name.to_owned()).or_insert(0);
        let accepted = fence >= *seen;
        if accepted {
            *seen = fence;
        }
        (accepted, *seq)
    }
}

fn outcome<T>(result: &Result<T, ClientError>) -> String {
    match result {
        Ok(_) => "ok",
        Err(ClientError::Held { .. }) => "held",
        Err(ClientError::Lost { .. }) => "lost",
        Err(ClientError::NotFound { .. }) => "not_found",
        Err(ClientError::Unavailable { .. }) => "unavailable",
        Err(ClientError::Unreachable { .. }) => "unreachable",
        Err(ClientError::Refused { .. }) => "refused",
        Err(ClientError::Unexpected { .. }) => "unexpected",
    }
    .to_owned()
}

/// One client: takes locks, holds them with heartbeats and body updates, writes
/// downstream while it believes it holds, and releases or abandons them.
pub async fn client(shared: Arc<Shared>, id: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut attempt = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        attempt += 1;
        let name = &shared.names[rng.usize(..shared.names.len())];
        let ttl = Duration::from_millis(rng.u64(2000..=6000));
        let wait = if rng.bool() {
            Some(Duration::from_millis(rng.u64(0..3000)))
        } else {
            None
        };
        let server = &shared.clients[rng.usize(..shared.clients.len())];
        let nonce = format!("c{id}-{attempt}");
        let request = Acquire {
            nonce: nonce.clone(),
            ttl: Some(ttl),
            wait,
            ..Acquire::default()
        };
        let sent = Instant::now();
        let result = server.acquire(name, &request).await;
        let answered = Instant::now();
        let ttl_ms = ttl.as_millis() as u64;
        shared.record(Op {
            client: id,
            kind: "acquire",
            name: name.to_string(),
            fence: result.as_ref().ok().map(|lock| lock.fence),
            start: shared.micros(sent),
            end: shared.micros(answered),
            outcome: outcome(&result),
            ttl_ms,
            body: result.as_ref().ok().map(|lock| lock.body.clone()),
            seq: None,
        });
        match result {
            Ok(lock) => {
                let holding = Holding {
                    name,
                    fence: lock.fence,
                    nonce: Some(&nonce),
                };
                hold(&shared, &mut rng, id, holding, ttl, sent).await;
            }
            Err(ClientError::Held { .. }) => {
                tokio::time::sleep(Duration::from_millis(rng.u64(0..200))).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(rng.u64(100..300))).await,
        }
    }
}

/// Holds `holding` for a while. The client believes it holds the lock until `ttl`
/// after it sent the last acquire or heartbeat the server confirmed; it acts only
/// within that belief, and its release ends it.
async fn hold(
    shared: &Shared,
    rng: &mut fastrand::Rng,
    id: usize,
    holding: Holding<'_>,
    ttl: Duration,
    confirmed: Instant,
) {
    let name = holding.name.to_string();
    let fence = holding.fence;
    let ttl_ms = ttl.as_millis() as u64;
    let mut belief_end = confirmed + ttl;
    // A margin for the time a request takes to leave this process.
    let margin = Duration::from_millis(150);
    let record = |kind: &'static str, sent: Instant, outcome: String, body: Option<String>| Op {
        client: id,
        kind,
        name: name.clone(),
        fence: Some(fence),
        start: shared.micros(sent),
        end: shared.micros(Instant::now()),
        outcome,
        ttl_ms,
        body,
        seq: None,
    };
    downstream(shared, id, &name, fence, ttl_ms, "downstream");

    let paused = shared.pause_next_holder.swap(false, Ordering::Relaxed);
    if paused {
        // A holder paused past its lease (a long GC, a stopped VM) that wakes up and
        // writes with the fence it had.
        shared.paused_clients.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep_until(belief_end + Duration::from_millis(rng.u64(1000..3000))).await;
        downstream(shared, id, &name, fence, ttl_ms, "downstream_after_pause");
        return;
    }

    let hold_for = Duration::from_millis(rng.u64(200..4000));
    let until = Instant::now() + hold_for;
    let mut step = 0u64;
    loop {
        let next = (Instant::now() + ttl / 3).min(until);
        tokio::time::sleep_until(next).await;
        if Instant::now() + margin >= belief_end || shared.stop.load(Ordering::Relaxed) {
            // The belief ran out (or the run ends): stop acting, as a careful holder does.
            return;
        }
        if Instant::now() >= until {
            break;
        }
        let server = &shared.clients[rng.usize(..shared.clients.len())];
        let sent = Instant::now();
        let result = if rng.u8(0..10) < 7 {
            let result = server.heartbeat(&holding, Some(ttl)).await;
            shared.record(record("heartbeat", sent, outcome(&result), None));
            result
        } else {
            step += 1;
            let body = format!("c{id}-f{fence}-{step}");
            let result = server.update(&holding, body.clone(), Some(ttl)).await;
            shared.record(record("update", sent, outcome(&result), Some(body)));
            result
        };
        match result {
            Ok(_) => belief_end = sent + ttl,
            Err(ClientError::Lost { .. }) => return,
            Err(_) => {}
        }
        if Instant::now() + margin < belief_end {
            downstream(shared, id, &name, fence, ttl_ms, "downstream");
        }
    }
    if rng.u8(0..10) < 8 {
        let server = &shared.clients[rng.usize(..shared.clients.len())];
        let sent = Instant::now();
        let result = server.release(&holding).await;
        let outcome = match &result {
            Ok(release) if !release.released => "not_released".to_owned(),
            other => outcome(other),
        };
        shared.record(record("release", sent, outcome, None));
    } else {
        // Abandoned: the lease runs out.
        let now = Instant::now();
        shared.record(record("abandon", now, "ok".to_owned(), None));
    }
}

fn downstream(shared: &Shared, id: usize, name: &str, fence: u64, ttl_ms: u64, kind: &'static str) {
    let at = shared.micros(Instant::now());
    let (accepted, seq) = shared.downstream.write(name, fence);
    shared.record(Op {
        client: id,
        kind,
        name: name.to_owned(),
        fence: Some(fence),
        start: at,
        end: at,
        outcome: if accepted { "accepted" } else { "rejected" }.to_owned(),
        ttl_ms,
        body: None,
        seq: Some(seq),
    });
}

/// A counter of operations by kind and outcome.
pub fn tally(
    history: &[Op],
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> {
    let mut tally: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> =
        Default::default();
    for op in history {
        *tally
            .entry(op.kind.to_owned())
            .or_default()
            .entry(op.outcome.clone())
            .or_default() += 1;
    }
    tally
}

//! The clients of a torture run and what they record: every operation with its
//! start and end (monotonic, from the run's start) and its outcome, the downstream
//! writes among them ([`crate::downstream`] decides them).

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fencelock::client::{Acquire, Client, ClientError, Holding, Kind};
use fencelock::domain::LockName;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::downstream::{Downstream, Verdict, Write};

/// One operation as a client saw it: a line of `history.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    pub client: usize,
    pub kind: String,
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
    /// Operations on a semaphore slot: the semaphore's limit (none for a lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// How a group of clients uses its own locks.
#[derive(Debug, Clone)]
pub struct Mix {
    pub names: Vec<LockName>,
    /// Lease lengths, ms.
    pub ttl_ms: Range<u64>,
    /// How long a holder keeps a lock before it releases or abandons it, ms.
    pub hold_ms: Range<u64>,
    /// The wait of a waiting acquire, ms; half the acquires wait, the others try once.
    pub wait_ms: Range<u64>,
    /// The pause after an acquire answered "held", ms.
    pub retry_ms: Range<u64>,
    /// Of 10 holdings, how many are released; the others are abandoned to expire
    /// (and taken over after the lease and the skew margin).
    pub released_of_10: u8,
    /// With a limit, the names are semaphores of that limit, whose slots the clients
    /// take and keep by heartbeat (semaphores have no body, and their holders write
    /// nothing downstream: several hold at once, each with its own fence).
    pub limit: Option<u32>,
    /// With sizes, 7 in 10 acquires take a group of that many of the names at once
    /// (`/lock-groups`), the others one name alone, so groups and single locks meet.
    pub group_of: Option<Range<usize>>,
    /// Whether the fault schedule's `pause_client` pauses this mix's holders: those
    /// of a few contended locks, whose next holder writes soon after the lease ends.
    pub paused_by_faults: bool,
}

/// A fault while it was in effect: from just before it was applied until it was
/// undone, µs from the run's start.
#[derive(Debug, Clone)]
pub struct FaultWindow {
    pub kind: &'static str,
    pub start: u64,
    pub end: u64,
    /// The server it struck (killed or paused), if one.
    pub instance: Option<usize>,
    /// The lock or election it struck (a paused leader's), if one.
    pub name: Option<String>,
}

/// What every client shares.
pub struct Shared {
    pub started: Instant,
    pub clients: Vec<Client>,
    pub history: Mutex<Vec<Op>>,
    pub downstream: Downstream,
    /// Set by the fault schedule: the next client of a paused mix to take a lock
    /// pauses past its lease, then writes downstream with its old fence.
    pub pause_next_holder: AtomicBool,
    /// The same for the election mix: the next leader pauses past its lease.
    pub pause_next_leader: AtomicBool,
    /// `--break check-then-write`: paused holders ask fencelock whether their fence
    /// holds, pause, and write without the fence condition.
    pub check_then_write: bool,
    /// The faults applied, by the schedule and by the clients that paused.
    pub faults: Mutex<Vec<FaultWindow>>,
    pub stop: AtomicBool,
}

impl Shared {
    pub fn micros(&self, at: Instant) -> u64 {
        at.duration_since(self.started).as_micros() as u64
    }

    pub fn record(&self, op: Op) {
        self.history.lock().unwrap().push(op);
    }

    pub fn fault(&self, kind: &'static str, start: Instant) {
        self.fault_of(kind, start, None, None);
    }

    /// A fault that struck `instance` or `name`, from `start` until now.
    pub fn fault_of(
        &self,
        kind: &'static str,
        start: Instant,
        instance: Option<usize>,
        name: Option<String>,
    ) {
        let window = FaultWindow {
            kind,
            start: self.micros(start),
            end: self.micros(Instant::now()),
            instance,
            name,
        };
        self.faults.lock().unwrap().push(window);
    }
}

fn outcome<T>(result: &Result<T, ClientError>) -> String {
    result.as_ref().map_or_else(failure, |_| "ok".to_owned())
}

/// How an error is recorded.
pub fn failure(err: &ClientError) -> String {
    match err {
        ClientError::Held { .. } => "held",
        ClientError::Lost { .. } => "lost",
        ClientError::NotFound { .. } => "not_found",
        ClientError::Unavailable { .. } => "unavailable",
        ClientError::Unreachable { .. } => "unreachable",
        ClientError::Refused { .. } => "refused",
        ClientError::Unexpected { .. } => "unexpected",
    }
    .to_owned()
}

/// One client: takes locks, holds them with heartbeats and body updates, writes
/// downstream while it believes it holds, and releases or abandons them.
pub async fn client(shared: Arc<Shared>, mix: Arc<Mix>, id: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut attempt = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        attempt += 1;
        let name = &mix.names[rng.usize(..mix.names.len())];
        let ttl = Duration::from_millis(rng.u64(mix.ttl_ms.clone()));
        let wait = if rng.bool() {
            Some(Duration::from_millis(rng.u64(mix.wait_ms.clone())))
        } else {
            None
        };
        let server = &shared.clients[rng.usize(..shared.clients.len())];
        let nonce = format!("c{id}-{attempt}");
        if let Some(sizes) = mix.group_of.clone()
            && rng.u8(0..10) < 7
        {
            let mut names = mix.names.clone();
            rng.shuffle(&mut names);
            names.truncate(rng.usize(sizes).min(names.len()));
            let request = Acquire {
                nonce: nonce.clone(),
                ttl: Some(ttl),
                wait,
                ..Acquire::default()
            };
            take_group(&shared, &mix, &mut rng, id, server, &names, request).await;
            continue;
        }
        let request = Acquire {
            nonce: nonce.clone(),
            ttl: Some(ttl),
            wait,
            limit: mix.limit,
            ..Acquire::default()
        };
        let sent = Instant::now();
        let result = server.acquire(name, &request).await;
        let answered = Instant::now();
        let ttl_ms = ttl.as_millis() as u64;
        shared.record(Op {
            client: id,
            kind: "acquire".into(),
            name: name.to_string(),
            fence: result.as_ref().ok().map(|lock| lock.fence),
            start: shared.micros(sent),
            end: shared.micros(answered),
            outcome: outcome(&result),
            ttl_ms,
            body: result.as_ref().ok().map(|lock| lock.body.clone()),
            seq: None,
            limit: mix.limit,
        });
        match result {
            Ok(lock) => {
                let holding = Holding {
                    kind: request.kind(),
                    name,
                    fence: lock.fence,
                    nonce: Some(&nonce),
                };
                hold(&shared, &mix, &mut rng, id, holding, ttl, sent).await;
            }
            Err(ClientError::Held { .. }) => {
                tokio::time::sleep(Duration::from_millis(rng.u64(mix.retry_ms.clone()))).await;
            }
            // As a well-behaved client does: the server's Retry-After, with jitter.
            Err(ClientError::Unavailable { retry_after, .. }) => {
                let jitter = Duration::from_millis(rng.u64(0..200));
                tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1)) + jitter).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(rng.u64(100..300))).await,
        }
    }
}

/// Takes `names` as a group and holds them, as [`hold`] holds one lock: each lock of
/// the group is recorded as a lock of its own (acquire, heartbeat, release), so the
/// checker sees whether anyone else held one of them meanwhile.
async fn take_group(
    shared: &Shared,
    mix: &Mix,
    rng: &mut fastrand::Rng,
    id: usize,
    server: &Client,
    names: &[LockName],
    request: Acquire,
) {
    let ttl = request.ttl.unwrap_or_default();
    let ttl_ms = ttl.as_millis() as u64;
    let record_each = |kind: &str, sent: Instant, outcomes: &[(String, Option<u64>, String)]| {
        let end = shared.micros(Instant::now());
        for (name, fence, outcome) in outcomes {
            shared.record(Op {
                client: id,
                kind: kind.to_owned(),
                name: name.clone(),
                fence: *fence,
                start: shared.micros(sent),
                end,
                outcome: outcome.clone(),
                ttl_ms,
                body: None,
                seq: None,
                limit: None,
            });
        }
    };
    let sent = Instant::now();
    let refs: Vec<&LockName> = names.iter().collect();
    let result = server.acquire_group(&refs, &request).await;
    let locks = match result {
        Ok(locks) => locks,
        Err(err) => {
            let outcomes: Vec<_> = names
                .iter()
                .map(|name| (name.to_string(), None, failure(&err)))
                .collect();
            record_each("acquire", sent, &outcomes);
            let pause = match err {
                ClientError::Held { .. } => rng.u64(mix.retry_ms.clone()),
                ClientError::Unavailable { retry_after, .. } => {
                    retry_after.map_or(1000, |d| d.as_millis() as u64) + rng.u64(0..200)
                }
                _ => rng.u64(100..300),
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            return;
        }
    };
    let answered = shared.micros(Instant::now());
    for lock in &locks {
        // With the body each lock had: the lost-update check reads it.
        shared.record(Op {
            client: id,
            kind: "acquire".into(),
            name: lock.name.clone(),
            fence: Some(lock.fence),
            start: shared.micros(sent),
            end: answered,
            outcome: "ok".into(),
            ttl_ms,
            body: Some(lock.body.clone()),
            seq: None,
            limit: None,
        });
    }
    let holdings: Vec<Holding> = names
        .iter()
        .zip(&locks)
        .map(|(name, lock)| Holding {
            kind: Kind::Lock,
            name,
            fence: lock.fence,
            nonce: Some(&request.nonce),
        })
        .collect();
    let margin = Duration::from_millis(150);
    let mut belief_end = sent + ttl;
    let write_all = async |belief_end: Instant| {
        if Instant::now() + margin < belief_end {
            for holding in &holdings {
                let name = holding.name.as_str();
                downstream(shared, id, name, holding.fence, ttl_ms, "downstream").await;
            }
        }
    };
    write_all(belief_end).await;
    let until = Instant::now() + Duration::from_millis(rng.u64(mix.hold_ms.clone()));
    loop {
        tokio::time::sleep_until((Instant::now() + ttl / 3).min(until)).await;
        if Instant::now() + margin >= belief_end || shared.stop.load(Ordering::Relaxed) {
            return;
        }
        if Instant::now() >= until {
            break;
        }
        let server = &shared.clients[rng.usize(..shared.clients.len())];
        let sent = Instant::now();
        let result = server.heartbeat_group(&holdings, Some(ttl)).await;
        let said = outcome(&result);
        let outcomes: Vec<_> = holdings
            .iter()
            .map(|h| (h.name.to_string(), Some(h.fence), said.clone()))
            .collect();
        record_each("heartbeat", sent, &outcomes);
        match result {
            Ok(_) => belief_end = sent + ttl,
            Err(ClientError::Lost { .. }) => return,
            Err(_) => {}
        }
        write_all(belief_end).await;
    }
    let sent = Instant::now();
    if rng.u8(0..10) < mix.released_of_10 {
        let server = &shared.clients[rng.usize(..shared.clients.len())];
        let outcomes: Vec<_> = match server.release_group(&holdings).await {
            Ok(released) => holdings
                .iter()
                .zip(released)
                .map(|(h, r)| {
                    let said = if r.released { "ok" } else { "not_released" };
                    (h.name.to_string(), Some(h.fence), said.to_owned())
                })
                .collect(),
            Err(err) => {
                let said = failure(&err);
                holdings
                    .iter()
                    .map(|h| (h.name.to_string(), Some(h.fence), said.clone()))
                    .collect()
            }
        };
        record_each("release", sent, &outcomes);
    } else {
        let outcomes: Vec<_> = holdings
            .iter()
            .map(|h| (h.name.to_string(), Some(h.fence), "ok".to_owned()))
            .collect();
        record_each("abandon", sent, &outcomes);
    }
}

/// Holds `holding` for a while. The client believes it holds the lock until `ttl`
/// after it sent the last acquire or heartbeat the server confirmed; it acts only
/// within that belief, and its release ends it.
async fn hold(
    shared: &Shared,
    mix: &Mix,
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
    let record = |kind: &str, sent: Instant, outcome: String, body: Option<String>| Op {
        client: id,
        kind: kind.to_owned(),
        name: name.clone(),
        fence: Some(fence),
        start: shared.micros(sent),
        end: shared.micros(Instant::now()),
        outcome,
        ttl_ms,
        body,
        seq: None,
        limit: mix.limit,
    };
    let lock = holding.kind == Kind::Lock;
    if lock && Instant::now() + margin < belief_end {
        downstream(shared, id, &name, fence, ttl_ms, "downstream").await;
    }

    let paused =
        lock && mix.paused_by_faults && shared.pause_next_holder.swap(false, Ordering::Relaxed);
    if paused {
        pause_then_write(shared, rng, id, &holding, ttl_ms, belief_end).await;
        return;
    }

    let hold_for = Duration::from_millis(rng.u64(mix.hold_ms.clone()));
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
        let result = if !lock || rng.u8(0..10) < 7 {
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
        if lock && Instant::now() + margin < belief_end {
            downstream(shared, id, &name, fence, ttl_ms, "downstream").await;
        }
    }
    if rng.u8(0..10) < mix.released_of_10 {
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

/// A holder paused past its lease (a long GC, a stopped VM) that wakes up and writes
/// with the fence it had: 1-3 s after its lease ends and, the case fences exist for,
/// once a newer holder has written (or 10 s later, if none has). With
/// `--break check-then-write` it asks fencelock first whether its fence holds (it
/// does, then), and writes without the condition.
async fn pause_then_write(
    shared: &Shared,
    rng: &mut fastrand::Rng,
    id: usize,
    holding: &Holding<'_>,
    ttl_ms: u64,
    belief_end: Instant,
) {
    let start = Instant::now();
    let name = holding.name.as_str();
    let how = if shared.check_then_write {
        let server = &shared.clients[rng.usize(..shared.clients.len())];
        let sent = Instant::now();
        let checked = server.check(holding.name, holding.fence).await;
        shared.record(Op {
            client: id,
            kind: "fence_check".into(),
            name: name.to_owned(),
            fence: Some(holding.fence),
            start: shared.micros(sent),
            end: shared.micros(Instant::now()),
            outcome: outcome(&checked),
            ttl_ms,
            body: None,
            seq: None,
            limit: None,
        });
        Write::Unconditional
    } else {
        Write::Guarded
    };
    tokio::time::sleep_until(belief_end + Duration::from_millis(rng.u64(1000..3000))).await;
    let given_up = Instant::now() + Duration::from_secs(10);
    while shared.downstream.highest(name).await <= holding.fence && Instant::now() < given_up {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kind = "downstream_after_pause";
    write_with(shared, id, name, holding.fence, ttl_ms, kind, how).await;
    shared.fault("pause_client", start);
}

/// Writes to the downstream store with `fence` by the recipe, recording the write;
/// answers whether the store accepted it.
pub async fn downstream(
    shared: &Shared,
    id: usize,
    name: &str,
    fence: u64,
    ttl_ms: u64,
    kind: &'static str,
) -> bool {
    write_with(shared, id, name, fence, ttl_ms, kind, Write::Guarded).await
}

pub async fn write_with(
    shared: &Shared,
    id: usize,
    name: &str,
    fence: u64,
    ttl_ms: u64,
    kind: &'static str,
    how: Write,
) -> bool {
    let sent = Instant::now();
    let verdict = shared.downstream.write(name, fence, id, kind, how).await;
    shared.record(Op {
        client: id,
        kind: kind.to_owned(),
        name: name.to_owned(),
        fence: Some(fence),
        start: shared.micros(sent),
        end: shared.micros(Instant::now()),
        outcome: verdict.outcome().to_owned(),
        ttl_ms,
        body: None,
        seq: None,
        limit: None,
    });
    verdict == Verdict::Accepted
}

/// A counter of operations by kind and outcome.
pub fn tally(
    history: &[Op],
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> {
    let mut tally: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> =
        Default::default();
    for op in history {
        *tally
            .entry(op.kind.clone())
            .or_default()
            .entry(op.outcome.clone())
            .or_default() += 1;
    }
    tally
}

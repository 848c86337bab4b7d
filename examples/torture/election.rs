//! The election mix: candidates through all three servers (each pinned to one, so
//! that killing or pausing a server takes its leader with it, and each standing for
//! one election, so that every election has candidates on the other servers), leaders writing
//! downstream with their term, and observers recording each leader they see. The
//! history names an election `election/{name}`, so the checker judges leaders as
//! holders (two at once, two of one term, a stale term accepted downstream) and
//! observers by their sequence of terms; [`failovers`] measures how long each
//! election had no leader after a fault took its leader away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fencelock::client::{Acquire, ClientError, Holding, Kind};
use fencelock::domain::LockName;
use serde::Serialize;
use tokio::time::Instant;

use crate::check::{ELECTION, Holding as Held};
use crate::downstream::Write;
use crate::workload::{FaultWindow, Op, Shared, downstream, failure, write_with};

/// The first client id of the mix (the Python mix's start at 10,000).
pub const FIRST_ID: usize = 20_000;
/// Leases of the mix's leaders.
pub const TTL: Duration = Duration::from_secs(3);
/// How long a leader leads before it resigns or abandons its term, ms.
const LEAD_MS: std::ops::Range<u64> = 1000..6000;
/// A candidate's wait in one campaign request, then it campaigns again at once: a
/// third of the lease, so that the lease a campaign wins, counted from the sending of
/// the request, has two thirds left when the answer comes (as `fencelock elect`).
const WAIT: Duration = Duration::from_secs(1);
/// The servers' `FENCELOCK_CLOCK_SKEW`, and how long a candidate waiting through
/// another server may take to notice a free election (the waiting acquire's
/// longest back-off).
const SKEW: Duration = Duration::from_millis(500);
const CROSS_SERVER: Duration = Duration::from_secs(1);

/// The mix's elections, candidates and observers.
pub struct Mix {
    pub names: Vec<LockName>,
    pub candidates: usize,
    /// Client ids from here on: candidates first, then one observer per server.
    pub first_id: usize,
}

impl Mix {
    /// The server each client of the mix goes through.
    pub fn server_of(&self, id: usize, servers: usize) -> usize {
        (id - self.first_id) % servers
    }
}

fn history_name(name: &LockName) -> String {
    format!("{ELECTION}{name}")
}

/// Starts the mix's tasks; they stop with the run.
pub fn start(shared: &Arc<Shared>, mix: &Arc<Mix>, seed: u64) -> Vec<tokio::task::JoinHandle<()>> {
    let servers = shared.clients.len();
    let mut tasks = Vec::new();
    for k in 0..mix.candidates {
        let id = mix.first_id + k;
        let (shared, mix) = (shared.clone(), mix.clone());
        tasks.push(tokio::spawn(async move {
            candidate(&shared, &mix, id, seed ^ (id as u64 * 7919)).await;
        }));
    }
    for server in 0..servers {
        for name in &mix.names {
            let id = mix.first_id + mix.candidates + server;
            let (shared, name) = (shared.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                observe(&shared, id, server, &name).await;
            }));
        }
    }
    tasks
}

/// One candidate: campaigns through its server, leads a while (renewing, proclaiming
/// and writing downstream with its term while it believes it leads), then resigns or
/// abandons the term, and campaigns again.
async fn candidate(shared: &Shared, mix: &Mix, id: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let server = &shared.clients[mix.server_of(id, shared.clients.len())];
    let ttl_ms = TTL.as_millis() as u64;
    let mut attempt = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        attempt += 1;
        // Each candidate stands for one election, so that every election has
        // candidates through other servers waiting when its leader goes.
        let name = &mix.names[(id - mix.first_id) % mix.names.len()];
        let recorded = history_name(name);
        let nonce = format!("e{id}-{attempt}");
        let value = format!("candidate {id}");
        let request = Acquire {
            nonce: nonce.clone(),
            ttl: Some(TTL),
            wait: Some(WAIT),
            ..Acquire::default()
        };
        let sent = Instant::now();
        let result = server.campaign(name, &request, &value).await;
        let term = result
            .as_ref()
            .ok()
            .and_then(|view| view.leader.as_ref())
            .map(|leader| leader.term);
        shared.record(Op {
            client: id,
            kind: "acquire".into(),
            name: recorded.clone(),
            fence: term,
            start: shared.micros(sent),
            end: shared.micros(Instant::now()),
            outcome: match &result {
                Ok(_) if term.is_some() => "ok".into(),
                Ok(_) => "unexpected".into(),
                Err(err) => failure(err),
            },
            ttl_ms,
            body: term.map(|_| value.clone()),
            seq: None,
            limit: None,
        });
        match (result, term) {
            (Ok(_), Some(term)) => {
                let leadership = Holding {
                    kind: Kind::Election,
                    name,
                    fence: term,
                    nonce: Some(&nonce),
                };
                lead(shared, &mut rng, id, server, leadership, sent).await;
                tokio::time::sleep(Duration::from_millis(rng.u64(0..500))).await;
            }
            // The wait ran out: stand again at once.
            (Err(ClientError::Held { .. }), _) => {}
            (Err(ClientError::Unavailable { retry_after, .. }), _) => {
                let jitter = Duration::from_millis(rng.u64(0..200));
                tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1)) + jitter).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.u64(100..300))).await,
        }
    }
}

/// Leads under `leadership`'s term while the belief lasts: the lease from the
/// sending of the last request the server confirmed.
async fn lead(
    shared: &Shared,
    rng: &mut fastrand::Rng,
    id: usize,
    server: &fencelock::client::Client,
    leadership: Holding<'_>,
    confirmed: Instant,
) {
    let recorded = history_name(leadership.name);
    let term = leadership.fence;
    let ttl_ms = TTL.as_millis() as u64;
    let margin = Duration::from_millis(150);
    let mut belief_end = confirmed + TTL;
    let record = |kind: &str, sent: Instant, outcome: String, body: Option<String>| Op {
        client: id,
        kind: kind.to_owned(),
        name: recorded.clone(),
        fence: Some(term),
        start: shared.micros(sent),
        end: shared.micros(Instant::now()),
        outcome,
        ttl_ms,
        body,
        seq: None,
        limit: None,
    };
    let write = async |belief_end: Instant| {
        if Instant::now() + margin < belief_end {
            downstream(shared, id, &recorded, term, ttl_ms, "downstream").await;
        }
    };
    write(belief_end).await;
    if shared.pause_next_leader.swap(false, Ordering::Relaxed) {
        // A leader paused past its lease (a long GC): it wakes and writes with the
        // term it had, which the store must refuse once the next leader wrote.
        let start = Instant::now();
        tokio::time::sleep_until(belief_end + Duration::from_millis(rng.u64(1000..3000))).await;
        let given_up = Instant::now() + Duration::from_secs(10);
        while shared.downstream.highest(&recorded).await <= term && Instant::now() < given_up {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let kind = "downstream_after_pause";
        write_with(shared, id, &recorded, term, ttl_ms, kind, Write::Guarded).await;
        shared.fault_of("pause_leader", start, None, Some(recorded.clone()));
        return;
    }
    let until = Instant::now() + Duration::from_millis(rng.u64(LEAD_MS));
    let mut step = 0u64;
    loop {
        tokio::time::sleep_until((Instant::now() + TTL / 3).min(until)).await;
        if Instant::now() + margin >= belief_end || shared.stop.load(Ordering::Relaxed) {
            return;
        }
        if Instant::now() >= until {
            break;
        }
        let sent = Instant::now();
        let result = if rng.u8(0..10) < 8 {
            let result = server.heartbeat_leader(&leadership, Some(TTL)).await;
            shared.record(record("heartbeat", sent, outcome_of(&result), None));
            result.map(|_| ())
        } else {
            step += 1;
            let value = format!("candidate {id} step {step}");
            let result = proclaim(server, &leadership, &value).await;
            shared.record(record("update", sent, outcome_of(&result), Some(value)));
            result
        };
        match result {
            Ok(()) => belief_end = sent + TTL,
            Err(ClientError::Lost { .. }) => return,
            Err(_) => {}
        }
        write(belief_end).await;
    }
    let sent = Instant::now();
    if rng.u8(0..10) < 7 {
        let result = server.release(&leadership).await;
        let outcome = match &result {
            Ok(release) if !release.released => "not_released".to_owned(),
            other => outcome_of(other),
        };
        shared.record(record("release", sent, outcome, None));
    } else {
        shared.record(record("abandon", sent, "ok".to_owned(), None));
    }
}

async fn proclaim(
    server: &fencelock::client::Client,
    leadership: &Holding<'_>,
    value: &str,
) -> Result<(), ClientError> {
    server
        .proclaim(leadership, value, Some(TTL))
        .await
        .map(|_| ())
}

fn outcome_of<T>(result: &Result<T, ClientError>) -> String {
    result.as_ref().map_or_else(failure, |_| "ok".to_owned())
}

/// One observer of `name` through one server: records the term of each leader it
/// is told of (none when nobody leads), reconnecting from the last event seen.
async fn observe(shared: &Shared, id: usize, server: usize, name: &LockName) {
    let client = &shared.clients[server];
    let recorded = history_name(name);
    let mut last = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(mut events) = client.events_of(Kind::Election, name, last).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    if shared.stop.load(Ordering::Relaxed) { return; }
                    continue;
                }
            };
            let Ok(Some(event)) = next else { break };
            last = event.id.or(last);
            let at = shared.micros(Instant::now());
            let term = event.data["leader"]["term"].as_u64();
            shared.record(Op {
                client: id,
                kind: "observe".into(),
                name: recorded.clone(),
                fence: term,
                start: at,
                end: at,
                outcome: event.event,
                ttl_ms: 0,
                body: None,
                seq: event.id,
                limit: None,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How long an election had no leader after a fault took its leader away.
#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    pub fault: String,
    pub election: String,
    /// From the fault to the next leader's grant.
    pub ms: u64,
    /// The lease + the skew margin + the lock-delay (0 here) + the cross-server
    /// delay of a waiting campaign.
    pub bound_ms: u64,
    /// Other faults of the servers or of DynamoDB in effect between this one and the
    /// next grant (DynamoDB made unavailable, another server killed), which the bound
    /// does not allow for.
    pub overlapped_by: Vec<String>,
    /// Whether the failover came within the bound; not judged (`None`) when other
    /// faults overlapped it.
    pub within_bound: Option<bool>,
}

/// The failovers of `holdings`' elections after the faults of `windows`: a leader
/// whose server was killed or paused, or who paused itself, followed by another
/// candidate's grant.
pub fn failovers(
    holdings: &[Held],
    windows: &[FaultWindow],
    server_of: impl Fn(usize) -> Option<usize>,
) -> Vec<Failover> {
    let bound = TTL + SKEW + CROSS_SERVER;
    let bound_ms = bound.as_millis() as u64;
    let mut by_name: BTreeMap<&str, Vec<&Held>> = BTreeMap::new();
    for holding in holdings.iter().filter(|h| h.name.starts_with(ELECTION)) {
        by_name.entry(&holding.name).or_default().push(holding);
    }
    let mut found = Vec::new();
    for window in windows {
        for (name, list) in &by_name {
            let took_leader = |h: &&&Held| match window.kind {
                "kill_instance" | "pause_instance" => {
                    window.instance.is_some() && server_of(h.client) == window.instance
                }
                "pause_leader" => window.name.as_deref() == Some(*name),
                _ => false,
            };
            let Some(old) = list
                .iter()
                .filter(|h| h.from <= window.start && window.start < h.until)
                .find(took_leader)
            else {
                continue;
            };
            let next = list
                .iter()
                .filter(|h| h.client != old.client && h.from > window.start)
                .map(|h| h.from)
                .min();
            if let Some(next) = next {
                let ms = (next - window.start) / 1000;
                let mut overlapped_by: Vec<String> = windows
                    .iter()
                    .filter(|other| !std::ptr::eq(*other, window))
                    // Other clients' pauses leave fencelock and DynamoDB as they are.
                    .filter(|other| !matches!(other.kind, "pause_client" | "pause_leader"))
                    .filter(|other| other.start < next && other.end > window.start)
                    .map(|other| other.kind.to_owned())
                    .collect();
                overlapped_by.sort();
                overlapped_by.dedup();
                found.push(Failover {
                    fault: window.kind.to_owned(),
                    election: name.to_string(),
                    ms,
                    bound_ms,
                    within_bound: overlapped_by.is_empty().then_some(ms <= bound_ms),
                    overlapped_by,
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(client: usize, from: u64, until: u64) -> Held {
        Held {
            client,
            name: format!("{ELECTION}jobs"),
            fence: from,
            asked: from,
            from,
            until,
            limit: None,
        }
    }

    fn window(kind: &'static str, start: u64, instance: Option<usize>) -> FaultWindow {
        FaultWindow {
            kind,
            start,
            end: start + 1_000_000,
            instance,
            name: None,
        }
    }

    #[test]
    fn a_failover_is_measured_from_the_fault_that_took_the_leader_to_the_next_grant() {
        // Client 0 (server 0) leads 0..5 s; client 1 (server 1) from 6.2 s.
        let holdings = [held(0, 0, 5_000_000), held(1, 6_200_000, 9_000_000)];
        let server_of = |client: usize| Some(client % 3);
        let found = failovers(
            &holdings,
            &[window("kill_instance", 2_000_000, Some(0))],
            server_of,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].ms, 4200);
        assert_eq!(found[0].within_bound, Some(true), "{found:?}");
        // A fault of another server took nobody's leadership.
        let other = failovers(
            &holdings,
            &[window("kill_instance", 2_000_000, Some(2))],
            server_of,
        );
        assert!(other.is_empty(), "{other:?}");
        // A failover past the bound is said to be.
        let late = [held(0, 0, 5_000_000), held(1, 9_000_000, 12_000_000)];
        let slow = failovers(
            &late,
            &[window("pause_instance", 1_000_000, Some(0))],
            server_of,
        );
        assert_eq!(slow[0].within_bound, Some(false), "{slow:?}");
        // Under another fault too, it is not judged, and says which.
        let both = [
            window("pause_instance", 1_000_000, Some(0)),
            window("pause_dynamodb", 3_000_000, None),
        ];
        let overlapped = failovers(&late, &both, server_of);
        assert_eq!(overlapped[0].within_bound, None, "{overlapped:?}");
        assert_eq!(overlapped[0].overlapped_by, ["pause_dynamodb"]);
    }
}

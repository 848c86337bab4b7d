//! The history checker: what a torture run's history must never show.
//!
//! - **over_limit**: more clients holding slots of one semaphore at once than its
//!   limit, with holdings read as for locks.
//! - **overlap**: two clients holding one lock at once. A client holds from the
//!   answer to its acquire until the earlier of the sending of its release and `ttl`
//!   after the sending of the last acquire, heartbeat or update the server confirmed.
//! - **fence_order**: a grant whose fence is not greater than that of a grant of the
//!   same name answered before it was asked for; or two grants with one fence (for
//!   locks and semaphores alike: each grant of a semaphore issues a new fence).
//! - **stale_write_accepted**: the downstream store holding a write whose fence is
//!   below one it had already taken for that name, as the store itself answers at
//!   the end of the run (its rows, `stored` operations in the order it took them),
//!   not as the clients were told.
//! - **term_backwards**: an observer of an election that saw a leader's term
//!   smaller than one it had seen before (elections' names are `election/…`, and
//!   their grants, terms and leaders' writes are checked as locks' are: two leaders
//!   at once are an overlap, two leaders of one term a fence_order).
//! - **acted_after_lease**: a leader's downstream write sent after its leadership
//!   ended as it counts it (the lease from the sending of the last confirmation).
//! - **not_linearizable**: a lock whose fence and body no order of its operations
//!   explains, as a counter and a register ([`crate::linear`]): a lost update, a
//!   heartbeat, update or release accepted from a superseded holder, or a body no
//!   write could have left; operations without an answer may take effect late.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::workload::Op;

#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub kind: &'static str,
    pub detail: String,
}

/// One grant and how long its client believed it held the lock.
#[derive(Debug, Clone)]
pub struct Holding {
    pub client: usize,
    pub name: String,
    pub fence: u64,
    pub asked: u64,
    pub from: u64,
    pub until: u64,
    /// The semaphore's limit; `None` for a lock.
    pub limit: Option<u32>,
}

/// The violations in `history`, and its grants.
pub fn check(history: &[Op]) -> (Vec<Violation>, Vec<Holding>) {
    let holdings = holdings(history);
    let mut violations = Vec::new();
    overlaps(&holdings, &mut violations);
    over_limit(&holdings, &mut violations);
    let out_of_order = fence_order(&holdings, &mut violations);
    stale_writes(history, &mut violations);
    terms_seen(history, &mut violations);
    acted_after_lease(history, &holdings, &mut violations);
    // A name whose fences went wrong is reported once, for that; an election's value
    // is set by each campaign, not carried over as a lock's body, so it is no register.
    let mut skip = out_of_order;
    skip.extend(
        history
            .iter()
            .filter(|op| is_election(&op.name))
            .map(|op| op.name.clone()),
    );
    violations.extend(crate::linear::registers(history, &skip));
    (violations, holdings)
}

/// A recorded history: `history.jsonl`, one [`Op`] a line.
pub fn read_history(path: &Path) -> Result<Vec<Op>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    parse_history(&text)
}

pub fn parse_history(text: &str) -> Result<Vec<Op>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(at, line)| serde_json::from_str(line).map_err(|e| format!("line {}: {e}", at + 1)))
        .collect()
}

pub fn holdings(history: &[Op]) -> Vec<Holding> {
    // Each client's operations on each name in its own order: a client does one
    // thing at a time with a name (a group's acquire, heartbeat and release are
    // recorded once for each of its locks).
    let mut by_client: BTreeMap<(usize, &str), Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_client
            .entry((op.client, op.name.as_str()))
            .or_default()
            .push(op);
    }
    let mut holdings = Vec::new();
    for ops in by_client.values_mut() {
        ops.sort_by_key(|op| (op.start, op.end));
        let mut current: Option<(Holding, u64)> = None; // (holding, ttl in µs)
        for op in ops.iter() {
            if op.kind == "acquire" {
                if let Some((holding, _)) = current.take() {
                    holdings.push(holding);
                }
                if op.outcome == "ok" {
                    let ttl = op.ttl_ms * 1000;
                    current = Some((
                        Holding {
                            client: op.client,
                            name: op.name.clone(),
                            fence: op.fence.unwrap_or(0),
                            asked: op.start,
                            from: op.end,
                            until: op.start + ttl,
                            limit: op.limit,
                        },
                        ttl,
                    ));
                }
                continue;
            }
            let Some((holding, ttl)) = current.as_mut() else {
                continue;
            };
            if op.fence != Some(holding.fence) {
                continue;
            }
            match (op.kind.as_str(), op.outcome.as_str()) {
                // A confirmation sent while the client still believed it held.
                ("heartbeat" | "update", "ok") if op.start <= holding.until => {
                    holding.until = holding.until.max(op.start + *ttl);
                }
                ("release", _) => holding.until = holding.until.min(op.start),
                _ => {}
            }
        }
        if let Some((holding, _)) = current.take() {
            holdings.push(holding);
        }
    }
    holdings
}

fn by_name(holdings: &[Holding]) -> BTreeMap<&str, Vec<&Holding>> {
    let mut by_name: BTreeMap<&str, Vec<&Holding>> = BTreeMap::new();
    for holding in holdings {
        by_name.entry(&holding.name).or_default().push(holding);
    }
    by_name
}

fn overlaps(holdings: &[Holding], violations: &mut Vec<Violation>) {
    for (name, mut list) in by_name(holdings) {
        list.retain(|h| h.from < h.until && h.limit.is_none());
        list.sort_by_key(|h| h.from);
        // Against the one reaching furthest so far, so a long holding is not missed.
        let mut furthest: Option<&Holding> = None;
        for holding in list {
            if let Some(before) = furthest
                && holding.from < before.until
            {
                violations.push(Violation {
                    kind: "overlap",
                    detail: format!(
                        "lock {name}: client {} (fence {}) held from {} to {} µs, client {} (fence {}) from {} to {} µs",
                        before.client, before.fence, before.from, before.until,
                        holding.client, holding.fence, holding.from, holding.until
                    ),
                });
            }
            if furthest.is_none_or(|f| holding.until > f.until) {
                furthest = Some(holding);
            }
        }
    }
}

/// More holders of a semaphore at once than its limit: a sweep over the holdings'
/// starts and ends (an end and a start at one instant do not meet).
fn over_limit(holdings: &[Holding], violations: &mut Vec<Violation>) {
    for (name, list) in by_name(holdings) {
        let Some(limit) = list.iter().find_map(|h| h.limit) else {
            continue;
        };
        let mut events: Vec<(u64, bool, &Holding)> = Vec::new();
        for holding in list.iter().filter(|h| h.from < h.until) {
            events.push((holding.from, true, holding));
            events.push((holding.until, false, holding));
        }
        // Ends (false) before starts (true) at the same instant.
        events.sort_by_key(|(at, start, _)| (*at, *start));
        let mut held: Vec<&Holding> = Vec::new();
        for (_, start, holding) in events {
            if !start {
                held.retain(|h| !std::ptr::eq(*h, holding));
                continue;
            }
            held.push(holding);
            if held.len() > limit as usize {
                let who: Vec<String> = held
                    .iter()
                    .map(|h| {
                        format!(
                            "client {} (fence {}) {}..{} µs",
                            h.client, h.fence, h.from, h.until
                        )
                    })
                    .collect();
                violations.push(Violation {
                    kind: "over_limit",
                    detail: format!(
                        "semaphore {name} (limit {limit}): {} holders at once: {}",
                        held.len(),
                        who.join(", ")
                    ),
                });
            }
        }
    }
}

/// Reports fences out of order; answers the names it reported.
fn fence_order(holdings: &[Holding], violations: &mut Vec<Violation>) -> BTreeSet<String> {
    let mut reported = BTreeSet::new();
    for (name, mut list) in by_name(holdings) {
        list.sort_by_key(|h| h.from);
        let mut seen: BTreeMap<u64, &Holding> = BTreeMap::new();
        for holding in &list {
            if let Some(twin) = seen.insert(holding.fence, holding) {
                reported.insert(name.to_owned());
                violations.push(Violation {
                    kind: "fence_order",
                    detail: format!(
                        "lock {name}: fence {} granted to client {} and to client {}",
                        holding.fence, twin.client, holding.client
                    ),
                });
            }
        }
        // Every grant answered before this one was asked for has a smaller fence.
        let mut answered = list.clone();
        answered.sort_by_key(|h| h.from);
        let mut asked = list.clone();
        asked.sort_by_key(|h| h.asked);
        let mut highest: Option<&Holding> = None;
        let mut next = 0;
        for holding in asked {
            while next < answered.len() && answered[next].from < holding.asked {
                if highest.is_none_or(|h| answered[next].fence > h.fence) {
                    highest = Some(answered[next]);
                }
                next += 1;
            }
            if let Some(before) = highest
                && holding.fence <= before.fence
            {
                reported.insert(name.to_owned());
                violations.push(Violation {
                    kind: "fence_order",
                    detail: format!(
                        "lock {name}: client {} got fence {} after client {} had been granted fence {}",
                        holding.client, holding.fence, before.client, before.fence
                    ),
                });
            }
        }
    }
    reported
}

/// What an election's name is in the history: its key's prefix, apart from locks.
pub const ELECTION: &str = "election/";

pub fn is_election(name: &str) -> bool {
    name.starts_with(ELECTION)
}

/// Each observer's leaders, in the order it saw them, never go back in term.
fn terms_seen(history: &[Op], violations: &mut Vec<Violation>) {
    let mut last: BTreeMap<(usize, &str), u64> = BTreeMap::new();
    let mut seen: Vec<&Op> = history.iter().filter(|op| op.kind == "observe").collect();
    seen.sort_by_key(|op| (op.client, op.start));
    for op in seen {
        let Some(term) = op.fence else { continue };
        let before = last.entry((op.client, op.name.as_str())).or_insert(0);
        if term < *before {
            violations.push(Violation {
                kind: "term_backwards",
                detail: format!(
                    "election {}: observer {} saw term {term} ({}) after term {}",
                    op.name, op.client, op.outcome, *before
                ),
            });
        }
        *before = (*before).max(term);
    }
}

/// A leader's writes are sent while it believes it leads: within its holding.
fn acted_after_lease(history: &[Op], holdings: &[Holding], violations: &mut Vec<Violation>) {
    let mut terms: BTreeMap<(&str, u64), &Holding> = BTreeMap::new();
    for holding in holdings.iter().filter(|h| is_election(&h.name)) {
        terms.insert((holding.name.as_str(), holding.fence), holding);
    }
    for op in history
        .iter()
        .filter(|op| op.kind == "downstream" && is_election(&op.name))
    {
        let term = op.fence.unwrap_or(0);
        let acted_within = terms
            .get(&(op.name.as_str(), term))
            .is_some_and(|h| h.client == op.client && h.from <= op.start && op.start < h.until);
        if !acted_within {
            violations.push(Violation {
                kind: "acted_after_lease",
                detail: format!(
                    "election {}: client {} wrote with term {term} at {} µs, outside its leadership",
                    op.name, op.client, op.start
                ),
            });
        }
    }
}

fn stale_writes(history: &[Op], violations: &mut Vec<Violation>) {
    let mut writes: Vec<&Op> = history.iter().filter(|op| op.kind == "stored").collect();
    writes.sort_by_key(|op| op.seq);
    let mut highest: BTreeMap<&str, u64> = BTreeMap::new();
    for op in writes {
        let fence = op.fence.unwrap_or(0);
        let seen = highest.entry(&op.name).or_insert(0);
        if fence < *seen {
            violations.push(Violation {
                kind: "stale_write_accepted",
                detail: format!(
                    "lock {}: the downstream store holds fence {fence} from client {} ({}) written after fence {}",
                    op.name, op.client, op.outcome, *seen
                ),
            });
        }
        *seen = (*seen).max(fence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        client: usize,
        kind: &'static str,
        fence: u64,
        start: u64,
        end: u64,
        outcome: &str,
    ) -> Op {
        Op {
            client,
            kind: kind.into(),
            name: "job".into(),
            fence: Some(fence),
            start,
            end,
            outcome: outcome.into(),
            ttl_ms: 1000,
            body: Some(String::new()),
            seq: None,
            limit: None,
        }
    }

    #[test]
    fn holdings_that_meet_pass_and_holdings_that_cross_fail() {
        // Client 0 holds 10..1_000_010 µs (ttl 1 s); client 1 from 1_000_020.
        let fine = [
            op(0, "acquire", 1, 10, 20, "ok"),
            op(1, "acquire", 2, 900_000, 1_000_020, "ok"),
        ];
        assert!(check(&fine).0.is_empty(), "{:?}", check(&fine).0);
        // A heartbeat extends client 0's holding past client 1's grant.
        let mut crossed = fine.to_vec();
        crossed.push(op(0, "heartbeat", 1, 500_000, 500_100, "ok"));
        let (violations, _) = check(&crossed);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].kind, "overlap");
    }

    #[test]
    fn a_fence_that_does_not_grow_is_reported() {
        let history = [
            op(0, "acquire", 5, 0, 10, "ok"),
            op(1, "acquire", 5, 2_000_000, 2_000_010, "ok"),
        ];
        let kinds: Vec<_> = check(&history).0.iter().map(|v| v.kind).collect();
        assert!(kinds.contains(&"fence_order"), "{kinds:?}");
    }

    fn election(mut op: Op) -> Op {
        op.name = format!("{ELECTION}jobs");
        op.body = Some(format!("value of {}", op.client));
        op
    }

    #[test]
    fn leaders_checked_as_holders_and_observers_never_see_a_term_go_back() {
        // Leader 0 (term 5) 10..1_000_010 µs, leader 1 (term 9) from 1_200_000; each
        // campaign sets its own value, which is no lost update.
        let mut history = vec![
            election(op(0, "acquire", 5, 10, 20, "ok")),
            election(op(0, "downstream", 5, 30, 40, "accepted")),
            election(op(1, "acquire", 9, 1_100_000, 1_200_000, "ok")),
            election(op(1, "downstream", 9, 1_300_000, 1_300_100, "accepted")),
            election(op(7, "observe", 5, 25, 25, "elected")),
            election(op(7, "observe", 9, 1_200_100, 1_200_100, "elected")),
        ];
        assert!(check(&history).0.is_empty(), "{:?}", check(&history).0);
        // An observer that then sees the old term again,
        history.push(election(op(7, "observe", 5, 1_300_000, 1_300_000, "state")));
        // a leader that writes after its leadership ended as it counts it,
        history.push(election(op(
            0,
            "downstream",
            5,
            1_050_000,
            1_050_100,
            "refused",
        )));
        // and a second leader of one term.
        history.push(election(op(2, "acquire", 9, 3_000_000, 3_000_100, "ok")));
        let kinds: Vec<_> = check(&history).0.iter().map(|v| v.kind).collect();
        for kind in ["term_backwards", "acted_after_lease", "fence_order"] {
            assert!(kinds.contains(&kind), "{kind} not in {kinds:?}");
        }
    }

    /// The kinds of violation the checker reports in a recorded history.
    fn reported(history: &str) -> Vec<&'static str> {
        let history = parse_history(history).expect("a recorded history");
        let mut kinds: Vec<_> = check(&history).0.iter().map(|v| v.kind).collect();
        kinds.dedup();
        kinds
    }

    // Negative controls: recorded histories (`histories/`, in `history.jsonl`'s
    // format) each with one thing that must never happen, which the checker must
    // report; and one without, which it must pass.

    #[test]
    fn a_recorded_history_without_violations_passes() {
        let clean = include_str!("histories/clean.jsonl");
        assert_eq!(reported(clean), Vec::<&str>::new());
        let history = parse_history(clean).unwrap();
        assert_eq!(check(&history).1.len(), 3, "three grants");
    }

    #[test]
    fn a_recorded_overlap_is_reported() {
        let history = include_str!("histories/overlap.jsonl");
        assert_eq!(reported(history), ["overlap"]);
    }

    #[test]
    fn a_recorded_fence_that_goes_backwards_is_reported() {
        let history = include_str!("histories/fence-backwards.jsonl");
        assert_eq!(reported(history), ["fence_order"]);
    }

    #[test]
    fn a_recorded_stale_write_accepted_downstream_is_reported() {
        let history = include_str!("histories/stale-write.jsonl");
        assert_eq!(reported(history), ["stale_write_accepted"]);
    }

    #[test]
    fn stale_writes_are_judged_by_the_rows_the_store_holds_not_by_the_clients() {
        let history = include_str!("histories/stale-write.jsonl");
        let (clients, rows): (Vec<&str>, Vec<&str>) = history
            .lines()
            .partition(|line| !line.contains("\"stored\""));
        // What the clients were told alone proves nothing.
        assert!(reported(&clients.join("\n")).is_empty());
        // The same rows in the other order (the stale one first) are no violation.
        let mut swapped: Vec<String> = rows.iter().map(|row| row.to_string()).collect();
        swapped[0] = swapped[0].replace("\"seq\":7", "\"seq\":10");
        assert!(reported(&swapped.join("\n")).is_empty());
    }

    #[test]
    fn more_semaphore_holders_than_the_limit_are_reported_and_up_to_it_pass() {
        let slot = |client, fence, start, end| Op {
            limit: Some(2),
            ..op(client, "acquire", fence, start, end, "ok")
        };
        // Three holders of a limit of 2, each for 1 s: the third overlaps both.
        let three = [slot(0, 1, 0, 10), slot(1, 2, 20, 30), slot(2, 3, 40, 50)];
        let (violations, _) = check(&three);
        let kinds: Vec<_> = violations.iter().map(|v| v.kind).collect();
        assert_eq!(kinds, vec!["over_limit"], "{violations:?}");
        // The first ended before the third: two at a time.
        let two = [
            slot(0, 1, 0, 10),
            slot(1, 2, 20, 30),
            slot(2, 3, 1_000_000, 1_000_010),
        ];
        assert!(check(&two).0.is_empty());
        assert!(reported(include_str!("histories/over-limit.jsonl")).contains(&"over_limit"));
    }

    #[test]
    fn a_lock_of_a_group_held_by_another_client_meanwhile_is_reported() {
        // Client 0 holds two locks as a group until 0.7 s; client 1 takes the second
        // alone at 0.4 s. Each lock of the group is followed on its own.
        assert_eq!(
            reported(include_str!("histories/group-overlap.jsonl")),
            vec!["overlap"]
        );
    }

    #[test]
    fn a_recorded_lost_update_is_reported() {
        let history = include_str!("histories/lost-update.jsonl");
        assert_eq!(reported(history), ["not_linearizable"]);
    }

    #[test]
    fn a_heartbeat_update_or_release_of_a_superseded_fence_answered_ok_is_reported() {
        // Fence 2 was granted before client 0's heartbeat of fence 1 was sent.
        let heartbeat = include_str!("histories/superseded-write.jsonl");
        assert_eq!(reported(heartbeat), ["not_linearizable"]);
        let as_update = heartbeat.replacen(
            r#""kind":"heartbeat","name":"torture:fast-0","fence":1,"start":1200000,"end":1201000,"outcome":"ok","ttl_ms":1000,"body":null"#,
            r#""kind":"update","name":"torture:fast-0","fence":1,"start":1200000,"end":1201000,"outcome":"ok","ttl_ms":1000,"body":"c0-f1-1""#,
            1,
        );
        let as_release = heartbeat.replacen(r#""kind":"heartbeat""#, r#""kind":"release""#, 1);
        for history in [&as_update, &as_release] {
            assert_ne!(history, heartbeat);
            assert_eq!(reported(history), ["not_linearizable"], "{history}");
        }
        // Answered "lost", as the server does, it is fine.
        let refused = heartbeat.replacen(
            r#""start":1200000,"end":1201000,"outcome":"ok""#,
            r#""start":1200000,"end":1201000,"outcome":"lost""#,
            1,
        );
        assert_eq!(reported(&refused), Vec::<&str>::new());
    }

    #[test]
    fn an_update_answered_ok_overlapping_the_next_grant_must_be_seen_by_it() {
        // The update holds fence 1, so it came before fence 2 was granted; the grant
        // saw the body from before it.
        let history = include_str!("histories/update-before-grant.jsonl");
        assert_eq!(reported(history), ["not_linearizable"]);
        let seen = history.replacen(r#""fence":2,"start":1000000,"end":1100000,"outcome":"ok","ttl_ms":1000,"body":"""#, r#""fence":2,"start":1000000,"end":1100000,"outcome":"ok","ttl_ms":1000,"body":"c0-f1-1""#, 1);
        assert_ne!(seen, history);
        assert_eq!(reported(&seen), Vec::<&str>::new(), "the grant that saw it");
    }

    #[test]
    fn a_body_only_an_update_that_could_no_longer_apply_wrote_is_reported() {
        // The unanswered update of fence 1 was sent after fence 2 was granted.
        let history = include_str!("histories/body-from-dead-update.jsonl");
        assert_eq!(reported(history), ["not_linearizable"]);
    }

    #[test]
    fn unanswered_updates_that_land_after_a_confirmed_one_pass() {
        // Two updates answered 503, then one answered ok; the first 503 write lands
        // last, before the release, and the next holder reads it.
        let history = include_str!("histories/late-unanswered-writes.jsonl");
        assert_eq!(reported(history), Vec::<&str>::new());
        // But not after the release: a body written after it is from nowhere.
        let after_release = history.replacen(
            r#""start":100000,"end":150000"#,
            r#""start":450000,"end":500000"#,
            1,
        );
        assert_eq!(reported(&after_release), ["not_linearizable"]);
    }

    #[test]
    fn a_history_that_is_not_one_says_which_line() {
        let err = parse_history("{\"client\": 0}\n").unwrap_err();
        assert!(err.starts_with("line 1:"), "{err}");
    }
}

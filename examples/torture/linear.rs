//! The register check: each lock's fence and body as what they are, a counter and a
//! register, checked for linearizability (Wing and Gong's search, with Lowe's
//! memoization of the states already explored), one lock name at a time.
//!
//! The model of one lock: the last fence issued, the current holding (its fence, or
//! one unknown after an acquire that was never answered), whether it was released,
//! and the body. An acquire answered `ok` takes a fence above every one issued and
//! sees the body; a heartbeat or update answered `ok` needs its fence to be the
//! current holding, not released; a release answered `ok` needs its fence current.
//! An update without an answer (503, no connection) may take effect at any later
//! time, or never: its write may still be on its way to DynamoDB. Refusals are left
//! out, and so are the other operations without an answer: an acquire or a release
//! that took effect could only refuse what comes after it (every condition of the
//! model asks for a current holding or a greater fence), so no order needs one, and
//! with them the search would try every subset of them. Semaphores are left out too;
//! the over-limit and fence checks follow their slots.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};

use crate::check::Violation;
use crate::workload::Op;

/// The most search steps one lock name may take; past it the name is reported as
/// unchecked rather than hold up the run.
const MAX_STEPS: usize = 5_000_000;

/// What an operation does to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// Granted `fence`, seeing `body`.
    Grant {
        fence: u64,
        body: String,
    },
    Heartbeat {
        fence: u64,
    },
    Update {
        fence: u64,
        body: String,
    },
    Release {
        fence: u64,
    },
}

/// One operation of the model, from the history.
#[derive(Debug, Clone)]
struct Call {
    action: Action,
    start: u64,
    /// `None`: never answered, so it may take effect at any time after `start`, or never.
    end: Option<u64>,
    /// Its line in the history, to name it.
    op: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct State {
    /// The fence of the last grant, which holds the lock; 0 before the first.
    current: u64,
    released: bool,
    body: String,
}

impl State {
    fn step(&self, action: &Action) -> Option<State> {
        let holds = |fence: u64| self.current == fence;
        let mut next = self.clone();
        match action {
            Action::Grant { fence, body } => {
                if *fence <= self.current || *body != self.body {
                    return None;
                }
                next.current = *fence;
                next.released = false;
            }
            Action::Heartbeat { fence } => {
                if !holds(*fence) || self.released {
                    return None;
                }
            }
            Action::Update { fence, body } => {
                if !holds(*fence) || self.released {
                    return None;
                }
                next.body = body.clone();
            }
            Action::Release { fence } => {
                if !holds(*fence) {
                    return None;
                }
                next.released = true;
            }
        }
        Some(next)
    }
}

/// Outcomes after which the operation may still have taken effect.
fn unanswered(outcome: &str) -> bool {
    matches!(outcome, "unavailable" | "unreachable" | "unexpected")
}

/// The model's operations of `ops` (one lock's), in the order they were sent.
fn calls(history: &[Op], ops: &[usize]) -> Vec<Call> {
    let mut calls = Vec::new();
    for &at in ops {
        let op = &history[at];
        let answered = op.outcome == "ok";
        let maybe = unanswered(&op.outcome);
        let fence = op.fence.unwrap_or(0);
        let action = match (op.kind.as_str(), answered, maybe) {
            ("acquire", true, _) => Action::Grant {
                fence,
                body: op.body.clone().unwrap_or_default(),
            },
            ("heartbeat", true, _) => Action::Heartbeat { fence },
            ("update", true, _) | ("update", false, true) => Action::Update {
                fence,
                body: op.body.clone().unwrap_or_default(),
            },
            ("release", true, _) => Action::Release { fence },
            _ => continue,
        };
        calls.push(Call {
            action,
            start: op.start,
            end: answered.then_some(op.end),
            op: at,
        });
    }
    calls.sort_by_key(|call| (call.start, call.end.unwrap_or(u64::MAX)));
    calls
}

/// Why a lock's history is not linearizable: the answered operation the longest
/// explained prefix could not be extended by, and the model there.
#[derive(Debug)]
struct Stuck {
    op: usize,
    explained: usize,
    answered: usize,
    state: State,
}

/// Searches for an order of `calls` that respects real time (an operation answered
/// before another was sent comes first) and the model; operations without an
/// answer may be left out. `Err` says where the furthest attempt stopped.
fn linearize(calls: &[Call]) -> Result<(), Option<Stuck>> {
    let answered = calls.iter().filter(|c| c.end.is_some()).count();
    // Answered operations not yet placed, by when they were answered.
    let mut open: BTreeSet<(u64, usize)> = calls
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.end.map(|end| (end, i)))
        .collect();
    // Not placed yet, by when they were sent: the open ones and those without an answer.
    let mut unplaced: BTreeSet<usize> = (0..calls.len()).collect();
    let mut state = State {
        current: 0,
        released: false,
        body: String::new(),
    };
    // Zobrist hashing: the set placed is the XOR of its members' random words.
    let hashers = (RandomState::new(), RandomState::new());
    let words: Vec<(u64, u64)> = (0..calls.len())
        .map(|i| (hashers.0.hash_one(i), hashers.1.hash_one(i)))
        .collect();
    let mut placed_hash = (0u64, 0u64);
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    // The operations placed, each with the state before it.
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut from = 0;
    let mut best: Option<Stuck> = None;
    for _ in 0..MAX_STEPS {
        let Some(&(deadline, first_open)) = open.first() else {
            return Ok(());
        };
        // The next call that may come now: sent before the first open one was
        // answered, not placed, allowed by the model, and to a state not seen yet.
        let mut next = None;
        for &i in unplaced.range(from..) {
            if calls[i].start > deadline {
                break;
            }
            let Some(after) = state.step(&calls[i].action) else {
                continue;
            };
            let with = (placed_hash.0 ^ words[i].0, placed_hash.1 ^ words[i].1);
            if seen.insert(fingerprint(&hashers, with, &after)) {
                next = Some((i, after));
                break;
            }
        }
        match next {
            Some((i, after)) => {
                unplaced.remove(&i);
                placed_hash = (placed_hash.0 ^ words[i].0, placed_hash.1 ^ words[i].1);
                if let Some(end) = calls[i].end {
                    open.remove(&(end, i));
                }
                stack.push((i, std::mem::replace(&mut state, after)));
                from = 0;
            }
            None => {
                let explained = answered - open.len();
                if best.as_ref().is_none_or(|b| explained > b.explained) {
                    best = Some(Stuck {
                        op: calls[first_open].op,
                        explained,
                        answered,
                        state: state.clone(),
                    });
                }
                let Some((i, before)) = stack.pop() else {
                    return Err(best);
                };
                unplaced.insert(i);
                placed_hash = (placed_hash.0 ^ words[i].0, placed_hash.1 ^ words[i].1);
                if let Some(end) = calls[i].end {
                    open.insert((end, i));
                }
                state = before;
                from = i + 1;
            }
        }
    }
    Err(None)
}

/// The set of operations placed (its Zobrist words) and the state, as two
/// independent 64-bit hashes.
fn fingerprint(
    hashers: &(RandomState, RandomState),
    placed: (u64, u64),
    state: &State,
) -> (u64, u64) {
    let hash = |builder: &RandomState, word: u64| {
        let mut hasher = builder.build_hasher();
        word.hash(&mut hasher);
        state.hash(&mut hasher);
        hasher.finish()
    };
    (hash(&hashers.0, placed.0), hash(&hashers.1, placed.1))
}

/// The locks of `history` whose fence and body no order of their operations
/// explains, leaving out `skip` (names already reported for their fences).
pub fn registers(history: &[Op], skip: &BTreeSet<String>) -> Vec<Violation> {
    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut semaphores: BTreeSet<&str> = BTreeSet::new();
    for (at, op) in history.iter().enumerate() {
        if op.limit.is_some() {
            semaphores.insert(&op.name);
        }
        by_name.entry(&op.name).or_default().push(at);
    }
    let mut violations = Vec::new();
    for (name, ops) in by_name {
        if semaphores.contains(name) || skip.contains(name) {
            continue;
        }
        match linearize(&calls(history, &ops)) {
            Ok(()) => {}
            Err(Some(stuck)) => violations.push(Violation {
                kind: "not_linearizable",
                detail: describe(name, &history[stuck.op], &stuck),
            }),
            Err(None) => violations.push(Violation {
                kind: "unchecked",
                detail: format!(
                    "lock {name}: the search for an order of its {} operations took more than {MAX_STEPS} steps",
                    ops.len()
                ),
            }),
        }
    }
    violations
}

fn describe(name: &str, op: &Op, stuck: &Stuck) -> String {
    let current = match stuck.state.current {
        0 => "no holder yet".to_owned(),
        fence => format!("fence {fence}"),
    };
    let body = op
        .body
        .as_deref()
        .map(|body| format!(", body {body:?}"))
        .unwrap_or_default();
    format!(
        "lock {name}: no order of its operations explains client {}'s {} of fence {} answered {} ({}..{} µs{body}); \
         the furthest order explains {} of {} answered operations and leaves the lock at {current}{}, body {:?} \
         (a lost update, a write of a superseded holder accepted, or a body no write could have left)",
        op.client,
        op.kind,
        op.fence.unwrap_or(0),
        op.outcome,
        op.start,
        op.end,
        stuck.explained,
        stuck.answered,
        if stuck.state.released {
            " (released)"
        } else {
            ""
        },
        stuck.state.body
    )
}

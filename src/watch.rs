//! Watching locks as they change, for long-polls and event streams. One task per
//! watched name on this server reads the lock's record and turns each new state into
//! events; every watcher of the name on this server shares that task, so a hundred
//! watchers cost DynamoDB what one does:
//!
//! - a write through this server whose answer holds the record (acquire, heartbeat,
//!   update, release, of locks and elections) hands the record to the task, which
//!   tells exactly that change, however quickly writes follow one another; any other
//!   write through this server (a group's, the sweeper's) nudges the task, which reads
//!   the record at once;
//! - a write through another server is seen by reading the record every
//!   [`WatchSettings::interval`] (strongly consistent `GetItem`s: the cost is per
//!   watched name and server, never per watcher);
//! - a lease that runs out is an event though nothing is written: the task reads
//!   the record again at the moment another holder may take the lock, and reports
//!   `expired` if nobody renewed it meanwhile;
//! - the task keeps the last [`HISTORY`] events, so that a stream reconnecting with
//!   `Last-Event-ID` gets what it missed; what the task itself did not see (several
//!   writes between two reads) is reported as a `gap` with the number of writes
//!   missed, never hidden;
//! - the task ends [`WatchSettings::linger`] after its last watcher left, and at
//!   shutdown ([`Watches::close`]), which ends every stream.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;

use crate::domain::{LeasePolicy, Lock, LockName, Millis};
use crate::store::DynamoStore;

/// How many events of a name are kept for streams that reconnect.
pub const HISTORY: usize = 256;

/// How watches read DynamoDB.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// How often a watched name's record is read, for changes made through other
    /// servers (`FENCELOCK_WATCH_INTERVAL`).
    pub interval: Duration,
    /// How long a name is still followed after its last watcher left, so that a
    /// watcher that reconnects finds its history.
    pub linger: Duration,
    /// How often a followed page of a listing is read, for changes made through
    /// other servers (`FENCELOCK_WATCH_LIST_INTERVAL`).
    pub list_interval: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            linger: Duration::from_secs(10),
            list_interval: Duration::from_secs(2),
        }
    }
}

/// What happened to a lock, as a stream tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The state when the stream began, or after a gap.
    State,
    Acquired,
    Renewed,
    Updated,
    Released,
    /// A waiting lock group reserved the lock, or its reservation was cleared.
    Reserved,
    /// The lease ran out unreleased and another holder may take the lock.
    Expired,
    /// The record was deleted (by the sweeper, or by hand).
    Deleted,
    /// Changes this server did not see: `missed` writes between two reads, or events
    /// a slow stream fell behind on, or a reconnect from an event no longer kept.
    Gap,
}

impl EventKind {
    /// The event's name in a stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Acquired => "acquired",
            Self::Renewed => "renewed",
            Self::Updated => "updated",
            Self::Released => "released",
            Self::Reserved => "reserved",
            Self::Expired => "expired",
            Self::Deleted => "deleted",
            Self::Gap => "gap",
        }
    }
}

/// One change of a lock.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    /// The lock's view version after the change (0 without a record); `None` for a
    /// gap, which leads to no state of its own.
    pub version: Option<u64>,
    /// The record after the change; `None` without one.
    pub lock: Option<Lock>,
    /// For a gap: how many changes were missed, where known.
    pub missed: Option<u64>,
    /// When the change was seen (ms since the epoch, the store's clock).
    pub at: Millis,
}

impl Event {
    /// The state `seen` shows, as the first event of a stream.
    pub fn state(seen: &Seen) -> Self {
        Self {
            kind: EventKind::State,
            version: Some(seen.version),
            lock: seen.lock.clone(),
            missed: None,
            at: seen.at,
        }
    }

    /// Changes not seen: `missed` of them, where known.
    pub fn gap(missed: Option<u64>) -> Self {
        Self {
            kind: EventKind::Gap,
            version: None,
            lock: None,
            missed,
            at: 0,
        }
    }
}

/// The state of a watched name as last read.
#[derive(Debug, Clone)]
pub struct Seen {
    pub lock: Option<Lock>,
    /// Its view version when read (0 without a record).
    pub version: u64,
    /// When it was read.
    pub at: Millis,
}

/// What a new watcher of a name starts from.
pub struct Subscription {
    /// The state now, once the name has been read.
    pub latest: watch::Receiver<Option<Seen>>,
    /// The events from now on.
    pub events: broadcast::Receiver<Event>,
    /// The kept events after the version the watcher asked for, or `None` when they
    /// are not all kept (a gap).
    pub missed: Option<Vec<Event>>,
}

/// The watches of one server.
#[derive(Clone)]
pub struct Watches {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: DynamoStore,
    policy: LeasePolicy,
    settings: WatchSettings,
    names: Mutex<HashMap<LockName, Arc<Watched>>>,
    closed: watch::Sender<bool>,
}

/// One watched name: its task's outputs.
struct Watched {
    latest: watch::Sender<Option<Seen>>,
    events: broadcast::Sender<Event>,
    /// The last events, oldest first; held while an event is sent, so that a new
    /// subscriber's replay and its live events neither overlap nor leave a hole.
    history: Mutex<VecDeque<Event>>,
    /// Records this server's writes left, not yet told.
    written: Mutex<Vec<Lock>>,
    nudge: Notify,
}

impl Watched {
    fn watchers(&self) -> usize {
        self.latest.receiver_count() + self.events.receiver_count()
    }
}

impl Watches {
    /// The watches of a server reading `store`.
    pub fn new(store: DynamoStore, settings: WatchSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                policy: store.policy(),
                store,
                settings,
                names: Mutex::default(),
                closed: watch::Sender::new(false),
            }),
        }
    }

    /// What a store calls after each write it applied: the name's task, if the name
    /// is watched, reads it at once. Holds the watches weakly (the store they read
    /// holds the hook).
    pub fn hook(&self) -> crate::store::WriteHook {
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        Arc::new(move |name: &LockName, written: Option<&Lock>| {
            if let Some(inner) = inner.upgrade() {
                Watches { inner }.told(name, written);
            }
        })
    }

    /// Tells the task of `name`, if it is watched, that its record changed.
    pub fn nudge(&self, name: &LockName) {
        self.told(name, None);
    }

    /// Tells the task of `name`, if it is watched, that its record changed, into
    /// `written` where that is known.
    fn told(&self, name: &LockName, written: Option<&Lock>) {
        let names = self
            .inner
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(watched) = names.get(name) {
            if let Some(lock) = written {
                watched
                    .written
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(lock.clone());
            }
            watched.nudge.notify_one();
        }
    }

    /// Follows `name` (starting its task if nobody watched it), and answers what a
    /// watcher that last saw `after` (a view version) missed.
    pub fn subscribe(&self, name: &LockName, after: Option<u64>) -> Subscription {
        // Under the names' lock: the task cannot see no watchers and end meanwhile.
        let mut names = self
            .inner
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let watched = names
            .entry(name.clone())
            .or_insert_with(|| self.start(name.clone()))
            .clone();
        let history = watched
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let events = watched.events.subscribe();
        let latest = watched.latest.subscribe();
        let missed = after.and_then(|after| missed_since(&history, after));
        drop(history);
        drop(names);
        Subscription {
            latest,
            events,
            missed,
        }
    }

    /// Stops every task and ends every stream.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    fn start(&self, name: LockName) -> Arc<Watched> {
        let watched = Arc::new(Watched {
            latest: watch::Sender::new(None),
            events: broadcast::Sender::new(HISTORY),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            written: Mutex::default(),
            nudge: Notify::new(),
        });
        tokio::spawn(follow(self.inner.clone(), name, watched.clone()));
        watched
    }
}

impl Inner {
    /// The state of a name whose record is `lock`, at `now`.
    fn seen(&self, lock: Option<Lock>, now: Millis) -> Seen {
        let version = lock.as_ref().map_or(0, |lock| {
            lock.view_version(self.policy.lapsed_at(lock), now)
        });
        Seen {
            lock,
            version,
            at: now,
        }
    }
}

/// The kept events after view version `after`, if the history reaches back to it.
fn missed_since(history: &VecDeque<Event>, after: u64) -> Option<Vec<Event>> {
    let position = history.iter().position(|e| e.version == Some(after))?;
    // A gap after `after` is a hole the watcher cannot fill either.
    let rest: Vec<Event> = history.iter().skip(position + 1).cloned().collect();
    Some(rest)
}

/// The task of one watched name.
async fn follow(inner: Arc<Inner>, name: LockName, watched: Arc<Watched>) {
    let mut closed = inner.closed.subscribe();
    let mut seen: Option<Seen> = None;
    let mut alone_since: Option<Instant> = None;
    loop {
        if *closed.borrow() {
            break;
        }
        // This server's writes first, in the order they were made: each is one
        // change. One older than what was seen already (answers can arrive out of
        // order) is left out: the changes it was part of were told, as a gap.
        let mut written = std::mem::take(
            &mut *watched
                .written
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        written.sort_by_key(|lock| lock.version);
        for lock in written {
            if seen
                .as_ref()
                .and_then(|s| s.lock.as_ref())
                .is_some_and(|s| s.version >= lock.version)
            {
                continue;
            }
            let next = inner.seen(Some(lock), inner.store.clock().now_millis());
            publish(&watched, changes(seen.as_ref(), &next), &next);
            seen = Some(next);
        }
        let now = inner.store.clock().now_millis();
        match inner.store.get(&name).await {
            // A read that ended before a write this server told of since: what it
            // saw was told already.
            Ok(Some(lock))
                if seen
                    .as_ref()
                    .and_then(|s| s.lock.as_ref())
                    .is_some_and(|s| s.version > lock.version) => {}
            Ok(lock) => {
                let next = inner.seen(lock, inner.store.clock().now_millis().max(now));
                let events = changes(seen.as_ref(), &next);
                publish(&watched, events, &next);
                seen = Some(next);
            }
            Err(err) => tracing::debug!(lock = %name, %err, "a watched lock could not be read"),
        }
        // The next read: after the interval, when a lease lapses, or at a nudge.
        let now = inner.store.clock().now_millis();
        let mut wait = inner.settings.interval;
        if let Some(at) = seen.as_ref().and_then(|s| lapses_at(&inner.policy, s, now)) {
            wait = wait.min(Duration::from_millis((at - now).max(0) as u64));
        }
        // Nobody watching: keep following for the linger, then stop.
        {
            let mut names = inner.names.lock().unwrap_or_else(PoisonError::into_inner);
            if watched.watchers() == 0 {
                let since = *alone_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= inner.settings.linger {
                    names.remove(&name);
                    return;
                }
            } else {
                alone_since = None;
            }
        }
        tokio::select! {
            () = watched.nudge.notified() => {}
            () = tokio::time::sleep(wait) => {}
            _ = closed.changed() => {}
        }
    }
    inner
        .names
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&name);
}

/// When the lease `seen` shows runs out and another holder may take the lock, if
/// that is still to come.
fn lapses_at(policy: &LeasePolicy, seen: &Seen, now: Millis) -> Option<Millis> {
    let lock = seen.lock.as_ref()?;
    policy
        .lapsed_at(lock)
        .filter(|at| *at > now || seen.version.is_multiple_of(2))
}

fn publish(watched: &Watched, events: Vec<Event>, next: &Seen) {
    let mut history = watched
        .history
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for event in events {
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // No stream listening is no error.
        let _ = watched.events.send(event);
    }
    watched.latest.send_replace(Some(next.clone()));
}

/// The events that lead from `before` (nothing read yet: `None`) to `after`.
pub fn changes(before: Option<&Seen>, after: &Seen) -> Vec<Event> {
    let event = |kind: EventKind, version: u64| Event {
        kind,
        version: Some(version),
        lock: after.lock.clone(),
        missed: None,
        at: after.at,
    };
    let Some(before) = before else {
        // The first read: the state the first watcher starts from.
        return vec![event(EventKind::State, after.version)];
    };
    if before.version == after.version && before.lock.is_some() == after.lock.is_some() {
        return Vec::new();
    }
    let (Some(old), Some(new)) = (&before.lock, &after.lock) else {
        return match after.lock {
            None => vec![event(EventKind::Deleted, 0)],
            // A record where there was none: its first write, or more.
            Some(ref new) if new.version == 1 => {
                vec![written(None, new, after.version, &event)]
            }
            Some(ref new) => vec![
                Event::gap(Some(new.version - 1)),
                event(EventKind::State, after.version),
            ],
        };
    };
    if new.version < old.version {
        // Deleted and written anew between two reads.
        return vec![Event::gap(None), event(EventKind::State, after.version)];
    }
    let writes = new.version - old.version;
    let mut events = Vec::new();
    match writes {
        0 => {}
        1 => events.push(written(Some(old), new, new.version * 2, &event)),
        _ => {
            events.push(Event::gap(Some(writes - 1)));
            events.push(event(EventKind::State, new.version * 2));
        }
    }
    if !after.version.is_multiple_of(2) {
        events.push(event(EventKind::Expired, after.version));
    }
    events
}

/// The event of the one write that turned `old` into `new`.
fn written(
    old: Option<&Lock>,
    new: &Lock,
    version: u64,
    event: &impl Fn(EventKind, u64) -> Event,
) -> Event {
    let kind = match old {
        _ if new.is_released() && old.is_none_or(|old| !old.is_released()) => EventKind::Released,
        None => EventKind::Acquired,
        Some(old) if old.fence != new.fence => EventKind::Acquired,
        Some(old) if old.body != new.body => EventKind::Updated,
        Some(old) if old.reservation != new.reservation => EventKind::Reserved,
        Some(_) => EventKind::Renewed,
    };
    event(kind, version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Nonce;

    fn lock(version: u64, fence: u64, expires_at: Millis, body: &str) -> Lock {
        Lock {
            name: LockName::parse("job").unwrap(),
            fence,
            nonce: Nonce::parse("n").unwrap(),
            token: None,
            owner: None,
            metadata: None,
            acquired_at: 0,
            heartbeat_at: 0,
            expires_at,
            ttl: Duration::from_secs(10),
            body: body.into(),
            body_id: None,
            reservation: None,
            version,
            marks: Default::default(),
        }
    }

    fn seen(lock: Option<Lock>, lapsed: bool) -> Seen {
        let version = lock
            .as_ref()
            .map_or(0, |l| l.version * 2 + u64::from(lapsed));
        Seen {
            lock,
            version,
            at: 0,
        }
    }

    fn kinds(events: &[Event]) -> Vec<(&'static str, Option<u64>)> {
        events
            .iter()
            .map(|e| (e.kind.as_str(), e.version))
            .collect()
    }

    #[test]
    fn each_write_is_named_by_what_it_changed() {
        let held = seen(Some(lock(1, 7, 10_000, "")), false);
        let renewed = seen(Some(lock(2, 7, 20_000, "")), false);
        let updated = seen(Some(lock(3, 7, 20_000, "step 2")), false);
        let released = seen(Some(lock(4, 7, 0, "step 2")), false);
        let taken = seen(Some(lock(5, 8, 30_000, "step 2")), false);
        assert_eq!(kinds(&changes(None, &held)), [("state", Some(2))]);
        assert_eq!(
            kinds(&changes(Some(&held), &renewed)),
            [("renewed", Some(4))]
        );
        assert_eq!(
            kinds(&changes(Some(&renewed), &updated)),
            [("updated", Some(6))]
        );
        assert_eq!(
            kinds(&changes(Some(&updated), &released)),
            [("released", Some(8))]
        );
        assert_eq!(
            kinds(&changes(Some(&released), &taken)),
            [("acquired", Some(10))]
        );
        assert!(changes(Some(&taken), &taken).is_empty());
    }

    #[test]
    fn a_lapsed_lease_is_an_event_without_a_write() {
        let held = seen(Some(lock(1, 7, 10_000, "")), false);
        let lapsed = seen(Some(lock(1, 7, 10_000, "")), true);
        assert_eq!(
            kinds(&changes(Some(&held), &lapsed)),
            [("expired", Some(3))]
        );
        // Taken over after it lapsed: the next write's version is above it.
        let taken = seen(Some(lock(2, 8, 30_000, "")), false);
        assert_eq!(
            kinds(&changes(Some(&lapsed), &taken)),
            [("acquired", Some(4))]
        );
    }

    #[test]
    fn writes_between_two_reads_are_a_gap_never_hidden() {
        let held = seen(Some(lock(1, 7, 10_000, "")), false);
        let later = seen(Some(lock(4, 9, 30_000, "x")), false);
        let events = changes(Some(&held), &later);
        assert_eq!(kinds(&events), [("gap", None), ("state", Some(8))]);
        assert_eq!(events[0].missed, Some(2));
        let gone = seen(None, false);
        assert_eq!(kinds(&changes(Some(&later), &gone)), [("deleted", Some(0))]);
        // Deleted and made anew between two reads.
        let anew = seen(Some(lock(1, 20, 30_000, "")), false);
        let old = seen(Some(lock(6, 9, 30_000, "")), false);
        assert_eq!(
            kinds(&changes(Some(&old), &anew)),
            [("gap", None), ("state", Some(2))]
        );
    }

    #[test]
    fn a_reconnect_gets_the_kept_events_after_its_last_or_a_gap() {
        let event = |version| Event {
            kind: EventKind::Renewed,
            version: Some(version),
            lock: None,
            missed: None,
            at: 0,
        };
        let history: VecDeque<Event> = [2, 4, 6, 8].map(event).into();
        let after_4: Vec<_> = missed_since(&history, 4).unwrap();
        assert_eq!(
            after_4.iter().map(|e| e.version).collect::<Vec<_>>(),
            [Some(6), Some(8)]
        );
        assert!(missed_since(&history, 8).unwrap().is_empty());
        assert!(missed_since(&history, 1).is_none(), "not kept: a gap");
    }
}

//! Watching semaphores (`GET /semaphores/{name}/events`). One task per watched
//! semaphore and server, shared by every watcher of it, reads the semaphore's record
//! at once after a write through this server, every
//! [`WatchSettings::interval`](crate::watch::WatchSettings) for changes made through
//! other servers, and at the moment a slot's lease lapses; each watcher's stream turns
//! consecutive reads into events ([`changes`]). The task ends
//! [`WatchSettings::linger`] after its last watcher left, and at shutdown.
//!
//! A semaphore keeps no history of events: a watcher that reconnects from an event
//! that is not the last is told a gap, then the state.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::domain::{LeasePolicy, Lock, LockName, Millis, Semaphore};
use crate::follow::{Followed, Followers};
use crate::store::DynamoStore;
use crate::watch::WatchSettings;

/// A semaphore as last read: `None` without a record.
#[derive(Debug, Clone)]
pub struct Read {
    pub semaphore: Option<Semaphore>,
    /// Its view version when read (0 without a record).
    pub version: u64,
    pub at: Millis,
}

/// What happened to a semaphore between two reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The state when the stream began, or after a gap.
    State,
    /// A slot was taken, under this fence.
    Acquired(u64),
    Renewed(u64),
    Released(u64),
    /// A slot's lease ran out unreleased and another holder may take it.
    Expired(u64),
    /// The record was deleted.
    Deleted,
    /// Writes this server did not see one by one.
    Gap(u64),
}

impl Change {
    /// The event's name in a stream.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::State => "state",
            Self::Acquired(_) => "acquired",
            Self::Renewed(_) => "renewed",
            Self::Released(_) => "released",
            Self::Expired(_) => "expired",
            Self::Deleted => "deleted",
            Self::Gap(_) => "gap",
        }
    }

    /// The fence of the slot it is about, if one.
    pub fn fence(&self) -> Option<u64> {
        match self {
            Self::Acquired(f) | Self::Renewed(f) | Self::Released(f) | Self::Expired(f) => Some(*f),
            Self::State | Self::Deleted | Self::Gap(_) => None,
        }
    }
}

/// The changes that lead from `before` (nothing read yet: `None`) to `after`, the
/// leases lapsing at their end plus `grace`. Writes that the slots do not explain
/// one by one are a gap, then the state.
pub fn changes(before: Option<&Read>, after: &Read, grace: i64) -> Vec<Change> {
    let Some(before) = before else {
        return vec![Change::State];
    };
    let (old, new) = match (&before.semaphore, &after.semaphore) {
        (_, None) if before.semaphore.is_some() => return vec![Change::Deleted],
        (_, None) => return Vec::new(),
        (None, Some(new)) if new.version <= 1 => {
            return new
                .slots
                .iter()
                .map(|s| Change::Acquired(s.fence))
                .collect();
        }
        (None, Some(_)) => return vec![Change::Gap(0), Change::State],
        (Some(old), Some(new)) => (old, new),
    };
    if new.version < old.version {
        return vec![Change::Gap(0), Change::State];
    }
    let mut written = Vec::new();
    for slot in &new.slots {
        match old.slot(slot.fence) {
            None if slot.fence > old.fence => written.push(Change::Acquired(slot.fence)),
            None => {}
            Some(was) if slot.is_released() && !was.is_released() => {
                written.push(Change::Released(slot.fence));
            }
            Some(was) if slot.heartbeat_at != was.heartbeat_at => {
                written.push(Change::Renewed(slot.fence));
            }
            Some(_) => {}
        }
    }
    let writes = new.version - old.version;
    let mut told = if writes == written.len() as u64 {
        written
    } else {
        vec![
            Change::Gap(writes.saturating_sub(written.len() as u64).max(1)),
            Change::State,
        ]
    };
    for slot in new.slots.iter().filter(|slot| !slot.is_released()) {
        let lapses = slot.expires_at.saturating_add(grace);
        if lapses <= after.at && lapses > before.at {
            told.push(Change::Expired(slot.fence));
        }
    }
    told
}

/// The watched semaphores of one server.
#[derive(Clone)]
pub struct SemaphoreWatches {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SemaphoreWatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemaphoreWatches").finish_non_exhaustive()
    }
}

struct Inner {
    store: DynamoStore,
    policy: LeasePolicy,
    settings: WatchSettings,
    names: Followers<LockName, Read>,
}

impl SemaphoreWatches {
    pub fn new(store: DynamoStore, settings: WatchSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                policy: store.policy(),
                store,
                settings,
                names: Followers::new(settings.linger),
            }),
        }
    }

    /// What a store calls after each write it applied: a watched semaphore of the
    /// name is read at once. Holds the watches weakly.
    pub fn hook(&self) -> crate::store::WriteHook {
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        Arc::new(move |name: &LockName, _: Option<&Lock>| {
            if let Some(inner) = inner.upgrade() {
                inner.names.nudge(|watched| watched == name);
            }
        })
    }

    /// Follows the semaphore `name` (starting its task if nobody watched it).
    pub fn subscribe(&self, name: &LockName) -> watch::Receiver<Option<Read>> {
        self.inner.names.subscribe(name, |followed| {
            tokio::spawn(follow(self.inner.clone(), name.clone(), followed));
        })
    }

    /// The grace after a lease's end before another holder may take its slot.
    pub fn grace(&self) -> i64 {
        self.inner.policy.takeover_grace_ms()
    }

    /// Stops every task and ends every stream.
    pub fn close(&self) {
        self.inner.names.close();
    }
}

async fn follow(inner: Arc<Inner>, name: LockName, followed: Arc<Followed<Read>>) {
    let grace = inner.policy.takeover_grace_ms();
    let mut alone_since: Option<Instant> = None;
    while !inner.names.is_closed() {
        let mut lapse = None;
        match inner.store.get_semaphore(&name).await {
            Ok(semaphore) => {
                let at = inner.store.clock().now_millis();
                lapse = semaphore.as_ref().and_then(|s| s.next_lapse(at, grace));
                let version = semaphore.as_ref().map_or(0, |s| s.view_version(at, grace));
                followed.latest.send_replace(Some(Read {
                    semaphore,
                    version,
                    at,
                }));
            }
            Err(err) => {
                tracing::debug!(semaphore = %name, %err, "a watched semaphore could not be read");
            }
        }
        let now = inner.store.clock().now_millis();
        let mut wait = inner.settings.interval;
        if let Some(at) = lapse {
            wait = wait.min(Duration::from_millis((at - now).max(0) as u64));
        }
        let goes_on = inner
            .names
            .pause(&name, &followed, &mut alone_since, wait, Instant::now())
            .await;
        if !goes_on {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{Nonce, Slot};

    fn slot(fence: u64, heartbeat_at: Millis, expires_at: Millis) -> Slot {
        Slot {
            fence,
            nonce: Nonce::parse(&format!("n{fence}")).unwrap(),
            owner: None,
            metadata: None,
            acquired_at: 0,
            heartbeat_at,
            expires_at,
            ttl: Duration::from_secs(1),
        }
    }

    fn read(version: u64, at: Millis, slots: Vec<Slot>) -> Read {
        let semaphore = Semaphore {
            name: LockName::parse("pool").unwrap(),
            limit: 3,
            fence: slots.iter().map(|s| s.fence).max().unwrap_or(0),
            slots,
            version,
        };
        Read {
            version: semaphore.view_version(at, 0),
            semaphore: Some(semaphore),
            at,
        }
    }

    #[test]
    fn each_write_is_told_by_its_slot_and_a_lapse_when_it_happens() {
        let one = read(1, 0, vec![slot(1, 0, 1000)]);
        let two = read(2, 10, vec![slot(1, 0, 1000), slot(2, 10, 5000)]);
        assert_eq!(changes(Some(&one), &two, 0), [Change::Acquired(2)]);
        let renewed = read(3, 20, vec![slot(1, 20, 2000), slot(2, 10, 5000)]);
        assert_eq!(changes(Some(&two), &renewed, 0), [Change::Renewed(1)]);
        let released = read(4, 30, vec![slot(1, 20, 2000), slot(2, 10, 0)]);
        assert_eq!(changes(Some(&renewed), &released, 0), [Change::Released(2)]);
        // Slot 1's lease ends at 2000: nothing written, and a change.
        let lapsed = read(4, 2500, released.semaphore.clone().unwrap().slots);
        assert_eq!(changes(Some(&released), &lapsed, 0), [Change::Expired(1)]);
        assert!(lapsed.version > released.version);
    }

    #[test]
    fn writes_the_slots_do_not_explain_are_a_gap() {
        let one = read(1, 0, vec![slot(1, 0, 1000)]);
        // Two heartbeats of slot 1 between two reads: one change seen, two writes.
        let later = read(3, 10, vec![slot(1, 10, 1000)]);
        assert_eq!(
            changes(Some(&one), &later, 0),
            [Change::Gap(1), Change::State]
        );
        assert_eq!(changes(None, &one, 0), [Change::State]);
        let gone = Read {
            semaphore: None,
            version: 0,
            at: 20,
        };
        assert_eq!(changes(Some(&one), &gone, 0), [Change::Deleted]);
    }
}

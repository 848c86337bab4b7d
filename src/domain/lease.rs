//! When a lease that ended may be taken over: the policy every kind of holding shares.
//!
//! A released lease is free at once. One that ended without a release stays its
//! holder's for a grace period more: the skew margin (the most the servers' clocks
//! may disagree, so that no server gives it away while another still counts it live)
//! and the lock delay (so that a holder that is merely slow has time to notice).

use std::time::Duration;

use super::{Lock, Millis, Semaphore};

/// The takeover grace of one table's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeasePolicy {
    skew_ms: i64,
    lock_delay_ms: i64,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl LeasePolicy {
    pub fn new(clock_skew: Duration, lock_delay: Duration) -> Self {
        Self {
            skew_ms: millis(clock_skew),
            lock_delay_ms: millis(lock_delay),
        }
    }

    /// The same policy with another lock delay.
    pub fn with_lock_delay(self, lock_delay: Duration) -> Self {
        Self {
            lock_delay_ms: millis(lock_delay),
            ..self
        }
    }

    /// The most the servers' clocks may differ, in milliseconds.
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms
    }

    /// How long after a lease ended without a release another holder may take over,
    /// in milliseconds: the skew margin and the lock delay.
    pub fn takeover_grace_ms(&self) -> i64 {
        self.skew_ms.saturating_add(self.lock_delay_ms)
    }

    /// A lease that ended before this, at `now`, may be taken over.
    pub fn takeover_before(&self, now: Millis) -> Millis {
        now.saturating_sub(self.takeover_grace_ms())
    }

    /// When another holder may take over from `holder`. A lock reserved by a waiting
    /// group is free for others once the reservation ends too.
    pub fn free_at(&self, holder: &Lock) -> Millis {
        let lease_over = holder.expires_at.saturating_add(self.takeover_grace_ms());
        holder
            .reservation
            .as_ref()
            .map_or(lease_over, |reservation| lease_over.max(reservation.until))
    }

    /// When `lock`'s lease, unreleased, lets another holder take it (a reservation
    /// aside): its end plus the grace. `None` for a released lock.
    pub fn lapsed_at(&self, lock: &Lock) -> Option<Millis> {
        (!lock.is_released()).then(|| lock.expires_at.saturating_add(self.takeover_grace_ms()))
    }

    /// When a slot of the full `semaphore` frees up at the latest, seen at `now`: the
    /// first lease to end, plus the grace; `now` when one is free already.
    pub fn semaphore_free_at(&self, semaphore: &Semaphore, now: Millis) -> Millis {
        semaphore
            .first_free_at(now, self.takeover_grace_ms())
            .unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{LockName, Nonce, Reservation};

    fn lock(expires_at: Millis, reservation: Option<Reservation>) -> Lock {
        Lock {
            name: LockName::parse("job").unwrap(),
            fence: 7,
            nonce: Nonce::parse("holder").unwrap(),
            token: None,
            owner: None,
            metadata: None,
            acquired_at: 0,
            heartbeat_at: 0,
            expires_at,
            ttl: Duration::from_secs(10),
            body: String::new(),
            body_id: None,
            reservation,
            version: 0,
            marks: Default::default(),
        }
    }

    #[test]
    fn the_grace_is_the_skew_margin_and_the_lock_delay() {
        let policy = LeasePolicy::new(Duration::from_millis(500), Duration::from_secs(2));
        assert_eq!(policy.skew_ms(), 500);
        assert_eq!(policy.takeover_grace_ms(), 2_500);
        assert_eq!(policy.takeover_before(10_000), 7_500);
        assert_eq!(policy.free_at(&lock(10_000, None)), 12_500);
        let shorter = policy.with_lock_delay(Duration::ZERO);
        assert_eq!(shorter.free_at(&lock(10_000, None)), 10_500);
    }

    #[test]
    fn a_reservation_that_outlasts_the_lease_keeps_the_lock_until_it_ends() {
        let policy = LeasePolicy::new(Duration::from_millis(500), Duration::ZERO);
        let reserved = |until| {
            Some(Reservation {
                by: Nonce::parse("group").unwrap(),
                until,
            })
        };
        assert_eq!(policy.free_at(&lock(10_000, reserved(20_000))), 20_000);
        assert_eq!(policy.free_at(&lock(10_000, reserved(5_000))), 10_500);
    }
}

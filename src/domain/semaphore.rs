//! `Semaphore`: a name with at most `limit` holders at once, each holding one slot
//! under a fence of its own; and the rules that decide an acquire and whether a fence
//! still holds a slot.

use std::time::Duration;

use super::{Fence, Holder, InvalidInput, LockName, Millis, Nonce};

/// The most holders a semaphore may allow. All of a semaphore's holders live in one
/// DynamoDB item (at most 400 KB), so the limit and each holder's size are bounded.
pub const MAX_LIMIT: u32 = 100;

/// The most bytes a semaphore holder's owner and metadata (as JSON text) may take
/// together, so that [`MAX_LIMIT`] holders fit in one item.
pub const MAX_SLOT_DETAILS: usize = 2048;

/// Parses a semaphore limit: a whole number from 1 to [`MAX_LIMIT`].
pub fn parse_limit(raw: &str) -> Result<u32, InvalidInput> {
    raw.parse()
        .ok()
        .map_or_else(|| Err(bad_limit(raw)), check_limit)
}

/// Checks a semaphore limit given as a number.
pub fn check_limit(limit: u32) -> Result<u32, InvalidInput> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(bad_limit(&limit.to_string()))
    }
}

fn bad_limit(raw: &str) -> InvalidInput {
    InvalidInput::new(format!(
        "limit {raw:?} is not one; expected the most holders at once, a whole number from 1 to {MAX_LIMIT}"
    ))
}

/// One holder's slot. `expires_at` is 0 once released.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub fence: Fence,
    /// The holder's nonce; a secret, never shown.
    pub nonce: Nonce,
    pub owner: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub acquired_at: Millis,
    pub heartbeat_at: Millis,
    pub expires_at: Millis,
    pub ttl: Duration,
}

impl Slot {
    /// Whether the lease is live at `now`.
    pub fn is_held(&self, now: Millis) -> bool {
        self.expires_at > now
    }

    pub fn is_released(&self) -> bool {
        self.expires_at == 0
    }

    /// Whether the slot still counts against the limit for an acquire deciding at
    /// `now`: its lease is live, or ended without a release less than `grace` ago
    /// (the skew margin and lock delay, as for a lock).
    pub fn occupies(&self, now: Millis, grace: i64) -> bool {
        !self.is_released() && self.expires_at >= now.saturating_sub(grace)
    }
}

/// A semaphore record: its limit, the last fence it issued, and its slots (released
/// and ended ones included until the next acquire clears them), in fence order.
#[derive(Debug, Clone, PartialEq)]
pub struct Semaphore {
    pub name: LockName,
    pub limit: u32,
    pub fence: Fence,
    pub slots: Vec<Slot>,
    /// How many times the record was written (acquire, heartbeat, release); 0 on
    /// records written before semaphores counted them.
    pub version: u64,
}

impl Semaphore {
    /// The version of this record's view at `now`: the writes, shifted left by 8,
    /// plus the slots whose lease ran out unreleased and may be taken over (each at
    /// its end plus `grace`), so that it grows with each write and with each lapse
    /// between writes (a write adds 256, more than any count of lapsed slots).
    pub fn view_version(&self, now: Millis, grace: i64) -> u64 {
        let lapsed = self
            .slots
            .iter()
            .filter(|slot| !slot.is_released() && slot.expires_at.saturating_add(grace) <= now)
            .count()
            .min(255) as u64;
        (self.version << 8) | lapsed
    }

    /// When the next slot, unreleased, lapses after `now`, if one will.
    pub fn next_lapse(&self, now: Millis, grace: i64) -> Option<Millis> {
        self.slots
            .iter()
            .filter(|slot| !slot.is_released())
            .map(|slot| slot.expires_at.saturating_add(grace))
            .filter(|at| *at > now)
            .min()
    }

    /// The slots whose lease is live at `now`.
    pub fn holders(&self, now: Millis) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(move |slot| slot.is_held(now))
    }

    /// The slot issued under `fence`, if the record still has it.
    pub fn slot(&self, fence: Fence) -> Option<&Slot> {
        self.slots.iter().find(|slot| slot.fence == fence)
    }

    /// When the first occupied slot frees up for a taker deciding with `grace`; `None`
    /// when no slot is occupied.
    pub fn first_free_at(&self, now: Millis, grace: i64) -> Option<Millis> {
        self.slots
            .iter()
            .filter(|slot| slot.occupies(now, grace))
            .map(|slot| slot.expires_at.saturating_add(grace))
            .min()
    }
}

/// What an acquire of a semaphore should do, decided from the record it read.
#[derive(Debug, Clone, PartialEq)]
pub enum AcquirePlan {
    /// Take a slot under `fence`, clearing `clear` (slots released, or ended more than
    /// the grace ago, and any earlier slot of the same nonce, which the new one
    /// replaces).
    Take { fence: Fence, clear: Vec<Fence> },
    /// Every slot is occupied by another holder.
    Full,
    /// The semaphore exists with another limit.
    LimitMismatch { limit: u32 },
}

/// Decides an acquire by `nonce` asking for `limit` at `now`. A record made anew
/// starts its fences above `floor` (the time in microseconds), as a lock's do.
pub fn plan_acquire(
    seen: Option<&Semaphore>,
    nonce: &Nonce,
    limit: u32,
    now: Millis,
    grace: i64,
    floor: Fence,
) -> AcquirePlan {
    let Some(semaphore) = seen else {
        return AcquirePlan::Take {
            fence: floor + 1,
            clear: Vec::new(),
        };
    };
    if semaphore.limit != limit {
        return AcquirePlan::LimitMismatch {
            limit: semaphore.limit,
        };
    }
    let (mine, others): (Vec<&Slot>, Vec<&Slot>) = semaphore
        .slots
        .iter()
        .partition(|slot| slot.nonce == *nonce);
    let occupied = others.iter().filter(|s| s.occupies(now, grace)).count();
    if occupied >= usize::try_from(limit).unwrap_or(usize::MAX) {
        return AcquirePlan::Full;
    }
    let clear = mine
        .iter()
        .map(|slot| slot.fence)
        .chain(
            others
                .iter()
                .filter(|s| !s.occupies(now, grace))
                .map(|s| s.fence),
        )
        .collect();
    AcquirePlan::Take {
        fence: semaphore.fence + 1,
        clear,
    }
}

/// Why a fence does not hold a slot of a semaphore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotRejection {
    /// The semaphore has no record.
    NotFound,
    /// No slot has this fence: it was taken over, cleared after its release, or
    /// never issued.
    NotHeld { fence: Fence },
    /// The fence's slot is there, but the nonce sent as proof is not its holder's.
    NotHolder { fence: Fence },
    /// The fence's slot is there, but its lease ended: it ran out, or was released.
    LeaseExpired { fence: Fence, released: bool },
}

/// Decides whether `holder` (by fence, or by fence and nonce) holds a live slot of
/// `semaphore` at `now`.
pub fn check_slot(
    semaphore: Option<&Semaphore>,
    holder: &Holder,
    now: Millis,
) -> Result<(), SlotRejection> {
    let semaphore = semaphore.ok_or(SlotRejection::NotFound)?;
    // Semaphores issue no tokens; a token names fence 0, which no slot has.
    let fence = holder.fence().unwrap_or(0);
    let nonce = match holder {
        Holder::Proven(_, nonce) => Some(nonce),
        _ => None,
    };
    let slot = semaphore
        .slot(fence)
        .ok_or(SlotRejection::NotHeld { fence })?;
    if nonce.is_some_and(|nonce| *nonce != slot.nonce) {
        return Err(SlotRejection::NotHolder { fence });
    }
    if !slot.is_held(now) {
        return Err(SlotRejection::LeaseExpired {
            fence,
            released: slot.is_released(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: i64 = 1_000;

    fn nonce(raw: &str) -> Nonce {
        Nonce::parse(raw).unwrap()
    }

    fn slot(fence: Fence, holder: &str, expires_at: Millis) -> Slot {
        Slot {
            fence,
            nonce: nonce(holder),
            owner: None,
            metadata: None,
            acquired_at: 0,
            heartbeat_at: 0,
            expires_at,
            ttl: Duration::from_secs(30),
        }
    }

    fn semaphore(limit: u32, slots: Vec<Slot>) -> Semaphore {
        Semaphore {
            name: LockName::parse("pool").unwrap(),
            limit,
            fence: slots.iter().map(|s| s.fence).max().unwrap_or(0),
            slots,
            version: 1,
        }
    }

    #[test]
    fn a_new_semaphore_starts_above_the_floor() {
        let plan = plan_acquire(None, &nonce("a"), 3, 10_000, GRACE, 500);
        assert_eq!(
            plan,
            AcquirePlan::Take {
                fence: 501,
                clear: vec![]
            }
        );
    }

    #[test]
    fn a_free_slot_is_taken_under_the_next_fence() {
        let s = semaphore(2, vec![slot(7, "a", 20_000)]);
        let plan = plan_acquire(Some(&s), &nonce("b"), 2, 10_000, GRACE, 0);
        assert_eq!(
            plan,
            AcquirePlan::Take {
                fence: 8,
                clear: vec![]
            }
        );
    }

    #[test]
    fn a_full_semaphore_refuses_until_a_lease_is_over_by_the_grace() {
        let s = semaphore(2, vec![slot(7, "a", 20_000), slot(8, "b", 10_000)]);
        assert_eq!(
            plan_acquire(Some(&s), &nonce("c"), 2, 10_500, GRACE, 0),
            AcquirePlan::Full
        );
        // Ended, but within the grace: still occupied.
        assert_eq!(
            plan_acquire(Some(&s), &nonce("c"), 2, 11_000, GRACE, 0),
            AcquirePlan::Full
        );
        assert_eq!(
            plan_acquire(Some(&s), &nonce("c"), 2, 11_001, GRACE, 0),
            AcquirePlan::Take {
                fence: 9,
                clear: vec![8]
            }
        );
    }

    #[test]
    fn a_released_slot_is_free_at_once_and_cleared() {
        let s = semaphore(1, vec![slot(7, "a", 0)]);
        assert_eq!(
            plan_acquire(Some(&s), &nonce("b"), 1, 10_000, GRACE, 0),
            AcquirePlan::Take {
                fence: 8,
                clear: vec![7]
            }
        );
    }

    #[test]
    fn the_same_nonce_replaces_its_slot_instead_of_taking_another() {
        let s = semaphore(2, vec![slot(7, "a", 20_000), slot(8, "b", 20_000)]);
        assert_eq!(
            plan_acquire(Some(&s), &nonce("a"), 2, 10_000, GRACE, 0),
            AcquirePlan::Take {
                fence: 9,
                clear: vec![7]
            }
        );
    }

    #[test]
    fn another_limit_is_refused() {
        let s = semaphore(2, vec![]);
        assert_eq!(
            plan_acquire(Some(&s), &nonce("a"), 3, 0, GRACE, 0),
            AcquirePlan::LimitMismatch { limit: 2 }
        );
    }

    #[test]
    fn first_free_at_is_the_earliest_occupied_end_plus_the_grace() {
        let s = semaphore(
            3,
            vec![slot(7, "a", 20_000), slot(8, "b", 15_000), slot(9, "c", 0)],
        );
        assert_eq!(s.first_free_at(10_000, GRACE), Some(16_000));
        assert_eq!(semaphore(1, vec![]).first_free_at(0, GRACE), None);
    }

    #[test]
    fn a_slot_holds_for_its_fence_and_nonce_while_its_lease_is_live() {
        let s = semaphore(2, vec![slot(7, "a", 20_000), slot(8, "b", 0)]);
        let proven = |fence, raw| Holder::Proven(fence, nonce(raw));
        assert_eq!(check_slot(Some(&s), &Holder::Fence(7), 10_000), Ok(()));
        assert_eq!(check_slot(Some(&s), &proven(7, "a"), 10_000), Ok(()));
        assert_eq!(
            check_slot(Some(&s), &proven(7, "b"), 10_000),
            Err(SlotRejection::NotHolder { fence: 7 })
        );
        assert_eq!(
            check_slot(Some(&s), &Holder::Fence(7), 20_000),
            Err(SlotRejection::LeaseExpired {
                fence: 7,
                released: false
            })
        );
        assert_eq!(
            check_slot(Some(&s), &Holder::Fence(8), 10_000),
            Err(SlotRejection::LeaseExpired {
                fence: 8,
                released: true
            })
        );
        assert_eq!(
            check_slot(Some(&s), &Holder::Fence(6), 10_000),
            Err(SlotRejection::NotHeld { fence: 6 })
        );
        assert_eq!(
            check_slot(None, &Holder::Fence(6), 10_000),
            Err(SlotRejection::NotFound)
        );
    }

    #[test]
    fn limits_are_whole_numbers_in_range() {
        assert_eq!(parse_limit("1").unwrap(), 1);
        assert_eq!(parse_limit("100").unwrap(), 100);
        for bad in ["0", "101", "-1", "two", ""] {
            let err = parse_limit(bad).unwrap_err().to_string();
            assert!(err.contains("1 to 100"), "{bad:?}: {err}");
        }
    }
}

//! `Lock`: one lock record as fencelock sees it, and the rules that decide whether a
//! fence still holds it.

use std::time::Duration;

use super::{InvalidInput, LockName, Nonce, Token};

/// A fence: the number handed out with each acquisition, strictly greater than every
/// fence the same name handed out before.
pub type Fence = u64;

/// Parses a fence as acquire writes it: decimal digits, no sign, no leading zero.
pub fn parse_fence(raw: &str) -> Result<Fence, InvalidInput> {
    let canonical = !raw.is_empty()
        && raw.bytes().all(|b| b.is_ascii_digit())
        && (raw == "0" || !raw.starts_with('0'));
    raw.parse().ok().filter(|_| canonical).ok_or_else(|| {
        InvalidInput::new(format!(
            "fence {raw:?} is not a fence; expected the whole number returned by acquire"
        ))
    })
}

/// A point in time in milliseconds since the Unix epoch.
pub type Millis = i64;

/// A lock record. `expires_at` is 0 once the lock has been released.
#[derive(Debug, Clone, PartialEq)]
pub struct Lock {
    pub name: LockName,
    pub fence: Fence,
    /// The current (or last) holder's nonce; a secret, never shown.
    pub nonce: Nonce,
    /// The current (or last) holder's token; a secret, shown only to that holder.
    /// Absent on records written before tokens existed.
    pub token: Option<Token>,
    pub owner: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub acquired_at: Millis,
    pub heartbeat_at: Millis,
    pub expires_at: Millis,
    /// The lease length of the last acquire or heartbeat, reused by the next heartbeat.
    pub ttl: Duration,
    /// The recovery value, kept across holders.
    pub body: String,
    /// Set while the body is kept in an item of its own rather than in the record
    /// (a body longer than the store keeps inline): that item's id. A store reads the
    /// body from there before it answers with the lock.
    pub body_id: Option<String>,
    /// The last reservation a waiting lock group made of this lock, live or not.
    pub reservation: Option<Reservation>,
    /// How many times the record was written (0 on records written before versions
    /// existed): every acquire, heartbeat, update, release and reservation adds one.
    /// A view's `version` is twice this, plus one once a lease ran out unreleased
    /// ([`Lock::view_version`]).
    pub version: u64,
    /// What operators did to the record ([`Marks`]).
    pub marks: Marks,
}

/// The holder an acquire took a lock over from: its lease had ended without a
/// release, so it may have stopped in the middle of its work (the body says how far
/// it got, if it kept it up to date).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predecessor {
    pub fence: Fence,
    /// When its lease ended.
    pub expires_at: Millis,
    pub owner: Option<String>,
}

/// What operators' break-glass actions leave on a lock record, besides the lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// Set while the name is disabled: no acquire succeeds until it is enabled.
    pub disabled: Option<Disabled>,
    /// When an operator asked the current holder to release the lock; cleared by the
    /// next acquire.
    pub release_asked_at: Option<Millis>,
    /// When an operator released the lock in its holder's stead; cleared by the next
    /// acquire.
    pub force_released_at: Option<Millis>,
}

/// Who disabled a lock name, when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disabled {
    pub at: Millis,
    /// The operator's token as no secret (the first 8 hex digits of its SHA-256),
    /// or `open` on a server without tokens.
    pub by: String,
    pub reason: Option<String>,
}

/// A waiting lock group's claim to be the next holder of a lock: until `until`, no
/// acquire by another nonce takes the lock once it is free. It never ends a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The waiting group's nonce; a secret, never shown.
    pub by: Nonce,
    pub until: Millis,
}

impl Lock {
    /// When a reservation live at `now` ends, whoever made it.
    pub fn reserved_until(&self, now: Millis) -> Option<Millis> {
        self.reservation
            .as_ref()
            .filter(|r| r.until > now)
            .map(|r| r.until)
    }

    /// The same record as `nonce` sees it: without a reservation of its own.
    pub fn seen_by(mut self, nonce: &Nonce) -> Self {
        if self.reservation.as_ref().is_some_and(|r| r.by == *nonce) {
            self.reservation = None;
        }
        self
    }

    /// Whether the name is disabled: nobody may acquire it.
    pub fn is_disabled(&self) -> bool {
        self.marks.disabled.is_some()
    }

    /// Whether a lease is live at `now`.
    pub fn is_held(&self, now: Millis) -> bool {
        self.expires_at > now
    }

    /// Whether the last holder released the lock (rather than letting its lease run out).
    pub fn is_released(&self) -> bool {
        self.expires_at == 0
    }

    /// The version a view of this record shows at `now`: twice the writes, plus one
    /// once `lapsed_at` is past (the lease ran out unreleased and another holder may
    /// take the lock), so that a lease running out is a change though nothing is
    /// written, and every change, written or not, makes the number grow.
    pub fn view_version(&self, lapsed_at: Option<Millis>, now: Millis) -> u64 {
        let lapsed = lapsed_at.is_some_and(|at| now >= at);
        self.version.saturating_mul(2) + u64::from(lapsed)
    }
}

/// How a request names the holding it acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// By the fence of its acquisition (the glock-style API).
    Fence(Fence),
    /// By the fence of its acquisition and its nonce, as proof that the request comes
    /// from the holder and not from someone who saw the fence.
    Proven(Fence, Nonce),
    /// By the secret token of its acquisition (the Gorilla-compatible API).
    Token(Token),
}

impl Holder {
    /// The fence this holder names; `None` for a token, which names none.
    pub fn fence(&self) -> Option<Fence> {
        match self {
            Self::Fence(fence) | Self::Proven(fence, _) => Some(*fence),
            Self::Token(_) => None,
        }
    }
}

/// Why a holder does not (or no longer) hold a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockRejection {
    /// There is no record of this lock at all.
    NotFound,
    /// The lock has moved on to another fence (or this fence was never issued).
    FenceMismatch { given: Fence, current: Fence },
    /// The token is not the current holder's.
    TokenMismatch,
    /// The fence is current, but the nonce sent as proof is not the holder's.
    NotHolder { fence: Fence },
    /// The holding is current, but its lease ended: it ran out, or was released.
    LeaseExpired { fence: Fence, released: bool },
    /// The holding is live, but the new lease would end before the current one.
    WouldShorten { expires_at: Millis },
}

/// Decides whether `holder` holds a live lease on `lock` at `now`.
pub fn check_holder(
    lock: Option<&Lock>,
    holder: &Holder,
    now: Millis,
) -> Result<(), LockRejection> {
    let lock = lock.ok_or(LockRejection::NotFound)?;
    match holder {
        Holder::Fence(fence) if *fence != lock.fence => {
            return Err(LockRejection::FenceMismatch {
                given: *fence,
                current: lock.fence,
            });
        }
        Holder::Proven(fence, _) if *fence != lock.fence => {
            return Err(LockRejection::FenceMismatch {
                given: *fence,
                current: lock.fence,
            });
        }
        Holder::Proven(fence, nonce) if *nonce != lock.nonce => {
            return Err(LockRejection::NotHolder { fence: *fence });
        }
        Holder::Token(token) if lock.token.as_ref() != Some(token) => {
            return Err(LockRejection::TokenMismatch);
        }
        _ => {}
    }
    let fence = lock.fence;
    if !lock.is_held(now) {
        return Err(LockRejection::LeaseExpired {
            fence,
            released: lock.is_released(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: fn(Fence) -> Holder = Holder::Fence;

    fn lock(fence: Fence, expires_at: Millis) -> Lock {
        Lock {
            name: LockName::parse("job").unwrap(),
            fence,
            nonce: Nonce::parse("n").unwrap(),
            token: Some(Token::parse("t0k3n").unwrap()),
            owner: None,
            metadata: None,
            acquired_at: 1_000,
            heartbeat_at: 1_000,
            expires_at,
            ttl: Duration::from_secs(30),
            body: String::new(),
            body_id: None,
            reservation: None,
            version: 0,
            marks: Marks::default(),
        }
    }

    #[test]
    fn the_current_fence_holds_until_the_lease_ends() {
        let l = lock(7, 31_000);
        assert_eq!(check_holder(Some(&l), &F(7), 30_999), Ok(()));
        let expired = LockRejection::LeaseExpired {
            fence: 7,
            released: false,
        };
        assert_eq!(check_holder(Some(&l), &F(7), 31_000), Err(expired));
    }

    #[test]
    fn another_fence_never_holds() {
        let l = lock(7, 31_000);
        for given in [6, 8] {
            let mismatch = LockRejection::FenceMismatch { given, current: 7 };
            assert_eq!(check_holder(Some(&l), &F(given), 2_000), Err(mismatch));
        }
    }

    #[test]
    fn the_current_token_holds_and_another_does_not() {
        let l = lock(7, 31_000);
        let own = Holder::Token(Token::parse("t0k3n").unwrap());
        let other = Holder::Token(Token::parse("guess").unwrap());
        assert_eq!(check_holder(Some(&l), &own, 2_000), Ok(()));
        assert_eq!(
            check_holder(Some(&l), &other, 2_000),
            Err(LockRejection::TokenMismatch)
        );
        let tokenless = Lock { token: None, ..l };
        assert_eq!(
            check_holder(Some(&tokenless), &own, 2_000),
            Err(LockRejection::TokenMismatch)
        );
    }

    #[test]
    fn a_proven_holder_needs_the_fence_and_the_nonce() {
        let l = lock(7, 31_000);
        let proven = |fence, nonce| Holder::Proven(fence, Nonce::parse(nonce).unwrap());
        assert_eq!(check_holder(Some(&l), &proven(7, "n"), 2_000), Ok(()));
        assert_eq!(
            check_holder(Some(&l), &proven(7, "guess"), 2_000),
            Err(LockRejection::NotHolder { fence: 7 })
        );
        assert_eq!(
            check_holder(Some(&l), &proven(6, "n"), 2_000),
            Err(LockRejection::FenceMismatch {
                given: 6,
                current: 7
            })
        );
    }

    #[test]
    fn a_released_lock_is_held_by_nobody() {
        let l = lock(7, 0);
        assert!(l.is_released());
        assert!(!l.is_held(0));
        let released = LockRejection::LeaseExpired {
            fence: 7,
            released: true,
        };
        assert_eq!(check_holder(Some(&l), &F(7), 2_000), Err(released));
    }

    #[test]
    fn a_reservation_is_live_until_it_ends_and_unseen_by_its_own_group() {
        let group = Nonce::parse("group").unwrap();
        let other = Nonce::parse("other").unwrap();
        let l = Lock {
            reservation: Some(Reservation {
                by: group.clone(),
                until: 5_000,
            }),
            ..lock(7, 0)
        };
        assert_eq!(l.reserved_until(4_999), Some(5_000));
        assert_eq!(l.reserved_until(5_000), None);
        assert_eq!(l.clone().seen_by(&other).reserved_until(0), Some(5_000));
        assert_eq!(l.seen_by(&group).reserved_until(0), None);
    }

    #[test]
    fn a_missing_lock_is_not_found() {
        assert_eq!(check_holder(None, &F(1), 0), Err(LockRejection::NotFound));
    }
}

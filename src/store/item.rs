//! The DynamoDB item of a lock, mapped to and from [`Lock`] in this one place.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::domain::{Disabled, Lock, LockName, Marks, Nonce, Reservation, Token};

/// Partition key: the lock name (S).
pub const NAME: &str = "name";
/// Last fence issued (N).
pub const FENCE: &str = "fence";
/// Current holder's nonce (S), a secret.
pub const NONCE: &str = "nonce";
/// Current holder's token (S), a secret; issued with each acquisition.
pub const TOKEN: &str = "token";
/// Optional owner from the acquire request (S).
pub const OWNER: &str = "owner";
/// Optional metadata from the acquire request, as JSON text (S).
pub const METADATA: &str = "metadata";
/// When the current lease was acquired, heartbeated and ends (N, ms since epoch);
/// `expires_at` is 0 once released.
pub const ACQUIRED_AT: &str = "acquired_at";
pub const HEARTBEAT_AT: &str = "heartbeat_at";
pub const EXPIRES_AT: &str = "expires_at";
/// When the last holder released the lock (N, ms since epoch); removed on acquire.
pub const RELEASED_AT: &str = "released_at";
/// Lease length to reuse on heartbeat (N, ms).
pub const TTL_MS: &str = "ttl_ms";
/// The recovery value, kept across holders (S), when it is kept in the record.
pub const BODY: &str = "body";
/// In a record: the id (S) of the item its body is kept in instead, when the body is
/// longer than [`super::body::INLINE_BODY`]; in that item, the same id, beside the
/// body (`body`). The item's key is the record's after [`BODY_PREFIX`].
pub const BODY_ID: &str = "body_id";
/// What the key of a body's own item starts with (no lock name contains `/`).
pub const BODY_PREFIX: &str = "body/";
/// The nonce of the waiting lock group that reserved the lock (S), a secret, and
/// until when (N, ms since epoch); both set and cleared together.
pub const RESERVED_BY: &str = "reserved_by";
pub const RESERVED_UNTIL: &str = "reserved_until";
/// How many times the record was written (N); absent on records written before.
pub const VERSION: &str = "version";
/// While the name is disabled: since when (N, ms since epoch), by whom (S, a token's
/// label) and why (S, optional); all removed together by enable.
pub const DISABLED_AT: &str = "disabled_at";
pub const DISABLED_BY: &str = "disabled_by";
pub const DISABLED_REASON: &str = "disabled_reason";
/// When an operator asked the holder to release (N, ms since epoch); removed on acquire.
pub const RELEASE_ASKED_AT: &str = "release_asked_at";
/// When an operator released the lock in its holder's stead (N); removed on acquire.
pub const FORCE_RELEASED_AT: &str = "force_released_at";

/// With `FENCELOCK_RECLAIM_BY=ttl`, the table's TTL attribute: when DynamoDB may
/// delete the record (N, seconds since epoch), written by every write of a lock
/// record as the later of the reasons below and the write's own time plus the
/// purge delay. Removed by every write with `FENCELOCK_RECLAIM_BY=scan`.
pub const PURGE_AT: &str = "purge_at";
/// Reasons to keep a record whatever its age (N, [`HOLD_FOREVER`]): it has a body, it
/// is disabled. Kept with `FENCELOCK_RECLAIM_BY=ttl` only.
pub const HOLD_BODY: &str = "hold_body";
pub const HOLD_DISABLED: &str = "hold_disabled";
/// A time DynamoDB's TTL never reaches (seconds since epoch, about the year 33,658).
pub const HOLD_FOREVER: i64 = 1_000_000_000_000;

pub type Item = HashMap<String, AttributeValue>;

/// An item that does not have the shape fencelock writes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("lock item {name:?} is malformed: {reason}")]
pub struct MalformedItem {
    pub name: String,
    pub reason: String,
}

impl TryFrom<&Item> for Lock {
    type Error = MalformedItem;

    fn try_from(item: &Item) -> Result<Self, Self::Error> {
        let raw_name = string(item, NAME).unwrap_or_default();
        let malformed = |reason: String| MalformedItem {
            name: raw_name.clone(),
            reason,
        };
        // An election's record is keyed after its prefix; its name is the rest.
        let bare = raw_name
            .strip_prefix(super::dynamo::ELECTION_PREFIX)
            .unwrap_or(&raw_name);
        let name = LockName::parse(bare).map_err(|e| malformed(e.0))?;
        let nonce = match required_string(item, NONCE).map_err(&malformed)?.as_str() {
            crate::domain::VACANT => Nonce::vacant(),
            raw => Nonce::parse(raw).map_err(|e| malformed(e.0))?,
        };
        let metadata = match string(item, METADATA) {
            Some(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| malformed(format!("{METADATA} is not JSON: {e}")))?,
            ),
            None => None,
        };
        let token = string(item, TOKEN)
            .map(|raw| Token::parse(&raw).map_err(|e| malformed(e.0)))
            .transpose()?;
        let ttl_ms = number::<u64>(item, TTL_MS).map_err(&malformed)?;
        let reservation = match string(item, RESERVED_BY) {
            Some(by) => Some(Reservation {
                by: Nonce::parse(&by).map_err(|e| malformed(e.0))?,
                until: number(item, RESERVED_UNTIL).map_err(&malformed)?,
            }),
            None => None,
        };
        Ok(Lock {
            name,
            fence: number(item, FENCE).map_err(&malformed)?,
            nonce,
            token,
            owner: string(item, OWNER),
            metadata,
            acquired_at: number(item, ACQUIRED_AT).map_err(&malformed)?,
            heartbeat_at: number(item, HEARTBEAT_AT).map_err(&malformed)?,
            expires_at: number(item, EXPIRES_AT).map_err(&malformed)?,
            ttl: Duration::from_millis(ttl_ms),
            body: string(item, BODY).unwrap_or_default(),
            body_id: string(item, BODY_ID),
            reservation,
            version: optional_number(item, VERSION)
                .map_err(&malformed)?
                .unwrap_or(0),
            marks: Marks {
                disabled: optional_number(item, DISABLED_AT)
                    .map_err(&malformed)?
                    .map(|at| Disabled {
                        at,
                        by: string(item, DISABLED_BY).unwrap_or_default(),
                        reason: string(item, DISABLED_REASON),
                    }),
                release_asked_at: optional_number(item, RELEASE_ASKED_AT).map_err(&malformed)?,
                force_released_at: optional_number(item, FORCE_RELEASED_AT).map_err(&malformed)?,
            },
        })
    }
}

/// A number attribute that may be absent.
fn optional_number<T: std::str::FromStr>(
    item: &Item,
    attribute: &str,
) -> Result<Option<T>, String> {
    item.get(attribute)
        .map(|_| number(item, attribute))
        .transpose()
}

pub(super) fn string(item: &Item, attribute: &str) -> Option<String> {
    item.get(attribute)?.as_s().ok().cloned()
}

pub(super) fn required_string(item: &Item, attribute: &str) -> Result<String, String> {
    string(item, attribute).ok_or_else(|| format!("{attribute} is missing or not a string"))
}

pub(super) fn number<T: std::str::FromStr>(item: &Item, attribute: &str) -> Result<T, String> {
    let raw = item
        .get(attribute)
        .and_then(|v| v.as_n().ok())
        .ok_or_else(|| format!("{attribute} is missing or not a number"))?;
    raw.parse()
        .map_err(|_| format!("{attribute} is {raw:?}, expected a whole number in range"))
}

/// A number attribute value.
pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A string attribute value.
pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> Item {
        HashMap::from([
            (NAME.to_owned(), s("billing:nightly")),
            (FENCE.to_owned(), n(1_700_000_000_000_001u64)),
            (NONCE.to_owned(), s("abc")),
            (TOKEN.to_owned(), s("0123456789abcdef0123456789abcdef")),
            (OWNER.to_owned(), s("cron@host")),
            (METADATA.to_owned(), s(r#"["a","b"]"#)),
            (ACQUIRED_AT.to_owned(), n(1000)),
            (HEARTBEAT_AT.to_owned(), n(2000)),
            (EXPIRES_AT.to_owned(), n(32000)),
            (TTL_MS.to_owned(), n(30000)),
            (BODY.to_owned(), s("rollforward")),
        ])
    }

    #[test]
    fn maps_every_attribute() {
        let lock = Lock::try_from(&item()).unwrap();
        assert_eq!(lock.name.as_str(), "billing:nightly");
        assert_eq!(lock.fence, 1_700_000_000_000_001);
        assert_eq!(lock.nonce.as_str(), "abc");
        assert_eq!(
            lock.token.unwrap().as_str(),
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(lock.owner.as_deref(), Some("cron@host"));
        assert_eq!(lock.metadata, Some(serde_json::json!(["a", "b"])));
        assert_eq!(
            (lock.acquired_at, lock.heartbeat_at, lock.expires_at),
            (1000, 2000, 32000)
        );
        assert_eq!(lock.ttl, Duration::from_secs(30));
        assert_eq!(lock.body, "rollforward");
        assert_eq!(lock.reservation, None);

        let mut reserved = item();
        reserved.insert(RESERVED_BY.to_owned(), s("group"));
        reserved.insert(RESERVED_UNTIL.to_owned(), n(40000));
        let reservation = Lock::try_from(&reserved).unwrap().reservation.unwrap();
        assert_eq!(
            (reservation.by.as_str(), reservation.until),
            ("group", 40000)
        );
    }

    #[test]
    fn optional_attributes_may_be_absent() {
        let mut item = item();
        for attribute in [TOKEN, OWNER, METADATA, BODY] {
            item.remove(attribute);
        }
        let lock = Lock::try_from(&item).unwrap();
        assert_eq!(
            (lock.owner, lock.metadata, lock.body.as_str()),
            (None, None, "")
        );
        assert!(lock.token.is_none());
    }

    #[test]
    fn a_malformed_item_is_an_error_naming_the_lock_and_the_attribute() {
        let mut missing = item();
        missing.remove(FENCE);
        let err = Lock::try_from(&missing).unwrap_err().to_string();
        assert!(
            err.contains("billing:nightly") && err.contains("fence is missing"),
            "{err}"
        );

        let mut wrong_type = item();
        wrong_type.insert(EXPIRES_AT.to_owned(), s("soon"));
        let err = Lock::try_from(&wrong_type).unwrap_err().to_string();
        assert!(err.contains("expires_at"), "{err}");

        let mut negative = item();
        negative.insert(FENCE.to_owned(), n(-1));
        assert!(Lock::try_from(&negative).is_err());
    }
}

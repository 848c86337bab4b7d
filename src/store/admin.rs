//! The operators' break-glass writes on a lock (or election) record: force-release,
//! disable, enable and ask-release. Each is one conditional `UpdateItem`, counted in
//! the record's version and told to watchers as every other write of a lock is.

use super::dynamo::{Expression, Write};
use super::item::{self, n, s};
use super::{DynamoStore, StoreError};
use crate::domain::{LockName, VACANT};

/// What a break-glass write found, with the record as it is now.
#[derive(Debug, Clone, PartialEq)]
pub enum Marked {
    /// The write changed the record.
    Changed(crate::domain::Lock),
    /// There was nothing to do (the lock was released already, is not held, is
    /// disabled already, or is not disabled); nothing was written.
    Unchanged(crate::domain::Lock),
    /// The name has no record.
    NotFound,
}

impl DynamoStore {
    /// Ends the current lease at once, as its holder's release would: the holder's
    /// next heartbeat is refused, the body stays, and the next acquire's fence is
    /// above the holder's. Unchanged when the lock was released already.
    pub async fn force_release(&self, name: &LockName) -> Result<Marked, StoreError> {
        let mut e = Expression {
            update: "SET #expires_at = :zero, #released_at = :now, #forced = :now".to_owned(),
            condition: "attribute_exists(#fence) AND #expires_at <> :zero".to_owned(),
            ..Expression::default()
        };
        e.name("#fence", item::FENCE)
            .name("#expires_at", item::EXPIRES_AT)
            .name("#released_at", item::RELEASED_AT)
            .name("#forced", item::FORCE_RELEASED_AT)
            .value(":zero", n(0))
            .value(":now", n(self.clock().now_millis()));
        self.mark("force_release", name, e).await
    }

    /// Marks the name disabled by `by` (a token's label), for `reason`: no acquire
    /// succeeds until [`DynamoStore::enable`]. A holder keeps its lease until it ends
    /// or is force-released. A name without a record gets one, with a fence above
    /// every fence it issued before and no holder. Unchanged when disabled already.
    pub async fn disable(
        &self,
        name: &LockName,
        by: &str,
        reason: Option<&str>,
    ) -> Result<Marked, StoreError> {
        let now_micros = self.clock().now_micros();
        let mut set = vec![
            "#disabled_at = :now",
            "#disabled_by = :by",
            // The shape of a released record, for a name that has none.
            "#fence = if_not_exists(#fence, :floor)",
            "#nonce = if_not_exists(#nonce, :vacant)",
            "#acquired_at = if_not_exists(#acquired_at, :zero)",
            "#heartbeat_at = if_not_exists(#heartbeat_at, :zero)",
            "#expires_at = if_not_exists(#expires_at, :zero)",
            "#ttl_ms = if_not_exists(#ttl_ms, :zero)",
        ];
        let mut e = Expression {
            condition: "attribute_not_exists(#disabled_at)".to_owned(),
            ..Expression::default()
        };
        e.name("#disabled_at", item::DISABLED_AT)
            .name("#disabled_by", item::DISABLED_BY)
            .name("#reason", item::DISABLED_REASON)
            .name("#fence", item::FENCE)
            .name("#nonce", item::NONCE)
            .name("#acquired_at", item::ACQUIRED_AT)
            .name("#heartbeat_at", item::HEARTBEAT_AT)
            .name("#expires_at", item::EXPIRES_AT)
            .name("#ttl_ms", item::TTL_MS)
            .value(":now", n(now_micros.div_euclid(1000)))
            .value(":by", s(by))
            .value(":floor", n(now_micros))
            .value(":vacant", s(VACANT))
            .value(":zero", n(0));
        let remove = match reason {
            Some(reason) => {
                set.push("#reason = :reason");
                e.value(":reason", s(reason));
                String::new()
            }
            None => " REMOVE #reason".to_owned(),
        };
        e.update = format!("SET {}{remove}", set.join(", "));
        e.sets_disabled = Some(true);
        self.mark("disable", name, e).await
    }

    /// Lets the name be acquired again. Unchanged when it is not disabled.
    pub async fn enable(&self, name: &LockName) -> Result<Marked, StoreError> {
        let mut e = Expression {
            update: "REMOVE #disabled_at, #disabled_by, #reason".to_owned(),
            condition: "attribute_exists(#disabled_at)".to_owned(),
            ..Expression::default()
        };
        e.name("#disabled_at", item::DISABLED_AT)
            .name("#disabled_by", item::DISABLED_BY)
            .name("#reason", item::DISABLED_REASON);
        e.sets_disabled = Some(false);
        self.mark("enable", name, e).await
    }

    /// Asks the current holder to release: every answer about the lock says so until
    /// the next acquire. Unchanged when no lease is live.
    pub async fn ask_release(&self, name: &LockName) -> Result<Marked, StoreError> {
        let mut e = Expression {
            update: "SET #asked = :now".to_owned(),
            condition: "#expires_at > :now".to_owned(),
            ..Expression::default()
        };
        e.name("#asked", item::RELEASE_ASKED_AT)
            .name("#expires_at", item::EXPIRES_AT)
            .value(":now", n(self.clock().now_millis()));
        self.mark("ask_release", name, e).await
    }

    async fn mark(
        &self,
        operation: &'static str,
        name: &LockName,
        expression: Expression,
    ) -> Result<Marked, StoreError> {
        let op = expression.purged(self.purge_at()).on(self.update(name));
        Ok(match self.write(operation, name, op).await? {
            Write::Applied(item) => {
                let lock = self
                    .with_body(crate::domain::Lock::try_from(&item)?)
                    .await?;
                self.written.publish(&lock);
                Marked::Changed(lock)
            }
            Write::Rejected(Some(item)) => Marked::Unchanged(
                self.with_body(crate::domain::Lock::try_from(&item)?)
                    .await?,
            ),
            Write::Rejected(None) => Marked::NotFound,
        })
    }
}

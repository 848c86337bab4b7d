//! Bodies kept out of their lock's record, so that renewing a lease costs what a
//! small item costs whatever the body.
//!
//! DynamoDB bills an `UpdateItem` on the larger of the item before and after, so a
//! heartbeat of a record that holds a 64 KiB body costs 65 write units. A body longer
//! than [`INLINE_BODY`] is kept instead in an item of its own (key `body/` + the
//! record's key, [`item::BODY_PREFIX`]), and the record holds only that item's id
//! ([`item::BODY_ID`]), so heartbeats, extends and releases write a record of a few
//! hundred bytes: 1 unit.
//!
//! - **Writing a body** out of the record, or back into it, is one transaction of the
//!   record's update (the holder's condition, as for any body update, and the body
//!   where it was read) and the body item's put (or delete), after one
//!   strongly consistent read of the record: the body and the record always change
//!   together, and a holder whose lease ended changes neither. Each such write gives
//!   the body a new random id, so an id names one body's text for ever.
//! - **Reading a body** (acquire, status, heartbeat, a listing, a group's answer)
//!   takes its text from this server's memory of the bodies it has written or read,
//!   by id ([`Bodies`]), or else reads the body item (strongly consistent). The body
//!   item changes only with its record, so what it holds is the body as it is now,
//!   at least as new as the record it was found by; when it is gone (the body went
//!   back into the record, or was emptied), the record is read again.
//! - **Tables without transactions** (a multi-Region strongly consistent global
//!   table) keep every body in its record, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::{
    Delete, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use super::dynamo::{Renewal, millis, renew_expression};
use super::group::Sent;
use super::item::{self, s, string};
use super::{DynamoStore, HolderOutcome, StoreError};
use crate::domain::{Holder, Lock, LockName, LockRejection, check_holder};

/// The longest body kept in its record, in bytes: with it, a record of the usual
/// size (200–300 bytes without its body) stays under the 1 KB one write unit pays for. A longer one is kept in an item of its own.
pub const INLINE_BODY: usize = 512;

/// How many bytes of bodies [`Bodies`] keeps; past that it starts again empty (a
/// forgotten body costs its next reader one read, nothing else).
const MAX_REMEMBERED: usize = 32 << 20;

/// How many times a body write whose body changed between its read and its
/// transaction (another update of the same holder's), or that met another
/// transaction on the record, is tried before the answer is 503.
const MAX_TRIES: usize = 10;

/// The bodies kept out of their records that this server wrote or read, by id. An id
/// names one text for ever, so what is remembered is never out of date.
#[derive(Debug, Clone, Default)]
pub(super) struct Bodies(Arc<Mutex<Remembered>>);

#[derive(Debug, Default)]
struct Remembered {
    bodies: HashMap<String, Arc<str>>,
    bytes: usize,
}

impl Bodies {
    fn get(&self, id: &str) -> Option<Arc<str>> {
        self.lock().bodies.get(id).cloned()
    }

    fn remember(&self, id: &str, body: &str) {
        let mut remembered = self.lock();
        if remembered.bodies.contains_key(id) {
            return;
        }
        if remembered.bytes + body.len() > MAX_REMEMBERED {
            *remembered = Remembered::default();
        }
        remembered.bodies.insert(id.to_owned(), Arc::from(body));
        remembered.bytes += body.len() + id.len();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The key of the item that keeps the body of the record keyed `record`.
fn body_key(record: &str) -> String {
    format!("{}{record}", item::BODY_PREFIX)
}

impl DynamoStore {
    /// `lock` with its body, read from where it is kept: the record (then `lock` has
    /// it already), this server's memory, or the body's own item.
    pub(super) async fn with_body(&self, mut lock: Lock) -> Result<Lock, StoreError> {
        for _ in 0..MAX_TRIES {
            let Some(id) = lock.body_id.as_deref() else {
                return Ok(lock);
            };
            if let Some(body) = self.bodies.get(id) {
                lock.body = body.to_string();
                return Ok(lock);
            }
            let key = self.record_key(&lock.name);
            let found = self
                .read_record(s(body_key(&key)), "body_read")
                .await
                .map_err(|detail| self.unavailable("read the body of", &lock.name, detail))?;
            if let Some(found) = found {
                let body = string(&found, item::BODY).unwrap_or_default();
                if let Some(id) = string(&found, item::BODY_ID) {
                    self.bodies.remember(&id, &body);
                }
                lock.body = body;
                return Ok(lock);
            }
            // The body went back into the record, or was emptied, since the record was
            // read: where it is now, the record says.
            let fresh = self
                .read_record(s(key), "read")
                .await
                .map_err(|detail| self.unavailable("read", &lock.name, detail))?;
            match fresh.as_ref().map(Lock::try_from).transpose()? {
                Some(fresh) => (lock.body, lock.body_id) = (fresh.body, fresh.body_id),
                None => (lock.body, lock.body_id) = (String::new(), None),
            }
        }
        Err(self.unavailable(
            "read the body of",
            &lock.name,
            "the body kept moving while it was read".into(),
        ))
    }

    /// Tells the write hook of `lock` as a write left it, with its body where it is in
    /// the record or in this server's memory; otherwise that the record changed (its
    /// watchers read it), rather than read the body for them.
    pub(super) fn publish_remembered(&self, lock: &Lock) {
        match lock.body_id.as_deref().map(|id| self.bodies.get(id)) {
            None => self.written.publish(lock),
            Some(Some(body)) => self.written.publish(&Lock {
                body: body.to_string(),
                ..lock.clone()
            }),
            Some(None) => self.written.tell(&lock.name),
        }
    }

    /// [`DynamoStore::with_body`] for each of `locks` (a listing's page, a group):
    /// the bodies this server does not remember read first in strongly consistent
    /// `BatchGetItem`s of up to 100 keys; what DynamoDB leaves unprocessed, or a body
    /// that moved meanwhile, is read on its own.
    pub(super) async fn with_bodies(&self, locks: Vec<Lock>) -> Result<Vec<Lock>, StoreError> {
        let unknown: Vec<&Lock> = locks
            .iter()
            .filter(|lock| {
                lock.body_id
                    .as_deref()
                    .is_some_and(|id| self.bodies.get(id).is_none())
            })
            .collect();
        if unknown.len() > 1 {
            for chunk in unknown.chunks(100) {
                self.read_bodies(chunk).await?;
            }
        }
        let mut out = Vec::with_capacity(locks.len());
        for lock in locks {
            out.push(self.with_body(lock).await?);
        }
        Ok(out)
    }

    /// Reads the body items of `locks` in one `BatchGetItem`, into [`Bodies`].
    async fn read_bodies(&self, locks: &[&Lock]) -> Result<(), StoreError> {
        let keys = locks
            .iter()
            .map(|lock| {
                let key = body_key(&self.record_key(&lock.name));
                HashMap::from([(item::NAME.to_owned(), s(key))])
            })
            .collect();
        let (found, _) = self
            .read_batch("body_read", keys)
            .await
            .map_err(|detail| self.unavailable("read the body of", &locks[0].name, detail))?;
        for found in &found {
            if let Some(id) = string(found, item::BODY_ID) {
                self.bodies
                    .remember(&id, &string(found, item::BODY).unwrap_or_default());
            }
        }
        Ok(())
    }

    /// Whether a body of `len` bytes is kept out of its record on this table.
    pub(super) fn keeps_out(&self, len: usize) -> bool {
        len > INLINE_BODY && self.has_transactions()
    }

    /// Sets the body of `holder`'s lock to `body` and renews its lease as `renewal`
    /// says, where the body goes out of the record or comes back into it: one read of
    /// the record and one transaction (see the module's description).
    pub(super) async fn renew_kept(
        &self,
        operation: &'static str,
        name: &LockName,
        holder: &Holder,
        renewal: Renewal<'_>,
        body: &str,
    ) -> Result<HolderOutcome, StoreError> {
        let key = self.record_key(name);
        for attempt in 0..MAX_TRIES {
            let now = self.clock().now_millis();
            let raw = self
                .read_record(s(key.clone()), "update_read")
                .await
                .map_err(|detail| self.unavailable(operation, name, detail))?;
            let seen = raw.as_ref().map(Lock::try_from).transpose()?;
            if let Err(rejection) = check_holder(seen.as_ref(), holder, now) {
                return Ok(Err(rejection));
            }
            let Some(seen) = seen else {
                return Ok(Err(LockRejection::NotFound));
            };
            let id = self
                .keeps_out(body.len())
                .then(|| uuid::Uuid::new_v4().simple().to_string());
            let items =
                self.kept_body_items(&key, &seen, holder, &renewal, body, id.as_deref(), now);
            match self.send_kept(operation, name, items).await? {
                true => {
                    if let Some(id) = &id {
                        self.bodies.remember(id, body);
                    }
                    let ttl = renewal.ttl.unwrap_or(seen.ttl);
                    // Other writes (a heartbeat) may have come between the read and the
                    // transaction: the version is at least this, and the watches read
                    // the record as it is.
                    let lock = Lock {
                        heartbeat_at: now,
                        expires_at: now.saturating_add(millis(ttl)),
                        ttl,
                        body: body.to_owned(),
                        body_id: id,
                        version: seen.version + 1,
                        ..seen
                    };
                    self.written.tell(&lock.name);
                    return Ok(Ok(lock));
                }
                // The body changed since it was read, or the lease or holder did (or
                // another transaction held the record for a moment): read it again,
                // and decide again.
                false => {
                    let pause = 5 * attempt as u64 + fastrand::u64(0..10);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
            }
        }
        Err(self.unavailable(
            operation,
            name,
            "the record kept changing between its read and the body's write".into(),
        ))
    }

    /// The transaction's items of [`DynamoStore::renew_kept`]: the record's update,
    /// under the holder's condition and the version `seen` had, and the body item's
    /// put (when `id` is given) or delete (when the body comes back into the record).
    #[allow(clippy::too_many_arguments)]
    fn kept_body_items(
        &self,
        key: &str,
        seen: &Lock,
        holder: &Holder,
        renewal: &Renewal<'_>,
        body: &str,
        id: Option<&str>,
        now: i64,
    ) -> Vec<TransactWriteItem> {
        let without_body = Renewal {
            body: None,
            ..*renewal
        };
        let mut e = renew_expression(holder, &without_body, now);
        // The body where it was read: whether there is an item to delete, and that no
        // other body was written since (a heartbeat in between changes nothing here).
        match &seen.body_id {
            Some(seen_id) => {
                e.condition.push_str(" AND #body_id = :seen_body_id");
                e.value(":seen_body_id", s(seen_id.as_str()));
            }
            None => e.condition.push_str(" AND attribute_not_exists(#body_id)"),
        }
        e.name("#body", item::BODY).name("#body_id", item::BODY_ID);
        e.update = match id {
            Some(id) => {
                e.value(":body_id", s(id));
                format!("{}, #body_id = :body_id REMOVE #body", e.update)
            }
            None => {
                e.value(":body", s(body));
                format!("{}, #body = :body REMOVE #body_id", e.update)
            }
        };
        e.sets_body = Some(!body.is_empty());
        let e = e.purged(self.purge_at()).versioned();
        let update = Update::builder()
            .table_name(self.table.as_ref())
            .key(item::NAME, s(key))
            .update_expression(e.update)
            .condition_expression(e.condition)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("an update with a table, a key and an expression");
        let mut items = vec![TransactWriteItem::builder().update(update).build()];
        let body_key = s(body_key(key));
        match id {
            Some(id) => {
                let put = Put::builder()
                    .table_name(self.table.as_ref())
                    .item(item::NAME, body_key)
                    .item(item::BODY, s(body))
                    .item(item::BODY_ID, s(id))
                    .build()
                    .expect("a put with a table and an item");
                items.push(TransactWriteItem::builder().put(put).build());
            }
            None if seen.body_id.is_some() => {
                let delete = Delete::builder()
                    .table_name(self.table.as_ref())
                    .key(item::NAME, body_key)
                    .build()
                    .expect("a delete with a table and a key");
                items.push(TransactWriteItem::builder().delete(delete).build());
            }
            None => {}
        }
        items
    }

    /// Sends the transaction of a body's write: whether it was applied (otherwise its
    /// condition failed, or another transaction held the record for a moment).
    async fn send_kept(
        &self,
        operation: &'static str,
        name: &LockName,
        items: Vec<TransactWriteItem>,
    ) -> Result<bool, StoreError> {
        match self.send_transaction("update_body", items).await {
            Sent::Applied => Ok(true),
            Sent::Refused(_) | Sent::Conflict => Ok(false),
            Sent::Failed(detail) => Err(self.unavailable(operation, name, detail)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_bodies_are_bounded_and_start_again_empty() {
        let bodies = Bodies::default();
        let big = "x".repeat(MAX_REMEMBERED / 2);
        bodies.remember("a", &big);
        bodies.remember("b", "short");
        assert_eq!(bodies.get("a").as_deref(), Some(big.as_str()));
        // One more that would pass the bound: what was remembered goes first.
        bodies.remember("c", &big);
        assert!(bodies.get("a").is_none() && bodies.get("b").is_none());
        assert_eq!(bodies.get("c").as_deref(), Some(big.as_str()));
        // The same id again is the same text: neither counted twice nor a reason to
        // forget the others.
        bodies.remember("d", "short");
        bodies.remember("c", &big);
        assert_eq!(bodies.lock().bytes, big.len() + 1 + "short".len() + 1);
        assert!(bodies.get("d").is_some());
    }

    #[test]
    fn a_body_item_is_keyed_after_its_record() {
        assert_eq!(body_key("job"), "body/job");
        assert_eq!(body_key("election/leader"), "body/election/leader");
        assert!(!crate::store::is_listed_key(&body_key("job")));
    }
}

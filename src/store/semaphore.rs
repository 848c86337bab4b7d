//! Semaphores in the lock table: one item per semaphore, keyed `semaphore/{name}`
//! (a `/` no lock name may contain, so a lock and a semaphore of the same name are
//! different items), holding the limit, the last fence issued and a map of slots by
//! fence.
//!
//! - **Acquire** writes the item with the new slot, conditioned on the last fence
//!   being the one its plan was made on. The plan is made on the record as this
//!   server last saw it (every semaphore write's answer and every read leaves it in
//!   [`Seen`]; none: a record made anew), so an acquire on a semaphore this server
//!   keeps using is 1 request when a slot is free. Only acquires change the fence, so
//!   a heartbeat or release in between never makes an acquire retry. A write whose
//!   plan was out of date fails and returns the item as it now is (`ALL_OLD`), from
//!   which it decides again without a read; two acquires that race do the same,
//!   after a short random pause (up to 20 ms) so that the losers of a race do not
//!   race again in step. Each retry is 1 request, and every failed write but a first
//!   guess means another acquire was granted. An acquire that finds every slot held
//!   (or another limit) in what it saw reads the record (strongly consistent) before
//!   it says so: a refusal is never made on an old copy.
//! - The slots an acquire clears (released ones, ones whose lease ended more than the
//!   skew margin and lock delay ago, and the caller's own earlier slot) are cleared
//!   under conditions of their own in the same write (released, ended by then, or
//!   the caller's nonce), so a copy that is out of date can never clear a slot that
//!   was renewed since.
//! - **Heartbeat** and **release** are 1 conditional `UpdateItem` on the slot's own
//!   path in the map. A release marks the slot released (a retried release answers
//!   the same).
//! - The sweeper never deletes a semaphore's item (it has no top-level lease), so its
//!   fences keep growing and its limit stays as the first acquire set it.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::dynamo::{Subject, Write, millis, millis_duration};
use super::item::{self, Item, n, number, required_string, s, string};
use super::{DynamoStore, MalformedItem, Release, StoreError};
use crate::domain::{
    AcquirePlan, Fence, Holder, Kind, LockName, Millis, Nonce, Semaphore, Slot, SlotRejection,
    check_slot, plan_acquire,
};

/// What the key of a semaphore's item starts with.
pub const KEY_PREFIX: &str = "semaphore/";
/// The semaphore's limit (N), fixed by its first acquire.
pub const LIMIT: &str = "limit";
/// The slots (M), by fence as decimal text; each a map of the slot's attributes,
/// named as a lock's are.
pub const SLOTS: &str = "slots";

/// An acquire tries this many conditional writes before it answers 503: each failed
/// write means another acquire was granted, so it takes heavy contention for a free
/// slot to be lost this often.
const MAX_WRITES: usize = 32;

/// The longest pause after a lost write before the next: racers that lost together
/// spread out, so that the next round is not the same race again.
const MAX_LOST_PAUSE_MS: u64 = 20;

/// How many semaphores' records [`Seen`] keeps; past that it starts again empty (a
/// forgotten record costs its next acquire one refused write, nothing else).
const MAX_SEEN: usize = 4096;

/// The semaphores' records as this server last saw them, by key.
#[derive(Debug, Clone, Default)]
pub(super) struct Seen(std::sync::Arc<std::sync::Mutex<HashMap<String, Semaphore>>>);

impl Seen {
    fn get(&self, name: &LockName) -> Option<Semaphore> {
        self.lock().get(name.as_str()).cloned()
    }

    fn remember(&self, name: &LockName, semaphore: Option<&Semaphore>) {
        let mut seen = self.lock();
        match semaphore {
            Some(semaphore) => {
                if seen.len() >= MAX_SEEN && !seen.contains_key(name.as_str()) {
                    seen.clear();
                }
                seen.insert(name.to_string(), semaphore.clone());
            }
            None => {
                seen.remove(name.as_str());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Semaphore>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a semaphore acquire asks for.
#[derive(Debug, Clone)]
pub struct SemaphoreRequest {
    pub name: LockName,
    pub nonce: Nonce,
    pub limit: u32,
    pub ttl: Duration,
    pub owner: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// How a semaphore acquire ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SemaphoreOutcome {
    /// The caller holds the slot of `fence` in `semaphore` (as written).
    Granted { semaphore: Semaphore, fence: Fence },
    /// Every slot is held by another holder.
    Full(Semaphore),
    /// The semaphore exists with another limit; nothing changed.
    LimitMismatch { limit: u32 },
}

fn key(name: &LockName) -> AttributeValue {
    s(format!("{KEY_PREFIX}{name}"))
}

fn subject<'a>(operation: &'static str, label: &'static str, name: &'a LockName) -> Subject<'a> {
    Subject {
        kind: Kind::Semaphore,
        operation,
        label,
        name,
    }
}

impl DynamoStore {
    /// Takes a slot of the semaphore when fewer than its limit are occupied (or the
    /// caller's nonce holds one already, which the new slot replaces); each grant
    /// issues a new fence.
    pub async fn acquire_semaphore(
        &self,
        request: &SemaphoreRequest,
    ) -> Result<SemaphoreOutcome, StoreError> {
        // The first plan is made on the record as this server last saw it; `fresh`
        // says whether the record in hand is what DynamoDB holds now (read, or handed
        // back by a refused write), which a refusal needs.
        let mut seen = self.semaphores_seen.get(&request.name);
        let mut fresh = false;
        let mut lost = 0u32;
        for _ in 0..MAX_WRITES {
            let now_micros = self.clock().now_micros();
            let now = now_micros.div_euclid(1000);
            // While the clock is suspect, a slot that lapsed unreleased still counts.
            let grace = if self.clock_suspect() {
                i64::MAX / 2
            } else {
                self.policy().takeover_grace_ms()
            };
            let plan = plan_acquire(
                seen.as_ref(),
                &request.nonce,
                request.limit,
                now,
                grace,
                now_micros.unsigned_abs(),
            );
            let (fence, clear) = match plan {
                AcquirePlan::Take { fence, clear } => (fence, clear),
                // Never refuse on an old copy: read what is there, and decide again.
                AcquirePlan::Full | AcquirePlan::LimitMismatch { .. } if !fresh => {
                    seen = self.get_semaphore(&request.name).await?;
                    fresh = true;
                    continue;
                }
                AcquirePlan::Full => {
                    self.metrics().conflicts(Kind::Semaphore);
                    let full = seen.expect("a full semaphore has a record");
                    return Ok(SemaphoreOutcome::Full(full));
                }
                AcquirePlan::LimitMismatch { limit } => {
                    return Ok(SemaphoreOutcome::LimitMismatch { limit });
                }
            };
            let slot = Slot {
                fence,
                nonce: request.nonce.clone(),
                owner: request.owner.clone(),
                metadata: request.metadata.clone(),
                acquired_at: now,
                heartbeat_at: now,
                expires_at: now.saturating_add(millis(request.ttl)),
                ttl: request.ttl,
            };
            let clearing = Clearing {
                fences: &clear,
                lapsed_before: now.saturating_sub(grace),
            };
            let op = self.take_slot(request, seen.as_ref(), &slot, clearing);
            let subject = subject("acquire", "semaphore_acquire", &request.name);
            match self.write_as(subject, op).await? {
                Write::Applied(item) => {
                    self.metrics().grants(Kind::Semaphore);
                    let semaphore = semaphore_from(&item)?;
                    self.semaphores_seen
                        .remember(&request.name, Some(&semaphore));
                    return Ok(SemaphoreOutcome::Granted { semaphore, fence });
                }
                // The plan was made on an old copy, or another acquire was granted
                // since: decide again on what is there now.
                Write::Rejected(item) => {
                    seen = item.as_ref().map(semaphore_from).transpose()?;
                    self.semaphores_seen.remember(&request.name, seen.as_ref());
                    if fresh {
                        lost += 1;
                        let pause = fastrand::u64(0..=(1u64 << lost.min(5)).min(MAX_LOST_PAUSE_MS));
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                    fresh = true;
                }
            }
        }
        Err(self.unavailable_as(
            subject("acquire", "semaphore_acquire", &request.name),
            format!("{MAX_WRITES} conditional writes in a row lost to other acquires"),
        ))
    }

    /// The write that adds `slot` to the semaphore as `seen`, clearing what
    /// `clearing` names.
    fn take_slot(
        &self,
        request: &SemaphoreRequest,
        seen: Option<&Semaphore>,
        slot: &Slot,
        clearing: Clearing<'_>,
    ) -> UpdateItemFluentBuilder {
        let op = self
            .update_semaphore(&request.name)
            .return_values(ReturnValue::AllNew)
            .expression_attribute_names("#fence", item::FENCE)
            .expression_attribute_names("#slots", SLOTS)
            .expression_attribute_values(":fence", n(slot.fence));
        match seen {
            None => op
                .condition_expression("attribute_not_exists(#fence)")
                .update_expression("SET #fence = :fence, #limit = :limit, #slots = :slots, #version = if_not_exists(#version, :v0) + :v1")
                .expression_attribute_names("#limit", LIMIT)
                .expression_attribute_values(":limit", n(request.limit))
                .expression_attribute_values(
                    ":slots",
                    AttributeValue::M(HashMap::from([(slot.fence.to_string(), slot_value(slot))])),
                ),
            Some(seen) => {
                let mut op = op
                    .expression_attribute_values(":seen", n(seen.fence))
                    .expression_attribute_names("#new", slot.fence.to_string())
                    .expression_attribute_values(":slot", slot_value(slot));
                let mut condition = "#fence = :seen".to_owned();
                let mut expression = "SET #fence = :fence, #slots.#new = :slot, #version = if_not_exists(#version, :v0) + :v1".to_owned();
                let (mut mine_named, mut over_named) = (false, false);
                for (i, fence) in clearing.fences.iter().enumerate() {
                    expression.push_str(if i == 0 { " REMOVE " } else { ", " });
                    expression.push_str(&format!("#slots.#c{i}"));
                    op = op.expression_attribute_names(format!("#c{i}"), fence.to_string());
                    // What the plan saw of the slot must still be so: the caller's
                    // own, or over (released, or ended before the grace).
                    let mine = seen
                        .slot(*fence)
                        .is_some_and(|old| old.nonce == request.nonce);
                    if mine {
                        condition.push_str(&format!(" AND #slots.#c{i}.#nonce = :nonce"));
                        mine_named = true;
                    } else {
                        condition.push_str(&format!(
                            " AND (#slots.#c{i}.#expires_at = :zero OR #slots.#c{i}.#expires_at < :lapsed)"
                        ));
                        over_named = true;
                    }
                }
                // DynamoDB refuses names and values an expression does not use.
                if mine_named {
                    op = op
                        .expression_attribute_names("#nonce", item::NONCE)
                        .expression_attribute_values(":nonce", s(request.nonce.as_str()));
                }
                if over_named {
                    op = op
                        .expression_attribute_names("#expires_at", item::EXPIRES_AT)
                        .expression_attribute_values(":zero", n(0))
                        .expression_attribute_values(":lapsed", n(clearing.lapsed_before));
                }
                let op = op.condition_expression(condition);
                op.update_expression(expression)
            }
        }
    }

    /// Extends the lease of the slot `holder` names by `ttl` (or by the lease length it
    /// was granted with): 1 request.
    pub async fn heartbeat_semaphore(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Option<Duration>,
    ) -> Result<Result<(Semaphore, Fence), SlotRejection>, StoreError> {
        let now = self.clock().now_millis();
        let fence = slot_fence(holder);
        let mut op = self
            .update_semaphore(name)
            .return_values(ReturnValue::AllNew)
            .expression_attribute_names("#slots", SLOTS)
            .expression_attribute_names("#f", fence.to_string())
            .expression_attribute_names("#heartbeat_at", item::HEARTBEAT_AT)
            .expression_attribute_names("#expires_at", item::EXPIRES_AT)
            .expression_attribute_names("#ttl_ms", item::TTL_MS)
            .expression_attribute_values(":now", n(now));
        let mut condition = "#slots.#f.#expires_at > :now".to_owned();
        if let Holder::Proven(_, nonce) = holder {
            condition.push_str(" AND #slots.#f.#nonce = :nonce");
            op = op
                .expression_attribute_names("#nonce", item::NONCE)
                .expression_attribute_values(":nonce", s(nonce.as_str()));
        }
        let update = match ttl {
            Some(ttl) => {
                let ttl_ms = millis(ttl);
                op = op
                    .expression_attribute_values(":expires_at", n(now.saturating_add(ttl_ms)))
                    .expression_attribute_values(":ttl_ms", n(ttl_ms));
                "SET #slots.#f.#heartbeat_at = :now, #slots.#f.#expires_at = :expires_at, #slots.#f.#ttl_ms = :ttl_ms, #version = if_not_exists(#version, :v0) + :v1"
            }
            None => {
                "SET #slots.#f.#heartbeat_at = :now, #slots.#f.#expires_at = :now + #slots.#f.#ttl_ms, #version = if_not_exists(#version, :v0) + :v1"
            }
        };
        let op = op.update_expression(update).condition_expression(condition);
        match self
            .write_as(subject("heartbeat", "semaphore_heartbeat", name), op)
            .await?
        {
            Write::Applied(item) => {
                self.metrics().heartbeats.inc();
                let semaphore = semaphore_from(&item)?;
                self.semaphores_seen.remember(name, Some(&semaphore));
                Ok(Ok((semaphore, fence)))
            }
            Write::Rejected(old) => {
                let old = old.as_ref().map(semaphore_from).transpose()?;
                // The record the condition failed on, at `now`: the check finds why.
                let rejection = check_slot(old.as_ref(), holder, now)
                    .err()
                    .unwrap_or(SlotRejection::NotHeld { fence });
                Ok(Err(rejection))
            }
        }
    }

    /// Releases the slot `holder` names: 1 request. A retried release answers the
    /// same; a [`Holder::Proven`] whose nonce is not the slot's is refused.
    pub async fn release_semaphore(
        &self,
        name: &LockName,
        holder: &Holder,
    ) -> Result<Result<Release, SlotRejection>, StoreError> {
        let fence = slot_fence(holder);
        let Some((semaphore, applied)) =
            self.release_slot(name, holder, "semaphore_release").await?
        else {
            return Ok(Ok(Release {
                released: false,
                fence: None,
            }));
        };
        let slot = semaphore.slot(fence);
        if let (Holder::Proven(_, nonce), Some(slot)) = (holder, slot)
            && slot.nonce != *nonce
        {
            return Ok(Err(SlotRejection::NotHolder { fence }));
        }
        Ok(Ok(Release {
            released: applied || slot.is_some_and(Slot::is_released),
            fence: Some(semaphore.fence),
        }))
    }

    /// Releases slot `fence` in its holder's stead, as the holder's release would (an
    /// operator's force-release): 1 request. Answers the semaphore after, and whether
    /// this changed it (`false`: the slot was released already, or is not there);
    /// `None` when the semaphore has no record.
    pub async fn force_release_slot(
        &self,
        name: &LockName,
        fence: Fence,
    ) -> Result<Option<(Semaphore, bool)>, StoreError> {
        self.release_slot(name, &Holder::Fence(fence), "semaphore_force_release")
            .await
    }

    /// The write of a slot's release: the semaphore after (or as the condition found
    /// it), and whether the write applied; `None` when there is no record.
    async fn release_slot(
        &self,
        name: &LockName,
        holder: &Holder,
        label: &'static str,
    ) -> Result<Option<(Semaphore, bool)>, StoreError> {
        let fence = slot_fence(holder);
        let mut condition =
            "attribute_exists(#slots.#f) AND #slots.#f.#expires_at <> :zero".to_owned();
        let mut op = self
            .update_semaphore(name)
            .return_values(ReturnValue::AllNew)
            .update_expression("SET #slots.#f.#expires_at = :zero, #slots.#f.#released_at = :now, #version = if_not_exists(#version, :v0) + :v1")
            .expression_attribute_names("#slots", SLOTS)
            .expression_attribute_names("#f", fence.to_string())
            .expression_attribute_names("#expires_at", item::EXPIRES_AT)
            .expression_attribute_names("#released_at", item::RELEASED_AT)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(self.clock().now_millis()));
        if let Holder::Proven(_, nonce) = holder {
            condition.push_str(" AND #slots.#f.#nonce = :nonce");
            op = op
                .expression_attribute_names("#nonce", item::NONCE)
                .expression_attribute_values(":nonce", s(nonce.as_str()));
        }
        let op = op.condition_expression(condition);
        Ok(
            match self.write_as(subject("release", label, name), op).await? {
                Write::Applied(item) => {
                    self.metrics().releases.inc();
                    let semaphore = semaphore_from(&item)?;
                    self.semaphores_seen.remember(name, Some(&semaphore));
                    if let Some(slot) = semaphore.slot(fence) {
                        let held = self.clock().now_millis().saturating_sub(slot.acquired_at);
                        self.metrics().held(Kind::Semaphore, millis_duration(held));
                    }
                    Some((semaphore, true))
                }
                Write::Rejected(Some(item)) => Some((semaphore_from(&item)?, false)),
                Write::Rejected(None) => None,
            },
        )
    }

    /// The semaphore's record, read strongly consistently; `None` if there is none.
    pub async fn get_semaphore(&self, name: &LockName) -> Result<Option<Semaphore>, StoreError> {
        let record = self
            .read_record(key(name), "semaphore_read")
            .await
            .map_err(|detail| {
                self.unavailable_as(subject("read", "semaphore_read", name), detail)
            })?;
        let semaphore = record.as_ref().map(semaphore_from).transpose()?;
        self.semaphores_seen.remember(name, semaphore.as_ref());
        Ok(semaphore)
    }

    fn update_semaphore(&self, name: &LockName) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(self.table.as_ref())
            .key(item::NAME, key(name))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            // Every write counts in the semaphore's version, as a lock's do.
            .expression_attribute_names("#version", item::VERSION)
            .expression_attribute_values(":v0", n(0))
            .expression_attribute_values(":v1", n(1))
    }
}

/// The slots an acquire clears: `fences`, each either the caller's own or over
/// before `lapsed_before` (or released).
#[derive(Debug, Clone, Copy)]
struct Clearing<'a> {
    fences: &'a [Fence],
    lapsed_before: Millis,
}

/// The fence a semaphore holder names (semaphores issue no tokens, so a token names
/// fence 0, which no slot has).
fn slot_fence(holder: &Holder) -> Fence {
    holder.fence().unwrap_or(0)
}

fn slot_value(slot: &Slot) -> AttributeValue {
    let mut fields = HashMap::from([
        (item::NONCE.to_owned(), s(slot.nonce.as_str())),
        (item::ACQUIRED_AT.to_owned(), n(slot.acquired_at)),
        (item::HEARTBEAT_AT.to_owned(), n(slot.heartbeat_at)),
        (item::EXPIRES_AT.to_owned(), n(slot.expires_at)),
        (item::TTL_MS.to_owned(), n(millis(slot.ttl))),
    ]);
    if let Some(owner) = &slot.owner {
        fields.insert(item::OWNER.to_owned(), s(owner));
    }
    if let Some(metadata) = &slot.metadata {
        fields.insert(item::METADATA.to_owned(), s(metadata.to_string()));
    }
    AttributeValue::M(fields)
}

/// The semaphore an item holds.
pub(super) fn semaphore_from(item: &Item) -> Result<Semaphore, MalformedItem> {
    let key = string(item, item::NAME).unwrap_or_default();
    let malformed = |reason: String| MalformedItem {
        name: key.clone(),
        reason,
    };
    let raw_name = key
        .strip_prefix(KEY_PREFIX)
        .ok_or_else(|| malformed(format!("a semaphore's key starts with {KEY_PREFIX:?}")))?;
    let name = LockName::parse(raw_name).map_err(|e| malformed(e.0))?;
    let raw_slots = item
        .get(SLOTS)
        .and_then(|v| v.as_m().ok())
        .ok_or_else(|| malformed(format!("{SLOTS} is missing or not a map")))?;
    let mut slots = raw_slots
        .iter()
        .map(|(fence, fields)| slot_from(fence, fields).map_err(&malformed))
        .collect::<Result<Vec<_>, _>>()?;
    slots.sort_by_key(|slot| slot.fence);
    Ok(Semaphore {
        name,
        limit: number(item, LIMIT).map_err(&malformed)?,
        fence: number(item, item::FENCE).map_err(&malformed)?,
        slots,
        version: match item.get(item::VERSION) {
            Some(_) => number(item, item::VERSION).map_err(&malformed)?,
            None => 0,
        },
    })
}

fn slot_from(fence: &str, value: &AttributeValue) -> Result<Slot, String> {
    let fields = value
        .as_m()
        .map_err(|_| format!("slot {fence:?} is not a map"))?;
    let in_slot = |reason: String| format!("slot {fence}: {reason}");
    let nonce = Nonce::parse(&required_string(fields, item::NONCE).map_err(in_slot)?)
        .map_err(|e| in_slot(e.0))?;
    let metadata = string(fields, item::METADATA)
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| in_slot(format!("{} is not JSON: {e}", item::METADATA)))?;
    Ok(Slot {
        fence: crate::domain::parse_fence(fence).map_err(|e| e.0)?,
        nonce,
        owner: string(fields, item::OWNER),
        metadata,
        acquired_at: number(fields, item::ACQUIRED_AT).map_err(in_slot)?,
        heartbeat_at: number(fields, item::HEARTBEAT_AT).map_err(in_slot)?,
        expires_at: number(fields, item::EXPIRES_AT).map_err(in_slot)?,
        ttl: Duration::from_millis(number(fields, item::TTL_MS).map_err(in_slot)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(fence: Fence) -> Slot {
        Slot {
            fence,
            nonce: Nonce::parse("n1").unwrap(),
            owner: Some("cron@host".into()),
            metadata: Some(serde_json::json!({"pid": 7})),
            acquired_at: 1_000,
            heartbeat_at: 2_000,
            expires_at: 31_000,
            ttl: Duration::from_secs(30),
        }
    }

    #[test]
    fn an_item_maps_to_the_semaphore_it_was_written_from() {
        let item = HashMap::from([
            (item::NAME.to_owned(), s("semaphore/pool")),
            (item::FENCE.to_owned(), n(12)),
            (LIMIT.to_owned(), n(3)),
            (
                SLOTS.to_owned(),
                AttributeValue::M(HashMap::from([
                    ("12".to_owned(), slot_value(&slot(12))),
                    ("9".to_owned(), slot_value(&slot(9))),
                ])),
            ),
        ]);
        let semaphore = semaphore_from(&item).unwrap();
        assert_eq!(semaphore.name.as_str(), "pool");
        assert_eq!((semaphore.limit, semaphore.fence), (3, 12));
        assert_eq!(semaphore.slots, vec![slot(9), slot(12)]);
    }

    #[test]
    fn a_lock_item_is_not_a_semaphore() {
        let item = HashMap::from([
            (item::NAME.to_owned(), s("pool")),
            (item::FENCE.to_owned(), n(12)),
        ]);
        let err = semaphore_from(&item).unwrap_err().to_string();
        assert!(err.contains("semaphore/"), "{err}");
    }
}

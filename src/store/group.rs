//! Lock groups: several locks taken, renewed or released together, all or nothing, in
//! one DynamoDB `TransactWriteItems` whose updates are exactly those of the single-lock
//! operations. A group is just locks taken together: each lock of a group is an
//! ordinary lock record, which every single-lock route serves.
//!
//! - **Acquire**: one transaction (up to [`MAX_GROUP`] updates); when it is cancelled,
//!   the cancellation reasons carry each refused lock as it was (`ALL_OLD`), so the
//!   answer names every holder without a second read. Once granted, one strongly
//!   consistent `BatchGetItem` reads the fences the transaction issued (a transaction
//!   returns no values): 2 requests per grant, 1 per refusal.
//! - **Heartbeat**: one transaction, then one read for the new leases; a group with
//!   one lock lost renews none of them and says which.
//! - **Release**: one transaction; a lock of the group that another holder has taken
//!   meanwhile is left out, and the rest released by a second transaction.
//! - **Reservation** ([`DynamoStore::reserve_group`]): a group that waits, and was
//!   refused, reserves its locks so that single-lock acquires cannot keep taking one
//!   of them before it; see there.

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::{
    TransactWriteItemsError, TransactWriteItemsOutput,
};
use aws_sdk_dynamodb::types::{
    CancellationReason, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use super::capacity;
use super::dynamo::{
    Expression, Release, Renewal, Subject, Write, release_expression, renew_expression,
};
use super::item::{self, Item, n, s};
use super::{AcquireRequest, DynamoStore, StoreError};
use crate::domain::{Holder, Kind, Lock, LockName, LockRejection, Nonce, Token, check_holder};
use crate::metrics::CapacityUnit;

/// The most locks in one group: DynamoDB's limit of updates in one transaction.
pub const MAX_GROUP: usize = 100;

/// How long a waiting group's reservation of its locks lasts after each refused
/// attempt, on top of the skew margin: longer than the longest pause between two
/// attempts of a waiting group (1 s, and the requests themselves), so that it stands
/// while the group waits, and short, so that a group that went away without clearing
/// it (its server stopped) holds nobody up for long.
pub const RESERVATION: std::time::Duration = std::time::Duration::from_secs(3);

/// How many times a transaction that met another one on the same items is tried
/// before the answer is 503.
const MAX_TRANSACTION_CONFLICTS: usize = 4;

/// How a group acquire ended.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupOutcome {
    /// The caller holds every lock, each under a new fence, in the order asked.
    Granted(Vec<Lock>),
    /// Nothing was taken: these locks are held by other holders.
    Held(Vec<Lock>),
}

/// How a transaction ended.
enum Transaction {
    Applied,
    /// Cancelled: for each update, in order, whether its condition failed, and on
    /// which record (none when the lock has no record).
    Refused(Vec<Refusal>),
}

/// What one transaction came to, as [`DynamoStore::send_transaction`] sent it.
pub(super) enum Sent {
    Applied,
    /// A condition failed: why DynamoDB cancelled it, item by item.
    Refused(Vec<CancellationReason>),
    /// Another transaction held one of its items for a moment; nothing changed.
    Conflict,
    /// DynamoDB could not be reached, or failed.
    Failed(String),
}

/// One update of a cancelled transaction.
enum Refusal {
    /// Its condition held; another update's did not.
    Passed,
    /// Its condition failed on this record, or on no record.
    Failed(Option<Item>),
}

impl DynamoStore {
    /// Takes every lock of `request.names`, or none: each as [`DynamoStore::acquire`]
    /// takes one, with the same nonce, lease, owner and metadata.
    pub async fn acquire_group(
        &self,
        names: &[LockName],
        request: &AcquireRequest,
    ) -> Result<GroupOutcome, StoreError> {
        let now_micros = self.clock().now_micros();
        let tokens: Vec<Token> = names.iter().map(|_| Token::generate()).collect();
        let updates = names
            .iter()
            .zip(&tokens)
            .map(|(name, token)| {
                let single = AcquireRequest {
                    name: name.clone(),
                    ..request.clone()
                };
                (
                    name,
                    self.group_acquire_expression(&single, token, now_micros),
                )
            })
            .collect();
        match self
            .transact("acquire", "group_acquire", names, updates)
            .await?
        {
            Transaction::Refused(refusals) => {
                // An acquire's condition holds on a missing record: each failed on one.
                let held = refusals
                    .iter()
                    .filter_map(|refusal| match refusal {
                        Refusal::Failed(Some(item)) => {
                            Some(Lock::try_from(item).map(|lock| lock.seen_by(&request.nonce)))
                        }
                        _ => None,
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.metrics().conflicts(Kind::Group);
                Ok(GroupOutcome::Held(held))
            }
            Transaction::Applied => {
                let locks = self.read_all("group_read", names).await?;
                // Each record is this grant's unless its lease ended in between and
                // another holder took it, which only a lease shorter than the time
                // between the two requests allows.
                for (lock, token) in locks.iter().zip(&tokens) {
                    if lock.token.as_ref() != Some(token) {
                        return Err(self.unavailable_as(
                            group_subject("acquire", "group_read", &lock.name),
                            "the lease ended before its grant could be read; acquire again".into(),
                        ));
                    }
                }
                self.metrics().grants(Kind::Group);
                Ok(GroupOutcome::Granted(locks))
            }
        }
    }

    /// Reserves the locks of a waiting group that was just refused, so that it is the
    /// next holder of each once it is free: until the reservation ends, an acquire by
    /// another nonce does not take a reserved lock (see
    /// [`DynamoStore::acquire_expression`]); a lease is never cut short. One
    /// conditional `UpdateItem` per lock, in the order of `names` (sorted), stopping
    /// at the first lock another waiting group has reserved: that group reserved
    /// every name before it too, or its reservations there ended, so of groups that
    /// want the same locks the one that reserved the first of them goes first, and no
    /// two groups each keep a lock from the other. A lock without a record is free and
    /// skipped. The group's grant clears its reservations, and so does
    /// [`DynamoStore::unreserve_group`] when it stops waiting. Answers how many locks
    /// it reserved.
    pub async fn reserve_group(
        &self,
        names: &[LockName],
        nonce: &Nonce,
    ) -> Result<usize, StoreError> {
        let now = self.clock().now_millis();
        let until = now
            .saturating_add(super::dynamo::millis(RESERVATION))
            .saturating_add(self.policy().skew_ms());
        let mut reserved = 0;
        for name in names {
            let mut e = Expression {
                update: "SET #reserved_by = :nonce, #reserved_until = :until".to_owned(),
                condition: "attribute_exists(#fence) AND (attribute_not_exists(#reserved_by) \
                     OR #reserved_until < :now OR #reserved_by = :nonce)"
                    .to_owned(),
                ..Expression::default()
            };
            e.name("#fence", item::FENCE)
                .name("#reserved_by", item::RESERVED_BY)
                .name("#reserved_until", item::RESERVED_UNTIL)
                .value(":nonce", s(nonce.as_str()))
                .value(":until", n(until))
                .value(":now", n(now));
            let op = e
                .purged(self.purge_at())
                .on(self.update(name))
                .return_values(ReturnValue::None);
            let subject = group_subject("reserve", "group_reserve", name);
            match self.write_as(subject, op).await? {
                Write::Applied(_) => reserved += 1,
                Write::Rejected(None) => {}
                Write::Rejected(Some(_)) => break,
            }
        }
        Ok(reserved)
    }

    /// Clears the reservations a group that stopped waiting made: one conditional
    /// `UpdateItem` per lock, which changes nothing where another group's reservation
    /// has taken its place.
    pub async fn unreserve_group(
        &self,
        names: &[LockName],
        nonce: &Nonce,
    ) -> Result<(), StoreError> {
        for name in names {
            let mut e = Expression {
                update: "REMOVE #reserved_by, #reserved_until".to_owned(),
                condition: "#reserved_by = :nonce".to_owned(),
                ..Expression::default()
            };
            e.name("#reserved_by", item::RESERVED_BY)
                .name("#reserved_until", item::RESERVED_UNTIL)
                .value(":nonce", s(nonce.as_str()));
            let op = e
                .purged(self.purge_at())
                .on(self.update(name))
                .return_values(ReturnValue::None);
            let subject = group_subject("unreserve", "group_unreserve", name);
            self.write_as(subject, op).await?;
        }
        Ok(())
    }

    /// Renews every lock of the group, or none: each as a heartbeat renews one.
    /// Answers the renewed locks in order, or why each refused lock refused.
    pub async fn heartbeat_group(
        &self,
        holders: &[(LockName, Holder)],
        ttl: Option<std::time::Duration>,
    ) -> Result<Result<Vec<Lock>, Vec<(LockName, LockRejection)>>, StoreError> {
        let now = self.clock().now_millis();
        let renewal = Renewal {
            ttl,
            body: None,
            keep_longer: false,
        };
        let names: Vec<LockName> = holders.iter().map(|(name, _)| name.clone()).collect();
        let updates = holders
            .iter()
            .map(|(name, holder)| (name, renew_expression(holder, &renewal, now)))
            .collect();
        match self
            .transact("heartbeat", "group_heartbeat", &names, updates)
            .await?
        {
            Transaction::Applied => Ok(Ok(self.read_all("group_read", &names).await?)),
            Transaction::Refused(refusals) => {
                let mut refused = Vec::new();
                for ((name, holder), refusal) in holders.iter().zip(refusals) {
                    let Refusal::Failed(item) = refusal else {
                        continue;
                    };
                    let lock = item.as_ref().map(Lock::try_from).transpose()?;
                    let rejection = check_holder(lock.as_ref(), holder, now).err().unwrap_or(
                        LockRejection::LeaseExpired {
                            fence: lock.as_ref().map_or(0, |lock| lock.fence),
                            released: lock.as_ref().is_some_and(Lock::is_released),
                        },
                    );
                    refused.push((name.clone(), rejection));
                }
                Ok(Err(refused))
            }
        }
    }

    /// Releases every lock of the group its holder still holds: one transaction, and
    /// a second without the locks that moved on. Answers each lock's [`Release`] in
    /// order, or the locks whose nonce sent as proof is not their holder's (and then
    /// nothing changed).
    pub async fn release_group(
        &self,
        holders: &[(LockName, Holder)],
    ) -> Result<Result<Vec<Release>, Vec<(LockName, LockRejection)>>, StoreError> {
        let now = self.clock().now_millis();
        let mut answers: Vec<Option<Release>> = vec![None; holders.len()];
        let mut pending: Vec<usize> = (0..holders.len()).collect();
        let mut first = true;
        while !pending.is_empty() {
            let names: Vec<LockName> = pending.iter().map(|&i| holders[i].0.clone()).collect();
            let updates = pending
                .iter()
                .map(|&i| (&holders[i].0, release_expression(&holders[i].1, now)))
                .collect();
            let refusals = match self
                .transact("release", "group_release", &names, updates)
                .await?
            {
                Transaction::Applied => {
                    for &i in &pending {
                        answers[i] = Some(Release {
                            released: true,
                            fence: holders[i].1.fence(),
                        });
                    }
                    break;
                }
                Transaction::Refused(refusals) => refusals,
            };
            let mut still = Vec::new();
            let mut not_holder = Vec::new();
            for (&i, refusal) in pending.iter().zip(refusals) {
                let item = match refusal {
                    Refusal::Passed => {
                        still.push(i);
                        continue;
                    }
                    Refusal::Failed(None) => {
                        answers[i] = Some(Release {
                            released: false,
                            fence: None,
                        });
                        continue;
                    }
                    Refusal::Failed(Some(item)) => item,
                };
                let lock = Lock::try_from(&item)?;
                let (name, holder) = &holders[i];
                match holder {
                    Holder::Proven(fence, nonce)
                        if lock.fence == *fence && lock.nonce != *nonce =>
                    {
                        not_holder.push((name.clone(), LockRejection::NotHolder { fence: *fence }));
                    }
                    _ => {
                        let same = match holder {
                            Holder::Fence(fence) | Holder::Proven(fence, _) => lock.fence == *fence,
                            Holder::Token(token) => lock.token.as_ref() == Some(token),
                        };
                        answers[i] = Some(Release {
                            released: same && lock.is_released(),
                            fence: Some(lock.fence),
                        });
                    }
                }
            }
            // A wrong proof refuses the whole release, as it refuses a single one;
            // the first transaction was cancelled, so nothing changed.
            if first && !not_holder.is_empty() {
                return Ok(Err(not_holder));
            }
            first = false;
            pending = still;
        }
        self.metrics().releases.inc_by(
            answers
                .iter()
                .flatten()
                .filter(|release| release.released)
                .count() as u64,
        );
        Ok(Ok(answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or(Release {
                    released: false,
                    fence: None,
                })
            })
            .collect()))
    }

    /// Sends `updates` as one transaction, retrying a few times when it met another
    /// transaction on the same items.
    async fn transact(
        &self,
        operation: &'static str,
        label: &'static str,
        names: &[LockName],
        updates: Vec<(&LockName, Expression)>,
    ) -> Result<Transaction, StoreError> {
        let items = self.write_items(operation, label, updates)?;
        let first = &names[0];
        let mut conflicts = 0;
        loop {
            match self.send_transaction(label, items.clone()).await {
                Sent::Applied => {
                    for name in names {
                        self.written.tell(name);
                    }
                    return Ok(Transaction::Applied);
                }
                Sent::Refused(reasons) => return Ok(Transaction::Refused(refusals(reasons))),
                // Another transaction held one of the items for a moment.
                Sent::Conflict if conflicts < MAX_TRANSACTION_CONFLICTS => {
                    conflicts += 1;
                    let pause = 10 * conflicts as u64 + fastrand::u64(0..20);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                Sent::Conflict => {
                    return Err(self.unavailable_as(
                        group_subject(operation, label, first),
                        "the transaction kept meeting others on the same items".into(),
                    ));
                }
                Sent::Failed(detail) => {
                    return Err(self.unavailable_as(group_subject(operation, label, first), detail));
                }
            }
        }
    }

    /// Sends one `TransactWriteItems` of `items`, counted under `label`, with what it
    /// consumed (or, refused, what it is billed).
    pub(super) async fn send_transaction(
        &self,
        label: &'static str,
        items: Vec<TransactWriteItem>,
    ) -> Sent {
        let started = Instant::now();
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await;
        let reasons = cancellation_reasons(&result);
        let has = |code: &str| {
            reasons
                .as_ref()
                .is_some_and(|reasons| reasons.iter().any(|r| r.code() == Some(code)))
        };
        let refused = has("ConditionalCheckFailed");
        let conflict = has("TransactionConflict");
        self.metrics().dynamodb(
            label,
            transaction_outcome(&result, refused),
            started.elapsed(),
        );
        match (result, reasons) {
            (Ok(output), _) => {
                capacity::reported(
                    self.metrics(),
                    label,
                    CapacityUnit::Write,
                    output.consumed_capacity(),
                );
                Sent::Applied
            }
            (_, Some(reasons)) if refused => {
                capacity::refused_transaction(self.metrics(), label, &reasons);
                Sent::Refused(reasons)
            }
            (_, Some(_)) if conflict => Sent::Conflict,
            (Err(err), _) => Sent::Failed(DisplayErrorContext(err).to_string()),
        }
    }

    /// One conditional update per lock, as a transaction's items.
    fn write_items(
        &self,
        operation: &'static str,
        label: &'static str,
        updates: Vec<(&LockName, Expression)>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        updates
            .into_iter()
            .map(|(name, e)| {
                let e = e.purged(self.purge_at()).versioned();
                let update = Update::builder()
                    .table_name(self.table.as_ref())
                    .key(item::NAME, s(name.as_str()))
                    .update_expression(e.update)
                    .condition_expression(e.condition)
                    .set_expression_attribute_names(Some(e.names))
                    .set_expression_attribute_values(Some(e.values))
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .build()
                    .map_err(|err| {
                        self.unavailable_as(group_subject(operation, label, name), err.to_string())
                    })?;
                Ok(TransactWriteItem::builder().update(update).build())
            })
            .collect()
    }

    /// The records of `names`, in their order, read strongly consistently.
    async fn read_all(
        &self,
        label: &'static str,
        names: &[LockName],
    ) -> Result<Vec<Lock>, StoreError> {
        let mut keys: Vec<Item> = names
            .iter()
            .map(|name| HashMap::from([(item::NAME.to_owned(), s(name.as_str()))]))
            .collect();
        let mut found: HashMap<String, Lock> = HashMap::new();
        // DynamoDB may leave keys unprocessed under load; they are asked for again.
        for _ in 0..10 {
            let (items, left) = self.read_batch(label, keys).await.map_err(|detail| {
                self.unavailable_as(group_subject("read", label, &names[0]), detail)
            })?;
            for raw in &items {
                self.hold_unmarked_body(raw).await;
                let lock = Lock::try_from(raw)?;
                found.insert(lock.name.to_string(), lock);
            }
            keys = left;
            if keys.is_empty() {
                break;
            }
        }
        let locks = names
            .iter()
            .map(|name| {
                found.remove(name.as_str()).ok_or_else(|| {
                    self.unavailable_as(
                        group_subject("read", label, name),
                        "the record was not found right after the transaction wrote it".into(),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.with_bodies(locks).await
    }
}

fn group_subject<'a>(
    operation: &'static str,
    label: &'static str,
    name: &'a LockName,
) -> Subject<'a> {
    Subject {
        kind: Kind::Lock,
        operation,
        label,
        name,
    }
}

/// Why DynamoDB cancelled a transaction, item by item, if it did.
fn cancellation_reasons(
    result: &Result<TransactWriteItemsOutput, SdkError<TransactWriteItemsError>>,
) -> Option<Vec<CancellationReason>> {
    match result {
        Err(SdkError::ServiceError(context)) => match context.err() {
            TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                Some(cancelled.cancellation_reasons().to_vec())
            }
            _ => None,
        },
        _ => None,
    }
}

/// A transaction's outcome, as the metrics label it.
fn transaction_outcome(
    result: &Result<TransactWriteItemsOutput, SdkError<TransactWriteItemsError>>,
    refused: bool,
) -> &'static str {
    match (result, refused) {
        (Ok(_), _) => "granted",
        (_, true) => "conflict",
        (Err(err), false) => match err.code() {
            Some("TransactionCanceledException") => "cancelled",
            Some("ThrottlingException" | "ProvisionedThroughputExceededException") => "throttled",
            _ => "error",
        },
    }
}

/// What each item of a refused transaction found: its old item where its condition
/// failed.
fn refusals(reasons: Vec<CancellationReason>) -> Vec<Refusal> {
    reasons
        .into_iter()
        .map(|r| {
            if r.code() == Some("ConditionalCheckFailed") {
                Refusal::Failed(r.item.filter(|item| !item.is_empty()))
            } else {
                Refusal::Passed
            }
        })
        .collect()
}

//! Reclaiming stale records: a record whose lease was released, or ran out, at least
//! the reclaim delay ago, and whose body is empty, is deleted. Each deletion is a
//! `DeleteItem` conditioned on the record being unchanged since the scan found it
//! (same fence) and still stale and empty, so a concurrent acquire, update or
//! release always wins over it. A record with a body is never deleted, nor one that a
//! waiting lock group has reserved (until the reservation ends), nor a disabled one.
//!
//! This is `FENCELOCK_RECLAIM_BY=scan`, the default. With `ttl`, DynamoDB's own TTL
//! deletes stale records by the `purge_at` every write sets ([`super::item::PURGE_AT`]),
//! and no server scans; AWS does not spell out that its deletion re-checks the item
//! at the moment it deletes, which is why scanning stays the default
//! (docs/operations.md, "Cleanup by TTL").

use crate::domain::Kind;
use crate::metrics::CapacityUnit;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::dynamo::outcome_of;
use super::item::{self, n, s};
use super::{DynamoStore, StoreError};

/// Stale, empty (no body in the record nor kept out of it), not reserved and not disabled (an operator's disabling outlives any
/// reclaim delay), as a filter and a condition (`:cutoff_released`,
/// `:cutoff_expired`, `:now`).
const STALE_AND_EMPTY: &str = "(attribute_not_exists(#body) OR #body = :empty) AND attribute_not_exists(#body_id) AND \
     ((#expires_at = :zero AND (attribute_not_exists(#released_at) OR #released_at < :cutoff_released)) \
      OR (#expires_at <> :zero AND #expires_at < :cutoff_expired)) AND \
     (attribute_not_exists(#reserved_until) OR #reserved_until < :now) AND \
     attribute_not_exists(#disabled_at)";

/// What one sweep of the table did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Stale records the scan found.
    pub found: usize,
    /// Of those, the ones deleted (the rest changed in between, and were kept).
    pub deleted: usize,
}

impl DynamoStore {
    /// Scans the whole table once and deletes every record that is stale by
    /// `reclaim_after` and has an empty body.
    pub async fn reclaim_stale(&self, reclaim_after: Duration) -> Result<Sweep, StoreError> {
        if self.clock_suspect() {
            // Its cutoffs are read from a clock that is wrong; the next sweep will do.
            tracing::warn!("the clock is suspect: this sweep is skipped");
            return Ok(Sweep::default());
        }
        let now = self.clock().now_millis();
        let after = i64::try_from(reclaim_after.as_millis()).unwrap_or(i64::MAX);
        // An unreleased lease must also be over for every server (skew margin and
        // lock-delay) before its record goes, or deleting it would free it early.
        let cutoffs = [
            now.saturating_sub(after),
            self.policy().takeover_before(now.saturating_sub(after)),
            now,
        ];
        let mut sweep = Sweep::default();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let started = Instant::now();
            let page = self
                .client
                .scan()
                .table_name(self.table.as_ref())
                .filter_expression(STALE_AND_EMPTY)
                .projection_expression("#name, #fence")
                .set_expression_attribute_names(Some(stale_names()))
                .expression_attribute_names("#name", item::NAME)
                .expression_attribute_names("#fence", item::FENCE)
                .set_expression_attribute_values(Some(stale_values(cutoffs)))
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
                .send()
                .await;
            self.metrics()
                .dynamodb("reclaim_scan", outcome_of(&page), started.elapsed());
            let page = page.map_err(|err| {
                unavailable(
                    "scan for stale locks",
                    "",
                    DisplayErrorContext(err).to_string(),
                )
            })?;
            super::capacity::reported(
                self.metrics(),
                "reclaim_scan",
                CapacityUnit::Read,
                page.consumed_capacity(),
            );
            for found in page.items() {
                sweep.found += 1;
                if self.delete_if_stale(found, cutoffs).await? {
                    sweep.deleted += 1;
                }
            }
            match page.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(sweep),
            }
        }
    }

    /// Deletes `found` if it is still the record the scan saw, stale and empty.
    async fn delete_if_stale(
        &self,
        found: &HashMap<String, AttributeValue>,
        cutoffs: [i64; 3],
    ) -> Result<bool, StoreError> {
        let (Some(name), Some(fence)) = (found.get(item::NAME), found.get(item::FENCE)) else {
            return Ok(false);
        };
        let started = Instant::now();
        let result = self
            .client
            .delete_item()
            .table_name(self.table.as_ref())
            .key(item::NAME, name.clone())
            .condition_expression(format!("#fence = :fence AND {STALE_AND_EMPTY}"))
            .set_expression_attribute_names(Some(stale_names()))
            .expression_attribute_names("#fence", item::FENCE)
            .set_expression_attribute_values(Some(stale_values(cutoffs)))
            .expression_attribute_values(":fence", fence.clone())
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        self.metrics()
            .dynamodb("reclaim", outcome_of(&result), started.elapsed());
        let name = name.as_s().map_or("", String::as_str);
        match result {
            Ok(output) => {
                super::capacity::reported(
                    self.metrics(),
                    "reclaim",
                    CapacityUnit::Write,
                    output.consumed_capacity(),
                );
                tracing::info!(lock = name, "reclaimed a stale lock record");
                if let Ok(name) = crate::domain::LockName::parse(name) {
                    self.written.tell(&name);
                }
                Ok(true)
            }
            Err(SdkError::ServiceError(context))
                if matches!(
                    context.err(),
                    DeleteItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                if let DeleteItemError::ConditionalCheckFailedException(failed) = context.err() {
                    super::capacity::refused_write(self.metrics(), "reclaim", failed.item());
                }
                Ok(false)
            }
            Err(err) => Err(unavailable(
                "reclaim",
                name,
                DisplayErrorContext(err).to_string(),
            )),
        }
    }
}

fn stale_names() -> HashMap<String, String> {
    [
        ("#body", item::BODY),
        ("#body_id", item::BODY_ID),
        ("#expires_at", item::EXPIRES_AT),
        ("#released_at", item::RELEASED_AT),
        ("#reserved_until", item::RESERVED_UNTIL),
        ("#disabled_at", item::DISABLED_AT),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The values of [`STALE_AND_EMPTY`], from the cutoffs of a released and of an
/// expired lease and the time now.
fn stale_values([released, expired, now]: [i64; 3]) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (":now".to_owned(), n(now)),
        (":empty".to_owned(), s("")),
        (":zero".to_owned(), n(0)),
        (":cutoff_released".to_owned(), n(released)),
        (":cutoff_expired".to_owned(), n(expired)),
    ])
}

fn unavailable(operation: &'static str, name: &str, detail: String) -> StoreError {
    tracing::warn!(lock = name, operation, %detail, "DynamoDB request failed");
    StoreError::Unavailable {
        operation,
        kind: Kind::Lock,
        name: name.to_owned(),
        detail,
    }
}

//! [`DynamoStore`]: the lock operations as single conditional `UpdateItem`s (and a
//! strongly consistent `GetItem` for status), with their conflicts read from
//! `ReturnValuesOnConditionCheckFailure = ALL_OLD` instead of a second request.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Region, timeout::TimeoutConfig};
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::item::{self, Item, n, s};
use super::{AcquireOutcome, AcquireRequest, RenewOutcome, StoreError};
use crate::clock::Clock;
use crate::domain::{Fence, Lock, LockName, LockRejection, Millis, check_holder};

/// Where and how to reach DynamoDB.
#[derive(Debug, Clone, Default)]
pub struct DynamoSettings {
    /// `None` means AWS's own endpoint for the region.
    pub endpoint: Option<String>,
    /// `None` means the standard AWS chain (`AWS_REGION`, profile, …).
    pub region: Option<String>,
    /// The longest one DynamoDB operation may take, retries included.
    pub timeout: Duration,
}

/// Builds a DynamoDB client from the standard AWS configuration chain (credentials,
/// region) with fencelock's endpoint, region and timeout on top.
pub async fn connect(settings: &DynamoSettings) -> Result<Client, String> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        TimeoutConfig::builder()
            .operation_timeout(settings.timeout)
            // Several attempts fit in one operation; each write is safe to retry.
            .operation_attempt_timeout(settings.timeout / 3)
            .connect_timeout(settings.timeout / 3)
            .build(),
    );
    if let Some(endpoint) = &settings.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err("no AWS region is configured: set AWS_REGION (for example us-east-1)".into());
    }
    Ok(Client::new(&config))
}

/// Lock state in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: Arc<str>,
    clock: Arc<dyn Clock>,
    skew_ms: i64,
}

/// The answer to one conditional write.
enum Write {
    Applied(Item),
    /// The condition failed; the item as it was (none if there was no item).
    Rejected(Option<Item>),
}

impl DynamoStore {
    /// A store on `table`, reading time from `clock`. A lease that ended is taken over
    /// only once it has been over for `clock_skew`, the most the servers' clocks may
    /// disagree.
    pub fn new(client: Client, table: &str, clock: Arc<dyn Clock>, clock_skew: Duration) -> Self {
        Self {
            client,
            table: table.into(),
            clock,
            skew_ms: i64::try_from(clock_skew.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// When another holder may take over from `holder`: the skew margin after its
    /// lease ends.
    pub fn free_at(&self, holder: &Lock) -> Millis {
        holder.expires_at.saturating_add(self.skew_ms)
    }

    /// The clock this store decides by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Takes the lock when nobody holds it, its lease ended more than the skew margin
    /// ago, or the caller's nonce holds it already; each grant issues a new fence.
    pub async fn acquire(&self, request: &AcquireRequest) -> Result<AcquireOutcome, StoreError> {
        let now_micros = self.clock.now_micros();
        let now = now_micros.div_euclid(1000);
        let ttl_ms = i64::try_from(request.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut set = vec![
            // A record created anew continues above every fence the name issued before
            // it was deleted: fences are floored by the time in microseconds.
            "#fence = if_not_exists(#fence, :floor) + :one",
            "#nonce = :nonce",
            "#acquired_at = :now",
            "#heartbeat_at = :now",
            "#expires_at = :expires_at",
            "#ttl_ms = :ttl_ms",
        ];
        let mut remove = Vec::new();
        let mut op = self
            .update(&request.name)
            .condition_expression(
                "attribute_not_exists(#fence) OR #expires_at < :takeover OR #nonce = :nonce",
            )
            .expression_attribute_names("#fence", item::FENCE)
            .expression_attribute_names("#nonce", item::NONCE)
            .expression_attribute_names("#acquired_at", item::ACQUIRED_AT)
            .expression_attribute_names("#heartbeat_at", item::HEARTBEAT_AT)
            .expression_attribute_names("#expires_at", item::EXPIRES_AT)
            .expression_attribute_names("#ttl_ms", item::TTL_MS)
            .expression_attribute_names("#owner", item::OWNER)
            .expression_attribute_names("#metadata", item::METADATA)
            .expression_attribute_values(":floor", n(now_micros))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":nonce", s(request.nonce.as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":expires_at", n(now.saturating_add(ttl_ms)))
            .expression_attribute_values(":ttl_ms", n(ttl_ms))
            .expression_attribute_values(":takeover", n(now - self.skew_ms));
        // A new holder never inherits the previous holder's owner or metadata.
        match &request.owner {
            Some(owner) => {
                set.push("#owner = :owner");
                op = op.expression_attribute_values(":owner", s(owner));
            }
            None => remove.push("#owner"),
        }
        match &request.metadata {
            Some(metadata) => {
                set.push("#metadata = :metadata");
                op = op.expression_attribute_values(":metadata", s(metadata.to_string()));
            }
            None => remove.push("#metadata"),
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        match self
            .write("acquire", &request.name, op.update_expression(expression))
            .await?
        {
            Write::Applied(item) => Ok(AcquireOutcome::Granted(Lock::try_from(&item)?)),
            Write::Rejected(Some(item)) => Ok(AcquireOutcome::Held(Lock::try_from(&item)?)),
            Write::Rejected(None) => Err(self.unavailable(
                "acquire",
                &request.name,
                "the condition failed on a missing item".into(),
            )),
        }
    }

    /// Extends the lease of `fence` by `ttl` (or by the lease length it was granted with).
    pub async fn heartbeat(
        &self,
        name: &LockName,
        fence: Fence,
        ttl: Option<Duration>,
    ) -> Result<RenewOutcome, StoreError> {
        self.renew("heartbeat", name, fence, ttl, None).await
    }

    /// Sets the body and extends the lease of `fence`, as a heartbeat does.
    pub async fn update_body(
        &self,
        name: &LockName,
        fence: Fence,
        body: &str,
        ttl: Option<Duration>,
    ) -> Result<RenewOutcome, StoreError> {
        self.renew("update", name, fence, ttl, Some(body)).await
    }

    async fn renew(
        &self,
        operation: &'static str,
        name: &LockName,
        fence: Fence,
        ttl: Option<Duration>,
        body: Option<&str>,
    ) -> Result<RenewOutcome, StoreError> {
        let now = self.clock.now_millis();
        let mut set = vec!["#heartbeat_at = :now"];
        let mut op = self
            .update(name)
            .condition_expression("#fence = :fence AND #expires_at > :now")
            .expression_attribute_names("#fence", item::FENCE)
            .expression_attribute_names("#heartbeat_at", item::HEARTBEAT_AT)
            .expression_attribute_names("#expires_at", item::EXPIRES_AT)
            .expression_attribute_names("#ttl_ms", item::TTL_MS)
            .expression_attribute_values(":fence", n(fence))
            .expression_attribute_values(":now", n(now));
        match ttl {
            Some(ttl) => {
                let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
                set.extend(["#expires_at = :expires_at", "#ttl_ms = :ttl_ms"]);
                op = op
                    .expression_attribute_values(":expires_at", n(now.saturating_add(ttl_ms)))
                    .expression_attribute_values(":ttl_ms", n(ttl_ms));
            }
            None => set.push("#expires_at = :now + #ttl_ms"),
        }
        if let Some(body) = body {
            set.push("#body = :body");
            op = op
                .expression_attribute_names("#body", item::BODY)
                .expression_attribute_values(":body", s(body));
        }
        let op = op.update_expression(format!("SET {}", set.join(", ")));
        match self.write(operation, name, op).await? {
            Write::Applied(item) => Ok(Ok(Lock::try_from(&item)?)),
            Write::Rejected(old) => {
                let old = old.as_ref().map(Lock::try_from).transpose()?;
                // The item is the one the condition was evaluated on, at `now`, so the
                // check finds the same reason; should it not, the lease is over anyway.
                let rejection = check_holder(old.as_ref(), fence, now).err().unwrap_or(
                    LockRejection::LeaseExpired {
                        fence,
                        released: false,
                    },
                );
                Ok(Err(rejection))
            }
        }
    }

    /// Ends the lease of `fence`. Returns whether `fence` is the lock's current fence,
    /// now released (by this call or an earlier one: a retried release answers the
    /// same); `false` means the lock has moved on and nothing changed.
    pub async fn release(&self, name: &LockName, fence: Fence) -> Result<bool, StoreError> {
        let op = self
            .update(name)
            .update_expression("SET #expires_at = :zero")
            .condition_expression("#fence = :fence AND #expires_at <> :zero")
            .expression_attribute_names("#fence", item::FENCE)
            .expression_attribute_names("#expires_at", item::EXPIRES_AT)
            .expression_attribute_values(":fence", n(fence))
            .expression_attribute_values(":zero", n(0));
        match self.write("release", name, op).await? {
            Write::Applied(_) => Ok(true),
            Write::Rejected(None) => Ok(false),
            Write::Rejected(Some(item)) => {
                let old = Lock::try_from(&item)?;
                Ok(old.fence == fence && old.is_released())
            }
        }
    }

    /// The lock's record, read strongly consistently; `None` if there is none.
    pub async fn get(&self, name: &LockName) -> Result<Option<Lock>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(self.table.as_ref())
            .key(item::NAME, s(name.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| self.unavailable("read", name, DisplayErrorContext(err).to_string()))?;
        Ok(output.item.as_ref().map(Lock::try_from).transpose()?)
    }

    fn update(&self, name: &LockName) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(self.table.as_ref())
            .key(item::NAME, s(name.as_str()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
    }

    async fn write(
        &self,
        operation: &'static str,
        name: &LockName,
        op: UpdateItemFluentBuilder,
    ) -> Result<Write, StoreError> {
        match op.send().await {
            Ok(output) => Ok(Write::Applied(output.attributes.unwrap_or_default())),
            Err(SdkError::ServiceError(context)) => match context.into_err() {
                UpdateItemError::ConditionalCheckFailedException(failed) => {
                    Ok(Write::Rejected(failed.item))
                }
                other => {
                    Err(self.unavailable(operation, name, DisplayErrorContext(other).to_string()))
                }
            },
            Err(other) => {
                Err(self.unavailable(operation, name, DisplayErrorContext(other).to_string()))
            }
        }
    }

    fn unavailable(&self, operation: &'static str, name: &LockName, detail: String) -> StoreError {
        tracing::warn!(lock = %name, operation, table = %self.table, %detail, "DynamoDB request failed");
        StoreError::Unavailable {
            operation,
            name: name.to_string(),
            detail,
        }
    }
}

//! The server key's record, `secret/server-key` (no lock name contains `/`): made by
//! the first server on a table that needs it, with a write that succeeds only where
//! there is none, so that every server on the table reads the same key. Each server
//! reads it once, on first use, and keeps it until it stops.

use std::time::Instant;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::dynamo::outcome_of;
use super::item::{self, n, s};
use super::{DynamoStore, StoreError};
use crate::domain::{Kind, ServerKey};

/// The key of the server key's record.
pub const SERVER_KEY_RECORD: &str = "secret/server-key";
/// The key's 32 bytes (B).
const KEY: &str = "key";
/// When the first server made it (N, ms since the epoch).
const CREATED_AT: &str = "created_at";

impl DynamoStore {
    /// The table's server key, made now if the table has none yet.
    pub async fn server_key(&self) -> Result<ServerKey, StoreError> {
        self.server_key_cell()
            .get_or_try_init(|| self.read_or_make_key())
            .await
            .cloned()
    }

    async fn read_or_make_key(&self) -> Result<ServerKey, StoreError> {
        if let Some(key) = self.read_key().await? {
            return Ok(key);
        }
        let made = ServerKey::generate();
        let started = Instant::now();
        // An update, not a put: the servers' IAM policy needs no action for the key.
        let result = self
            .client
            .update_item()
            .table_name(self.table.as_ref())
            .key(item::NAME, s(SERVER_KEY_RECORD))
            .update_expression("SET #key = :key, #created_at = :now")
            .condition_expression("attribute_not_exists(#name)")
            .expression_attribute_names("#name", item::NAME)
            .expression_attribute_names("#key", KEY)
            .expression_attribute_names("#created_at", CREATED_AT)
            .expression_attribute_values(":key", AttributeValue::B(Blob::new(made.as_bytes())))
            .expression_attribute_values(":now", n(self.clock().now_millis()))
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await;
        self.metrics()
            .dynamodb("key_create", outcome_of(&result), started.elapsed());
        match result {
            Ok(output) => {
                super::capacity::reported(
                    self.metrics(),
                    "key_create",
                    crate::metrics::CapacityUnit::Write,
                    output.consumed_capacity(),
                );
                tracing::info!("made the table's server key");
                Ok(made)
            }
            // Another server made it first: theirs is the table's.
            Err(err) if err.code() == Some("ConditionalCheckFailedException") => {
                self.read_key().await?.ok_or_else(|| {
                    unavailable(
                        "the key's record was there for the put and gone for the read".into(),
                    )
                })
            }
            Err(err) => Err(unavailable(DisplayErrorContext(err).to_string())),
        }
    }

    async fn read_key(&self) -> Result<Option<ServerKey>, StoreError> {
        let Some(record) = self
            .read_record(s(SERVER_KEY_RECORD), "key_read")
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let key = record
            .get(KEY)
            .and_then(|value| value.as_b().ok())
            .and_then(|blob| ServerKey::from_bytes(blob.as_ref()))
            .ok_or_else(|| {
                StoreError::Malformed(item::MalformedItem {
                    name: SERVER_KEY_RECORD.into(),
                    reason: format!("attribute {KEY:?} is not 32 bytes (B)"),
                })
            })?;
        Ok(Some(key))
    }
}

fn unavailable(detail: String) -> StoreError {
    StoreError::Unavailable {
        operation: "read",
        kind: Kind::Record,
        name: SERVER_KEY_RECORD.into(),
        detail,
    }
}

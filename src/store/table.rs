//! Creating the lock table when it is missing, for `FENCELOCK_CREATE_TABLE=true`.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};

use super::item;

/// How long a new table may take to become active before start-up gives up.
const ACTIVE_WITHIN: Duration = Duration::from_secs(120);

/// The table could not be found or created.
#[derive(Debug, thiserror::Error)]
#[error("table {table:?}: {detail}")]
pub struct TableError {
    pub table: String,
    pub detail: String,
}

/// Creates `table` unless it exists, and waits until it is active
/// ([`super::DynamoStore::ensure_table`]).
pub(super) async fn ensure_table(client: &Client, table: &str) -> Result<(), TableError> {
    let error = |detail: String| TableError {
        table: table.to_owned(),
        detail,
    };
    match client.describe_table().table_name(table).send().await {
        Ok(_) => {}
        Err(err) if err.code() == Some("ResourceNotFoundException") => {
            let created = client
                .create_table()
                .table_name(table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(item::NAME)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(|e| error(e.to_string()))?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(item::NAME)
                        .key_type(KeyType::Hash)
                        .build()
                        .map_err(|e| error(e.to_string()))?,
                )
                .send()
                .await;
            match created {
                Ok(_) => tracing::info!(table, "created the lock table"),
                // Another server created it first.
                Err(err) if err.code() == Some("ResourceInUseException") => {}
                Err(err) => return Err(error(DisplayErrorContext(err).to_string())),
            }
        }
        Err(err) => return Err(error(DisplayErrorContext(err).to_string())),
    }
    wait_until_active(client, table).await.map_err(error)
}

async fn wait_until_active(client: &Client, table: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + ACTIVE_WITHIN;
    loop {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|err| DisplayErrorContext(err).to_string())?;
        let status = described.table.and_then(|t| t.table_status);
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "not active after {}s (status {status:?})",
                ACTIVE_WITHIN.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl super::DynamoStore {
    /// Whether DynamoDB answers and the lock table exists and is active; the reason
    /// when not.
    pub async fn check_ready(&self) -> Result<(), String> {
        let started = std::time::Instant::now();
        let result = self
            .client
            .describe_table()
            .table_name(self.table.as_ref())
            .send()
            .await;
        self.metrics().dynamodb(
            "ready",
            super::dynamo::outcome_of(&result),
            started.elapsed(),
        );
        let described = result.map_err(|err| match err.code() {
            Some("ResourceNotFoundException") => {
                format!("table {:?} does not exist", self.table)
            }
            _ => format!("DynamoDB does not answer: {}", DisplayErrorContext(err)),
        })?;
        match described.table.and_then(|t| t.table_status) {
            Some(TableStatus::Active) => Ok(()),
            status => Err(format!(
                "table {:?} is not active (status {status:?})",
                self.table
            )),
        }
    }
}

//! Creating the lock table when it is missing, for `FENCELOCK_CREATE_TABLE=true`, and
//! checking at start-up that the table found is one fencelock can keep its promises on.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, MultiRegionConsistency,
    ScalarAttributeType, TableDescription, TableStatus,
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

/// What fencelock can promise on a table, as its description says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// A table in one Region: every conditional write is decided in one place.
    Regional,
    /// A global table with multi-Region strong consistency: a conditional write is
    /// decided across its Regions.
    StronglyConsistentGlobal,
}

/// Whether fencelock can keep its promises on the table `described`; the sentence
/// naming what is wrong when it cannot.
pub(super) fn judge_table(described: &TableDescription) -> Result<TableKind, String> {
    let key: Vec<(&str, &KeyType)> = described
        .key_schema()
        .iter()
        .map(|element| (element.attribute_name(), element.key_type()))
        .collect();
    let name_type = described
        .attribute_definitions()
        .iter()
        .find(|definition| definition.attribute_name() == item::NAME)
        .map(|definition| definition.attribute_type());
    if key != [(item::NAME, &KeyType::Hash)] || name_type != Some(&ScalarAttributeType::S) {
        let found: Vec<String> = key
            .iter()
            .map(|(name, kind)| format!("{name} ({})", kind.as_str()))
            .collect();
        return Err(format!(
            "its key is {}; fencelock needs a partition key `{}` of type S and no sort key (see docs/operations.md for the table to create)",
            if found.is_empty() {
                "not described".to_owned()
            } else {
                found.join(", ")
            },
            item::NAME
        ));
    }
    let global = !described.replicas().is_empty() || described.global_table_version().is_some();
    if !global {
        return Ok(TableKind::Regional);
    }
    match described.multi_region_consistency() {
        Some(MultiRegionConsistency::Strong) => Ok(TableKind::StronglyConsistentGlobal),
        _ => Err(
            "it is a global table replicated with eventual consistency: DynamoDB resolves concurrent writes in two Regions by last writer wins, so two holders could both be granted one lock; use a table in one Region, or a global table with multi-Region strong consistency (MRSC)"
                .to_owned(),
        ),
    }
}

impl super::DynamoStore {
    fn table_error(&self, detail: String) -> TableError {
        TableError {
            table: self.table.to_string(),
            detail,
        }
    }

    /// Describes the lock table and refuses one on which fencelock cannot keep its
    /// promises (a wrong key, an eventually consistent global table), naming why.
    pub async fn check_table(&self) -> Result<TableKind, TableError> {
        let error = |detail: String| self.table_error(detail);
        let described = self
            .client
            .describe_table()
            .table_name(self.table.as_ref())
            .send()
            .await
            .map_err(|err| match err.code() {
                Some("ResourceNotFoundException") => error(
                    "it does not exist; create it (docs/operations.md), or start with FENCELOCK_CREATE_TABLE=true"
                        .to_owned(),
                ),
                _ => error(DisplayErrorContext(err).to_string()),
            })?;
        let table = described
            .table
            .ok_or_else(|| error("DynamoDB described no table".to_owned()))?;
        judge_table(&table).map_err(|why| error(format!("fencelock cannot use it: {why}")))
    }

    /// Checks that DynamoDB's TTL deletes this table's records by
    /// [`item::PURGE_AT`], for `FENCELOCK_RECLAIM_BY=ttl`; with `enable`
    /// (`FENCELOCK_CREATE_TABLE=true`), turns it on where it is off. Refuses a table
    /// whose TTL reads another attribute, or is off, naming the fix.
    pub async fn check_ttl(&self, enable: bool) -> Result<(), TableError> {
        use aws_sdk_dynamodb::types::{TimeToLiveSpecification, TimeToLiveStatus};
        let error = |detail: String| self.table_error(detail);
        let described = self
            .client
            .describe_time_to_live()
            .table_name(self.table.as_ref())
            .send()
            .await
            .map_err(|err| error(DisplayErrorContext(err).to_string()))?;
        let ttl = described.time_to_live_description();
        let status = ttl.and_then(|ttl| ttl.time_to_live_status());
        let attribute = ttl.and_then(|ttl| ttl.attribute_name());
        match (status, attribute) {
            (Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling), Some(name))
                if name == item::PURGE_AT =>
            {
                Ok(())
            }
            (Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling), Some(other)) => {
                Err(error(format!(
                    "its TTL deletes items by `{other}`; FENCELOCK_RECLAIM_BY=ttl needs TTL on `{}` (a table has one TTL attribute: change it, or set FENCELOCK_RECLAIM_BY=scan)",
                    item::PURGE_AT
                )))
            }
            _ if enable => {
                let spec = TimeToLiveSpecification::builder()
                    .attribute_name(item::PURGE_AT)
                    .enabled(true)
                    .build()
                    .map_err(|e| error(e.to_string()))?;
                self.client
                    .update_time_to_live()
                    .table_name(self.table.as_ref())
                    .time_to_live_specification(spec)
                    .send()
                    .await
                    .map_err(|err| error(DisplayErrorContext(err).to_string()))?;
                tracing::info!(table = %self.table, attribute = item::PURGE_AT, "turned on the table's TTL");
                Ok(())
            }
            _ => Err(error(format!(
                "its TTL is off; FENCELOCK_RECLAIM_BY=ttl needs TTL on the attribute `{}` (aws dynamodb update-time-to-live --table-name {} --time-to-live-specification Enabled=true,AttributeName={}), or FENCELOCK_CREATE_TABLE=true to turn it on",
                item::PURGE_AT,
                self.table,
                item::PURGE_AT
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, KeySchemaElement, KeyType, MultiRegionConsistency, ReplicaDescription,
        ScalarAttributeType, TableDescription,
    };

    use super::{TableKind, judge_table};

    fn table(
        key: &[(&str, KeyType)],
        replicas: &[&str],
    ) -> aws_sdk_dynamodb::types::builders::TableDescriptionBuilder {
        let mut builder = TableDescription::builder();
        for (name, kind) in key {
            builder = builder
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(*name)
                        .key_type(kind.clone())
                        .build()
                        .unwrap(),
                )
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(*name)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .unwrap(),
                );
        }
        for region in replicas {
            builder = builder.replicas(ReplicaDescription::builder().region_name(*region).build());
        }
        builder
    }

    #[test]
    fn a_regional_table_keyed_by_name_is_used() {
        let described = table(&[("name", KeyType::Hash)], &[]).build();
        assert_eq!(judge_table(&described), Ok(TableKind::Regional));
    }

    #[test]
    fn a_table_with_another_key_is_refused_naming_it() {
        for key in [
            vec![("id", KeyType::Hash)],
            vec![("name", KeyType::Hash), ("at", KeyType::Range)],
        ] {
            let err = judge_table(&table(&key, &[]).build()).unwrap_err();
            assert!(
                err.contains("partition key `name` of type S and no sort key"),
                "{err}"
            );
            assert!(err.contains(key[0].0), "{err}");
        }
        let numbered = table(&[], &[])
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("name")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("name")
                    .attribute_type(ScalarAttributeType::N)
                    .build()
                    .unwrap(),
            )
            .build();
        assert!(judge_table(&numbered).is_err(), "a numeric name");
    }

    #[test]
    fn an_eventually_consistent_global_table_is_refused_and_a_strong_one_used() {
        let key = [("name", KeyType::Hash)];
        for consistency in [None, Some(MultiRegionConsistency::Eventual)] {
            let mut described = table(&key, &["us-east-1", "eu-west-1"]);
            if let Some(consistency) = consistency.clone() {
                described = described.multi_region_consistency(consistency);
            }
            let err = judge_table(&described.build()).unwrap_err();
            assert!(err.contains("last writer wins"), "{consistency:?}: {err}");
        }
        let legacy = table(&key, &[]).global_table_version("2017.11.29").build();
        assert!(judge_table(&legacy).is_err(), "a legacy global table");
        let strong = table(&key, &["us-east-1", "us-east-2"])
            .multi_region_consistency(MultiRegionConsistency::Strong)
            .build();
        assert_eq!(
            judge_table(&strong),
            Ok(TableKind::StronglyConsistentGlobal)
        );
    }
}

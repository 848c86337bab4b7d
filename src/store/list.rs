//! Listing locks: a strongly consistent `Scan`, filtered by name prefix and by
//! whether a lease is live, paginated by the name of the last item evaluated.

use aws_sdk_dynamodb::error::DisplayErrorContext;

use super::item::{self, n, s};
use super::{DynamoStore, StoreError};
use crate::domain::{DEFAULT_NAMESPACE, Lock, LockName};

/// The most `Scan` requests one listing call makes before it answers with what it
/// has and a cursor, so a sparse filter cannot make one call scan the whole table.
const MAX_SCANS_PER_PAGE: usize = 8;

/// Which locks to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only names that start with this.
    pub prefix: Option<String>,
    /// Only names in this namespace (see [`LockName::namespace`]).
    pub namespace: Option<String>,
    /// Only locks whose lease is live now.
    pub held_only: bool,
    /// The most locks to return.
    pub limit: usize,
    /// Continue after this name (from the previous page).
    pub after: Option<LockName>,
}

/// One page of locks, in the table's scan order.
#[derive(Debug, Clone)]
pub struct Page {
    pub locks: Vec<Lock>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<LockName>,
}

impl DynamoStore {
    /// A page of the locks that `query` asks for.
    pub async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let mut locks = Vec::new();
        let mut after = query.after.clone();
        for _ in 0..MAX_SCANS_PER_PAGE {
            let remaining = query.limit.saturating_sub(locks.len()).max(1);
            let started = std::time::Instant::now();
            let result = self.scan(query, after.as_ref(), remaining).send().await;
            self.metrics().dynamodb(
                "list",
                super::dynamo::outcome_of(&result),
                started.elapsed(),
            );
            let output = result.map_err(|err| StoreError::Unavailable {
                operation: "list",
                name: query.prefix.clone().unwrap_or_default(),
                detail: DisplayErrorContext(err).to_string(),
            })?;
            for raw in output.items() {
                locks.push(Lock::try_from(raw)?);
            }
            after = match output
                .last_evaluated_key()
                .and_then(|key| key.get(item::NAME))
            {
                Some(name) => {
                    Some(LockName::parse(name.as_s().map_or("", |s| s)).map_err(|e| {
                        StoreError::Unavailable {
                            operation: "list",
                            name: String::new(),
                            detail: format!("DynamoDB returned a bad last key: {}", e.0),
                        }
                    })?)
                }
                None => None,
            };
            if after.is_none() || locks.len() >= query.limit {
                break;
            }
        }
        Ok(Page { locks, next: after })
    }

    fn scan(
        &self,
        query: &ListQuery,
        after: Option<&LockName>,
        limit: usize,
    ) -> aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder {
        let mut filters = Vec::new();
        let mut scan = self
            .client
            .scan()
            .table_name(self.table.as_ref())
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        if let Some(prefix) = query.prefix.as_deref().filter(|p| !p.is_empty()) {
            filters.push("begins_with(#name, :prefix)");
            scan = scan
                .expression_attribute_names("#name", item::NAME)
                .expression_attribute_values(":prefix", s(prefix));
        }
        if let Some(namespace) = &query.namespace {
            scan = scan
                .expression_attribute_names("#name", item::NAME)
                .expression_attribute_values(":namespace", s(format!("{namespace}:")));
            if namespace == DEFAULT_NAMESPACE {
                // Names without ':' are in the default namespace too.
                filters.push("(begins_with(#name, :namespace) OR NOT contains(#name, :colon))");
                scan = scan.expression_attribute_values(":colon", s(":"));
            } else {
                filters.push("begins_with(#name, :namespace)");
            }
        }
        if query.held_only {
            filters.push("#expires_at > :now");
            scan = scan
                .expression_attribute_names("#expires_at", item::EXPIRES_AT)
                .expression_attribute_values(":now", n(self.clock().now_millis()));
        }
        if !filters.is_empty() {
            scan = scan.filter_expression(filters.join(" AND "));
        }
        if let Some(after) = after {
            scan = scan.exclusive_start_key(item::NAME, s(after.as_str()));
        }
        scan
    }
}

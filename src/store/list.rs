//! Listing locks: a strongly consistent `Scan`, filtered by name prefix and by
//! whether a lease is live, paginated by the name of the last item evaluated.

use aws_sdk_dynamodb::error::DisplayErrorContext;

use super::item::{self, Item, n, s};
use super::semaphore::{KEY_PREFIX, semaphore_from};
use super::{DynamoStore, StoreError};
use crate::domain::{DEFAULT_NAMESPACE, Kind, Lock, LockName, Semaphore};

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
    /// Continue after this key of the table (from the previous page's `next`).
    pub after: Option<String>,
}

/// One page of locks, in the table's scan order.
#[derive(Debug, Clone)]
pub struct Page {
    pub locks: Vec<Lock>,
    /// The key the next page starts after; `None` on the last page.
    pub next: Option<String>,
}

/// One page of semaphores, in the table's scan order.
#[derive(Debug, Clone)]
pub struct SemaphorePage {
    pub semaphores: Vec<Semaphore>,
    /// The key the next page starts after; `None` on the last page.
    pub next: Option<String>,
}

/// Whether `key` is one a listing pages by: a lock's name, or a semaphore's key.
pub fn is_listed_key(key: &str) -> bool {
    LockName::parse(key.strip_prefix(KEY_PREFIX).unwrap_or(key)).is_ok()
}

/// Which records a listing scans for: locks, whose keys are their names, or
/// semaphores, whose keys are their names after [`KEY_PREFIX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scanned {
    Locks,
    Semaphores,
}

impl Scanned {
    fn key_prefix(self) -> &'static str {
        match self {
            Self::Locks => "",
            Self::Semaphores => KEY_PREFIX,
        }
    }

    /// The DynamoDB operation's label in the metrics.
    fn label(self) -> &'static str {
        match self {
            Self::Locks => "list",
            Self::Semaphores => "semaphore_list",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Self::Locks => Kind::Lock,
            Self::Semaphores => Kind::Semaphore,
        }
    }
}

impl DynamoStore {
    /// A page of the locks that `query` asks for.
    pub async fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let (items, next) = self.scan_pages(query, Scanned::Locks).await?;
        let locks = items.iter().map(Lock::try_from).collect::<Result<_, _>>()?;
        let locks = self.with_bodies(locks).await?;
        Ok(Page { locks, next })
    }

    /// A page of the semaphores that `query` asks for; `held_only` keeps those with
    /// at least one live holder.
    pub async fn list_semaphores(&self, query: &ListQuery) -> Result<SemaphorePage, StoreError> {
        let (items, next) = self.scan_pages(query, Scanned::Semaphores).await?;
        let now = self.clock().now_millis();
        let mut semaphores = Vec::with_capacity(items.len());
        for raw in &items {
            let semaphore = semaphore_from(raw)?;
            if !query.held_only || semaphore.holders(now).next().is_some() {
                semaphores.push(semaphore);
            }
        }
        Ok(SemaphorePage { semaphores, next })
    }

    /// Up to `query.limit` records of `kind`, and the name the next page starts after.
    async fn scan_pages(
        &self,
        query: &ListQuery,
        kind: Scanned,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        let unavailable = |detail: String| StoreError::Unavailable {
            operation: "list",
            kind: kind.kind(),
            name: query.prefix.clone().unwrap_or_default(),
            detail,
        };
        let mut items = Vec::new();
        let mut after = query.after.clone();
        for _ in 0..MAX_SCANS_PER_PAGE {
            let remaining = query.limit.saturating_sub(items.len()).max(1);
            let started = std::time::Instant::now();
            let result = self
                .scan(query, kind, after.as_ref(), remaining)
                .send()
                .await;
            self.metrics().dynamodb(
                kind.label(),
                super::dynamo::outcome_of(&result),
                started.elapsed(),
            );
            let output = result.map_err(|err| unavailable(DisplayErrorContext(err).to_string()))?;
            super::capacity::reported(
                self.metrics(),
                kind.label(),
                crate::metrics::CapacityUnit::Read,
                output.consumed_capacity(),
            );
            items.extend(output.items().iter().cloned());
            // The key as the table has it: a page of semaphores may end on a lock's
            // key, and the other way round.
            after = output
                .last_evaluated_key()
                .and_then(|key| key.get(item::NAME))
                .map(|key| key.as_s().cloned().unwrap_or_default());
            if after.is_none() || items.len() >= query.limit {
                break;
            }
        }
        Ok((items, after))
    }

    fn scan(
        &self,
        query: &ListQuery,
        kind: Scanned,
        after: Option<&String>,
        limit: usize,
    ) -> aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder {
        let key_prefix = kind.key_prefix();
        let mut scan = self
            .client
            .scan()
            .table_name(self.table.as_ref())
            .consistent_read(true)
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .expression_attribute_names("#name", item::NAME);
        let mut filters = match kind {
            // No lock name contains '/'; every other record's key does.
            Scanned::Locks => {
                scan = scan.expression_attribute_values(":slash", s("/"));
                vec!["NOT contains(#name, :slash)"]
            }
            Scanned::Semaphores => {
                scan = scan.expression_attribute_values(":kind", s(key_prefix));
                vec!["begins_with(#name, :kind)"]
            }
        };
        if let Some(prefix) = query.prefix.as_deref().filter(|p| !p.is_empty()) {
            filters.push("begins_with(#name, :prefix)");
            scan = scan.expression_attribute_values(":prefix", s(format!("{key_prefix}{prefix}")));
        }
        if let Some(namespace) = &query.namespace {
            scan = scan
                .expression_attribute_values(":namespace", s(format!("{key_prefix}{namespace}:")));
            if namespace == DEFAULT_NAMESPACE {
                // Names without ':' are in the default namespace too.
                filters.push("(begins_with(#name, :namespace) OR NOT contains(#name, :colon))");
                scan = scan.expression_attribute_values(":colon", s(":"));
            } else {
                filters.push("begins_with(#name, :namespace)");
            }
        }
        if query.held_only && kind == Scanned::Locks {
            filters.push("#expires_at > :now");
            scan = scan
                .expression_attribute_names("#expires_at", item::EXPIRES_AT)
                .expression_attribute_values(":now", n(self.clock().now_millis()));
        }
        scan = scan.filter_expression(filters.join(" AND "));
        if let Some(after) = after {
            scan = scan.exclusive_start_key(item::NAME, s(after));
        }
        scan
    }
}

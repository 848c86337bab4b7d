//! Lock state in DynamoDB. Every decision is one conditional write, so any number of
//! fencelock servers can share a table. A failed condition is an outcome
//! ([`AcquireOutcome::Held`], [`LockRejection`]), never an error; no SDK type leaves
//! this module.

mod dynamo;
mod group;
pub mod item;
mod key;
mod list;
mod reclaim;
mod semaphore;
mod table;

use std::time::Duration;

pub use dynamo::{AccessKey, DynamoSettings, DynamoStore, Release};
pub use group::{GroupOutcome, MAX_GROUP, RESERVATION};
pub use item::MalformedItem;
pub use key::SERVER_KEY_RECORD;
pub use list::{ListQuery, Page, SemaphorePage, is_listed_key};
pub use reclaim::Sweep;
pub use semaphore::{SemaphoreOutcome, SemaphoreRequest};
pub use table::TableError;

use crate::domain::{Kind, Lock, LockName, LockRejection, Nonce};

/// What an acquire asks for.
#[derive(Debug, Clone)]
pub struct AcquireRequest {
    pub name: LockName,
    pub nonce: Nonce,
    pub ttl: Duration,
    pub owner: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

/// How an acquire ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AcquireOutcome {
    /// The caller holds the lock, under a fence greater than any issued before.
    Granted(Lock),
    /// Another holder's lease is live (or ended less than the skew margin ago).
    Held(Lock),
}

/// A holder's answer: the lock it holds (after a heartbeat, update or extend, the
/// renewed lock), or why it does not hold it.
pub type HolderOutcome = Result<Lock, LockRejection>;

/// A failure that is not an answer about the lock.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// DynamoDB could not be reached, throttled us, timed out or failed; the caller
    /// may retry later.
    #[error("DynamoDB could not {operation} {kind} {name:?}: {detail}")]
    Unavailable {
        operation: &'static str,
        /// What `name` names.
        kind: Kind,
        name: String,
        detail: String,
    },
    /// The table holds an item fencelock did not write.
    #[error(transparent)]
    Malformed(#[from] MalformedItem),
}

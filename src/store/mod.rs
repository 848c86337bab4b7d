//! Lock state in DynamoDB. Every decision is one conditional write, so any number of
//! fencelock servers can share a table. A failed condition is an outcome
//! ([`AcquireOutcome::Held`], [`LockRejection`]), never an error; no SDK type leaves
//! this module.

mod admin;
mod body;
pub mod capacity;
mod dynamo;
mod group;
pub mod item;
mod key;
mod list;
mod reclaim;
mod semaphore;
mod table;

use std::sync::Arc;
use std::time::Duration;

pub use admin::Marked;
pub use body::INLINE_BODY;
pub use dynamo::{AccessKey, DynamoSettings, DynamoStore, ELECTION_PREFIX, Release, Space};
pub use group::{GroupOutcome, MAX_GROUP, RESERVATION};
pub use item::MalformedItem;
pub use key::SERVER_KEY_RECORD;
pub use list::{ListQuery, Page, SemaphorePage, is_listed_key};
pub use reclaim::Sweep;
pub use semaphore::{SemaphoreOutcome, SemaphoreRequest};
pub use table::{TableError, TableKind};

use crate::domain::{Kind, Lock, LockName, LockRejection, Nonce, Predecessor};

/// Called after each write a store applied to a record (never after a refused one,
/// which changed nothing), with the record's name and, where the write's answer
/// holds it, the record as the write left it: how watches learn of this server's
/// writes, exactly where they can.
pub type WriteHook = Arc<dyn Fn(&LockName, Option<&Lock>) + Send + Sync>;

/// A store's [`WriteHook`], if it has one.
#[derive(Clone, Default)]
pub(crate) struct Written(Option<WriteHook>);

impl Written {
    /// `name`'s record changed, into what the write's answer does not say.
    pub(crate) fn tell(&self, name: &LockName) {
        if let Some(hook) = &self.0 {
            hook(name, None);
        }
    }

    /// The write left `lock` as its record.
    pub(crate) fn publish(&self, lock: &Lock) {
        if let Some(hook) = &self.0 {
            hook(&lock.name, Some(lock));
        }
    }
}

impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Written(hook)"
        } else {
            "Written(none)"
        })
    }
}

/// What an acquire asks for.
#[derive(Debug, Clone)]
pub struct AcquireRequest {
    pub name: LockName,
    pub nonce: Nonce,
    pub ttl: Duration,
    pub owner: Option<String>,
    pub metadata: Option<serde_json::Value>,
    /// A body the grant sets (an election's value); `None` keeps the body as it is.
    pub body: Option<String>,
}

/// How an acquire ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AcquireOutcome {
    /// The caller holds the lock, under a fence greater than any issued before; and
    /// the holder it took the lock over from, when that one's lease had ended
    /// without a release.
    Granted(Lock, Option<Predecessor>),
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

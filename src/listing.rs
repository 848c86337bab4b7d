//! Following one page of a listing (`GET /events/locks?prefix=…`), for listing
//! pages. One task per page followed on this server (the same filters and start),
//! shared by every viewer of it, reads the page as `GET /locks` does:
//!
//! - every [`WatchSettings::list_interval`](crate::watch::WatchSettings), for changes
//!   made through other servers (one listing call: the cost of one viewer's `GET
//!   /locks`, whatever the number of viewers);
//! - at once (but not more often than every [`MIN_GAP`]) after a write through this
//!   server to a name the page's filters match, since it may join or change the page;
//! - at the moment a lease on the page lapses, so that `expired` comes when another
//!   holder may take the lock.
//!
//! Each read is a snapshot; every viewer's stream turns consecutive snapshots into
//! events ([`crate::api`]). The task ends [`WatchSettings::linger`] after its last
//! viewer left, and at shutdown.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::domain::{DEFAULT_NAMESPACE, LeasePolicy, Lock, LockName, Millis};
use crate::follow::{Followed, Followers};
use crate::store::{DynamoStore, ListQuery};
use crate::watch::WatchSettings;

/// The least time between two reads of a followed page prompted by this server's
/// writes: a burst of writes costs a read per gap, not a read per write.
pub const MIN_GAP: Duration = Duration::from_millis(200);

/// A page of a listing as last read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The page's locks, in the table's scan order.
    pub locks: Vec<Lock>,
    /// The key the next page starts after; `None` on the last page.
    pub next: Option<String>,
    /// When it was read (ms since the epoch, the store's clock).
    pub at: Millis,
}

/// The followed pages of one server.
#[derive(Clone)]
pub struct Listings {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Listings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listings").finish_non_exhaustive()
    }
}

struct Inner {
    store: DynamoStore,
    policy: LeasePolicy,
    settings: WatchSettings,
    pages: Followers<Key, Snapshot>,
}

/// What identifies a page: its query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    prefix: Option<String>,
    namespace: Option<String>,
    held_only: bool,
    limit: usize,
    after: Option<String>,
}

impl Key {
    fn of(query: &ListQuery) -> Self {
        Self {
            prefix: query.prefix.clone().filter(|p| !p.is_empty()),
            namespace: query.namespace.clone(),
            held_only: query.held_only,
            limit: query.limit,
            after: query.after.clone(),
        }
    }

    fn query(&self) -> ListQuery {
        ListQuery {
            prefix: self.prefix.clone(),
            namespace: self.namespace.clone(),
            held_only: self.held_only,
            limit: self.limit,
            after: self.after.clone(),
        }
    }

    /// Whether a write to `name` may change this page.
    fn matches(&self, name: &LockName) -> bool {
        let prefix = self
            .prefix
            .as_deref()
            .is_none_or(|p| name.as_str().starts_with(p));
        let namespace = self.namespace.as_deref().is_none_or(|ns| {
            name.namespace() == ns || (ns == DEFAULT_NAMESPACE && !name.as_str().contains(':'))
        });
        prefix && namespace
    }
}

impl Listings {
    /// The followed pages of a server reading `store`.
    pub fn new(store: DynamoStore, settings: WatchSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                policy: store.policy(),
                store,
                settings,
                pages: Followers::new(settings.linger),
            }),
        }
    }

    /// What a store calls after each write it applied: the pages the name may be on
    /// are read again soon. Holds the listings weakly.
    pub fn hook(&self) -> crate::store::WriteHook {
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        Arc::new(move |name: &LockName, _: Option<&Lock>| {
            if let Some(inner) = inner.upgrade() {
                inner.pages.nudge(|key| key.matches(name));
            }
        })
    }

    /// Follows the page `query` asks for (starting its task if nobody followed it):
    /// its snapshots, the first once read.
    pub fn subscribe(&self, query: &ListQuery) -> watch::Receiver<Option<Snapshot>> {
        let key = Key::of(query);
        self.inner.pages.subscribe(&key, |followed| {
            tokio::spawn(follow(self.inner.clone(), key.clone(), followed));
        })
    }

    /// Stops every task and ends every stream.
    pub fn close(&self) {
        self.inner.pages.close();
    }
}

/// The page `query` asks for. A full page that may end where the table does is
/// looked one lock past, so that it offers a next page only when there is one.
async fn read_page(
    store: &DynamoStore,
    query: &ListQuery,
) -> Result<crate::store::Page, crate::store::StoreError> {
    let mut page = store.list(query).await?;
    if page.locks.len() >= query.limit
        && let Some(next) = &page.next
    {
        let ahead = ListQuery {
            limit: 1,
            after: Some(next.clone()),
            ..query.clone()
        };
        let ahead = store.list(&ahead).await?;
        if ahead.locks.is_empty() && ahead.next.is_none() {
            page.next = None;
        }
    }
    Ok(page)
}

/// The task of one followed page.
async fn follow(inner: Arc<Inner>, key: Key, followed: Arc<Followed<Snapshot>>) {
    let query = key.query();
    let mut alone_since: Option<Instant> = None;
    while !inner.pages.is_closed() {
        let read_at = Instant::now();
        let mut lapse: Option<Millis> = None;
        match read_page(&inner.store, &query).await {
            Ok(page) => {
                let at = inner.store.clock().now_millis();
                lapse = page
                    .locks
                    .iter()
                    .filter_map(|lock| inner.policy.lapsed_at(lock))
                    .filter(|when| *when > at)
                    .min();
                followed.latest.send_replace(Some(Snapshot {
                    locks: page.locks,
                    next: page.next,
                    at,
                }));
            }
            Err(err) => tracing::debug!(%err, "a followed listing could not be read"),
        }
        let now = inner.store.clock().now_millis();
        let mut wait = inner.settings.list_interval;
        if let Some(at) = lapse {
            wait = wait.min(Duration::from_millis((at - now).max(0) as u64));
        }
        let goes_on = inner
            .pages
            .pause(&key, &followed, &mut alone_since, wait, read_at + MIN_GAP)
            .await;
        if !goes_on {
            return;
        }
    }
}

//! What the followers of listings and semaphores share: one task per followed key
//! on a server, which publishes each read in a `watch` channel its watchers share;
//! nudged by this server's writes, ended [`WatchSettings::linger`] after its last
//! watcher left, or at shutdown.
//!
//! [`WatchSettings::linger`]: crate::watch::WatchSettings

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// The followed keys of one server, each with its latest read.
pub(crate) struct Followers<K, T> {
    keys: Mutex<HashMap<K, Arc<Followed<T>>>>,
    closed: watch::Sender<bool>,
    linger: Duration,
}

/// One followed key: its latest read, and the nudge of a write through this server.
pub(crate) struct Followed<T> {
    pub latest: watch::Sender<Option<T>>,
    nudge: Notify,
}

impl<K: Clone + Eq + Hash, T> Followers<K, T> {
    pub(crate) fn new(linger: Duration) -> Self {
        Self {
            keys: Mutex::default(),
            closed: watch::Sender::new(false),
            linger,
        }
    }

    /// Follows `key`, calling `start` with a new entry when nobody followed it.
    pub(crate) fn subscribe(
        &self,
        key: &K,
        start: impl FnOnce(Arc<Followed<T>>),
    ) -> watch::Receiver<Option<T>> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let followed = keys.entry(key.clone()).or_insert_with(|| {
            let followed = Arc::new(Followed {
                latest: watch::Sender::new(None),
                nudge: Notify::new(),
            });
            start(followed.clone());
            followed
        });
        followed.latest.subscribe()
    }

    /// Nudges the task of every followed key that `matches`.
    pub(crate) fn nudge(&self, matches: impl Fn(&K) -> bool) {
        let keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, followed) in keys.iter() {
            if matches(key) {
                followed.nudge.notify_one();
            }
        }
    }

    /// Stops every task and ends every stream.
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Between two reads of `key`: waits `wait` at most, or until a nudge (then
    /// until `not_before`), or until shutdown. Answers whether the task goes on:
    /// not once nobody has watched for the linger (`alone_since` counts it), nor at
    /// shutdown; the key is then no longer followed.
    pub(crate) async fn pause(
        &self,
        key: &K,
        followed: &Followed<T>,
        alone_since: &mut Option<Instant>,
        wait: Duration,
        not_before: Instant,
    ) -> bool {
        {
            let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
            if followed.latest.receiver_count() == 0 {
                let since = *alone_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.linger {
                    keys.remove(key);
                    return false;
                }
            } else {
                *alone_since = None;
            }
        }
        let mut closed = self.closed.subscribe();
        tokio::select! {
            () = followed.nudge.notified() => tokio::time::sleep_until(not_before).await,
            () = tokio::time::sleep(wait) => {}
            _ = closed.changed() => {}
        }
        if self.is_closed() {
            self.keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(key);
            return false;
        }
        true
    }
}

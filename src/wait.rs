//! Waiting acquire. The waiters for one lock name on this server form a FIFO queue
//! served by a single task, so a hundred waiters cost DynamoDB what one does:
//!
//! - the task tries to acquire for the waiter at the front only;
//! - while the lock is held it retries no sooner than the holder's lease ends (plus
//!   the skew margin), or after a jittered back-off of 100 ms doubling to 1 s, since
//!   the holder may release it early through another server;
//! - a release through this server wakes the task at once ([`Waiters::released`]);
//! - a waiter whose client went away leaves the queue, and a grant it can no longer
//!   receive is released again, so no lock is left held by nobody;
//! - on shutdown ([`Waiters::close`]) every waiter is answered at once, or once the
//!   one DynamoDB request in flight for its name returns.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::domain::{Holder, Lock, LockName};
use crate::store::{AcquireOutcome, AcquireRequest, DynamoStore, StoreError};

/// The first retry delay while the lock is held elsewhere.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest retry delay: a lock released through another server is seen within it.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Why a waiting acquire ended without an answer about the lock.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The lock already has as many waiters on this server as it may.
    #[error("the lock already has {limit} waiters on this server, its limit")]
    TooMany { limit: usize },
}

type Reply = Result<AcquireOutcome, WaitError>;

struct Waiter {
    request: AcquireRequest,
    deadline: Instant,
    reply: oneshot::Sender<Reply>,
}

struct Queue {
    arrivals: mpsc::UnboundedSender<Waiter>,
    wake: Arc<Notify>,
    /// The waiters of this queue whose acquire has not returned yet.
    waiting: Arc<AtomicUsize>,
}

struct Inner {
    store: DynamoStore,
    queues: Mutex<HashMap<LockName, Queue>>,
    closed: watch::Sender<bool>,
    max_per_lock: usize,
}

/// The waiters one lock may have on one server unless told otherwise.
pub const DEFAULT_MAX_WAITERS_PER_LOCK: usize = 1000;

/// The waiting acquires of this server, one queue per lock name.
#[derive(Clone)]
pub struct Waiters {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters")
            .field("names", &self.lock_queues().len())
            .finish()
    }
}

impl Waiters {
    /// Waiters acquiring through `store`, at most `max_per_lock` at once for one name.
    pub fn new(store: DynamoStore, max_per_lock: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                queues: Mutex::new(HashMap::new()),
                closed: watch::channel(false).0,
                max_per_lock,
            }),
        }
    }

    /// Acquires `request`, waiting up to `wait` behind the waiters already queued for
    /// the name. Ends with `Held` (the last holder seen) when the wait runs out.
    pub async fn acquire(&self, request: AcquireRequest, wait: Duration) -> Reply {
        if *self.inner.closed.borrow() {
            return Err(WaitError::ShuttingDown);
        }
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter {
            request,
            deadline: Instant::now() + wait,
            reply,
        };
        let in_queue = self.enqueue(waiter)?;
        let waiting = &self.inner.store.metrics().waiters;
        waiting.inc();
        // Counted down however this ends, a client that leaves included.
        let _counted = scopeguard::guard((), |()| {
            waiting.dec();
            in_queue.fetch_sub(1, Ordering::Relaxed);
        });
        // The task always answers; a dropped sender means it was stopped with the runtime.
        answer.await.unwrap_or(Err(WaitError::ShuttingDown))
    }

    /// Tells the waiters for `name` that this server just released it.
    pub fn released(&self, name: &LockName) {
        if let Some(queue) = self.lock_queues().get(name) {
            queue.wake.notify_one();
        }
    }

    /// Answers every waiter with [`WaitError::ShuttingDown`], now and from now on.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// The acquires waiting on this server for each of `names`, in their order.
    pub fn waiting_for<'a>(&self, names: impl IntoIterator<Item = &'a LockName>) -> Vec<usize> {
        let queues = self.lock_queues();
        names
            .into_iter()
            .map(|name| {
                queues
                    .get(name)
                    .map_or(0, |queue| queue.waiting.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// How many lock names have waiters on this server.
    pub fn waiting_names(&self) -> usize {
        self.lock_queues().len()
    }

    fn lock_queues(&self) -> std::sync::MutexGuard<'_, HashMap<LockName, Queue>> {
        // The map holds no invariant a panic could break halfway.
        self.inner
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `waiter` in its name's queue, starting the queue's task if there is none;
    /// answers the queue's count of waiters, which counts this one.
    fn enqueue(&self, waiter: Waiter) -> Result<Arc<AtomicUsize>, WaitError> {
        let mut queues = self.lock_queues();
        let name = waiter.request.name.clone();
        let waiter = match queues.get(&name) {
            Some(queue) => {
                let limit = self.inner.max_per_lock;
                if queue.waiting.load(Ordering::Relaxed) >= limit {
                    return Err(WaitError::TooMany { limit });
                }
                match queue.arrivals.send(waiter) {
                    Ok(()) => {
                        queue.waiting.fetch_add(1, Ordering::Relaxed);
                        return Ok(queue.waiting.clone());
                    }
                    Err(mpsc::error::SendError(waiter)) => waiter,
                }
            }
            None => waiter,
        };
        let (arrivals, receiver) = mpsc::unbounded_channel();
        let wake = Arc::new(Notify::new());
        let waiting = Arc::new(AtomicUsize::new(1));
        let _ = arrivals.send(waiter);
        queues.insert(
            name.clone(),
            Queue {
                arrivals,
                wake: wake.clone(),
                waiting: waiting.clone(),
            },
        );
        tokio::spawn(serve_queue(self.clone(), name, receiver, wake));
        Ok(waiting)
    }
}

/// What the queue's task last learnt about the lock, to answer a wait that ran out.
enum LastSeen {
    Nothing,
    Holder(Lock),
    Failure(StoreError),
}

/// The one task that acquires for the waiters of `name`, in arrival order.
async fn serve_queue(
    waiters: Waiters,
    name: LockName,
    mut arrivals: mpsc::UnboundedReceiver<Waiter>,
    wake: Arc<Notify>,
) {
    let store = waiters.inner.store.clone();
    let mut closed = waiters.inner.closed.subscribe();
    let mut queue: VecDeque<Waiter> = VecDeque::new();
    let mut last = LastSeen::Nothing;
    let mut backoff = BACKOFF_START;
    let mut attempt_at = Instant::now();
    loop {
        while let Ok(waiter) = arrivals.try_recv() {
            queue.push_back(waiter);
        }
        if *closed.borrow_and_update() {
            for waiter in queue.drain(..) {
                let _ = waiter.reply.send(Err(WaitError::ShuttingDown));
            }
        }
        answer_expired(&mut queue, &last);
        if queue.is_empty() {
            // Leave under the registry lock, so no waiter is sent to a task that quit.
            let mut queues = waiters.lock_queues();
            match arrivals.try_recv() {
                Ok(waiter) => queue.push_back(waiter),
                Err(_) => {
                    queues.remove(&name);
                    return;
                }
            }
            continue;
        }
        if Instant::now() >= attempt_at {
            let front = queue.front().expect("the queue is not empty");
            match store.acquire(&front.request).await {
                Ok(AcquireOutcome::Granted(lock)) => {
                    let waiter = queue.pop_front().expect("the front waiter is still queued");
                    hand_over(&store, waiter, lock.clone()).await;
                    backoff = BACKOFF_START;
                    attempt_at = retry_at(&store, &lock, backoff);
                    last = LastSeen::Holder(lock);
                }
                Ok(AcquireOutcome::Held(holder)) => {
                    attempt_at = retry_at(&store, &holder, jittered(backoff));
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    last = LastSeen::Holder(holder);
                }
                Err(err) => {
                    attempt_at = Instant::now() + jittered(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    last = LastSeen::Failure(err);
                }
            }
            continue;
        }
        let next_deadline = queue.iter().map(|w| w.deadline).min().unwrap_or(attempt_at);
        tokio::select! {
            () = tokio::time::sleep_until(attempt_at.min(next_deadline)) => {}
            () = wake.notified() => {
                attempt_at = Instant::now();
                backoff = BACKOFF_START;
            }
            Some(waiter) = arrivals.recv() => queue.push_back(waiter),
            _ = closed.changed() => {}
        }
    }
}

/// Sends a grant to its waiter, or releases it again when the waiter has gone.
async fn hand_over(store: &DynamoStore, waiter: Waiter, lock: Lock) {
    let (name, fence) = (lock.name.clone(), lock.fence);
    if waiter
        .reply
        .send(Ok(AcquireOutcome::Granted(lock)))
        .is_err()
    {
        tracing::info!(lock = %name, fence, "waiter left before its grant; releasing it");
        if let Err(err) = store.release(&name, &Holder::Fence(fence)).await {
            // The lease still ends on its own at its ttl.
            tracing::warn!(lock = %name, fence, %err, "could not release an unclaimed grant");
        }
    }
}

/// Drops waiters whose client left and answers those whose wait ran out.
fn answer_expired(queue: &mut VecDeque<Waiter>, last: &LastSeen) {
    let now = Instant::now();
    let mut kept = VecDeque::with_capacity(queue.len());
    for waiter in queue.drain(..) {
        if waiter.reply.is_closed() {
            continue;
        }
        let answer = match last {
            _ if waiter.deadline > now => None,
            LastSeen::Holder(holder) => Some(Ok(AcquireOutcome::Held(holder.clone()))),
            LastSeen::Failure(err) => Some(Err(WaitError::Store(err.clone()))),
            // Nothing is known before the first attempt, which comes next.
            LastSeen::Nothing => None,
        };
        match answer {
            Some(answer) => {
                let _ = waiter.reply.send(answer);
            }
            None => kept.push_back(waiter),
        }
    }
    *queue = kept;
}

/// The next attempt while `holder` holds the lock: when its lease is over for
/// another server too, or after `delay` should it be released early elsewhere.
fn retry_at(store: &DynamoStore, holder: &Lock, delay: Duration) -> Instant {
    let now_ms = store.clock().now_millis();
    let until_free = u64::try_from(store.free_at(holder) - now_ms).unwrap_or(0);
    // One millisecond past the end, as takeover needs the end strictly behind.
    Instant::now() + delay.min(Duration::from_millis(until_free + 1))
}

/// `delay` scaled by a random factor in [0.5, 1.0), so that waiters on several
/// servers do not retry in step.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + fastrand::f64() / 2.0)
}

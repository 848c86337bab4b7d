//! Waiting acquire, of locks and of semaphore slots alike. The waiters for one name
//! on this server form a FIFO queue served by a single task, so a hundred waiters cost
//! DynamoDB what one does:
//!
//! - the task tries to acquire for the waiter at the front only;
//! - while the lock is held (every slot of the semaphore is) it retries no sooner than
//!   the first holder's lease ends (plus the skew margin), or after a jittered
//!   back-off of 100 ms doubling to 1 s, since a holder may release early through
//!   another server;
//! - after a grant, the next waiter of a semaphore tries at once (another slot may be
//!   free); the next waiter of a lock waits as for a held lock;
//! - a release through this server wakes the task at once ([`Waiters::released`]);
//! - a waiter whose client went away leaves the queue, and a grant it can no longer
//!   receive is released again, so no lock is left held by nobody;
//! - on shutdown ([`Waiters::close`]) every waiter is answered at once, or once the
//!   one DynamoDB request in flight for its name returns;
//! - a lock group that has waited [`RESERVE_AFTER`] and is refused reserves its locks,
//!   so that single-lock acquires do not keep taking them before it; a group that
//!   leaves without a grant clears them before it is answered ([`Contended::abandon`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::domain::{Holder, Lock, LockName, Millis};
use crate::metrics::Metrics;
use crate::store::{
    AcquireOutcome, AcquireRequest, DynamoStore, GroupOutcome, SemaphoreOutcome, SemaphoreRequest,
    StoreError,
};

/// What a queue needs of the store it acquires through, besides the attempts of
/// [`Contended`]: the clock leases are counted by, and the metrics it counts waiters
/// in. The queues' own unit tests put a store in memory here.
pub trait QueueStore: Clone + Send + Sync + 'static {
    fn clock(&self) -> &Arc<dyn Clock>;
    fn metrics(&self) -> &Arc<Metrics>;
}

impl QueueStore for DynamoStore {
    fn clock(&self) -> &Arc<dyn Clock> {
        DynamoStore::clock(self)
    }

    fn metrics(&self) -> &Arc<Metrics> {
        DynamoStore::metrics(self)
    }
}

/// What a queue of waiters waits for: a lock ([`Locks`]), a semaphore slot
/// ([`Semaphores`]) or a lock group ([`Groups`]).
pub trait Contended: Send + Sync + 'static {
    type Store: QueueStore;
    type Request: Send + Sync + 'static;
    type Outcome: Clone + Send + Sync + 'static;

    /// The name whose queue the request joins.
    fn name(request: &Self::Request) -> &LockName;

    /// Every name whose release may let the request be granted: its own name, and
    /// for a group each of its locks.
    fn names(request: &Self::Request) -> &[LockName] {
        std::slice::from_ref(Self::name(request))
    }

    /// One attempt to acquire.
    fn attempt(
        store: &Self::Store,
        request: &Self::Request,
    ) -> impl Future<Output = Result<Self::Outcome, StoreError>> + Send;

    /// What an attempt's outcome means for the queue.
    fn turn(store: &Self::Store, outcome: &Self::Outcome) -> Turn;

    /// What a grant to one waiter tells the waiters behind it, as the outcome of an
    /// attempt of theirs (a lock granted to another is held); `None` if nothing.
    fn seen_by_others(granted: &Self::Outcome) -> Option<Self::Outcome>;

    /// Releases a grant whose waiter left before it was handed over.
    fn give_back(store: &Self::Store, outcome: Self::Outcome) -> impl Future<Output = ()> + Send;

    /// Undoes what the attempts of a waiter that leaves without a grant left behind
    /// (a group's reservations, if it made any); called before it is answered.
    fn abandon(store: &Self::Store, request: &Self::Request) -> impl Future<Output = ()> + Send;
}

/// What an attempt's outcome means for the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Granted to the front waiter; the next one tries once `busy_until` is past
    /// (or a release wakes the queue), or at once when `None`.
    Granted { busy_until: Option<Millis> },
    /// Held by others: free at `free_at` at the latest, unless released sooner.
    Busy { free_at: Millis },
    /// An answer that waiting cannot change; the front waiter gets it at once.
    Final,
}

/// Waiting for a lock.
#[derive(Debug)]
pub struct Locks;

impl Contended for Locks {
    type Store = DynamoStore;
    type Request = AcquireRequest;
    type Outcome = AcquireOutcome;

    fn name(request: &AcquireRequest) -> &LockName {
        &request.name
    }

    async fn attempt(
        store: &DynamoStore,
        request: &AcquireRequest,
    ) -> Result<AcquireOutcome, StoreError> {
        store.acquire(request).await
    }

    fn turn(store: &DynamoStore, outcome: &AcquireOutcome) -> Turn {
        match outcome {
            AcquireOutcome::Granted(lock, _) => Turn::Granted {
                busy_until: Some(store.policy().free_at(lock)),
            },
            // Waiting does not enable a disabled lock.
            AcquireOutcome::Held(holder) if holder.is_disabled() => Turn::Final,
            AcquireOutcome::Held(holder) => Turn::Busy {
                free_at: store.policy().free_at(holder),
            },
        }
    }

    fn seen_by_others(granted: &AcquireOutcome) -> Option<AcquireOutcome> {
        match granted {
            AcquireOutcome::Granted(lock, _) => Some(AcquireOutcome::Held(lock.clone())),
            AcquireOutcome::Held(_) => None,
        }
    }

    async fn give_back(store: &DynamoStore, outcome: AcquireOutcome) {
        let AcquireOutcome::Granted(lock, _) = outcome else {
            return;
        };
        let (name, fence) = (lock.name, lock.fence);
        tracing::info!(lock = %name, fence, "waiter left before its grant; releasing it");
        if let Err(err) = store.release(&name, &Holder::Fence(fence)).await {
            // The lease still ends on its own at its ttl.
            tracing::warn!(lock = %name, fence, %err, "could not release an unclaimed grant");
        }
    }
    async fn abandon(_: &DynamoStore, _: &AcquireRequest) {}
}

/// A group acquire: every lock of `names` (sorted, without repeats), as `request`
/// asks for one (its own name is the first of `names`).
#[derive(Debug, Clone)]
pub struct GroupRequest {
    pub names: Vec<LockName>,
    pub request: AcquireRequest,
    /// When the group began to wait.
    pub since: Instant,
    /// Whether an attempt of it reserved any lock, so that it has some to clear.
    pub reserved: Arc<AtomicBool>,
}

impl GroupRequest {
    /// A group acquire of `names` (sorted, without repeats) that begins to wait now.
    pub fn new(names: Vec<LockName>, request: AcquireRequest) -> Self {
        Self {
            names,
            request,
            since: Instant::now(),
            reserved: Arc::default(),
        }
    }
}

/// How long a group waits before its refused attempts reserve its locks. A
/// reservation keeps the locks that are free from everybody else until the group has
/// them all, so a group that is granted soon (most are) holds nobody up; one that is
/// still refused after this long is being kept out, and reserves.
pub const RESERVE_AFTER: Duration = Duration::from_secs(1);

/// Waiting for every lock of a group at once. A group waits in the queue of its
/// first name in sorted order, behind the groups there before it, and holds nothing
/// while it waits: it is granted all its locks in one transaction or none, so no two
/// waiting groups can each hold a lock the other needs.
#[derive(Debug)]
pub struct Groups;

impl Contended for Groups {
    type Store = DynamoStore;
    type Request = GroupRequest;
    type Outcome = GroupOutcome;

    fn name(request: &GroupRequest) -> &LockName {
        &request.names[0]
    }

    fn names(request: &GroupRequest) -> &[LockName] {
        &request.names
    }

    /// A refused attempt of a group that has waited [`RESERVE_AFTER`] reserves its
    /// locks, so that single-lock acquires cannot keep taking one of them before it
    /// ([`DynamoStore::reserve_group`]).
    async fn attempt(
        store: &DynamoStore,
        request: &GroupRequest,
    ) -> Result<GroupOutcome, StoreError> {
        let outcome = store
            .acquire_group(&request.names, &request.request)
            .await?;
        // A disabled lock answers the group at once (below): nothing to reserve for.
        if matches!(&outcome, GroupOutcome::Held(held) if !held.iter().any(Lock::is_disabled))
            && request.since.elapsed() >= RESERVE_AFTER
        {
            // Without its reservations the group still waits, only not ahead of
            // single-lock acquires; the refusal is the answer either way.
            match store
                .reserve_group(&request.names, &request.request.nonce)
                .await
            {
                Ok(0) => {}
                Ok(_) => request.reserved.store(true, Ordering::Relaxed),
                Err(err) => {
                    // Some may have been written before the failure.
                    request.reserved.store(true, Ordering::Relaxed);
                    tracing::warn!(%err, "could not reserve the locks of a waiting group");
                }
            }
        }
        Ok(outcome)
    }

    fn turn(store: &DynamoStore, outcome: &GroupOutcome) -> Turn {
        match outcome {
            GroupOutcome::Granted(locks) => Turn::Granted {
                busy_until: locks.first().map(|lock| store.policy().free_at(lock)),
            },
            // Waiting does not enable a disabled lock.
            GroupOutcome::Held(holders) if holders.iter().any(Lock::is_disabled) => Turn::Final,
            // Every holder must be gone: the last of them to go frees the group.
            GroupOutcome::Held(holders) => Turn::Busy {
                free_at: holders
                    .iter()
                    .map(|lock| store.policy().free_at(lock))
                    .max()
                    .unwrap_or_else(|| store.clock().now_millis()),
            },
        }
    }

    fn seen_by_others(granted: &GroupOutcome) -> Option<GroupOutcome> {
        match granted {
            GroupOutcome::Granted(locks) => Some(GroupOutcome::Held(locks.clone())),
            GroupOutcome::Held(_) => None,
        }
    }

    async fn give_back(store: &DynamoStore, outcome: GroupOutcome) {
        let GroupOutcome::Granted(locks) = outcome else {
            return;
        };
        let holders: Vec<_> = locks
            .into_iter()
            .map(|lock| (lock.name, Holder::Fence(lock.fence)))
            .collect();
        tracing::info!(
            locks = holders.len(),
            "group waiter left before its grant; releasing it"
        );
        if let Err(err) = store.release_group(&holders).await {
            tracing::warn!(%err, "could not release an unclaimed group grant");
        }
    }

    async fn abandon(store: &DynamoStore, request: &GroupRequest) {
        if !request.reserved.load(Ordering::Relaxed) {
            return;
        }
        if let Err(err) = store
            .unreserve_group(&request.names, &request.request.nonce)
            .await
        {
            // They end on their own within a few seconds.
            tracing::warn!(%err, "could not clear the reservations of a group that stopped waiting");
        }
    }
}

/// Waiting for a slot of a semaphore.
#[derive(Debug)]
pub struct Semaphores;

impl Contended for Semaphores {
    type Store = DynamoStore;
    type Request = SemaphoreRequest;
    type Outcome = SemaphoreOutcome;

    fn name(request: &SemaphoreRequest) -> &LockName {
        &request.name
    }

    async fn attempt(
        store: &DynamoStore,
        request: &SemaphoreRequest,
    ) -> Result<SemaphoreOutcome, StoreError> {
        store.acquire_semaphore(request).await
    }

    fn turn(store: &DynamoStore, outcome: &SemaphoreOutcome) -> Turn {
        match outcome {
            SemaphoreOutcome::Granted { .. } => Turn::Granted { busy_until: None },
            SemaphoreOutcome::Full(semaphore) => Turn::Busy {
                free_at: store
                    .policy()
                    .semaphore_free_at(semaphore, store.clock().now_millis()),
            },
            SemaphoreOutcome::LimitMismatch { .. } => Turn::Final,
        }
    }

    fn seen_by_others(_: &SemaphoreOutcome) -> Option<SemaphoreOutcome> {
        // Another slot may be free: the next waiter tries at once.
        None
    }

    async fn give_back(store: &DynamoStore, outcome: SemaphoreOutcome) {
        let SemaphoreOutcome::Granted { semaphore, fence } = outcome else {
            return;
        };
        let name = semaphore.name;
        tracing::info!(semaphore = %name, fence, "waiter left before its grant; releasing it");
        if let Err(err) = store.release_semaphore(&name, &Holder::Fence(fence)).await {
            tracing::warn!(semaphore = %name, fence, %err, "could not release an unclaimed grant");
        }
    }
    async fn abandon(_: &DynamoStore, _: &SemaphoreRequest) {}
}

/// How long a queue waits between attempts while the name is held elsewhere: from
/// `start`, doubling up to `max` (each jittered), and never past the holder's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub start: Duration,
    /// The longest retry delay: a lock released through another server is seen within it.
    pub max: Duration,
}

impl Backoff {
    /// The same delay every time.
    pub fn fixed(delay: Duration) -> Self {
        Self {
            start: delay,
            max: delay,
        }
    }
}

impl Default for Backoff {
    /// 100 ms doubling to 1 s.
    fn default() -> Self {
        Self {
            start: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }
}

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

type Reply<K> = Result<<K as Contended>::Outcome, WaitError>;

struct Waiter<K: Contended> {
    request: K::Request,
    deadline: Instant,
    reply: oneshot::Sender<Reply<K>>,
}

impl<K: Contended> Waiter<K> {
    /// Answers a waiter that leaves without a grant, undoing its attempts first.
    async fn leave(self, store: &K::Store, answer: Reply<K>) {
        K::abandon(store, &self.request).await;
        let _ = self.reply.send(answer);
    }
}

struct Queue<K: Contended> {
    arrivals: mpsc::UnboundedSender<Waiter<K>>,
    wake: Arc<Notify>,
    /// The waiters of this queue whose acquire has not returned yet.
    waiting: Arc<AtomicUsize>,
}

struct Inner<K: Contended> {
    store: K::Store,
    queues: Mutex<Registry<K>>,
    closed: watch::Sender<bool>,
    max_per_lock: usize,
    backoff: Backoff,
}

/// The queues by name, and which queues wait for each name: a group waits in the
/// queue of its first name, and the release of any of its names must wake it.
struct Registry<K: Contended> {
    queues: HashMap<LockName, Queue<K>>,
    /// For each name, the queues with a waiter that names it, and how many such waiters.
    woken_by: HashMap<LockName, HashMap<LockName, usize>>,
}

impl<K: Contended> Default for Registry<K> {
    fn default() -> Self {
        Self {
            queues: HashMap::new(),
            woken_by: HashMap::new(),
        }
    }
}

impl<K: Contended> Registry<K> {
    /// Counts a waiter of `queue` that names `names` (`add`), or forgets one.
    fn watch(&mut self, queue: &LockName, names: &[LockName], add: bool) {
        for name in names {
            let queues = self.woken_by.entry(name.clone()).or_default();
            let count = queues.entry(queue.clone()).or_default();
            if add {
                *count += 1;
            } else {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    queues.remove(queue);
                }
            }
            if queues.is_empty() {
                self.woken_by.remove(name);
            }
        }
    }
}

/// The waiters one lock may have on one server unless told otherwise.
pub const DEFAULT_MAX_WAITERS_PER_LOCK: usize = 1000;

/// The waiting acquires of this server, one queue per name: of locks, unless said.
pub struct Waiters<K: Contended = Locks> {
    inner: Arc<Inner<K>>,
}

impl<K: Contended> Clone for Waiters<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Contended> std::fmt::Debug for Waiters<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters")
            .field("names", &self.lock_queues().queues.len())
            .finish()
    }
}

impl<K: Contended> Waiters<K> {
    /// Waiters acquiring through `store`, at most `max_per_lock` at once for one name.
    pub fn new(store: K::Store, max_per_lock: usize) -> Self {
        Self::with_backoff(store, max_per_lock, Backoff::default())
    }

    /// As [`Waiters::new`], retrying a name held elsewhere on `backoff`.
    pub fn with_backoff(store: K::Store, max_per_lock: usize, backoff: Backoff) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                queues: Mutex::new(Registry::default()),
                closed: watch::channel(false).0,
                max_per_lock,
                backoff,
            }),
        }
    }

    /// Acquires `request`, waiting up to `wait` behind the waiters already queued for
    /// the name. Ends with `Held` (the last holder seen) when the wait runs out.
    pub async fn acquire(&self, request: K::Request, wait: Duration) -> Reply<K> {
        if *self.inner.closed.borrow() {
            return Err(WaitError::ShuttingDown);
        }
        let (reply, answer) = oneshot::channel();
        let queue = K::name(&request).clone();
        let names = K::names(&request).to_vec();
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
            self.lock_queues().watch(&queue, &names, false);
        });
        // The task always answers; a dropped sender means it was stopped with the runtime.
        answer.await.unwrap_or(Err(WaitError::ShuttingDown))
    }

    /// Tells the waiters for `name` that this server just released it: the queue of
    /// the name, and every queue with a group that names it.
    pub fn released(&self, name: &LockName) {
        let registry = self.lock_queues();
        let Some(woken) = registry.woken_by.get(name) else {
            return;
        };
        for queue in woken.keys().filter_map(|queue| registry.queues.get(queue)) {
            queue.wake.notify_one();
        }
    }

    /// Answers every waiter with [`WaitError::ShuttingDown`], now and from now on.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// The acquires waiting on this server for each of `names`, in their order.
    pub fn waiting_for<'a>(&self, names: impl IntoIterator<Item = &'a LockName>) -> Vec<usize> {
        let registry = self.lock_queues();
        names
            .into_iter()
            .map(|name| {
                registry
                    .queues
                    .get(name)
                    .map_or(0, |queue| queue.waiting.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// How many lock names have waiters on this server.
    pub fn waiting_names(&self) -> usize {
        self.lock_queues().queues.len()
    }

    fn lock_queues(&self) -> std::sync::MutexGuard<'_, Registry<K>> {
        // The map holds no invariant a panic could break halfway.
        self.inner
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `waiter` in its name's queue, starting the queue's task if there is none;
    /// answers the queue's count of waiters, which counts this one.
    fn enqueue(&self, waiter: Waiter<K>) -> Result<Arc<AtomicUsize>, WaitError> {
        let mut registry = self.lock_queues();
        let name = K::name(&waiter.request).clone();
        let names = K::names(&waiter.request).to_vec();
        let waiter = match registry.queues.get(&name) {
            Some(queue) => {
                let limit = self.inner.max_per_lock;
                if queue.waiting.load(Ordering::Relaxed) >= limit {
                    return Err(WaitError::TooMany { limit });
                }
                match queue.arrivals.send(waiter) {
                    Ok(()) => {
                        queue.waiting.fetch_add(1, Ordering::Relaxed);
                        let waiting = queue.waiting.clone();
                        registry.watch(&name, &names, true);
                        return Ok(waiting);
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
        registry.queues.insert(
            name.clone(),
            Queue {
                arrivals,
                wake: wake.clone(),
                waiting: waiting.clone(),
            },
        );
        registry.watch(&name, &names, true);
        tokio::spawn(serve_queue(self.clone(), name, receiver, wake));
        Ok(waiting)
    }
}

/// What the queue's task last learnt about the name, to answer a wait that ran out.
enum LastSeen<O> {
    Nothing,
    Busy(O),
    Failure(StoreError),
}

/// The one task that acquires for the waiters of `name`, in arrival order.
async fn serve_queue<K: Contended>(
    waiters: Waiters<K>,
    name: LockName,
    mut arrivals: mpsc::UnboundedReceiver<Waiter<K>>,
    wake: Arc<Notify>,
) {
    let store = waiters.inner.store.clone();
    let mut closed = waiters.inner.closed.subscribe();
    let mut queue: VecDeque<Waiter<K>> = VecDeque::new();
    let mut last = LastSeen::Nothing;
    let Backoff {
        start: backoff_start,
        max: backoff_max,
    } = waiters.inner.backoff;
    let mut backoff = backoff_start;
    let mut attempt_at = Instant::now();
    loop {
        while let Ok(waiter) = arrivals.try_recv() {
            queue.push_back(waiter);
        }
        if *closed.borrow_and_update() {
            for waiter in queue.drain(..) {
                waiter.leave(&store, Err(WaitError::ShuttingDown)).await;
            }
        }
        answer_expired(&store, &mut queue, &last).await;
        if queue.is_empty() {
            // Leave under the registry lock, so no waiter is sent to a task that quit.
            let mut registry = waiters.lock_queues();
            match arrivals.try_recv() {
                Ok(waiter) => queue.push_back(waiter),
                Err(_) => {
                    registry.queues.remove(&name);
                    return;
                }
            }
            continue;
        }
        if Instant::now() >= attempt_at {
            let front = queue.front().expect("the queue is not empty");
            let attempt = K::attempt(&store, &front.request).await;
            match attempt.map(|outcome| (K::turn(&store, &outcome), outcome)) {
                Ok((Turn::Granted { busy_until }, outcome)) => {
                    let waiter = queue.pop_front().expect("the front waiter is still queued");
                    last = K::seen_by_others(&outcome).map_or(LastSeen::Nothing, LastSeen::Busy);
                    if let Err(Ok(unclaimed)) = waiter.reply.send(Ok(outcome)) {
                        K::give_back(&store, unclaimed).await;
                    }
                    backoff = backoff_start;
                    attempt_at = match busy_until {
                        Some(free_at) => retry_at(&store, free_at, backoff),
                        None => Instant::now(),
                    };
                }
                Ok((Turn::Busy { free_at }, outcome)) => {
                    attempt_at = retry_at(&store, free_at, jittered(backoff));
                    backoff = (backoff * 2).min(backoff_max);
                    last = LastSeen::Busy(outcome);
                }
                Ok((Turn::Final, outcome)) => {
                    let waiter = queue.pop_front().expect("the front waiter is still queued");
                    let _ = waiter.reply.send(Ok(outcome));
                }
                Err(err) => {
                    attempt_at = Instant::now() + jittered(backoff);
                    backoff = (backoff * 2).min(backoff_max);
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
                backoff = backoff_start;
            }
            Some(waiter) = arrivals.recv() => queue.push_back(waiter),
            _ = closed.changed() => {}
        }
    }
}

/// Drops waiters whose client left and answers those whose wait ran out.
async fn answer_expired<K: Contended>(
    store: &K::Store,
    queue: &mut VecDeque<Waiter<K>>,
    last: &LastSeen<K::Outcome>,
) {
    let now = Instant::now();
    let mut kept = VecDeque::with_capacity(queue.len());
    let waiters: Vec<Waiter<K>> = queue.drain(..).collect();
    for waiter in waiters {
        if waiter.reply.is_closed() {
            K::abandon(store, &waiter.request).await;
            continue;
        }
        let answer = match last {
            _ if waiter.deadline > now => None,
            LastSeen::Busy(outcome) => Some(Ok(outcome.clone())),
            LastSeen::Failure(err) => Some(Err(WaitError::Store(err.clone()))),
            // Nothing is known before the first attempt, which comes next.
            LastSeen::Nothing => None,
        };
        match answer {
            Some(answer) => waiter.leave(store, answer).await,
            None => kept.push_back(waiter),
        }
    }
    *queue = kept;
}

/// The next attempt while the name is held until `free_at`: when that lease is over
/// for another server too, or after `delay` should it be released early elsewhere.
fn retry_at(store: &impl QueueStore, free_at: Millis, delay: Duration) -> Instant {
    let now_ms = store.clock().now_millis();
    let until_free = u64::try_from(free_at - now_ms).unwrap_or(0);
    // One millisecond past the end, as takeover needs the end strictly behind.
    Instant::now() + delay.min(Duration::from_millis(until_free + 1))
}

/// `delay` scaled by a random factor in [0.5, 1.0), so that waiters on several
/// servers do not retry in step.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// The queues' behaviour on a lock kept in memory, under tokio's paused clock: time
/// passes only as the queues sleep, so back-off and hand-off are seen exactly.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Kind;

    /// Wall-clock time as tokio's (paused) clock moves it.
    #[derive(Debug)]
    struct PausedClock {
        origin: Instant,
    }

    impl Clock for PausedClock {
        fn now_micros(&self) -> i64 {
            1_700_000_000_000_000 + i64::try_from(self.origin.elapsed().as_micros()).unwrap()
        }
    }

    /// One lock, and what the queue did to it.
    #[derive(Debug, Default)]
    struct Record {
        /// The holder and the end of its lease.
        holder: Option<(u32, Millis)>,
        /// Every attempt: by which waiter, and when.
        attempts: Vec<(u32, Millis)>,
        given_back: Vec<u32>,
        abandoned: Vec<u32>,
        /// How many attempts fail next, as DynamoDB being down.
        failing: usize,
        /// How long an attempt takes.
        latency: Duration,
    }

    #[derive(Debug, Clone)]
    struct Memory {
        record: Arc<Mutex<Record>>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    }

    impl QueueStore for Memory {
        fn clock(&self) -> &Arc<dyn Clock> {
            &self.clock
        }

        fn metrics(&self) -> &Arc<Metrics> {
            &self.metrics
        }
    }

    /// A lease granted by an attempt.
    const LEASE_MS: Millis = 10_000;

    impl Memory {
        fn new() -> Self {
            Self {
                record: Arc::default(),
                clock: Arc::new(PausedClock {
                    origin: Instant::now(),
                }),
                metrics: Arc::default(),
            }
        }

        fn now(&self) -> Millis {
            self.clock.now_millis()
        }

        fn record(&self) -> std::sync::MutexGuard<'_, Record> {
            self.record.lock().unwrap()
        }

        /// Another server's client takes the lock for `lease_ms`.
        fn held_elsewhere(&self, lease_ms: Millis) -> Millis {
            let until = self.now() + lease_ms;
            self.record().holder = Some((99, until));
            until
        }

        fn release(&self) {
            self.record().holder = None;
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Outcome {
        Granted { to: u32, until: Millis },
        Held { by: u32, until: Millis },
    }

    /// Waiting for the lock in [`Memory`].
    struct InMemory;

    impl Contended for InMemory {
        type Store = Memory;
        type Request = (LockName, u32);
        type Outcome = Outcome;

        fn name(request: &Self::Request) -> &LockName {
            &request.0
        }

        async fn attempt(store: &Memory, request: &Self::Request) -> Result<Outcome, StoreError> {
            let latency = store.record().latency;
            tokio::time::sleep(latency).await;
            let now = store.now();
            let mut record = store.record();
            record.attempts.push((request.1, now));
            if record.failing > 0 {
                record.failing -= 1;
                return Err(StoreError::Unavailable {
                    operation: "acquire",
                    kind: Kind::Lock,
                    name: request.0.to_string(),
                    detail: "DynamoDB is down".into(),
                });
            }
            match record.holder {
                Some((by, until)) if until > now => Ok(Outcome::Held { by, until }),
                _ => {
                    let until = now + LEASE_MS;
                    record.holder = Some((request.1, until));
                    Ok(Outcome::Granted {
                        to: request.1,
                        until,
                    })
                }
            }
        }

        fn turn(_: &Memory, outcome: &Outcome) -> Turn {
            match *outcome {
                Outcome::Granted { until, .. } => Turn::Granted {
                    busy_until: Some(until),
                },
                Outcome::Held { until, .. } => Turn::Busy { free_at: until },
            }
        }

        fn seen_by_others(granted: &Outcome) -> Option<Outcome> {
            match *granted {
                Outcome::Granted { to, until } => Some(Outcome::Held { by: to, until }),
                Outcome::Held { .. } => None,
            }
        }

        async fn give_back(store: &Memory, outcome: Outcome) {
            if let Outcome::Granted { to, .. } = outcome {
                let mut record = store.record();
                record.given_back.push(to);
                if record.holder.is_some_and(|(by, _)| by == to) {
                    record.holder = None;
                }
            }
        }

        async fn abandon(store: &Memory, request: &Self::Request) {
            store.record().abandoned.push(request.1);
        }
    }

    fn job() -> LockName {
        LockName::parse("job").unwrap()
    }

    type Answer = tokio::task::JoinHandle<Reply<InMemory>>;

    /// Waiter `id` joins the queue, and has joined it when this returns.
    async fn wait_for(waiters: &Waiters<InMemory>, id: u32, wait: Duration) -> Answer {
        let waiters = waiters.clone();
        let answer = tokio::spawn(async move { waiters.acquire((job(), id), wait).await });
        tokio::time::sleep(Duration::from_millis(1)).await;
        answer
    }

    async fn granted(answer: Answer) -> u32 {
        match answer.await.unwrap() {
            Ok(Outcome::Granted { to, .. }) => to,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_granted_in_arrival_order_and_only_the_front_one_asks() {
        let store = Memory::new();
        let waiters = Waiters::<InMemory>::new(store.clone(), 100);
        store.held_elsewhere(60_000);
        let mut answers = Vec::new();
        for id in 1..=5 {
            answers.push(wait_for(&waiters, id, Duration::from_secs(600)).await);
        }
        assert_eq!(waiters.waiting_for([&job()]), vec![5]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut order = Vec::new();
        for answer in answers {
            store.release();
            waiters.released(&job());
            order.push(granted(answer).await);
        }
        assert_eq!(order, vec![1, 2, 3, 4, 5]);
        // Each attempt was the front waiter's: nobody asked ahead of its turn.
        let askers: Vec<u32> = store.record().attempts.iter().map(|a| a.0).collect();
        assert!(askers.is_sorted(), "attempts out of turn: {askers:?}");
        assert!(askers.iter().filter(|&&id| id == 5).count() >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_through_this_server_hands_the_lock_over_at_once() {
        let store = Memory::new();
        let waiters = Waiters::<InMemory>::new(store.clone(), 100);
        store.held_elsewhere(60_000);
        let answer = wait_for(&waiters, 1, Duration::from_secs(600)).await;
        // Long enough for the back-off to reach its longest, 1 s.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let released_at = Instant::now();
        store.release();
        waiters.released(&job());
        assert_eq!(granted(answer).await, 1);
        assert_eq!(
            Instant::now(),
            released_at,
            "the waiter slept before its grant"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_held_elsewhere_is_retried_on_a_doubling_back_off_never_past_its_lease() {
        let store = Memory::new();
        let waiters = Waiters::<InMemory>::new(store.clone(), 100);
        let until = store.held_elsewhere(4_250);
        let answer = wait_for(&waiters, 1, Duration::from_secs(60)).await;
        assert_eq!(granted(answer).await, 1);
        let times: Vec<Millis> = store.record().attempts.iter().map(|a| a.1).collect();
        let (granting, refused) = times.split_last().unwrap();
        // Granted as soon as the lease is over (1 ms past it at most), not a back-off later.
        assert!(
            (until..=until + 1).contains(granting),
            "granted at {granting}, the lease ended at {until}"
        );
        // Refused attempts are spaced by a jittered [0.5, 1.0) of 100 ms doubling to
        // 1 s, or less where the lease ends sooner.
        let mut delay = 100;
        for (k, gap) in refused.windows(2).map(|w| w[1] - w[0]).enumerate() {
            // A millisecond either way: the clock counts whole milliseconds.
            assert!(
                gap >= delay / 2 - 1 && gap <= delay + 1,
                "gap {k} was {gap} ms, expected {}..={delay}",
                delay / 2
            );
            delay = (delay * 2).min(1000);
        }
        assert!(refused.len() >= 5, "{refused:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hundred_waiters_cost_the_store_what_one_does() {
        let attempts = |waiting: u32| async move {
            let store = Memory::new();
            let waiters = Waiters::<InMemory>::new(store.clone(), 1000);
            store.held_elsewhere(600_000);
            let answers: Vec<_> = (1..=waiting)
                .map(|id| {
                    let waiters = waiters.clone();
                    tokio::spawn(async move {
                        waiters.acquire((job(), id), Duration::from_secs(30)).await
                    })
                })
                .collect();
            for answer in answers {
                assert!(matches!(
                    answer.await.unwrap(),
                    Ok(Outcome::Held { by: 99, .. })
                ));
            }
            store.record().attempts.len()
        };
        let (one, hundred) = (attempts(1).await, attempts(100).await);
        // Only the front waiter asks, so the count does not grow with the waiters;
        // jitter alone makes the two differ (by ~1.7 attempts, one standard deviation).
        assert!(
            one.abs_diff(hundred) <= 8,
            "one: {one}, a hundred: {hundred}"
        );
        // At least half of the longest back-off (1 s) between attempts, after the ramp.
        assert!(hundred <= 30 * 2 + 5, "{hundred} attempts in 30 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_runs_out_answers_the_last_holder_seen() {
        let store = Memory::new();
        let waiters = Waiters::<InMemory>::new(store.clone(), 100);
        let until = store.held_elsewhere(60_000);
        let started = Instant::now();
        let answer = waiters.acquire((job(), 1), Duration::from_secs(2)).await;
        assert_eq!(answer.unwrap(), Outcome::Held { by: 99, until });
        assert!(started.elapsed() >= Duration::from_secs(2));
        assert_eq!(store.record().abandoned, vec![1]);
        // The queue went with its last waiter.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(waiters.waiting_names(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_store_is_retried_and_its_failure_answered_when_the_wait_runs_out() {
        let store = Memory::new();
        let waiters = Waiters::<InMemory>::new(store.clone(), 100);
        store.record().failing = 3;
        let answer = waiters.acquire((job(), 1), Duration::from_secs(10)).await;
        assert!(matches!(answer, Ok(Outcome::Granted { to: 1, .. })));
        assert_eq!(store.record().attempts.len(), 4);

        store.release();
        store.record().failing = usize::MAX;
        let answer = waiters.acquire((job(), 2), Duration::from_secs(2)).await;
        assert!(
            matches!(
                answer,
                Err(WaitError::Store(StoreError::Unavailable { .. }))
            ),
            "{answer:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_whose_client_left_is_dropped_and_its_reservations_undone() {
        let store = Memory::new();
        let waiters = Waiters::<InMemory>::new(store.clone(), 100);
        store.held_elsewhere(60_000);
        let leaving = wait_for(&waiters, 1, Duration::from_secs(600)).await;
        let staying = wait_for(&waiters, 2, Duration::from_secs(600)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        leaving.abort();
        // Seen at the queue's next attempt, within the longest back-off.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(store.record().abandoned, vec![1]);
        assert_eq!(waiters.waiting_for([&job()]), vec![1]);
        let asked_since = store
            .record()
            .attempts
            .iter()
            .rev()
            .take(1)
            .map(|a| a.0)
            .collect::<Vec<_>>();
        assert_eq!(asked_since, vec![2], "the next waiter asks in its place");
        store.release();
        waiters.released(&job());
        assert_eq!(granted(staying).await, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_grant_whose_waiter_left_during_the_attempt_is_given_back() {
        let store = Memory::new();
        let waiters = Waiters::<InMemory>::new(store.clone(), 100);
        store.record().latency = Duration::from_millis(50);
        let leaving = {
            let waiters = waiters.clone();
            tokio::spawn(async move { waiters.acquire((job(), 1), Duration::from_secs(5)).await })
        };
        // The attempt is under way; the client leaves before it returns.
        tokio::time::sleep(Duration::from_millis(20)).await;
        leaving.abort();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let record = store.record();
        assert_eq!(record.attempts.len(), 1);
        assert_eq!(record.given_back, vec![1]);
        assert_eq!(
            record.holder, None,
            "the unclaimed grant still holds the lock"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closing_answers_every_waiter_and_every_later_one_shutting_down() {
        let store = Memory::new();
        let waiters = Waiters::<InMemory>::new(store.clone(), 100);
        store.held_elsewhere(60_000);
        let answers = [
            wait_for(&waiters, 1, Duration::from_secs(600)).await,
            wait_for(&waiters, 2, Duration::from_secs(600)).await,
        ];
        waiters.close();
        for answer in answers {
            assert!(matches!(
                answer.await.unwrap(),
                Err(WaitError::ShuttingDown)
            ));
        }
        let later = waiters.acquire((job(), 3), Duration::from_secs(5)).await;
        assert!(matches!(later, Err(WaitError::ShuttingDown)));
        assert_eq!(store.record().abandoned, vec![1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_past_the_limit_are_refused_and_change_nothing() {
        let store = Memory::new();
        let waiters = Waiters::<InMemory>::new(store.clone(), 2);
        store.held_elsewhere(60_000);
        let _first = wait_for(&waiters, 1, Duration::from_secs(600)).await;
        let _second = wait_for(&waiters, 2, Duration::from_secs(600)).await;
        let third = waiters.acquire((job(), 3), Duration::from_secs(600)).await;
        assert!(matches!(third, Err(WaitError::TooMany { limit: 2 })));
        assert_eq!(waiters.waiting_for([&job()]), vec![2]);
        assert!(store.record().attempts.iter().all(|a| a.0 == 1));
    }
}

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

use crate::domain::{Holder, LockName, Millis};
use crate::store::{
    AcquireOutcome, AcquireRequest, DynamoStore, GroupOutcome, SemaphoreOutcome, SemaphoreRequest,
    StoreError,
};

/// What a queue of waiters waits for: a lock ([`Locks`]) or a semaphore slot
/// ([`Semaphores`]).
pub trait Contended: Send + Sync + 'static {
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
        store: &DynamoStore,
        request: &Self::Request,
    ) -> impl Future<Output = Result<Self::Outcome, StoreError>> + Send;

    /// What an attempt's outcome means for the queue.
    fn turn(store: &DynamoStore, outcome: &Self::Outcome) -> Turn;

    /// What a grant to one waiter tells the waiters behind it, as the outcome of an
    /// attempt of theirs (a lock granted to another is held); `None` if nothing.
    fn seen_by_others(granted: &Self::Outcome) -> Option<Self::Outcome>;

    /// Releases a grant whose waiter left before it was handed over.
    fn give_back(store: &DynamoStore, outcome: Self::Outcome) -> impl Future<Output = ()> + Send;

    /// Undoes what the attempts of a waiter that leaves without a grant left behind
    /// (a group's reservations, if it made any); called before it is answered.
    fn abandon(store: &DynamoStore, request: &Self::Request) -> impl Future<Output = ()> + Send;
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
            AcquireOutcome::Granted(lock) => Turn::Granted {
                busy_until: Some(store.policy().free_at(lock)),
            },
            AcquireOutcome::Held(holder) => Turn::Busy {
                free_at: store.policy().free_at(holder),
            },
        }
    }

    fn seen_by_others(granted: &AcquireOutcome) -> Option<AcquireOutcome> {
        match granted {
            AcquireOutcome::Granted(lock) => Some(AcquireOutcome::Held(lock.clone())),
            AcquireOutcome::Held(_) => None,
        }
    }

    async fn give_back(store: &DynamoStore, outcome: AcquireOutcome) {
        let AcquireOutcome::Granted(lock) = outcome else {
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
        if matches!(outcome, GroupOutcome::Held(_)) && request.since.elapsed() >= RESERVE_AFTER {
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
    async fn leave(self, store: &DynamoStore, answer: Reply<K>) {
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
    store: DynamoStore,
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
    pub fn new(store: DynamoStore, max_per_lock: usize) -> Self {
        Self::with_backoff(store, max_per_lock, Backoff::default())
    }

    /// As [`Waiters::new`], retrying a name held elsewhere on `backoff`.
    pub fn with_backoff(store: DynamoStore, max_per_lock: usize, backoff: Backoff) -> Self {
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
    store: &DynamoStore,
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
fn retry_at(store: &DynamoStore, free_at: Millis, delay: Duration) -> Instant {
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

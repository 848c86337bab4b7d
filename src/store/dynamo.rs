//! [`DynamoStore`]: the lock operations as single conditional `UpdateItem`s (and a
//! strongly consistent `GetItem` for status), with their conflicts read from
//! `ReturnValuesOnConditionCheckFailure = ALL_OLD` instead of a second request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region, timeout::TimeoutConfig};
use std::time::Instant;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnConsumedCapacity, ReturnValue,
    ReturnValuesOnConditionCheckFailure,
};
use tokio::sync::OnceCell;

use super::capacity;
use super::item::{self, Item, n, s};
use super::{AcquireOutcome, AcquireRequest, HolderOutcome, StoreError};
use crate::clock::Clock;
use crate::clock_check::ClockCheck;
use crate::domain::{
    Fence, Holder, Kind, LeasePolicy, Lock, LockName, LockRejection, Millis, Predecessor,
    ServerKey, Token, check_holder,
};
use crate::metrics::{CapacityUnit, Metrics};

/// Where and how to reach DynamoDB.
#[derive(Debug, Clone)]
pub struct DynamoSettings {
    /// `None` means AWS's own endpoint for the region.
    pub endpoint: Option<String>,
    /// `None` means the standard AWS chain (`AWS_REGION`, profile, …).
    pub region: Option<String>,
    /// The longest one DynamoDB operation may take, retries included.
    pub timeout: Duration,
    /// Fixed credentials instead of the standard AWS chain: for DynamoDB Local, which
    /// accepts any.
    pub access_key: Option<AccessKey>,
    /// How many times one operation is tried; `None` is the SDK's default (3).
    pub attempts: Option<u32>,
    /// Compare this server's clock with the `Date` of DynamoDB's answers
    /// ([`crate::clock_check`]).
    pub clock_check: bool,
}

impl Default for DynamoSettings {
    /// AWS's standard chain, with `FENCELOCK_DYNAMODB_TIMEOUT`'s default of 5 s.
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            timeout: Duration::from_secs(5),
            access_key: None,
            attempts: None,
            clock_check: true,
        }
    }
}

/// An access key id and its secret.
#[derive(Clone)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Builds a DynamoDB client from the standard AWS configuration chain (credentials,
/// region) with `settings` on top, and `check` reading the `Date` of every answer.
async fn connect(
    settings: &DynamoSettings,
    check: Option<&Arc<ClockCheck>>,
) -> Result<Client, String> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts(settings.timeout));
    if let Some(endpoint) = &settings.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(key) = &settings.access_key {
        loader = loader.credentials_provider(credentials(key));
    }
    if let Some(attempts) = settings.attempts {
        loader = loader.retry_config(RetryConfig::standard().with_max_attempts(attempts));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err("no AWS region is configured: set AWS_REGION (for example us-east-1)".into());
    }
    let mut config = aws_sdk_dynamodb::config::Builder::from(&config);
    if let Some(check) = check {
        config = config.interceptor(check.interceptor());
    }
    Ok(Client::from_conf(config.build()))
}

/// Each attempt gets a third of an operation's time, so that several fit in one; each
/// write is safe to retry.
fn timeouts(operation: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_timeout(operation)
        .operation_attempt_timeout(operation / 3)
        .connect_timeout(operation / 3)
        .build()
}

fn credentials(key: &AccessKey) -> Credentials {
    Credentials::new(&key.id, &key.secret, None, None, "fencelock-settings")
}

/// Lock state in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    pub(super) client: Client,
    pub(super) table: Arc<str>,
    clock: Arc<dyn Clock>,
    policy: LeasePolicy,
    metrics: Arc<Metrics>,
    /// The table's server key, once read ([`DynamoStore::server_key`]).
    server_key: Arc<OnceCell<ServerKey>>,
    /// Told of every write applied ([`DynamoStore::on_write`]).
    pub(super) written: super::Written,
    /// This server's clock compared with DynamoDB's; none when not checked.
    clock_check: Option<Arc<ClockCheck>>,
    /// Whose records the lock operations read and write: locks', or elections'.
    space: Space,
    /// The semaphores' records as this server last saw them: an acquire's first guess.
    pub(super) semaphores_seen: super::semaphore::Seen,
    /// The bodies kept out of their records that this server wrote or read.
    pub(super) bodies: super::body::Bodies,
    /// What the table is, as [`DynamoStore::check_table`] found it.
    table_kind: super::TableKind,
    /// With `FENCELOCK_RECLAIM_BY=ttl`: how long after a write DynamoDB's TTL may
    /// delete the record (the reclaim delay, plus the longest lease and its
    /// takeover margins, so that no lease a write grants can still be live).
    purge_after: Option<Duration>,
}

/// The records a store's lock operations address. An election is kept as a lock is
/// (its leader the holder, its term the fence, its value the body), under a key of
/// its own, so that an election and a lock of the same name are different records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Keys are the lock names.
    Locks,
    /// Keys are the election names after [`ELECTION_PREFIX`].
    Elections,
}

/// What the key of an election's record starts with (no lock name contains `/`).
pub const ELECTION_PREFIX: &str = "election/";

impl Space {
    /// The kind of the records, for metrics and messages.
    pub fn kind(self) -> Kind {
        match self {
            Self::Locks => Kind::Lock,
            Self::Elections => Kind::Election,
        }
    }

    /// The key of `name`'s record.
    fn key(self, name: &LockName) -> AttributeValue {
        s(self.key_text(name))
    }

    /// The key of `name`'s record, as text.
    fn key_text(self, name: &LockName) -> String {
        match self {
            Self::Locks => name.to_string(),
            Self::Elections => format!("{ELECTION_PREFIX}{name}"),
        }
    }
}

/// What a heartbeat, body update or extend changes besides the heartbeat time.
pub(super) struct Renewal<'a> {
    /// A new lease length; `None` reuses the one granted.
    pub ttl: Option<Duration>,
    pub body: Option<&'a str>,
    /// Refuse a lease that would end sooner than the current one.
    pub keep_longer: bool,
}

/// The condition that `holder` is the lock's current holder (`:holder`).
fn holder_condition(holder: &Holder) -> &'static str {
    match holder {
        Holder::Fence(_) => "#fence = :holder",
        Holder::Proven(..) => "#fence = :holder AND #nonce = :nonce",
        Holder::Token(_) => "#token = :holder",
    }
}

/// The expressions of one conditional update, with the names and values they use:
/// the same whether sent alone (`UpdateItem`) or in a transaction.
#[derive(Debug, Default)]
pub(super) struct Expression {
    pub update: String,
    pub condition: String,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
    /// `Some(kept)` when the write sets the body: `true` for one that is not empty.
    pub sets_body: Option<bool>,
    /// `Some(true)` when the write disables the name, `Some(false)` when it enables it.
    pub sets_disabled: Option<bool>,
}

impl Expression {
    pub(super) fn name(&mut self, placeholder: &str, attribute: &str) -> &mut Self {
        self.names
            .insert(placeholder.to_owned(), attribute.to_owned());
        self
    }

    pub(super) fn value(&mut self, placeholder: &str, value: AttributeValue) -> &mut Self {
        self.values.insert(placeholder.to_owned(), value);
        self
    }

    /// Binds the names and value [`holder_condition`] uses.
    fn holder(&mut self, holder: &Holder) -> &mut Self {
        match holder {
            Holder::Fence(fence) => self.name("#fence", item::FENCE).value(":holder", n(fence)),
            Holder::Proven(fence, nonce) => self
                .name("#fence", item::FENCE)
                .value(":holder", n(fence))
                .name("#nonce", item::NONCE)
                .value(":nonce", s(nonce.as_str())),
            Holder::Token(token) => self
                .name("#token", item::TOKEN)
                .value(":holder", s(token.as_str())),
        }
    }

    /// The same update, also counting the write in the record's version: every write
    /// of a lock record is sent through [`Expression::on`] or as a transaction's item,
    /// and both count it here.
    pub(super) fn versioned(mut self) -> Self {
        let count = "#version = if_not_exists(#version, :version_zero) + :version_step";
        self.update = match self.update.strip_prefix("SET ") {
            Some(sets) => format!("SET {count}, {sets}"),
            // One that only removes (a group's reservations).
            None => format!("SET {count} {}", self.update),
        };
        self.name("#version", item::VERSION)
            .value(":version_zero", n(0))
            .value(":version_step", n(1));
        self
    }

    /// The update with `set` and `remove` actions added to its `SET` and `REMOVE`
    /// clauses (each made where it has none).
    fn add_actions(&mut self, set: &[String], remove: &[String]) {
        let update = self.update.trim();
        let (sets, removes) = match update.find("REMOVE ") {
            Some(at) => (update[..at].trim(), update[at + "REMOVE ".len()..].trim()),
            None => (update, ""),
        };
        let join = |old: &str, new: &[String]| -> String {
            std::iter::once(old)
                .filter(|old| !old.is_empty())
                .chain(new.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sets = join(sets.strip_prefix("SET").unwrap_or(sets).trim(), set);
        let removes = join(removes, remove);
        self.update = match (sets.is_empty(), removes.is_empty()) {
            (false, false) => format!("SET {sets} REMOVE {removes}"),
            (false, true) => format!("SET {sets}"),
            (true, _) => format!("REMOVE {removes}"),
        };
    }

    /// The same update, also saying when DynamoDB's TTL may delete the record:
    /// with `purge_at` (`FENCELOCK_RECLAIM_BY=ttl`), at the later of that time and
    /// the reasons to keep it (a body, a disabled name), which this write sets or
    /// removes when it changes them; without (`scan`), never, and any earlier time
    /// is removed.
    pub(super) fn purged(mut self, purge_at: Option<i64>) -> Self {
        let Some(at) = purge_at else {
            self.add_actions(&[], &["#purge_at".to_owned()]);
            self.name("#purge_at", item::PURGE_AT);
            return self;
        };
        let (mut set, mut remove) = (Vec::new(), Vec::new());
        let mut term = |changes: Option<bool>, hold: &str, otherwise: &str| -> String {
            match changes {
                Some(true) => {
                    set.push(format!("{hold} = :hold_forever"));
                    ":hold_forever".to_owned()
                }
                Some(false) => {
                    remove.push(hold.to_owned());
                    otherwise.to_owned()
                }
                None => format!("if_not_exists({hold}, {otherwise})"),
            }
        };
        let body = term(self.sets_body, "#hold_body", ":purge_at");
        let disabled = term(self.sets_disabled, "#hold_disabled", ":purge_zero");
        set.push(format!("#purge_at = {body} + {disabled}"));
        self.add_actions(&set, &remove);
        self.name("#purge_at", item::PURGE_AT);
        let update = self.update.clone();
        let uses = |placeholder: &str| update.contains(placeholder);
        if uses("#hold_body") {
            self.name("#hold_body", item::HOLD_BODY);
        }
        if uses("#hold_disabled") {
            self.name("#hold_disabled", item::HOLD_DISABLED);
        }
        if uses(":purge_at") {
            self.value(":purge_at", n(at));
        }
        if uses(":purge_zero") {
            self.value(":purge_zero", n(0));
        }
        if uses(":hold_forever") {
            self.value(":hold_forever", n(item::HOLD_FOREVER));
        }
        self
    }

    /// `op` with these expressions.
    pub(super) fn on(self, op: UpdateItemFluentBuilder) -> UpdateItemFluentBuilder {
        let e = self.versioned();
        op.update_expression(e.update)
            .condition_expression(e.condition)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
    }
}

/// The update of a heartbeat, body update or extend by `holder` at `now`.
pub(super) fn renew_expression(holder: &Holder, renewal: &Renewal<'_>, now: Millis) -> Expression {
    let mut set = vec!["#heartbeat_at = :now"];
    let mut condition = vec![holder_condition(holder), "#expires_at > :now"];
    let mut e = Expression::default();
    e.holder(holder)
        .name("#heartbeat_at", item::HEARTBEAT_AT)
        .name("#expires_at", item::EXPIRES_AT)
        .name("#ttl_ms", item::TTL_MS)
        .value(":now", n(now));
    match renewal.ttl {
        Some(ttl) => {
            let ttl_ms = millis(ttl);
            set.extend(["#expires_at = :expires_at", "#ttl_ms = :ttl_ms"]);
            if renewal.keep_longer {
                condition.push("#expires_at <= :expires_at");
            }
            e.value(":expires_at", n(now.saturating_add(ttl_ms)))
                .value(":ttl_ms", n(ttl_ms));
        }
        None => set.push("#expires_at = :now + #ttl_ms"),
    }
    if let Some(body) = renewal.body {
        set.push("#body = :body");
        e.name("#body", item::BODY).value(":body", s(body));
        e.sets_body = Some(!body.is_empty());
    }
    e.update = format!("SET {}", set.join(", "));
    e.condition = condition.join(" AND ");
    e
}

/// The update of a release by `holder` at `now`.
pub(super) fn release_expression(holder: &Holder, now: Millis) -> Expression {
    let mut e = Expression {
        update: "SET #expires_at = :zero, #released_at = :now".to_owned(),
        condition: format!("{} AND #expires_at <> :zero", holder_condition(holder)),
        ..Expression::default()
    };
    e.holder(holder)
        .name("#expires_at", item::EXPIRES_AT)
        .name("#released_at", item::RELEASED_AT)
        .value(":zero", n(0))
        .value(":now", n(now));
    e
}

/// The answer to a release, of a lock or of a semaphore's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Whether the holder is the current one (holds the slot), now released by this
    /// call or an earlier one; `false` means the lock has moved on (the semaphore no
    /// longer has the slot) and nothing changed.
    pub released: bool,
    /// The lock's current fence (the semaphore's last); `None` when there is no record.
    pub fence: Option<Fence>,
}

/// The outcome label of a DynamoDB request.
pub(super) fn outcome_of<T, E: ProvideErrorMetadata>(
    result: &Result<T, SdkError<E>>,
) -> &'static str {
    match result {
        Ok(_) => "granted",
        Err(err) => match err.code() {
            Some("ConditionalCheckFailedException") => "conflict",
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded",
            ) => "throttled",
            _ => "error",
        },
    }
}

pub(super) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// `ms` milliseconds as a duration; none when negative.
pub(super) fn millis_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The answer to one conditional write.
pub(super) enum Write {
    Applied(Item),
    /// The condition failed; the item as it was (none if there was no item).
    Rejected(Option<Item>),
}

impl DynamoStore {
    /// A store on `table` of the DynamoDB that `settings` reach, reading time from
    /// `clock`. A lease that ended is taken over only once it has been over for
    /// `clock_skew`, the most the servers' clocks may disagree.
    pub async fn connect(
        settings: &DynamoSettings,
        table: &str,
        clock: Arc<dyn Clock>,
        clock_skew: Duration,
    ) -> Result<Self, String> {
        let metrics = Arc::<Metrics>::default();
        let check = settings
            .clock_check
            .then(|| Arc::new(ClockCheck::new(clock.clone(), clock_skew, metrics.clone())));
        let client = connect(settings, check.as_ref()).await?;
        let mut store = Self::new(client, table, clock, clock_skew);
        store.metrics = metrics;
        store.clock_check = check;
        Ok(store)
    }

    fn new(client: Client, table: &str, clock: Arc<dyn Clock>, clock_skew: Duration) -> Self {
        Self {
            client,
            table: table.into(),
            clock,
            policy: LeasePolicy::new(clock_skew, Duration::ZERO),
            metrics: Arc::default(),
            server_key: Arc::default(),
            written: super::Written::default(),
            clock_check: None,
            space: Space::Locks,
            semaphores_seen: super::semaphore::Seen::default(),
            bodies: super::body::Bodies::default(),
            table_kind: super::TableKind::Regional,
            purge_after: None,
        }
    }

    /// The check of this server's clock against DynamoDB's, if it is made.
    pub fn clock_check(&self) -> Option<&Arc<ClockCheck>> {
        self.clock_check.as_ref()
    }

    /// Whether this server's clock is suspect now: no lease that ended unreleased is
    /// taken over meanwhile.
    pub fn clock_suspect(&self) -> bool {
        self.clock_check
            .as_ref()
            .is_some_and(|check| check.is_suspect())
    }

    /// A lease that ended before this, at `now`, may be taken over; while the clock
    /// is suspect, only a released one (whose end is 0) may.
    pub(super) fn takeover_before(&self, now: Millis) -> Millis {
        if self.clock_suspect() {
            1
        } else {
            self.policy.takeover_before(now)
        }
    }

    /// The same table, its lock operations (acquire, heartbeat, update, release,
    /// get) on election records; and no write hook, until one is given.
    pub fn elections(&self) -> Self {
        Self {
            space: Space::Elections,
            written: super::Written::default(),
            ..self.clone()
        }
    }

    /// Whose records this store's lock operations address.
    pub fn space(&self) -> Space {
        self.space
    }

    /// The key of `name`'s record, as text.
    pub(super) fn record_key(&self, name: &LockName) -> String {
        self.space.key_text(name)
    }

    /// The same store, calling `hook` with a record's name after every write it
    /// applies to the record.
    pub fn on_write(mut self, hook: super::WriteHook) -> Self {
        self.written = super::Written(Some(hook));
        self
    }

    pub(super) fn server_key_cell(&self) -> &OnceCell<ServerKey> {
        &self.server_key
    }

    /// A store whose DynamoDB is nowhere (a closed local port, no retries): for tests
    /// of what a server answers before it asks DynamoDB anything.
    pub fn unreachable(table: &str, clock: Arc<dyn Clock>) -> Self {
        let key = AccessKey {
            id: "unreachable".into(),
            secret: "unreachable".into(),
        };
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(credentials(&key))
            .retry_config(RetryConfig::disabled())
            .build();
        Self::new(
            Client::from_conf(config),
            table,
            clock,
            Duration::from_millis(500),
        )
    }

    /// Creates this store's table (partition key `name`, on-demand billing) unless it
    /// exists, and waits until it is active. Safe when several servers start at once.
    pub async fn ensure_table(&self) -> Result<(), super::TableError> {
        super::table::ensure_table(&self.client, &self.table).await
    }

    /// This store on a table of `kind` (as [`DynamoStore::check_table`] answers).
    pub fn on_table(mut self, kind: super::TableKind) -> Self {
        self.table_kind = kind;
        self
    }

    /// Whether the table offers transactions, which lock groups are taken in: not on
    /// a global table with multi-Region strong consistency ([AWS: "How DynamoDB global
    /// tables work"](https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/V2globaltables_HowItWorks.html)).
    pub fn has_transactions(&self) -> bool {
        self.table_kind == super::TableKind::Regional
    }

    /// This store leaving the deletion of stale records to DynamoDB's TTL, `after`
    /// each write at the earliest (see [`item::PURGE_AT`]).
    pub fn with_purge_after(mut self, after: Duration) -> Self {
        self.purge_after = Some(after);
        self
    }

    /// When a record written now may be deleted by DynamoDB's TTL, in seconds since
    /// the epoch; `None` when stale records are reclaimed by scans.
    pub(super) fn purge_at(&self) -> Option<i64> {
        let after = self.purge_after?;
        let at = self.clock.now_millis().saturating_add(millis(after));
        Some(at.div_euclid(1000) + 1)
    }

    /// Marks the record `item` (as a write or read just found it) to be kept for its
    /// body, where it has a body but no such mark: a record written before the
    /// servers left cleanup to TTL. One conditional write, once per such record;
    /// one that fails is only logged (the record's next write tries again).
    pub(super) async fn hold_unmarked_body(&self, item: &Item) {
        if self.purge_after.is_none() || item.contains_key(item::HOLD_BODY) {
            return;
        }
        let has_body = item.contains_key(item::BODY_ID)
            || item
                .get(item::BODY)
                .and_then(|body| body.as_s().ok())
                .is_some_and(|body| !body.is_empty());
        if !has_body {
            return;
        }
        let Some(key) = item.get(item::NAME) else {
            return;
        };
        let started = Instant::now();
        let result = self
            .client
            .update_item()
            .table_name(self.table.as_ref())
            .key(item::NAME, key.clone())
            .update_expression(
                "SET #hold_body = :hold_forever, #purge_at = :hold_forever + if_not_exists(#hold_disabled, :zero)",
            )
            .condition_expression(
                "((attribute_exists(#body) AND #body <> :empty) OR attribute_exists(#body_id)) \
                 AND attribute_not_exists(#hold_body)",
            )
            .expression_attribute_names("#hold_body", item::HOLD_BODY)
            .expression_attribute_names("#hold_disabled", item::HOLD_DISABLED)
            .expression_attribute_names("#purge_at", item::PURGE_AT)
            .expression_attribute_names("#body", item::BODY)
            .expression_attribute_names("#body_id", item::BODY_ID)
            .expression_attribute_values(":hold_forever", n(item::HOLD_FOREVER))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":empty", s(""))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        self.metrics
            .dynamodb("hold_body", outcome_of(&result), started.elapsed());
        match result {
            Ok(output) => capacity::reported(
                &self.metrics,
                "hold_body",
                CapacityUnit::Write,
                output.consumed_capacity(),
            ),
            // Another write marked it, or emptied the body, first.
            Err(err) if err.code() == Some("ConditionalCheckFailedException") => {
                capacity::refused_write(&self.metrics, "hold_body", None);
            }
            // The record's next write tries again, long before TTL could reach it
            // (the purge delay is at least the reclaim delay).
            Err(err) => {
                let name = key.as_s().map_or("", String::as_str);
                tracing::warn!(lock = name, detail = %DisplayErrorContext(&err), "could not mark a record's body to be kept; its next write will");
            }
        }
    }

    /// The lock table's name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// The metrics of this store and of the server around it.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Keeps a lease that ended without a release from being taken over for
    /// `lock_delay` more, on top of the skew margin, so that a holder that is merely
    /// slow has time to notice. A released lock stays free at once.
    pub fn with_lock_delay(mut self, lock_delay: Duration) -> Self {
        self.policy = self.policy.with_lock_delay(lock_delay);
        self
    }

    /// When this store lets a lease that ended be taken over.
    pub fn policy(&self) -> LeasePolicy {
        self.policy
    }

    /// The clock this store decides by.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Takes the lock when nobody holds it, its lease ended more than the skew margin
    /// ago, or the caller's nonce holds it already, unless an operator disabled the
    /// name (then [`AcquireOutcome::Held`] with the disabled record); each grant issues
    /// a new fence.
    pub async fn acquire(&self, request: &AcquireRequest) -> Result<AcquireOutcome, StoreError> {
        let now_micros = self.clock.now_micros();
        let token = Token::generate();
        // The record as it was, so the grant can tell a takeover; the new record is
        // exactly what the update expression writes over it.
        let op = self
            .acquire_expression(request, &token, now_micros)
            .purged(self.purge_at())
            .on(self.update(&request.name))
            .return_values(ReturnValue::AllOld);
        match self.write("acquire", &request.name, op).await? {
            Write::Applied(old) => {
                let old = (!old.is_empty())
                    .then(|| Lock::try_from(&old))
                    .transpose()?;
                let now = now_micros.div_euclid(1000);
                let predecessor = old
                    .as_ref()
                    .filter(|o| !o.is_released() && o.nonce != request.nonce)
                    .map(|o| {
                        self.metrics.took_over(o.name.namespace());
                        let held = o.expires_at.saturating_sub(o.acquired_at);
                        self.metrics.held(self.space.kind(), millis_duration(held));
                        Predecessor {
                            fence: o.fence,
                            expires_at: o.expires_at,
                            owner: o.owner.clone(),
                        }
                    });
                if self.space == Space::Locks {
                    self.metrics.locks_granted.inc();
                }
                self.metrics.grants(self.space.kind());
                let fence = old.as_ref().map_or(now_micros.unsigned_abs(), |o| o.fence) + 1;
                let version = old.as_ref().map_or(0, |o| o.version) + 1;
                let (body, body_id, reservation) = old
                    .map(|o| (o.body, o.body_id, o.reservation))
                    .unwrap_or_default();
                // A body the grant sets is kept in the record.
                let (body, body_id) = match &request.body {
                    Some(set) => (set.clone(), None),
                    None => (body, body_id),
                };
                let granted = Lock {
                    name: request.name.clone(),
                    fence,
                    nonce: request.nonce.clone(),
                    token: Some(token),
                    owner: request.owner.clone(),
                    metadata: request.metadata.clone(),
                    acquired_at: now,
                    heartbeat_at: now,
                    expires_at: now.saturating_add(millis(request.ttl)),
                    ttl: request.ttl,
                    body,
                    body_id,
                    reservation,
                    version,
                    marks: Default::default(),
                };
                let granted = self.with_body(granted).await?;
                self.written.publish(&granted);
                Ok(AcquireOutcome::Granted(granted, predecessor))
            }
            Write::Rejected(Some(item)) => {
                if self.space == Space::Locks {
                    self.metrics.lock_conflicts.inc();
                }
                self.metrics.conflicts(self.space.kind());
                let held = Lock::try_from(&item)?;
                // A takeover the clock check alone refused.
                if self.clock_suspect()
                    && !held.is_released()
                    && !held.is_disabled()
                    && held.expires_at < self.policy.takeover_before(now_micros.div_euclid(1000))
                {
                    self.metrics.takeovers_refused.inc();
                }
                Ok(AcquireOutcome::Held(held.seen_by(&request.nonce)))
            }
            Write::Rejected(None) => Err(self.unavailable(
                "acquire",
                &request.name,
                "the condition failed on a missing item".into(),
            )),
        }
    }

    /// The update of an acquire at `now_micros`, issuing `token`. A lock free for
    /// the taking is not taken while a waiting group's reservation of it is live,
    /// unless the reservation is the caller's own, or the caller's nonce holds the
    /// lock still (re-acquiring what it holds): a reservation never ends a lease.
    pub(super) fn acquire_expression(
        &self,
        request: &AcquireRequest,
        token: &Token,
        now_micros: i64,
    ) -> Expression {
        self.acquire_expression_removing(request, token, now_micros, &[])
    }

    /// The update of one lock of a group's acquire: a single acquire's, which also
    /// removes the reservation its condition let through (the group's own, or one
    /// that ended; or another's, when the group re-acquires a lock it holds, and that
    /// group reserves it again on its next attempt).
    pub(super) fn group_acquire_expression(
        &self,
        request: &AcquireRequest,
        token: &Token,
        now_micros: i64,
    ) -> Expression {
        self.acquire_expression_removing(
            request,
            token,
            now_micros,
            &["#reserved_by", "#reserved_until"],
        )
    }

    fn acquire_expression_removing(
        &self,
        request: &AcquireRequest,
        token: &Token,
        now_micros: i64,
        also_remove: &[&'static str],
    ) -> Expression {
        let now = now_micros.div_euclid(1000);
        let ttl_ms = millis(request.ttl);
        let mut set = vec![
            // A record created anew continues above every fence the name issued before
            // it was deleted: fences are floored by the time in microseconds.
            "#fence = if_not_exists(#fence, :floor) + :one",
            "#nonce = :nonce",
            "#token = :token",
            "#acquired_at = :now",
            "#heartbeat_at = :now",
            "#expires_at = :expires_at",
            "#ttl_ms = :ttl_ms",
        ];
        // An operator's ask to release, and the mark of a forced release, were about
        // the holding before.
        let mut remove = vec!["#released_at", "#release_asked_at", "#force_released_at"];
        remove.extend(also_remove);
        let mut e = Expression {
            condition:
                "(attribute_not_exists(#fence) OR #expires_at < :takeover OR #nonce = :nonce) \
                 AND (attribute_not_exists(#reserved_by) OR #reserved_until < :now \
                      OR #reserved_by = :nonce OR (#nonce = :nonce AND #expires_at >= :takeover)) \
                 AND attribute_not_exists(#disabled_at)"
                    .to_owned(),
            ..Expression::default()
        };
        e.name("#fence", item::FENCE)
            .name("#nonce", item::NONCE)
            .name("#token", item::TOKEN)
            .name("#acquired_at", item::ACQUIRED_AT)
            .name("#heartbeat_at", item::HEARTBEAT_AT)
            .name("#expires_at", item::EXPIRES_AT)
            .name("#ttl_ms", item::TTL_MS)
            .name("#owner", item::OWNER)
            .name("#metadata", item::METADATA)
            .name("#released_at", item::RELEASED_AT)
            .name("#reserved_by", item::RESERVED_BY)
            .name("#reserved_until", item::RESERVED_UNTIL)
            .name("#release_asked_at", item::RELEASE_ASKED_AT)
            .name("#force_released_at", item::FORCE_RELEASED_AT)
            .name("#disabled_at", item::DISABLED_AT)
            .value(":floor", n(now_micros))
            .value(":one", n(1))
            .value(":nonce", s(request.nonce.as_str()))
            .value(":token", s(token.as_str()))
            .value(":now", n(now))
            .value(":expires_at", n(now.saturating_add(ttl_ms)))
            .value(":ttl_ms", n(ttl_ms))
            .value(":takeover", n(self.takeover_before(now)));
        // A new holder never inherits the previous holder's owner or metadata.
        match &request.owner {
            Some(owner) => {
                set.push("#owner = :owner");
                e.value(":owner", s(owner));
            }
            None => remove.push("#owner"),
        }
        match &request.metadata {
            Some(metadata) => {
                set.push("#metadata = :metadata");
                e.value(":metadata", s(metadata.to_string()));
            }
            None => remove.push("#metadata"),
        }
        if let Some(body) = &request.body {
            // Kept in the record (an election's value); a body item it had is left
            // behind, unread.
            set.push("#body = :body");
            remove.push("#body_id");
            e.name("#body", item::BODY)
                .name("#body_id", item::BODY_ID)
                .value(":body", s(body));
            e.sets_body = Some(!body.is_empty());
        }
        e.update = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
        e
    }

    /// Extends the lease of `holder` by `ttl` (or by the lease length it was granted with).
    pub async fn heartbeat(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Option<Duration>,
    ) -> Result<HolderOutcome, StoreError> {
        self.renew(
            "heartbeat",
            name,
            holder,
            Renewal {
                ttl,
                body: None,
                keep_longer: false,
            },
        )
        .await
    }

    /// Sets the body and extends the lease of `holder`, as a heartbeat does.
    pub async fn update_body(
        &self,
        name: &LockName,
        holder: &Holder,
        body: &str,
        ttl: Option<Duration>,
    ) -> Result<HolderOutcome, StoreError> {
        let renewal = Renewal {
            ttl,
            body: Some(body),
            keep_longer: false,
        };
        self.renew("update", name, holder, renewal).await
    }

    /// Sets the lease of `holder` to end `ttl` from now, unless that is sooner than it
    /// ends already ([`LockRejection::WouldShorten`]), as Gorilla's extend does.
    pub async fn extend(
        &self,
        name: &LockName,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<HolderOutcome, StoreError> {
        let renewal = Renewal {
            ttl: Some(ttl),
            body: None,
            keep_longer: true,
        };
        self.renew("extend", name, holder, renewal).await
    }

    async fn renew(
        &self,
        operation: &'static str,
        name: &LockName,
        holder: &Holder,
        renewal: Renewal<'_>,
    ) -> Result<HolderOutcome, StoreError> {
        if let Some(body) = renewal.body
            && self.keeps_out(body.len())
        {
            return self
                .renew_kept(operation, name, holder, renewal, body)
                .await;
        }
        let now = self.clock.now_millis();
        let mut e = renew_expression(holder, &renewal, now);
        // A body that goes into the record while the record's is kept out is written
        // as one that comes back ([`DynamoStore::renew_kept`]); on a table without
        // transactions (one that had them once), the record stops naming the item.
        let sets_body = renewal.body.is_some() && self.has_transactions();
        if sets_body {
            e.condition.push_str(" AND attribute_not_exists(#body_id)");
            e.name("#body_id", item::BODY_ID);
        } else if renewal.body.is_some() {
            e.add_actions(&[], &["#body_id".to_owned()]);
            e.name("#body_id", item::BODY_ID);
        }
        // The record as it was, for how much of its lease was left; the new record is
        // exactly what the update expression writes over it.
        let op = e
            .purged(self.purge_at())
            .on(self.update(name))
            .return_values(ReturnValue::AllOld);
        match self.write(operation, name, op).await? {
            Write::Applied(item) => {
                if operation == "heartbeat" {
                    self.metrics.heartbeats.inc();
                }
                let old = Lock::try_from(&item)?;
                if !old.ttl.is_zero() {
                    let left = old.expires_at.saturating_sub(now) as f64;
                    self.metrics
                        .heartbeat_left(self.space.kind(), left / old.ttl.as_millis() as f64);
                }
                let ttl = renewal.ttl.unwrap_or(old.ttl);
                let (body, body_id) = match renewal.body {
                    Some(body) => (body.to_owned(), None),
                    None => (old.body, old.body_id),
                };
                let lock = Lock {
                    heartbeat_at: now,
                    expires_at: now.saturating_add(millis(ttl)),
                    ttl,
                    body,
                    body_id,
                    version: old.version + 1,
                    ..old
                };
                let lock = self.with_body(lock).await?;
                self.written.publish(&lock);
                Ok(Ok(lock))
            }
            Write::Rejected(old) => {
                let old = old.as_ref().map(Lock::try_from).transpose()?;
                // The item is the one the condition was evaluated on, at `now`, so the
                // check finds the same reason; when it finds none, the holder is live and
                // only the no-shortening rule, or a body kept out, can have failed it.
                let rejection = match check_holder(old.as_ref(), holder, now) {
                    Err(rejection) => rejection,
                    Ok(()) if sets_body && old.as_ref().is_some_and(|o| o.body_id.is_some()) => {
                        let body = renewal.body.unwrap_or_default();
                        return self
                            .renew_kept(operation, name, holder, renewal, body)
                            .await;
                    }
                    Ok(()) => LockRejection::WouldShorten {
                        expires_at: old.map_or(0, |lock| lock.expires_at),
                    },
                };
                Ok(Err(rejection))
            }
        }
    }

    /// Ends the lease of `holder`. Returns whether `holder` is the lock's current
    /// holder, now released (by this call or an earlier one: a retried release
    /// answers the same); `false` means the lock has moved on and nothing changed.
    /// A [`Holder::Proven`] whose nonce is not the holder's is refused with
    /// [`LockRejection::NotHolder`], and nothing changes.
    pub async fn release(
        &self,
        name: &LockName,
        holder: &Holder,
    ) -> Result<Result<Release, LockRejection>, StoreError> {
        let op = release_expression(holder, self.clock.now_millis())
            .purged(self.purge_at())
            .on(self.update(name));
        let lock = match self.write("release", name, op).await? {
            Write::Applied(item) => {
                self.metrics.releases.inc();
                let lock = Lock::try_from(&item)?;
                let held = self.clock.now_millis().saturating_sub(lock.acquired_at);
                self.metrics.held(self.space.kind(), millis_duration(held));
                self.publish_remembered(&lock);
                lock
            }
            Write::Rejected(Some(item)) => Lock::try_from(&item)?,
            Write::Rejected(None) => {
                return Ok(Ok(Release {
                    released: false,
                    fence: None,
                }));
            }
        };
        let same = match holder {
            Holder::Fence(fence) => lock.fence == *fence,
            Holder::Proven(fence, nonce) if lock.fence == *fence && lock.nonce != *nonce => {
                return Ok(Err(LockRejection::NotHolder { fence: *fence }));
            }
            Holder::Proven(fence, _) => lock.fence == *fence,
            Holder::Token(token) => lock.token.as_ref() == Some(token),
        };
        Ok(Ok(Release {
            released: same && lock.is_released(),
            fence: Some(lock.fence),
        }))
    }

    /// The lock's record if `holder` holds a live lease on it now, read strongly
    /// consistently; otherwise why not.
    pub async fn get_held(
        &self,
        name: &LockName,
        holder: &Holder,
    ) -> Result<HolderOutcome, StoreError> {
        let lock = self.get(name).await?;
        Ok(check_holder(lock.as_ref(), holder, self.clock.now_millis())
            .and(lock.ok_or(LockRejection::NotFound)))
    }

    /// The lock's record, read strongly consistently; `None` if there is none.
    pub async fn get(&self, name: &LockName) -> Result<Option<Lock>, StoreError> {
        let record = self
            .read_record(self.space.key(name), "read")
            .await
            .map_err(|detail| self.unavailable("read", name, detail))?;
        match record.as_ref().map(Lock::try_from).transpose()? {
            Some(lock) => Ok(Some(self.with_body(lock).await?)),
            None => Ok(None),
        }
    }

    /// The items whose keys are `keys` (100 at most), read strongly consistently in
    /// one `BatchGetItem` counted as `label`, and the keys DynamoDB left unprocessed;
    /// a failure as what DynamoDB said.
    pub(super) async fn read_batch(
        &self,
        label: &'static str,
        keys: Vec<Item>,
    ) -> Result<(Vec<Item>, Vec<Item>), String> {
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(|err| err.to_string())?;
        let started = Instant::now();
        let result = self
            .client
            .batch_get_item()
            .request_items(self.table.as_ref(), request)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        self.metrics
            .dynamodb(label, outcome_of(&result), started.elapsed());
        let mut output = result.map_err(|err| DisplayErrorContext(err).to_string())?;
        capacity::reported(
            &self.metrics,
            label,
            CapacityUnit::Read,
            output.consumed_capacity(),
        );
        let found = output
            .responses
            .as_mut()
            .and_then(|tables| tables.remove(self.table.as_ref()))
            .unwrap_or_default();
        let left = output
            .unprocessed_keys
            .as_mut()
            .and_then(|tables| tables.remove(self.table.as_ref()))
            .map(|left| left.keys)
            .unwrap_or_default();
        Ok((found, left))
    }

    /// The record whose key is `key`, read strongly consistently and counted as
    /// `label`; a failure as what DynamoDB said.
    pub(super) async fn read_record(
        &self,
        key: AttributeValue,
        label: &'static str,
    ) -> Result<Option<Item>, String> {
        let started = Instant::now();
        let result = self
            .client
            .get_item()
            .table_name(self.table.as_ref())
            .key(item::NAME, key)
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        self.metrics
            .dynamodb(label, outcome_of(&result), started.elapsed());
        if let Ok(output) = &result {
            capacity::reported(
                &self.metrics,
                label,
                CapacityUnit::Read,
                output.consumed_capacity(),
            );
        }
        result
            .map(|output| output.item)
            .map_err(|err| DisplayErrorContext(err).to_string())
    }

    pub(super) fn update(&self, name: &LockName) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(self.table.as_ref())
            .key(item::NAME, self.space.key(name))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
    }

    pub(super) async fn write(
        &self,
        operation: &'static str,
        name: &LockName,
        op: UpdateItemFluentBuilder,
    ) -> Result<Write, StoreError> {
        // The caller publishes the record the write left.
        self.send_write(self.subject(operation, name), op).await
    }

    /// Sends one conditional `UpdateItem` about `subject`, counted under its label,
    /// and tells the write hook of the record's change.
    pub(super) async fn write_as(
        &self,
        subject: Subject<'_>,
        op: UpdateItemFluentBuilder,
    ) -> Result<Write, StoreError> {
        let written = self.send_write(subject, op).await?;
        if let Write::Applied(_) = written {
            self.written.tell(subject.name);
        }
        Ok(written)
    }

    /// Sends one conditional `UpdateItem` about `subject`, counted under its label.
    async fn send_write(
        &self,
        subject: Subject<'_>,
        op: UpdateItemFluentBuilder,
    ) -> Result<Write, StoreError> {
        let started = Instant::now();
        let result = op.send().await;
        let outcome = outcome_of(&result);
        self.metrics
            .dynamodb(subject.label, outcome, started.elapsed());
        match result {
            Ok(output) => {
                capacity::reported(
                    &self.metrics,
                    subject.label,
                    CapacityUnit::Write,
                    output.consumed_capacity(),
                );
                let item = output.attributes.unwrap_or_default();
                self.hold_unmarked_body(&item).await;
                Ok(Write::Applied(item))
            }
            Err(SdkError::ServiceError(context)) => match context.into_err() {
                UpdateItemError::ConditionalCheckFailedException(failed) => {
                    capacity::refused_write(&self.metrics, subject.label, failed.item.as_ref());
                    Ok(Write::Rejected(failed.item))
                }
                other => Err(self.unavailable_as(subject, DisplayErrorContext(other).to_string())),
            },
            Err(other) => Err(self.unavailable_as(subject, DisplayErrorContext(other).to_string())),
        }
    }

    pub(super) fn unavailable(
        &self,
        operation: &'static str,
        name: &LockName,
        detail: String,
    ) -> StoreError {
        self.unavailable_as(self.subject(operation, name), detail)
    }

    fn subject<'a>(&self, operation: &'static str, name: &'a LockName) -> Subject<'a> {
        Subject {
            kind: self.space.kind(),
            operation,
            label: operation,
            name,
        }
    }

    pub(super) fn unavailable_as(&self, subject: Subject<'_>, detail: String) -> StoreError {
        let Subject {
            kind,
            operation,
            name,
            ..
        } = subject;
        tracing::warn!(%kind, lock = %name, operation, table = %self.table, %detail, "DynamoDB request failed");
        StoreError::Unavailable {
            operation,
            kind,
            name: name.to_string(),
            detail,
        }
    }
}

/// What one DynamoDB request is about, for its metric and its error.
#[derive(Debug, Clone, Copy)]
pub(super) struct Subject<'a> {
    /// `lock` or `semaphore`.
    pub kind: Kind,
    /// The verb of an error sentence: `acquire`, `release`, …
    pub operation: &'static str,
    /// The `operation` label of the DynamoDB request metric.
    pub label: &'static str,
    pub name: &'a LockName,
}

#[cfg(test)]
mod tests {
    use super::Expression;

    fn expression(update: &str) -> Expression {
        Expression {
            update: update.to_owned(),
            ..Expression::default()
        }
    }

    #[test]
    fn purge_actions_join_the_update_without_breaking_its_functions() {
        let e = expression("SET #a = if_not_exists(#a, :x) + :one, #b = :b REMOVE #c, #d")
            .purged(Some(100));
        assert_eq!(
            e.update,
            "SET #a = if_not_exists(#a, :x) + :one, #b = :b, #purge_at = if_not_exists(#hold_body, :purge_at) + if_not_exists(#hold_disabled, :purge_zero) REMOVE #c, #d"
        );
        // Reclaiming by scans: an earlier purge time goes.
        let e = expression("REMOVE #c").purged(None);
        assert_eq!(e.update, "REMOVE #c, #purge_at");
        assert!(!e.values.contains_key(":purge_at"));
    }

    #[test]
    fn a_body_or_a_disabling_holds_the_record_and_their_end_lets_it_go() {
        let mut body = expression("SET #body = :body");
        body.sets_body = Some(true);
        let e = body.purged(Some(100));
        assert!(
            e.update.contains("#hold_body = :hold_forever"),
            "{}",
            e.update
        );
        assert!(
            e.update
                .contains("#purge_at = :hold_forever + if_not_exists(#hold_disabled"),
            "{}",
            e.update
        );
        let mut emptied = expression("SET #body = :body");
        emptied.sets_body = Some(false);
        let e = emptied.purged(Some(100));
        assert!(e.update.ends_with("REMOVE #hold_body"), "{}", e.update);
        let mut enabled = expression("REMOVE #disabled_at");
        enabled.sets_disabled = Some(false);
        let e = enabled.purged(Some(100));
        assert_eq!(
            e.update,
            "SET #purge_at = if_not_exists(#hold_body, :purge_at) + :purge_zero REMOVE #disabled_at, #hold_disabled"
        );
        // Every placeholder used is bound, and none that is not.
        for placeholder in [":purge_at", ":purge_zero"] {
            assert!(e.values.contains_key(placeholder), "{placeholder}");
        }
        assert!(!e.values.contains_key(":hold_forever"));
    }
}

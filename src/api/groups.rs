//! The lock-group routes under `/lock-groups`: several locks taken, renewed and
//! released together, all or nothing. Each lock of a group is an ordinary lock that
//! the `/locks` routes serve as well.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{CommonErrors, ErrorBody, GroupHolder, ProofErrors};
use super::extract::{NonceHeader, OptionalJson, Params};
use super::guard::Caller;
use super::terms::{
    AcquireQuery, ReleaseQuery, RenewQuery, Terms, check_details, holder, now, renew_ttl,
    retry_after_secs, terms,
};
use super::view::LockView;
use super::{ApiError, AppState};
use crate::domain::{Fence, Kind, LeasePolicy, Lock, LockName, Millis};
use crate::store::{AcquireRequest, GroupOutcome, MAX_GROUP};
use crate::wait::GroupRequest;

/// JSON body of a group acquire.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    /// The locks to take, all or none: 1–100 distinct lock names.
    #[schema(example = json!(["billing:ledger", "billing:invoices"]))]
    names: Vec<String>,
    /// A value unique to this holder, 1–64 printable characters; here or in the query.
    #[schema(pattern = r"^[!-~]{1,64}$")]
    nonce: Option<String>,
    /// Lease length of every lock: `"30s"`, `"1500ms"`, `"2m"`, or whole seconds.
    #[serde(default, deserialize_with = "super::terms::ttl_value")]
    #[schema(value_type = Option<String>, example = "30s")]
    ttl: Option<Duration>,
    /// How long to wait for every lock to be free at once.
    #[serde(default, deserialize_with = "super::terms::wait_value")]
    #[schema(value_type = Option<String>, example = "10s")]
    wait: Option<Duration>,
    /// Who holds the locks, shown by status; 1–255 bytes.
    owner: Option<String>,
    /// Any JSON, shown by status.
    metadata: Option<serde_json::Value>,
}

/// One lock of a group, as heartbeat and release name it.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupLock {
    pub name: String,
    /// The fence the group's acquire returned for this lock.
    pub fence: Fence,
}

/// JSON body of a group heartbeat or release.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupHolding {
    /// The group's locks: 1–100, each with its fence.
    pub locks: Vec<GroupLock>,
}

/// The locks of a group, in the order asked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    pub locks: Vec<LockView>,
}

impl GroupView {
    pub fn new(locks: impl IntoIterator<Item = Lock>, now: Millis, policy: &LeasePolicy) -> Self {
        Self {
            locks: locks
                .into_iter()
                .map(|lock| LockView::new(lock, now, policy))
                .collect(),
        }
    }
}

/// One lock of a released group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupReleasedLock {
    pub name: String,
    /// Whether the fence was the lock's current one, now released.
    pub released: bool,
    /// The lock's current fence; `null` when it has no record.
    pub fence: Option<Fence>,
}

/// The answer to a group release, in the order asked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupReleased {
    pub locks: Vec<GroupReleasedLock>,
}

/// Parses and checks the names of a group: 1–[`MAX_GROUP`] distinct lock names that
/// the caller may use.
fn group_names<'a>(
    caller: &Caller,
    raw: impl ExactSizeIterator<Item = &'a str>,
) -> Result<Vec<LockName>, ApiError> {
    let count = raw.len();
    if count == 0 || count > MAX_GROUP {
        return Err(ApiError::InvalidRequest(format!(
            "a lock group has 1 to {MAX_GROUP} locks (one DynamoDB transaction), got {count}"
        )));
    }
    let mut seen = BTreeSet::new();
    let mut names = Vec::with_capacity(count);
    for raw in raw {
        let name = LockName::parse(raw).map_err(|e| ApiError::InvalidRequest(e.0))?;
        if !seen.insert(name.clone()) {
            return Err(ApiError::InvalidRequest(format!(
                "lock \"{name}\" is named twice in the group; name each lock once"
            )));
        }
        caller.check(&name)?;
        names.push(name);
    }
    Ok(names)
}

#[utoipa::path(post, path = "/lock-groups", tag = "lock-groups",
    params(AcquireQuery),
    request_body(content = GroupBody, content_type = "application/json",
        description = "The locks to take; nonce, ttl and wait may come in the query instead"),
    responses(
        (status = 200, description = "Every lock, each with a new fence of its own", body = GroupView),
        CommonErrors,
        (status = 501, description = "`unsupported`: the table is a global table with multi-Region strong consistency, which has no transactions; nothing changed", body = ErrorBody),
        (status = 409, description = "`lock_held`: these locks are held (`locks` names each holder); nothing was taken",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds until the last of them may be free"))),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
    ))]
/// `POST /lock-groups?nonce=…&ttl=…` with `{"names": [...]}`: every lock or none.
pub async fn acquire(
    State(app): State<AppState>,
    caller: Caller,
    Params(query): Params<AcquireQuery>,
    OptionalJson(body): OptionalJson<GroupBody>,
) -> Result<Json<GroupView>, ApiError> {
    transactions(&app)?;
    let body = body.ok_or_else(|| {
        ApiError::InvalidRequest(
            "a group acquire needs a JSON body naming its locks: {\"names\": [\"a\", \"b\"]}"
                .into(),
        )
    })?;
    let names = group_names(&caller, body.names.iter().map(String::as_str))?;
    let Terms { nonce, ttl, wait } = terms(
        &app,
        "a lock group",
        (query.nonce, query.ttl, query.wait),
        body.nonce,
        body.ttl,
        body.wait,
    )?;
    let wait = wait.min(app.max_wait);
    check_details(body.owner.as_deref(), body.metadata.as_ref())?;
    // Sorted: the same group named in any order waits in the same queue.
    let mut sorted = names.clone();
    sorted.sort();
    let request = GroupRequest::new(
        sorted.clone(),
        AcquireRequest {
            name: sorted[0].clone(),
            nonce,
            ttl,
            owner: body.owner,
            metadata: body.metadata,
            body: None,
        },
    );
    let outcome = if wait.is_zero() {
        app.store
            .acquire_group(&request.names, &request.request)
            .await?
    } else {
        let first = request.names[0].clone();
        let _slot = app.guard.wait_slot(&caller)?;
        app.group_waiters
            .acquire(request, wait)
            .await
            .map_err(|err| {
                ApiError::waited(err, &first, || {
                    format!("the lock group starting with \"{first}\"")
                })
            })?
    };
    let now = now(&app);
    match outcome {
        GroupOutcome::Granted(locks) => {
            // In the order asked.
            let mut views: Vec<LockView> = Vec::with_capacity(locks.len());
            for name in &names {
                if let Some(lock) = locks.iter().find(|lock| lock.name == *name) {
                    views.push(LockView::new(lock.clone(), now, &app.policy));
                }
            }
            Ok(Json(GroupView { locks: views }))
        }
        GroupOutcome::Held(held) => {
            // A disabled lock is the answer: waiting would not change it.
            let disabled = held
                .iter()
                .find_map(|lock| Some((lock, lock.marks.disabled.clone()?)));
            if let Some((lock, disabled)) = disabled {
                return Err(ApiError::LockDisabled {
                    name: lock.name.clone(),
                    fence: lock.fence,
                    disabled,
                });
            }
            let last_free = held
                .iter()
                .map(|lock| app.policy.free_at(lock))
                .max()
                .unwrap_or(now);
            Err(ApiError::GroupHeld {
                holders: held
                    .into_iter()
                    .map(|lock| GroupHolder {
                        reserved_until: lock.reserved_until(now),
                        name: lock.name,
                        fence: lock.fence,
                        owner: lock.owner,
                        expires_at: lock.expires_at,
                    })
                    .collect(),
                retry_after_secs: retry_after_secs(last_free, now),
            })
        }
    }
}

/// The holders a group heartbeat or release acts for, by fence, with the nonce sent
/// as proof for every lock.
fn group_holders(
    app: &AppState,
    caller: &Caller,
    holding: &GroupHolding,
    headers: &HeaderMap,
    nonce: Option<String>,
) -> Result<Vec<(LockName, crate::domain::Holder)>, ApiError> {
    let names = group_names(caller, holding.locks.iter().map(|l| l.name.as_str()))?;
    names
        .into_iter()
        .zip(&holding.locks)
        .map(|(name, lock)| {
            let holder = holder(app, Kind::Lock, &name, lock.fence, headers, nonce.clone())?;
            Ok((name, holder))
        })
        .collect()
}

fn missing_locks() -> ApiError {
    ApiError::InvalidRequest(
        "this needs a JSON body naming the group's locks: {\"locks\": [{\"name\": \"a\", \"fence\": 7}, ...]}".into(),
    )
}

fn refused(refusals: Vec<(LockName, crate::domain::LockRejection)>) -> ApiError {
    ApiError::GroupRefused {
        refusals: refusals
            .into_iter()
            .map(|(name, rejection)| ApiError::rejected(name, rejection))
            .collect(),
    }
}

#[utoipa::path(post, path = "/lock-groups/heartbeat", tag = "lock-groups",
    params(RenewQuery, NonceHeader),
    request_body(content = GroupHolding, content_type = "application/json"),
    responses(
        (status = 200, description = "Every lease, extended", body = GroupView),
        CommonErrors,
        (status = 501, description = "`unsupported`: the table is a global table with multi-Region strong consistency, which has no transactions; nothing changed", body = ErrorBody),
        ProofErrors,
        (status = 404, description = "`not_found`: a lock has no record; nothing changed", body = ErrorBody),
        (status = 409, description = "`fence_mismatch` / `lease_expired`: a lock is no longer held (`locks` says which); nothing changed", body = ErrorBody),
    ))]
/// `POST /lock-groups/heartbeat[?ttl=…]` with `{"locks": [{"name", "fence"}, ...]}`.
pub async fn heartbeat(
    State(app): State<AppState>,
    caller: Caller,
    Params(query): Params<RenewQuery>,
    headers: HeaderMap,
    OptionalJson(holding): OptionalJson<GroupHolding>,
) -> Result<Json<GroupView>, ApiError> {
    transactions(&app)?;
    let holding = holding.ok_or_else(missing_locks)?;
    let ttl = renew_ttl(&app, &query)?;
    let holders = group_holders(&app, &caller, &holding, &headers, query.nonce)?;
    let locks = app
        .store
        .heartbeat_group(&holders, ttl)
        .await?
        .map_err(refused)?;
    Ok(Json(GroupView::new(locks, now(&app), &app.policy)))
}

#[utoipa::path(post, path = "/lock-groups/release", tag = "lock-groups",
    params(ReleaseQuery, NonceHeader),
    request_body(content = GroupHolding, content_type = "application/json"),
    responses(
        (status = 200, description = "Each lock: whether its fence was current, now released", body = GroupReleased),
        CommonErrors,
        (status = 501, description = "`unsupported`: the table is a global table with multi-Region strong consistency, which has no transactions; nothing changed", body = ErrorBody),
        ProofErrors,
    ))]
/// `POST /lock-groups/release` with `{"locks": [{"name", "fence"}, ...]}`: idempotent.
pub async fn release(
    State(app): State<AppState>,
    caller: Caller,
    Params(query): Params<ReleaseQuery>,
    headers: HeaderMap,
    OptionalJson(holding): OptionalJson<GroupHolding>,
) -> Result<Json<GroupReleased>, ApiError> {
    transactions(&app)?;
    let holding = holding.ok_or_else(missing_locks)?;
    let holders = group_holders(&app, &caller, &holding, &headers, query.nonce)?;
    let releases = app.store.release_group(&holders).await?.map_err(refused)?;
    let mut locks = Vec::with_capacity(releases.len());
    for ((name, _), release) in holders.into_iter().zip(releases) {
        if release.released {
            app.lock_released(&name);
        }
        locks.push(GroupReleasedLock {
            name: name.to_string(),
            released: release.released,
            fence: release.fence,
        });
    }
    Ok(Json(GroupReleased { locks }))
}

/// Lock groups are taken, renewed and released in DynamoDB transactions: refused
/// where the table has none.
fn transactions(app: &AppState) -> Result<(), ApiError> {
    if app.store.has_transactions() {
        Ok(())
    } else {
        Err(ApiError::GroupsUnsupported {
            table: app.store.table_name().to_owned(),
        })
    }
}

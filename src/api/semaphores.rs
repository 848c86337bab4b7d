//! The semaphore routes under `/semaphores`: at most `limit` holders of a name at
//! once, each with a fence of its own.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{CommonErrors, ErrorBody, FenceErrors, ProofErrors};
use super::extract::{FencePath, LockPath, NonceHeader, OptionalJson, Params};
use super::guard::Caller;
use super::list::{ListParams, Listed, listing, seal_cursor};
use super::terms::{
    ReleaseQuery, RenewQuery, Terms, check_details, either, holder, now, renew_ttl,
    retry_after_secs, terms,
};
use super::view::{Released, rfc3339, with_fence};
use super::{ApiError, AppState};
use crate::domain::{
    Fence, Holder, Kind, MAX_LIMIT, MAX_SLOT_DETAILS, Millis, Semaphore, Slot, check_limit,
    check_slot, format_duration, parse_limit,
};
use crate::store::{SemaphoreOutcome, SemaphoreRequest};

/// Query parameters of a semaphore acquire.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SemaphoreQuery {
    /// A value unique to this holder, 1–64 printable characters; required here or in the body.
    #[param(pattern = r"^[!-~]{1,64}$")]
    nonce: Option<String>,
    /// The most holders at once, 1–100; required here or in the body. The first
    /// acquire sets it; every later one must name the same.
    #[param(pattern = r"^[0-9]{1,3}$")]
    limit: Option<String>,
    /// Lease length: `30s`, `1500ms`, `2m` or whole seconds.
    #[param(pattern = r"^[0-9]{1,9}(ms|s|m|h)?$")]
    ttl: Option<String>,
    /// How long to wait for a slot (default 0: answer 409 at once).
    #[param(pattern = r"^[0-9]{1,9}(ms|s|m|h)?$")]
    wait: Option<String>,
}

/// JSON body of a semaphore acquire; `nonce` and `limit` are required here or in the query.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SemaphoreBody {
    /// A value unique to this holder, 1–64 printable characters.
    #[schema(pattern = r"^[!-~]{1,64}$")]
    nonce: Option<String>,
    /// The most holders at once, 1–100.
    #[schema(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// Lease length: `"30s"`, `"1500ms"`, `"2m"`, or a whole number of seconds.
    #[serde(default, deserialize_with = "super::terms::ttl_value")]
    #[schema(value_type = Option<String>, example = "30s")]
    ttl: Option<Duration>,
    /// How long to wait for a slot, as `ttl` is written.
    #[serde(default, deserialize_with = "super::terms::wait_value")]
    #[schema(value_type = Option<String>, example = "10s")]
    wait: Option<Duration>,
    /// Who holds the slot, shown by status; 1–255 bytes.
    owner: Option<String>,
    /// Any JSON, shown by status; with the owner, at most 2048 bytes.
    metadata: Option<serde_json::Value>,
}

/// One holder of a semaphore, as everyone may see it: never its nonce.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlotView {
    pub fence: Fence,
    pub acquire_time: String,
    pub heartbeat_time: String,
    pub expire_time: String,
    /// The lease length, as `30s` or `1500ms`.
    pub ttl: String,
    pub owner: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

impl SlotView {
    fn new(slot: &Slot) -> Self {
        Self {
            fence: slot.fence,
            acquire_time: rfc3339(slot.acquired_at),
            heartbeat_time: rfc3339(slot.heartbeat_at),
            expire_time: rfc3339(slot.expires_at),
            ttl: format_duration(slot.ttl),
            owner: slot.owner.clone(),
            metadata: slot.metadata.clone(),
        }
    }
}

/// A semaphore: its limit, its live holders and how many slots are free.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SemaphoreView {
    pub name: String,
    pub limit: u32,
    /// The last fence the semaphore issued.
    pub fence: Fence,
    /// The holders whose lease is live, in fence order.
    pub holders: Vec<SlotView>,
    /// Slots an acquire could take now: the limit less the live leases and those
    /// that ended less than the skew margin ago.
    pub free: u32,
    /// How many waiting acquires the server that answered holds for this semaphore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiters: Option<usize>,
    /// Grows with every change: each write adds 256, and each lease that ran out
    /// unreleased adds 1 at the moment another holder may take its slot.
    /// `GET /semaphores/{name}/events` sends it as each event's id.
    #[serde(default)]
    pub version: u64,
}

impl SemaphoreView {
    fn new(app: &AppState, semaphore: &Semaphore) -> Self {
        Self::at(app, semaphore, now(app))
    }

    /// The view of `semaphore` at time `now`.
    pub(super) fn at(app: &AppState, semaphore: &Semaphore, now: crate::domain::Millis) -> Self {
        let occupied = semaphore
            .slots
            .iter()
            .filter(|slot| slot.occupies(now, app.policy.takeover_grace_ms()))
            .count();
        Self {
            name: semaphore.name.to_string(),
            limit: semaphore.limit,
            fence: semaphore.fence,
            holders: semaphore.holders(now).map(SlotView::new).collect(),
            free: semaphore
                .limit
                .saturating_sub(u32::try_from(occupied).unwrap_or(u32::MAX)),
            waiters: None,
            version: semaphore.view_version(now, app.policy.takeover_grace_ms()),
        }
    }
}

/// One holder's slot of a semaphore, as acquire, heartbeat and check answer it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldSlotView {
    pub name: String,
    pub limit: u32,
    /// This holder's fence.
    pub fence: Fence,
    /// Whether this holder's lease is live now.
    pub held: bool,
    pub acquire_time: String,
    pub heartbeat_time: String,
    pub expire_time: String,
    pub ttl: String,
    pub owner: Option<String>,
    pub metadata: Option<serde_json::Value>,
    /// How many holders the semaphore has now, this one included.
    pub holders: usize,
}

impl HeldSlotView {
    fn new(semaphore: &Semaphore, fence: Fence, now: Millis) -> Result<Self, ApiError> {
        let slot = semaphore.slot(fence).ok_or_else(|| {
            ApiError::Internal(format!(
                "semaphore \"{}\" was written without the slot of fence {fence}",
                semaphore.name
            ))
        })?;
        let view = SlotView::new(slot);
        Ok(Self {
            name: semaphore.name.to_string(),
            limit: semaphore.limit,
            fence,
            held: slot.is_held(now),
            acquire_time: view.acquire_time,
            heartbeat_time: view.heartbeat_time,
            expire_time: view.expire_time,
            ttl: view.ttl,
            owner: view.owner,
            metadata: view.metadata,
            holders: semaphore.holders(now).count(),
        })
    }
}

impl IntoResponse for HeldSlotView {
    fn into_response(self) -> Response {
        with_fence(Some(self.fence), Json(self))
    }
}

/// One page of semaphores.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SemaphorePageView {
    pub semaphores: Vec<SemaphoreView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

#[utoipa::path(method(post, put), path = "/semaphores/{name}", tag = "semaphores",
    params(LockPath, SemaphoreQuery),
    request_body(content = Option<SemaphoreBody>, content_type = "application/json",
        description = "The parameters may come as JSON instead of in the query"),
    responses(
        (status = 200, description = "A slot, with a new fence", body = HeldSlotView),
        CommonErrors,
        (status = 409, description = "`semaphore_full`: every slot is held (with `Retry-After`); `limit_mismatch`: the semaphore has another limit",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds until a slot may be free"))),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
    ))]
/// `POST`/`PUT /semaphores/{name}?nonce=…&limit=…&ttl=…`, or the same as a JSON body.
pub async fn acquire(
    State(app): State<AppState>,
    caller: Caller,
    LockPath(name): LockPath,
    Params(query): Params<SemaphoreQuery>,
    OptionalJson(body): OptionalJson<SemaphoreBody>,
) -> Result<HeldSlotView, ApiError> {
    let body = body.unwrap_or_default();
    let Terms { nonce, ttl, wait } = terms(
        &app,
        &format!("a slot of semaphore \"{name}\""),
        (query.nonce, query.ttl, query.wait),
        body.nonce,
        body.ttl,
        body.wait,
    )?;
    let wait = wait.min(app.max_wait);
    let query_limit = query
        .limit
        .as_deref()
        .map(parse_limit)
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(e.0))?;
    if let Some(limit) = body.limit {
        check_limit(limit).map_err(|e| ApiError::InvalidRequest(e.0))?;
    }
    let limit = either("limit", query_limit, body.limit)?.ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "acquiring a slot of semaphore \"{name}\" needs its limit (?limit=… or {{\"limit\": …}}): the most holders at once, 1 to {MAX_LIMIT}"
        ))
    })?;
    check_details(body.owner.as_deref(), body.metadata.as_ref())?;
    let details = body.owner.as_ref().map_or(0, String::len)
        + body.metadata.as_ref().map_or(0, |m| m.to_string().len());
    if details > MAX_SLOT_DETAILS {
        return Err(ApiError::InvalidRequest(format!(
            "a semaphore holder's owner and metadata take {details} bytes; the limit is {MAX_SLOT_DETAILS}, so that {MAX_LIMIT} holders fit in one record"
        )));
    }
    let request = SemaphoreRequest {
        name: name.clone(),
        nonce,
        limit,
        ttl,
        owner: body.owner,
        metadata: body.metadata,
    };
    let outcome = if wait.is_zero() {
        app.store.acquire_semaphore(&request).await?
    } else {
        let _slot = app.guard.wait_slot(&caller)?;
        app.semaphore_waiters
            .acquire(request, wait)
            .await
            .map_err(|err| ApiError::waited(err, &name, || format!("semaphore \"{name}\"")))?
    };
    match outcome {
        SemaphoreOutcome::Granted { semaphore, fence } => {
            HeldSlotView::new(&semaphore, fence, now(&app))
        }
        SemaphoreOutcome::Full(semaphore) => {
            let free_at = app.policy.semaphore_free_at(&semaphore, now(&app));
            Err(ApiError::SemaphoreFull {
                name,
                limit: semaphore.limit,
                free_at,
                retry_after_secs: retry_after_secs(free_at, now(&app)),
            })
        }
        SemaphoreOutcome::LimitMismatch { limit: held } => Err(ApiError::LimitMismatch {
            name,
            limit: held,
            asked: limit,
        }),
    }
}

#[utoipa::path(method(post, put), path = "/semaphores/{name}/{fence}/heartbeat", tag = "semaphores",
    params(FencePath, RenewQuery, NonceHeader),
    responses(
        (status = 200, description = "The slot's lease, extended", body = HeldSlotView),
        CommonErrors,
        FenceErrors,
        ProofErrors,
    ))]
/// `POST`/`PUT /semaphores/{name}/{fence}/heartbeat[?ttl=…]`: 1 DynamoDB request.
pub async fn heartbeat(
    State(app): State<AppState>,
    FencePath(name, fence): FencePath,
    Params(query): Params<RenewQuery>,
    headers: HeaderMap,
) -> Result<HeldSlotView, ApiError> {
    let ttl = renew_ttl(&app, &query)?;
    let holder = holder(&app, Kind::Semaphore, &name, fence, &headers, query.nonce)?;
    match app.store.heartbeat_semaphore(&name, &holder, ttl).await? {
        Ok((semaphore, fence)) => HeldSlotView::new(&semaphore, fence, now(&app)),
        Err(rejection) => Err(ApiError::slot_rejected(name, rejection)),
    }
}

#[utoipa::path(delete, path = "/semaphores/{name}/{fence}", tag = "semaphores",
    params(FencePath, ReleaseQuery, NonceHeader),
    responses(
        (status = 200, description = "Whether the fence's slot is released now", body = Released),
        CommonErrors,
        ProofErrors,
    ))]
/// `DELETE /semaphores/{name}/{fence}`: idempotent; 1 DynamoDB request.
pub async fn release(
    State(app): State<AppState>,
    FencePath(name, fence): FencePath,
    Params(query): Params<ReleaseQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let holder = holder(&app, Kind::Semaphore, &name, fence, &headers, query.nonce)?;
    let release = app
        .store
        .release_semaphore(&name, &holder)
        .await?
        .map_err(|rejection| ApiError::slot_rejected(name.clone(), rejection))?;
    if release.released {
        app.semaphore_waiters.released(&name);
    }
    Ok(Released::answer(release))
}

#[utoipa::path(get, path = "/semaphores/{name}", tag = "semaphores",
    params(LockPath),
    responses(
        (status = 200, description = "The semaphore and its holders, never their nonces", body = SemaphoreView),
        CommonErrors,
        (status = 404, description = "`not_found`: the semaphore has no record", body = ErrorBody),
    ))]
/// `GET /semaphores/{name}`.
pub async fn status(
    State(app): State<AppState>,
    LockPath(name): LockPath,
) -> Result<Json<SemaphoreView>, ApiError> {
    let semaphore = app
        .store
        .get_semaphore(&name)
        .await?
        .ok_or(ApiError::SemaphoreNotFound { name })?;
    let waiters = app.semaphore_waiters.waiting_for([&semaphore.name])[0];
    let mut view = SemaphoreView::new(&app, &semaphore);
    view.waiters = Some(waiters);
    Ok(Json(view))
}

#[utoipa::path(get, path = "/semaphores/{name}/{fence}", tag = "semaphores",
    params(FencePath),
    responses(
        (status = 200, description = "The fence holds a live slot", body = HeldSlotView),
        CommonErrors,
        FenceErrors,
    ))]
/// `GET /semaphores/{name}/{fence}`: 200 while `fence` holds a live slot, 409 otherwise.
pub async fn check_fence(
    State(app): State<AppState>,
    FencePath(name, fence): FencePath,
) -> Result<HeldSlotView, ApiError> {
    let semaphore = app.store.get_semaphore(&name).await?;
    let now = now(&app);
    match (
        check_slot(semaphore.as_ref(), &Holder::Fence(fence), now),
        semaphore,
    ) {
        (Ok(()), Some(semaphore)) => HeldSlotView::new(&semaphore, fence, now),
        (Err(rejection), _) => Err(ApiError::slot_rejected(name, rejection)),
        (Ok(()), None) => Err(ApiError::SemaphoreNotFound { name }),
    }
}

#[utoipa::path(get, path = "/semaphores", tag = "semaphores",
    params(ListParams),
    responses(
        (status = 200, description = "A page of semaphores", body = SemaphorePageView),
        CommonErrors,
    ))]
/// `GET /semaphores?prefix=&namespace=&held=true&limit=&cursor=`: semaphores in the
/// table's scan order, as `GET /locks` lists locks (`held=true`: with a live holder).
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Params(params): Params<ListParams>,
) -> Result<Json<SemaphorePageView>, ApiError> {
    let query = listing(&app, &caller, params, Listed::Semaphores).await?;
    let page = app.store.list_semaphores(&query).await?;
    let semaphores: Vec<_> = page
        .semaphores
        .into_iter()
        .filter(|semaphore| caller.sees_namespace(semaphore.name.namespace()))
        .collect();
    let waiters = app
        .semaphore_waiters
        .waiting_for(semaphores.iter().map(|semaphore| &semaphore.name));
    Ok(Json(SemaphorePageView {
        semaphores: semaphores
            .iter()
            .zip(waiters)
            .map(|(semaphore, waiters)| {
                let mut view = SemaphoreView::new(&app, semaphore);
                view.waiters = Some(waiters);
                view
            })
            .collect(),
        next_cursor: seal_cursor(&app, &caller, Listed::Semaphores, page.next).await?,
    }))
}

#[utoipa::path(get, path = "/semaphores/{name}/events", tag = "semaphores",
    params(LockPath,
        ("Last-Event-ID" = Option<u64>, Header,
            description = "The last event id received, when reconnecting: nothing is sent again if it is the \
                semaphore's version still, else a `gap` then the `state`")),
    responses(
        (status = 200, description = "A `text/event-stream`: `state` first, then one event per change \
            (`acquired`, `renewed`, `released`, `expired`, `deleted`; `gap` for changes not seen one by one), \
            each with the semaphore's view as data, the fence of the slot it is about as `slot`, and its \
            version as id; a comment every 15 s", content_type = "text/event-stream"),
        CommonErrors,
    ))]
/// `GET /semaphores/{name}/events`: the semaphore's changes as server-sent events.
pub async fn events(
    State(app): State<AppState>,
    LockPath(name): LockPath,
    headers: HeaderMap,
) -> Result<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use futures_util::stream::{self, StreamExt};

    use crate::semaphore_watch::{Change, Read, changes};

    let last = headers
        .get(super::watch::LAST_EVENT_ID)
        .map(|raw| {
            let raw = raw.to_str().map_err(|_| {
                ApiError::InvalidRequest("Last-Event-ID is not text; expected a version".into())
            })?;
            super::watch::version("Last-Event-ID", raw.trim())
        })
        .transpose()?;
    let reads = app.semaphore_watches.subscribe(&name);
    let grace = app.semaphore_watches.grace();
    let render = move |app: &AppState,
                       name: &crate::domain::LockName,
                       change: &Change,
                       read: &Read| {
        let mut data = match &read.semaphore {
            Some(semaphore) if !matches!(change, Change::Gap(_)) => {
                let mut view = SemaphoreView::at(app, semaphore, read.at);
                view.waiters = Some(app.semaphore_waiters.waiting_for([name])[0]);
                serde_json::to_value(view).unwrap_or_default()
            }
            _ => serde_json::json!({ "name": name.as_str(), "version": read.version }),
        };
        if let Change::Gap(missed) = change {
            data = serde_json::json!({ "name": name.as_str(), "missed": (*missed > 0).then_some(*missed) });
        }
        if let Some(fence) = change.fence() {
            data["slot"] = fence.into();
        }
        let event = SseEvent::default()
            .event(change.as_str())
            .data(data.to_string());
        match change {
            Change::Gap(_) => event,
            _ => event.id(read.version.to_string()),
        }
    };
    let events = stream::unfold(
        (reads, None::<Read>, last, app, name),
        move |(mut reads, mut shown, mut last, app, name)| async move {
            loop {
                let current = reads.borrow_and_update().clone();
                if let Some(read) = current {
                    let told = match (shown.as_ref(), last.take()) {
                        (None, Some(last)) if last == read.version => Vec::new(),
                        (None, Some(_)) => vec![Change::Gap(0), Change::State],
                        (before, _) => changes(before, &read, grace),
                    };
                    let events: Vec<SseEvent> = told
                        .iter()
                        .map(|change| render(&app, &name, change, &read))
                        .collect();
                    shown = Some(read);
                    if !events.is_empty() {
                        return Some((stream::iter(events), (reads, shown, last, app, name)));
                    }
                }
                reads.changed().await.ok()?;
            }
        },
    )
    .flatten()
    .map(Ok);
    let hello = stream::once(async {
        Ok(SseEvent::default()
            .retry(super::watch::RECONNECT)
            .comment("fencelock"))
    });
    Ok(Sse::new(hello.chain(events))
        .keep_alive(KeepAlive::new().interval(super::watch::KEEP_ALIVE)))
}

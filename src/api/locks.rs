//! The glock-style lock routes under `/locks`.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{CommonErrors, ErrorBody, FenceErrors, ProofErrors};
use super::extract::{FencePath, LockPath, NonceHeader, OptionalJson, Params, TextBody};
use super::guard::Caller;
use super::terms::{
    AcquireQuery, ReleaseQuery, RenewQuery, Terms, check_details, holder, now, renew_ttl,
    retry_after_secs, terms, ttl_value, wait_value,
};
use super::view::{LockView, Released};
use super::watch::{StatusQuery, long_poll};
use super::{ApiError, AppState};
use crate::domain::{Holder, Kind, Lock, Marks, Predecessor};
use crate::store::{AcquireOutcome, AcquireRequest, HolderOutcome};

type LockResult = Result<LockView, ApiError>;

/// JSON body of acquire; every field optional, `nonce` required here or in the query.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// A value unique to this holder, 1–64 printable characters.
    #[schema(pattern = r"^[!-~]{1,64}$")]
    nonce: Option<String>,
    /// Lease length: `"30s"`, `"1500ms"`, `"2m"`, or a whole number of seconds.
    #[serde(default, deserialize_with = "ttl_value")]
    #[schema(value_type = Option<String>, example = "30s")]
    ttl: Option<Duration>,
    /// How long to wait for the lock, as `ttl` is written.
    #[serde(default, deserialize_with = "wait_value")]
    #[schema(value_type = Option<String>, example = "10s")]
    wait: Option<Duration>,
    /// Who holds the lock, shown by status; 1–255 bytes.
    owner: Option<String>,
    /// Any JSON, shown by status.
    metadata: Option<serde_json::Value>,
}

#[utoipa::path(method(post, put), path = "/locks/{name}", tag = "locks",
    params(LockPath, AcquireQuery),
    request_body(content = Option<AcquireBody>, content_type = "application/json",
        description = "The parameters may come as JSON instead of in the query"),
    responses(
        (status = 200, description = "Granted, with a new fence", body = LockView),
        CommonErrors,
        (status = 409, description = "`lock_held`: another holder's lease is live",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds until it may be free"))),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
    ))]
/// `POST`/`PUT /locks/{name}?nonce=…&ttl=…`, or the same as a JSON body.
pub async fn acquire(
    State(app): State<AppState>,
    caller: Caller,
    LockPath(name): LockPath,
    Params(query): Params<AcquireQuery>,
    OptionalJson(body): OptionalJson<AcquireBody>,
) -> LockResult {
    let body = body.unwrap_or_default();
    let Terms { nonce, ttl, wait } = terms(
        &app,
        &format!("lock \"{name}\""),
        (query.nonce, query.ttl, query.wait),
        body.nonce,
        body.ttl,
        body.wait,
    )?;
    check_details(body.owner.as_deref(), body.metadata.as_ref())?;
    let request = AcquireRequest {
        name,
        nonce,
        ttl,
        owner: body.owner,
        metadata: body.metadata,
        body: None,
    };
    let (lock, predecessor) = take(&app, &caller, request, wait).await?;
    Ok(LockView::new(lock, now(&app), &app.policy).took_over(predecessor))
}

/// Acquires `request` at once, or waiting up to `wait` (cut to the server's maximum);
/// a lock still held in the end is a 409 saying until when. Answers the grant, and
/// the holder it took over from, if its lease had run out unreleased.
pub(super) async fn take(
    app: &AppState,
    caller: &Caller,
    request: AcquireRequest,
    wait: Duration,
) -> Result<(Lock, Option<Predecessor>), ApiError> {
    let started = std::time::Instant::now();
    let taken = take_now_or_waiting(app, caller, request, wait).await;
    let outcome = match &taken {
        Ok(_) => "granted",
        Err(ApiError::LockHeld { .. }) => "held",
        Err(ApiError::LockDisabled { .. }) => "disabled",
        Err(_) => "failed",
    };
    app.metrics.acquired(Kind::Lock, outcome, started.elapsed());
    taken
}

async fn take_now_or_waiting(
    app: &AppState,
    caller: &Caller,
    request: AcquireRequest,
    wait: Duration,
) -> Result<(Lock, Option<Predecessor>), ApiError> {
    let wait = wait.min(app.max_wait);
    let name = request.name.clone();
    let outcome = if wait.is_zero() {
        app.store.acquire(&request).await?
    } else {
        let _slot = app.guard.wait_slot(caller)?;
        app.waiters
            .acquire(request, wait)
            .await
            .map_err(|err| ApiError::waited(err, &name, || format!("lock \"{name}\"")))?
    };
    match outcome {
        AcquireOutcome::Granted(lock, predecessor) => Ok((lock, predecessor)),
        AcquireOutcome::Held(Lock {
            name,
            fence,
            marks:
                Marks {
                    disabled: Some(disabled),
                    ..
                },
            ..
        }) => Err(ApiError::LockDisabled {
            name,
            fence,
            disabled,
        }),
        AcquireOutcome::Held(holder) => {
            let now = now(app);
            Err(ApiError::LockHeld {
                retry_after_secs: retry_after_secs(app.policy.free_at(&holder), now),
                name,
                fence: holder.fence,
                expires_at: holder.expires_at,
                reserved_until: holder.reserved_until(now),
            })
        }
    }
}

#[utoipa::path(method(post, put), path = "/locks/{name}/{fence}/heartbeat", tag = "locks",
    params(FencePath, RenewQuery, NonceHeader),
    responses(
        (status = 200, description = "The lease, extended", body = LockView),
        CommonErrors,
        FenceErrors,
        ProofErrors,
    ))]
/// `POST`/`PUT /locks/{name}/{fence}/heartbeat[?ttl=…]`.
pub async fn heartbeat(
    State(app): State<AppState>,
    FencePath(name, fence): FencePath,
    Params(query): Params<RenewQuery>,
    headers: HeaderMap,
) -> LockResult {
    let ttl = renew_ttl(&app, &query)?;
    let holder = holder(&app, Kind::Lock, &name, fence, &headers, query.nonce)?;
    let outcome = app.store.heartbeat(&name, &holder, ttl).await?;
    renewed(&app, name, outcome)
}

#[utoipa::path(method(post, put), path = "/locks/{name}/{fence}", tag = "locks",
    params(FencePath, RenewQuery, NonceHeader),
    request_body(content = String, content_type = "text/plain", description = "The new body: UTF-8 text. One over 512 bytes is kept in an item of its own, so that heartbeats cost what a small record costs (docs/api.md, Long bodies)"),
    responses(
        (status = 200, description = "The lease, extended", body = LockView),
        CommonErrors,
        FenceErrors,
        ProofErrors,
        (status = 413, description = "`body_too_large`", body = ErrorBody),
    ))]
/// `POST`/`PUT /locks/{name}/{fence}[?ttl=…]` with the new body as the request body.
pub async fn update(
    State(app): State<AppState>,
    FencePath(name, fence): FencePath,
    Params(query): Params<RenewQuery>,
    headers: HeaderMap,
    TextBody(body): TextBody,
) -> LockResult {
    let ttl = renew_ttl(&app, &query)?;
    let holder = holder(&app, Kind::Lock, &name, fence, &headers, query.nonce)?;
    let outcome = app.store.update_body(&name, &holder, &body, ttl).await?;
    renewed(&app, name, outcome)
}

fn renewed(app: &AppState, name: crate::domain::LockName, outcome: HolderOutcome) -> LockResult {
    match outcome {
        Ok(lock) => Ok(LockView::new(lock, now(app), &app.policy)),
        Err(rejection) => Err(ApiError::rejected(name, rejection)),
    }
}

#[utoipa::path(delete, path = "/locks/{name}/{fence}", tag = "locks",
    params(FencePath, ReleaseQuery, NonceHeader),
    responses(
        (status = 200, description = "Whether the fence is the current one, now released", body = Released),
        CommonErrors,
        ProofErrors,
    ))]
/// `DELETE /locks/{name}/{fence}`: idempotent.
pub async fn release(
    State(app): State<AppState>,
    FencePath(name, fence): FencePath,
    Params(query): Params<ReleaseQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let holder = holder(&app, Kind::Lock, &name, fence, &headers, query.nonce)?;
    let release = app
        .store
        .release(&name, &holder)
        .await?
        .map_err(|rejection| ApiError::rejected(name.clone(), rejection))?;
    if release.released {
        app.lock_released(&name);
    }
    Ok(Released::answer(release))
}

#[utoipa::path(get, path = "/locks/{name}", tag = "locks",
    params(LockPath, StatusQuery),
    responses(
        (status = 200, description = "The lock, never its nonce; with `after` and `wait`, once its \
            `version` is not `after`, or as it is when the wait runs out", body = LockView),
        CommonErrors,
        (status = 404, description = "`not_found`: the lock has no record", body = ErrorBody),
    ))]
/// `GET /locks/{name}[?after=<version>&wait=30s]`: the lock's state, never its nonce;
/// a long-poll with `after` and `wait`.
pub async fn status(
    State(app): State<AppState>,
    caller: Caller,
    LockPath(name): LockPath,
    Params(query): Params<StatusQuery>,
) -> LockResult {
    if let Some(polled) = long_poll(&app, &caller, &name, query).await? {
        return polled.ok_or(ApiError::LockNotFound { name });
    }
    match app.store.get(&name).await? {
        Some(lock) => Ok(status_view(&app, lock)),
        None => Err(ApiError::LockNotFound { name }),
    }
}

/// A lock's status view: as of now, with the acquires waiting for it on this server.
pub(super) fn status_view(app: &AppState, lock: Lock) -> LockView {
    let waiters = app.waiters.waiting_for([&lock.name])[0];
    LockView::new(lock, now(app), &app.policy).with_waiters(waiters)
}

#[utoipa::path(get, path = "/locks/{name}/{fence}", tag = "locks",
    params(FencePath),
    responses(
        (status = 200, description = "The fence holds a live lease", body = LockView),
        CommonErrors,
        FenceErrors,
    ))]
/// `GET /locks/{name}/{fence}`: 200 while `fence` holds a live lease, 409 otherwise.
pub async fn check_fence(
    State(app): State<AppState>,
    FencePath(name, fence): FencePath,
) -> LockResult {
    match app.store.get_held(&name, &Holder::Fence(fence)).await? {
        Ok(lock) => Ok(LockView::new(lock, now(&app), &app.policy)),
        Err(rejection) => Err(ApiError::rejected(name, rejection)),
    }
}

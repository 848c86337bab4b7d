//! The glock-style lock routes under `/locks`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Deserializer};
use utoipa::{IntoParams, ToSchema};

use super::error::{CommonErrors, ErrorBody, FenceErrors};
use super::extract::{FencePath, LockPath, OptionalJson, Params, TextBody};
use super::view::{LockView, Released, with_fence};
use super::{ApiError, AppState};
use crate::domain::{Holder, Lock, MAX_OWNER_LEN, Nonce, parse_duration};
use crate::store::{AcquireOutcome, AcquireRequest, HolderOutcome};
use crate::wait::WaitError;

type LockResult = Result<LockView, ApiError>;

/// Query parameters of acquire.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AcquireQuery {
    /// A value unique to this holder, 1–64 printable characters; required here or in the body.
    nonce: Option<String>,
    /// Lease length: `30s`, `1500ms`, `2m` or whole seconds.
    ttl: Option<String>,
    /// How long to wait for the lock (default 0: answer 409 at once).
    wait: Option<String>,
}

/// JSON body of acquire; every field optional, `nonce` required here or in the query.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// A value unique to this holder, 1–64 printable characters.
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

/// Query parameters of heartbeat and update.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RenewQuery {
    /// A new lease length, kept for later heartbeats; without it the last one is reused.
    ttl: Option<String>,
}

/// Routes that take no query parameters still reject unknown ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// A JSON `ttl`: a string such as `"30s"`, or a whole number of seconds.
fn ttl_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration_value(deserializer, "ttl")
}

/// A JSON `wait`, read as `ttl` is.
fn wait_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration_value(deserializer, "wait")
}

pub(super) fn duration_value<'de, D: Deserializer<'de>>(
    deserializer: D,
    field: &str,
) -> Result<Option<Duration>, D::Error> {
    use serde::de::Error;
    let invalid = |detail: String| D::Error::custom(format!("{field}: {detail}"));
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(|s| Some(Duration::from_secs(s)))
            .ok_or_else(|| invalid(format!("{n} is not a whole number of seconds"))),
        serde_json::Value::String(text) => {
            parse_duration(&text).map(Some).map_err(|e| invalid(e.0))
        }
        other => Err(invalid(format!(
            "{other} is not a duration; expected for example \"30s\" or 30"
        ))),
    }
}

/// One value that may come from the query or the JSON body, but not differently from both.
fn either<T: PartialEq>(
    field: &str,
    query: Option<T>,
    body: Option<T>,
) -> Result<Option<T>, ApiError> {
    match (query, body) {
        (Some(q), Some(b)) if q != b => Err(ApiError::InvalidRequest(format!(
            "{field} is given in both the query and the body with different values; give it once"
        ))),
        (q, b) => Ok(q.or(b)),
    }
}

fn parse_duration_param(field: &str, raw: Option<&str>) -> Result<Option<Duration>, ApiError> {
    raw.map(parse_duration)
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(format!("{field}: {e}")))
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
    LockPath(name): LockPath,
    Params(query): Params<AcquireQuery>,
    OptionalJson(body): OptionalJson<AcquireBody>,
) -> LockResult {
    let body = body.unwrap_or_default();
    let wait = either(
        "wait",
        parse_duration_param("wait", query.wait.as_deref())?,
        body.wait,
    )?;
    let nonce = either("nonce", query.nonce, body.nonce)?.ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "acquiring lock \"{name}\" needs a nonce (?nonce=… or {{\"nonce\": …}}): a value unique to this holder"
        ))
    })?;
    let nonce = Nonce::parse(&nonce).map_err(|e| ApiError::InvalidRequest(e.0))?;
    let ttl = either(
        "ttl",
        parse_duration_param("ttl", query.ttl.as_deref())?,
        body.ttl,
    )?;
    let ttl = app
        .ttl
        .resolve(ttl)
        .map_err(|e| ApiError::InvalidRequest(e.0))?;
    if let Some(owner) = &body.owner
        && (owner.is_empty() || owner.len() > MAX_OWNER_LEN)
    {
        return Err(ApiError::InvalidRequest(format!(
            "owner must be 1 to {MAX_OWNER_LEN} bytes long, got {}",
            owner.len()
        )));
    }
    let request = AcquireRequest {
        name,
        nonce,
        ttl,
        owner: body.owner,
        metadata: body.metadata,
    };
    let lock = take(&app, request, wait.unwrap_or_default()).await?;
    Ok(LockView::new(lock, now(&app)))
}

/// Acquires `request` at once, or waiting up to `wait` (cut to the server's maximum);
/// a lock still held in the end is a 409 saying until when.
pub(super) async fn take(
    app: &AppState,
    request: AcquireRequest,
    wait: Duration,
) -> Result<Lock, ApiError> {
    let wait = wait.min(app.max_wait);
    let name = request.name.clone();
    let outcome = if wait.is_zero() {
        app.store.acquire(&request).await?
    } else {
        app.waiters
            .acquire(request, wait)
            .await
            .map_err(|err| match err {
                WaitError::Store(err) => ApiError::from(err),
                WaitError::ShuttingDown => ApiError::ShuttingDown { name: name.clone() },
            })?
    };
    match outcome {
        AcquireOutcome::Granted(lock) => Ok(lock),
        AcquireOutcome::Held(holder) => {
            let wait_ms = app.store.free_at(&holder) - now(app);
            Err(ApiError::LockHeld {
                retry_after_secs: u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000).max(1),
                name,
                fence: holder.fence,
                expires_at: holder.expires_at,
            })
        }
    }
}

#[utoipa::path(method(post, put), path = "/locks/{name}/{fence}/heartbeat", tag = "locks",
    params(FencePath, RenewQuery),
    responses(
        (status = 200, description = "The lease, extended", body = LockView),
        CommonErrors,
        FenceErrors,
    ))]
/// `POST`/`PUT /locks/{name}/{fence}/heartbeat[?ttl=…]`.
pub async fn heartbeat(
    State(app): State<AppState>,
    FencePath(name, fence): FencePath,
    Params(query): Params<RenewQuery>,
) -> LockResult {
    let ttl = renew_ttl(&app, &query)?;
    let outcome = app
        .store
        .heartbeat(&name, &Holder::Fence(fence), ttl)
        .await?;
    renewed(&app, name, outcome)
}

#[utoipa::path(method(post, put), path = "/locks/{name}/{fence}", tag = "locks",
    params(FencePath, RenewQuery),
    request_body(content = String, content_type = "text/plain", description = "The new body: UTF-8 text"),
    responses(
        (status = 200, description = "The lease, extended", body = LockView),
        CommonErrors,
        FenceErrors,
        (status = 413, description = "`body_too_large`", body = ErrorBody),
    ))]
/// `POST`/`PUT /locks/{name}/{fence}[?ttl=…]` with the new body as the request body.
pub async fn update(
    State(app): State<AppState>,
    FencePath(name, fence): FencePath,
    Params(query): Params<RenewQuery>,
    TextBody(body): TextBody,
) -> LockResult {
    let ttl = renew_ttl(&app, &query)?;
    let outcome = app.store.update_body(&name, fence, &body, ttl).await?;
    renewed(&app, name, outcome)
}

fn renew_ttl(app: &AppState, query: &RenewQuery) -> Result<Option<Duration>, ApiError> {
    parse_duration_param("ttl", query.ttl.as_deref())?
        .map(|ttl| app.ttl.resolve(Some(ttl)))
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(e.0))
}

fn renewed(app: &AppState, name: crate::domain::LockName, outcome: HolderOutcome) -> LockResult {
    match outcome {
        Ok(lock) => Ok(LockView::new(lock, now(app))),
        Err(rejection) => Err(ApiError::rejected(name, rejection)),
    }
}

#[utoipa::path(delete, path = "/locks/{name}/{fence}", tag = "locks",
    params(FencePath),
    responses(
        (status = 200, description = "Whether the fence is the current one, now released", body = Released),
        CommonErrors,
    ))]
/// `DELETE /locks/{name}/{fence}`: idempotent.
pub async fn release(
    State(app): State<AppState>,
    FencePath(name, fence): FencePath,
    Params(NoQuery {}): Params<NoQuery>,
) -> Result<Response, ApiError> {
    let release = app.store.release(&name, &Holder::Fence(fence)).await?;
    if release.released {
        app.waiters.released(&name);
    }
    Ok(with_fence(
        release.fence,
        Json(Released {
            released: release.released,
        }),
    ))
}

#[utoipa::path(get, path = "/locks/{name}", tag = "locks",
    params(LockPath),
    responses(
        (status = 200, description = "The lock, never its nonce", body = LockView),
        CommonErrors,
        (status = 404, description = "`not_found`: the lock has no record", body = ErrorBody),
    ))]
/// `GET /locks/{name}`: the lock's state, never its nonce.
pub async fn status(State(app): State<AppState>, LockPath(name): LockPath) -> LockResult {
    match app.store.get(&name).await? {
        Some(lock) => Ok(LockView::new(lock, now(&app))),
        None => Err(ApiError::LockNotFound { name }),
    }
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
        Ok(lock) => Ok(LockView::new(lock, now(&app))),
        Err(rejection) => Err(ApiError::rejected(name, rejection)),
    }
}

fn now(app: &AppState) -> crate::domain::Millis {
    app.store.clock().now_millis()
}

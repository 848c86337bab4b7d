//! The glock-style lock routes under `/locks`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName};
use axum::response::Response;
use serde::{Deserialize, Deserializer};
use utoipa::{IntoParams, ToSchema};

use super::error::{CommonErrors, ErrorBody, FenceErrors, ProofErrors};
use super::extract::{FencePath, LockPath, NonceHeader, OptionalJson, Params, TextBody};
use super::guard::Caller;
use super::view::{LockView, Released, with_fence};
use super::{ApiError, AppState};
use crate::domain::{Fence, Holder, Lock, LockName, MAX_OWNER_LEN, Nonce, parse_duration};
use crate::store::{AcquireOutcome, AcquireRequest, HolderOutcome};

type LockResult = Result<LockView, ApiError>;

/// The header that carries the holder's nonce, as proof, on heartbeat, update and release.
pub const NONCE_HEADER: HeaderName = HeaderName::from_static("lock-nonce");

/// The deepest nesting of arrays and objects accepted in `metadata`.
pub const MAX_JSON_DEPTH: usize = 32;

/// Query parameters of acquire.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AcquireQuery {
    /// A value unique to this holder, 1–64 printable characters; required here or in the body.
    #[param(pattern = r"^[!-~]{1,64}$")]
    pub(super) nonce: Option<String>,
    /// Lease length: `30s`, `1500ms`, `2m` or whole seconds.
    #[param(pattern = r"^[0-9]{1,9}(ms|s|m|h)?$")]
    pub(super) ttl: Option<String>,
    /// How long to wait for the lock (default 0: answer 409 at once).
    #[param(pattern = r"^[0-9]{1,9}(ms|s|m|h)?$")]
    pub(super) wait: Option<String>,
}

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

/// Query parameters of heartbeat and update.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct RenewQuery {
    /// A new lease length, kept for later heartbeats; without it the last one is reused.
    #[param(pattern = r"^[0-9]{1,9}(ms|s|m|h)?$")]
    ttl: Option<String>,
    /// The holder's nonce, as proof (or the `Lock-Nonce` header); required when the
    /// server runs with `FENCELOCK_REQUIRE_NONCE=true`.
    #[param(pattern = r"^[!-~]{1,64}$")]
    pub(super) nonce: Option<String>,
}

/// Query parameters of release.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ReleaseQuery {
    /// The holder's nonce, as proof (or the `Lock-Nonce` header); required when the
    /// server runs with `FENCELOCK_REQUIRE_NONCE=true`.
    #[param(pattern = r"^[!-~]{1,64}$")]
    pub(super) nonce: Option<String>,
}

/// A JSON `ttl`: a string such as `"30s"`, or a whole number of seconds.
pub(super) fn ttl_value<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration_value(deserializer, "ttl")
}

/// A JSON `wait`, read as `ttl` is.
pub(super) fn wait_value<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
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
pub(super) fn either<T: PartialEq>(
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

pub(super) fn parse_duration_param(
    field: &str,
    raw: Option<&str>,
) -> Result<Option<Duration>, ApiError> {
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
    };
    let lock = take(&app, &caller, request, wait).await?;
    Ok(LockView::new(lock, now(&app)))
}

/// What every acquire asks for, each given in the query or the JSON body (or the same
/// in both): the holder's nonce, the lease and the wait.
pub(super) struct Terms {
    pub nonce: Nonce,
    pub ttl: Duration,
    /// Not yet cut to the server's longest wait.
    pub wait: Duration,
}

/// The [`Terms`] of an acquire of `subject` (`lock "x"`, …) from its query's nonce,
/// ttl and wait and its body's.
pub(super) fn terms(
    app: &AppState,
    subject: &str,
    (query_nonce, query_ttl, query_wait): (Option<String>, Option<String>, Option<String>),
    nonce: Option<String>,
    ttl: Option<Duration>,
    wait: Option<Duration>,
) -> Result<Terms, ApiError> {
    let wait = either(
        "wait",
        parse_duration_param("wait", query_wait.as_deref())?,
        wait,
    )?;
    let nonce = either("nonce", query_nonce, nonce)?.ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "acquiring {subject} needs a nonce (?nonce=… or {{\"nonce\": …}}): a value unique to this holder"
        ))
    })?;
    let nonce = Nonce::parse(&nonce).map_err(|e| ApiError::InvalidRequest(e.0))?;
    let ttl = either(
        "ttl",
        parse_duration_param("ttl", query_ttl.as_deref())?,
        ttl,
    )?;
    let ttl = app
        .ttl
        .resolve(ttl)
        .map_err(|e| ApiError::InvalidRequest(e.0))?;
    Ok(Terms {
        nonce,
        ttl,
        wait: wait.unwrap_or_default(),
    })
}

/// Refuses an owner of the wrong length, and metadata nested too deep.
pub(super) fn check_details(
    owner: Option<&str>,
    metadata: Option<&serde_json::Value>,
) -> Result<(), ApiError> {
    if let Some(owner) = owner
        && (owner.is_empty() || owner.len() > MAX_OWNER_LEN)
    {
        return Err(ApiError::InvalidRequest(format!(
            "owner must be 1 to {MAX_OWNER_LEN} bytes long, got {}",
            owner.len()
        )));
    }
    metadata.map_or(Ok(()), check_depth)
}

/// Refuses JSON nested deeper than [`MAX_JSON_DEPTH`].
pub(super) fn check_depth(value: &serde_json::Value) -> Result<(), ApiError> {
    fn depth(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    if depth(value) > MAX_JSON_DEPTH {
        return Err(ApiError::InvalidRequest(format!(
            "metadata is nested deeper than {MAX_JSON_DEPTH} arrays and objects; flatten it"
        )));
    }
    Ok(())
}

/// The holder a heartbeat, update or release acts for: with the nonce as proof when
/// one is sent, which the server may require.
pub(super) fn holder(
    app: &AppState,
    kind: &'static str,
    name: &LockName,
    fence: Fence,
    headers: &HeaderMap,
    query_nonce: Option<String>,
) -> Result<Holder, ApiError> {
    let header_nonce = headers
        .get(NONCE_HEADER)
        .map(|value| {
            value.to_str().map(str::to_owned).map_err(|_| {
                ApiError::InvalidRequest("the Lock-Nonce header must be printable ASCII".into())
            })
        })
        .transpose()?;
    match either("nonce", query_nonce, header_nonce)? {
        Some(raw) => {
            let nonce = Nonce::parse(&raw).map_err(|e| ApiError::InvalidRequest(e.0))?;
            Ok(Holder::Proven(fence, nonce))
        }
        None if app.guard.security.require_nonce => Err(ApiError::NotHolder {
            kind,
            name: name.clone(),
            fence,
            missing: true,
        }),
        None => Ok(Holder::Fence(fence)),
    }
}

/// Acquires `request` at once, or waiting up to `wait` (cut to the server's maximum);
/// a lock still held in the end is a 409 saying until when.
pub(super) async fn take(
    app: &AppState,
    caller: &Caller,
    request: AcquireRequest,
    wait: Duration,
) -> Result<Lock, ApiError> {
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
        AcquireOutcome::Granted(lock) => Ok(lock),
        AcquireOutcome::Held(holder) => {
            let now = now(app);
            let wait_ms = app.store.free_at(&holder) - now;
            Err(ApiError::LockHeld {
                retry_after_secs: u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000).max(1),
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
    let holder = holder(&app, "lock", &name, fence, &headers, query.nonce)?;
    let outcome = app.store.heartbeat(&name, &holder, ttl).await?;
    renewed(&app, name, outcome)
}

#[utoipa::path(method(post, put), path = "/locks/{name}/{fence}", tag = "locks",
    params(FencePath, RenewQuery, NonceHeader),
    request_body(content = String, content_type = "text/plain", description = "The new body: UTF-8 text"),
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
    let holder = holder(&app, "lock", &name, fence, &headers, query.nonce)?;
    let outcome = app.store.update_body(&name, &holder, &body, ttl).await?;
    renewed(&app, name, outcome)
}

pub(super) fn renew_ttl(app: &AppState, query: &RenewQuery) -> Result<Option<Duration>, ApiError> {
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
    let holder = holder(&app, "lock", &name, fence, &headers, query.nonce)?;
    let release = app
        .store
        .release(&name, &holder)
        .await?
        .map_err(|rejection| ApiError::rejected(name.clone(), rejection))?;
    if release.released {
        app.waiters.released(&name);
        app.group_waiters.released(&name);
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
        Some(lock) => {
            let waiters = app.waiters.waiting_for([&lock.name])[0];
            Ok(LockView::new(lock, now(&app)).with_waiters(waiters))
        }
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

pub(super) fn now(app: &AppState) -> crate::domain::Millis {
    app.store.clock().now_millis()
}

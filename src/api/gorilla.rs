//! The Gorilla-compatible routes under `/api/v1/locks`, with the request and
//! response shapes of Gorilla's README. `id` is the fence and `token` the secret of
//! each acquisition; the holding's nonce is derived from the `owner` with the
//! server key, so that the owner, which every reader sees, is no secret of the
//! holder's. Unlike Gorilla's, acquire is one conditional write and an abandoned
//! lock expires on its own.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::error::{CommonErrors, ErrorBody, TokenErrors};
use super::extract::{OptionalJson, ResourcePath, TokenPath};
use super::guard::Caller;
use super::locks::take;
use super::terms::{check_depth, duration_value};
use super::view::{rfc3339, with_fence};
use super::{ApiError, AppState};
use crate::domain::{Fence, Holder, Lock, LockName, Nonce};
use crate::store::AcquireRequest;

/// Body of `POST /api/v1/locks/{resource}`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = GorillaAcquire)]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// Who acquires, 1–64 printable characters, shown with the lock. The same owner
    /// acquiring again through the same bearer token gets a new holding. Required.
    owner: Option<String>,
    /// Lease length in seconds (a number or a string); default `FENCELOCK_DEFAULT_TTL`.
    #[serde(default, deserialize_with = "timeout_value")]
    #[schema(value_type = Option<u64>, example = 60)]
    timeout: Option<Duration>,
    /// Any JSON, shown with the lock.
    metadata: Option<serde_json::Value>,
}

/// Body of `PUT /api/v1/locks/{resource}/{token}`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = GorillaExtend)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    /// The lease ends this many seconds from now. Required.
    #[serde(default, deserialize_with = "timeout_value")]
    #[schema(value_type = Option<u64>, example = 120)]
    timeout: Option<Duration>,
}

/// A `timeout`: whole seconds, as a number or a string, or a duration such as `"90s"`.
fn timeout_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration_value(deserializer, "timeout")
}

/// A lock as Gorilla shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GorillaLock {
    /// The fence.
    pub id: Fence,
    pub owner: Option<String>,
    pub resource: String,
    /// The holder's secret, to address this holding.
    pub token: String,
    /// The lease length in seconds.
    #[schema(value_type = f64, example = 60)]
    pub timeout: serde_json::Number,
    pub metadata: Option<serde_json::Value>,
    pub created_at: String,
    pub updated_at: String,
    /// When the lease ends; `null` once released.
    pub expire_at: Option<String>,
}

impl From<Lock> for GorillaLock {
    fn from(lock: Lock) -> Self {
        let timeout = if lock.ttl.subsec_millis() == 0 {
            lock.ttl.as_secs().into()
        } else {
            serde_json::Number::from_f64(lock.ttl.as_secs_f64()).unwrap_or_else(|| 0.into())
        };
        Self {
            id: lock.fence,
            resource: lock.name.to_string(),
            token: lock
                .token
                .as_ref()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            timeout,
            created_at: rfc3339(lock.acquired_at),
            updated_at: rfc3339(lock.heartbeat_at),
            expire_at: (!lock.is_released()).then(|| rfc3339(lock.expires_at)),
            owner: lock.owner,
            metadata: lock.metadata,
        }
    }
}

impl IntoResponse for GorillaLock {
    fn into_response(self) -> Response {
        with_fence(Some(self.id), Json(self))
    }
}

type GorillaResult = Result<GorillaLock, ApiError>;

#[utoipa::path(post, path = "/api/v1/locks/{resource}", tag = "gorilla",
    params(ResourcePath),
    request_body(content = AcquireBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Granted", body = GorillaLock),
        CommonErrors,
        (status = 409, description = "`lock_held`: held by another owner", body = ErrorBody,
            headers(("Retry-After" = u64))),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
    ))]
/// `POST /api/v1/locks/{resource}` `{owner, timeout, metadata}`.
pub async fn acquire(
    State(app): State<AppState>,
    caller: Caller,
    ResourcePath(name): ResourcePath,
    OptionalJson(body): OptionalJson<AcquireBody>,
) -> GorillaResult {
    let body = body.ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "acquiring lock \"{name}\" needs a JSON body {{\"owner\": …, \"timeout\": seconds, \"metadata\": …}}"
        ))
    })?;
    let owner = body.owner.ok_or_else(|| {
        ApiError::InvalidRequest(format!("acquiring lock \"{name}\" needs an owner"))
    })?;
    Nonce::parse(&owner).map_err(|e| {
        ApiError::InvalidRequest(format!(
            "owner: {} (an owner follows the nonce's rules)",
            e.0.replacen("nonce", "owner", 1)
        ))
    })?;
    let ttl = app
        .ttl
        .resolve(body.timeout)
        .map_err(|e| ApiError::InvalidRequest(format!("timeout: {}", e.0)))?;
    if let Some(metadata) = &body.metadata {
        check_depth(metadata)?;
    }
    let nonce = holding_nonce(&app, &caller, &name, &owner).await?;
    let request = AcquireRequest {
        name,
        nonce,
        ttl,
        owner: Some(owner),
        metadata: body.metadata,
        body: None,
    };
    let (lock, _) = take(&app, &caller, request, Duration::ZERO).await?;
    Ok(lock.into())
}

/// The secret nonce of `owner`'s holding of `name`, acquired by `caller`. The owner is
/// shown to every reader, so it is not the nonce: the nonce is a keyed hash of the
/// caller's token, the lock and the owner, and the same owner re-acquiring through
/// the same token finds its holding (a retried acquire gets a new `id` and `token`,
/// as before). On a server without tokens every caller is the same one, and the
/// owner alone re-acquires; unless the server requires the holder's nonce, where
/// nothing a reader sees may act as the holder: there each acquire gets a nonce of
/// its own, and an owner's second acquire is refused like anyone's.
async fn holding_nonce(
    app: &AppState,
    caller: &Caller,
    name: &LockName,
    owner: &str,
) -> Result<Nonce, ApiError> {
    if matches!(caller, Caller::Open) && app.guard.security.require_nonce {
        return Ok(Nonce::random());
    }
    let key = app.store.server_key().await?;
    Ok(key.gorilla_nonce(&caller.identity(), name, owner))
}

#[utoipa::path(get, path = "/api/v1/locks/{resource}/{token}", tag = "gorilla",
    params(TokenPath),
    responses(
        (status = 200, description = "The token holds a live lease", body = GorillaLock),
        CommonErrors,
        TokenErrors,
    ))]
/// `GET /api/v1/locks/{resource}/{token}`: 404 unless the token holds a live lease.
pub async fn status(
    State(app): State<AppState>,
    TokenPath(name, token): TokenPath,
) -> GorillaResult {
    match app.store.get_held(&name, &Holder::Token(token)).await? {
        Ok(lock) => Ok(lock.into()),
        Err(rejection) => Err(ApiError::token_rejected(name, rejection)),
    }
}

#[utoipa::path(put, path = "/api/v1/locks/{resource}/{token}", tag = "gorilla",
    params(TokenPath),
    request_body(content = ExtendBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Extended", body = GorillaLock),
        CommonErrors,
        TokenErrors,
        (status = 409, description = "`lease_longer`: the lease already ends later", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
    ))]
/// `PUT /api/v1/locks/{resource}/{token}` `{timeout}`: the lease ends `timeout` from
/// now; 409 when that is sooner than it ends already.
pub async fn extend(
    State(app): State<AppState>,
    TokenPath(name, token): TokenPath,
    OptionalJson(body): OptionalJson<ExtendBody>,
) -> GorillaResult {
    let timeout = body.and_then(|b| b.timeout).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "extending lock \"{name}\" needs a JSON body {{\"timeout\": seconds}}"
        ))
    })?;
    let ttl = app
        .ttl
        .resolve(Some(timeout))
        .map_err(|e| ApiError::InvalidRequest(format!("timeout: {}", e.0)))?;
    match app.store.extend(&name, &Holder::Token(token), ttl).await? {
        Ok(lock) => Ok(lock.into()),
        Err(rejection) => Err(ApiError::token_rejected(name, rejection)),
    }
}

#[utoipa::path(delete, path = "/api/v1/locks/{resource}/{token}", tag = "gorilla",
    params(TokenPath),
    responses(
        (status = 204, description = "Released"),
        CommonErrors,
        TokenErrors,
    ))]
/// `DELETE /api/v1/locks/{resource}/{token}`: 204, or 404 for a token that holds
/// nothing. A retried release of the same holding answers 204 again.
pub async fn release(
    State(app): State<AppState>,
    TokenPath(name, token): TokenPath,
) -> Result<Response, ApiError> {
    let release = app
        .store
        .release(&name, &Holder::Token(token))
        .await?
        .map_err(|rejection| ApiError::token_rejected(name.clone(), rejection))?;
    if release.released {
        app.lock_released(&name);
        Ok(with_fence(release.fence, StatusCode::NO_CONTENT))
    } else {
        Err(ApiError::TokenHoldsNothing { name })
    }
}

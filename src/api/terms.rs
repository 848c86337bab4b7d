//! What the routes of every kind (locks, semaphores, groups, Gorilla) read and decide
//! alike: the acquire terms (nonce, ttl, wait, from the query or the JSON body), the
//! holder a heartbeat, update or release acts for, the owner and metadata checks,
//! the server's clock, and the seconds a client should wait before retrying.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};
use serde::{Deserialize, Deserializer};
use utoipa::IntoParams;

use super::{ApiError, AppState};
use crate::domain::{Fence, Holder, Kind, LockName, MAX_OWNER_LEN, Millis, Nonce, parse_duration};

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

/// Query parameters of heartbeat and update.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RenewQuery {
    /// A new lease length, kept for later heartbeats; without it the last one is reused.
    #[param(pattern = r"^[0-9]{1,9}(ms|s|m|h)?$")]
    pub(super) ttl: Option<String>,
    /// The holder's nonce, as proof (or the `Lock-Nonce` header); required when the
    /// server runs with `FENCELOCK_REQUIRE_NONCE=true`.
    #[param(pattern = r"^[!-~]{1,64}$")]
    pub(super) nonce: Option<String>,
}

/// Query parameters of release.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReleaseQuery {
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
    kind: Kind,
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

pub(super) fn renew_ttl(app: &AppState, query: &RenewQuery) -> Result<Option<Duration>, ApiError> {
    parse_duration_param("ttl", query.ttl.as_deref())?
        .map(|ttl| app.ttl.resolve(Some(ttl)))
        .transpose()
        .map_err(|e| ApiError::InvalidRequest(e.0))
}

pub(super) fn now(app: &AppState) -> crate::domain::Millis {
    app.clock.now_millis()
}

/// Whole seconds from `now` until `until` (both ms), at least 1: a `Retry-After`.
pub(super) fn retry_after_secs(until: Millis, now: Millis) -> u64 {
    u64::try_from(until - now)
        .unwrap_or(0)
        .div_ceil(1000)
        .max(1)
}

impl AppState {
    /// Tells this server's waiting acquires of locks and groups that `name` was just
    /// released through it.
    pub(super) fn lock_released(&self, name: &LockName) {
        self.waiters.released(name);
        self.group_waiters.released(name);
    }
}

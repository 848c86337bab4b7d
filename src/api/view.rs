//! The JSON shapes of responses about a lock.

use axum::Json;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Fence, LeasePolicy, Lock, Millis, Predecessor, format_duration};

/// A lock as clients see it: glock's `acquireTime`, `expireTime`, `fence` and `body`,
/// plus the rest of the record. Never the nonce.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockView {
    pub name: String,
    pub fence: Fence,
    /// Grows with every change of the lock: each write (acquire, heartbeat, update,
    /// release, a group's reservation) adds 2, and a lease that ran out unreleased
    /// adds 1 at the moment another holder may take the lock, though nothing is
    /// written. `GET /locks/{name}?after=<version>` waits for the next one. Starts
    /// again from 0 if the record is deleted (by the sweeper, or by hand).
    #[serde(default)]
    pub version: u64,
    /// Whether a lease is live now.
    pub held: bool,
    pub acquire_time: String,
    pub heartbeat_time: String,
    /// When the lease ends; `null` once the lock was released.
    pub expire_time: Option<String>,
    /// The lease length, as `30s` or `1500ms`.
    pub ttl: String,
    pub owner: Option<String>,
    pub metadata: Option<serde_json::Value>,
    /// Always sent; read as empty when absent, as in a semaphore slot's answer.
    #[serde(default)]
    pub body: String,
    /// Until when a waiting lock group has reserved the lock: it takes the lock next,
    /// and nobody else does before this time. Absent when there is no such
    /// reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_until: Option<String>,
    /// How many waiting acquires the server that answered holds for this lock; in
    /// status and list answers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiters: Option<usize>,
    /// Set while an operator has disabled the name: no acquire succeeds until it is
    /// enabled again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<DisabledView>,
    /// When an operator asked the holder to release the lock; absent otherwise, and
    /// after the next acquire. A holder that sees it on a heartbeat's answer should
    /// finish, or stop, and release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_requested_time: Option<String>,
    /// When an operator released the lock in its holder's stead; absent otherwise,
    /// and after the next acquire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_released_time: Option<String>,
    /// In an acquire's answer only, when it took the lock over from a holder whose
    /// lease ran out without a release: that holder may have stopped in the middle of
    /// its work, so read the body before going on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_over: Option<TookOver>,
}

/// The holder an acquire took the lock over from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TookOver {
    /// Its fence: below the new one.
    pub fence: Fence,
    /// When its lease ran out.
    pub expire_time: String,
    pub owner: Option<String>,
}

/// Who disabled a lock name, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisabledView {
    pub time: String,
    /// The operator's token, as the first 8 hex digits of its SHA-256 (no secret);
    /// `open` on a server without tokens.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl LockView {
    /// The view of `lock` at time `now`, with leases lapsing as `policy` says.
    pub fn new(lock: Lock, now: Millis, policy: &LeasePolicy) -> Self {
        Self {
            version: lock.view_version(policy.lapsed_at(&lock), now),
            held: lock.is_held(now),
            reserved_until: lock.reserved_until(now).map(rfc3339),
            expire_time: (!lock.is_released()).then(|| rfc3339(lock.expires_at)),
            name: lock.name.to_string(),
            fence: lock.fence,
            acquire_time: rfc3339(lock.acquired_at),
            heartbeat_time: rfc3339(lock.heartbeat_at),
            ttl: format_duration(lock.ttl),
            owner: lock.owner,
            metadata: lock.metadata,
            body: lock.body,
            waiters: None,
            disabled: lock.marks.disabled.map(|disabled| DisabledView {
                time: rfc3339(disabled.at),
                by: disabled.by,
                reason: disabled.reason,
            }),
            release_requested_time: lock.marks.release_asked_at.map(rfc3339),
            force_released_time: lock.marks.force_released_at.map(rfc3339),
            took_over: None,
        }
    }

    /// The same view, saying that the acquire took the lock over from `predecessor`.
    pub fn took_over(mut self, predecessor: Option<Predecessor>) -> Self {
        self.took_over = predecessor.map(|p| TookOver {
            fence: p.fence,
            expire_time: rfc3339(p.expires_at),
            owner: p.owner,
        });
        self
    }

    /// The same view with the count of acquires waiting for the lock on this server.
    pub fn with_waiters(mut self, waiters: usize) -> Self {
        self.waiters = Some(waiters);
        self
    }
}

impl IntoResponse for LockView {
    fn into_response(self) -> Response {
        with_fence(Some(self.fence), Json(self))
    }
}

/// The header that carries the lock's current fence on every response about a lock.
pub const FENCE_HEADER: HeaderName = HeaderName::from_static("fence");

/// `response` with `fence`, where there is one, in the [`FENCE_HEADER`].
pub fn with_fence(fence: Option<Fence>, response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    if let Some(fence) = fence {
        super::request_log::note_fence(fence);
        response
            .headers_mut()
            .insert(FENCE_HEADER, HeaderValue::from(fence));
    }
    response
}

/// The answer to a release.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Released {
    pub released: bool,
}

impl Released {
    /// The answer to `release`, with the current fence in its header.
    pub fn answer(release: crate::store::Release) -> Response {
        with_fence(
            release.fence,
            Json(Self {
                released: release.released,
            }),
        )
    }
}

/// A time as RFC 3339 in UTC with milliseconds.
pub fn rfc3339(at: Millis) -> String {
    DateTime::from_timestamp_millis(at)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(rfc3339(1_560_286_651_404), "2019-06-11T20:57:31.404Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    }
}

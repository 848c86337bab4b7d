//! [`ApiError`]: every way a request can fail, each with its HTTP status and machine
//! code, rendered as `{"error": "<sentence>", "code": "<code>"}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};

use super::code::ErrorCode;
use super::guard::{MAX_HEAD_BYTES, MAX_HEADER_BYTES, MAX_HEADER_FIELDS, MAX_URI_BYTES};
use super::view::{rfc3339, with_fence};
use crate::domain::{Disabled, Fence, Kind, LockName, LockRejection, Millis, SlotRejection};
use crate::store::StoreError;

/// How long a client should wait before retrying after DynamoDB failed, in seconds.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// Why a request could not be read as HTTP/1.1 at all (the parser refused it, so no
/// length is known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// 414 `uri_too_long`.
    #[error("the request URI is longer than 65,534 bytes; the limit is {MAX_URI_BYTES} bytes")]
    UriTooLong,
    /// 431 `headers_too_large`.
    #[error(
        "the request has more than {MAX_HEADER_FIELDS} header fields, or more than {MAX_HEAD_BYTES} bytes of request line and headers; the limits are {MAX_HEADER_FIELDS} fields and {MAX_HEADER_BYTES} bytes of headers"
    )]
    HeadersTooLarge,
    /// 400 `invalid_request`.
    #[error(
        "the request is not HTTP/1.1 that can be read (a malformed request line, method, URI, version or header); send a request such as `GET /healthz HTTP/1.1`"
    )]
    Malformed,
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_request`: the request does not say what it must; nothing changed.
    #[error("{0}")]
    InvalidRequest(String),
    /// 413 `body_too_large`.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// 409 `lock_held`: another holder's lease is live, or a waiting lock group has
    /// reserved the lock.
    #[error("{}", lock_held_sentence(name, *expires_at, *reserved_until))]
    LockHeld {
        name: LockName,
        fence: Fence,
        /// 0 when the last holder released the lock.
        expires_at: Millis,
        /// When a waiting lock group's reservation of the lock ends.
        reserved_until: Option<Millis>,
        retry_after_secs: u64,
    },
    /// 409 `lock_disabled`: an operator disabled the name; waiting does not help.
    #[error("{}", disabled_sentence(name, disabled))]
    LockDisabled {
        name: LockName,
        fence: Fence,
        disabled: Disabled,
    },
    /// 409 `fence_mismatch`: the lock has moved on to another fence.
    #[error(
        "fence {given} does not hold lock \"{name}\": its current fence is {current}; acquire the lock again for a new fence"
    )]
    FenceMismatch {
        name: LockName,
        given: Fence,
        current: Fence,
    },
    /// 409 `lease_expired`: the fence is current but its lease is over.
    #[error("the lease of fence {fence} on lock \"{name}\" {}; acquire the lock again for a new fence",
        if *released { "was released" } else { "has expired" })]
    LeaseExpired {
        name: LockName,
        fence: Fence,
        released: bool,
    },
    /// 404 `not_found`: the token is not a live holding of the lock.
    #[error(
        "the token holds nothing on lock \"{name}\": it is not the current holder's, or its lease ended; acquire the lock again"
    )]
    TokenHoldsNothing { name: LockName },
    /// 409 `lease_longer`: an extend would end the lease sooner than it ends now.
    #[error("the lease on lock \"{name}\" already runs until {}; a timeout that ends it sooner is refused", rfc3339(*expires_at))]
    WouldShorten { name: LockName, expires_at: Millis },
    /// 401 `unauthorized`: no bearer token, or not one in force.
    #[error("{0}; send `Authorization: Bearer <token>` with a token the server lists")]
    Unauthorized(&'static str),
    /// 403 `forbidden`: the token may not use this namespace, or may not list locks.
    #[error("{0}")]
    Forbidden(String),
    /// 403 `not_holder`: the holder's nonce is missing or wrong.
    #[error("{}", not_holder_sentence(*kind, name, *fence, *missing))]
    NotHolder {
        /// A lock or a semaphore.
        kind: Kind,
        name: LockName,
        fence: Fence,
        missing: bool,
    },
    /// 429 `too_many_requests`: the token's request rate or waiters are over its limit.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// 414 `uri_too_long`.
    #[error("the request URI is {length} bytes long; the limit is {limit}")]
    UriTooLong { length: usize, limit: usize },
    /// 431 `headers_too_large`.
    #[error("the request headers are {size} bytes; the limit is {limit}")]
    HeadersTooLarge { size: usize, limit: usize },
    /// 400, 414 or 431: a request refused while it was read, before any route saw it.
    #[error("{0}")]
    Unreadable(Unreadable),
    /// 501 `unsupported`: lock groups need DynamoDB transactions, which the table
    /// (a global table with multi-Region strong consistency) does not offer.
    #[error(
        "lock groups are not available on this server: its table {table:?} is a global table with multi-Region strong consistency, where DynamoDB offers no transactions, and a group is taken in one; take the locks one by one in name order, or use a table in one Region"
    )]
    GroupsUnsupported { table: String },
    /// 404 `not_found`: the lock has no record.
    #[error("lock \"{name}\" does not exist; acquire it first")]
    LockNotFound { name: LockName },
    /// 404 `not_found`: the semaphore has no record.
    #[error("semaphore \"{name}\" does not exist; acquire a slot of it first")]
    SemaphoreNotFound { name: LockName },
    /// 409 `semaphore_full`: every slot is held by another holder.
    #[error(
        "semaphore \"{name}\" has all {limit} of its slots held; the first may be free at {}; retry after that, or wait",
        rfc3339(*free_at)
    )]
    SemaphoreFull {
        name: LockName,
        limit: u32,
        free_at: Millis,
        retry_after_secs: u64,
    },
    /// 409 `limit_mismatch`: the semaphore exists with another limit.
    #[error(
        "semaphore \"{name}\" has a limit of {limit}, not {asked}: its first acquire set it, and every acquire must name the same one"
    )]
    LimitMismatch {
        name: LockName,
        limit: u32,
        asked: u32,
    },
    /// 409 `lock_held`: some locks of a group are held by other holders; nothing was
    /// taken.
    #[error("{}", group_held_sentence(holders))]
    GroupHeld {
        holders: Vec<GroupHolder>,
        retry_after_secs: u64,
    },
    /// A group heartbeat or release some of whose locks refused: each lock's own
    /// error, the first deciding the status and code; nothing changed.
    #[error("{}", refusals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    GroupRefused { refusals: Vec<ApiError> },
    /// 409 `fence_mismatch`: no slot of the semaphore has this fence.
    #[error(
        "fence {fence} holds no slot of semaphore \"{name}\": it was released and cleared, taken over after its lease ended, or never issued; acquire a slot again"
    )]
    SlotNotHeld { name: LockName, fence: Fence },
    /// 409 `lease_expired`: the fence's slot is there but its lease is over.
    #[error("the lease of fence {fence} on semaphore \"{name}\" {}; acquire a slot again",
        if *released { "was released" } else { "has expired" })]
    SlotExpired {
        name: LockName,
        fence: Fence,
        released: bool,
    },
    /// 409 `election_led`: another candidate leads the election; the campaign's wait
    /// (if any) ran out first.
    #[error(
        "election \"{name}\" is led under term {term}, whose lease ends at {}; campaign with a wait to stand until it is free, or observe it",
        rfc3339(*expires_at)
    )]
    ElectionLed {
        name: LockName,
        term: Fence,
        expires_at: Millis,
        retry_after_secs: u64,
    },
    /// 409 `not_leader`: the term does not lead the election: another term does, it
    /// resigned, or its lease ran out.
    #[error("{}", not_leader_sentence(name, *term, reason))]
    NotLeader {
        name: LockName,
        term: Fence,
        reason: LockRejection,
    },
    /// 404 `not_found`: no such route.
    #[error("no route for {method} {path}; see /openapi.json or docs/api.md for the API")]
    RouteNotFound { method: String, path: String },
    /// 405 `method_not_allowed`.
    #[error("{method} is not allowed on {path}; see /openapi.json or docs/api.md for the API")]
    MethodNotAllowed { method: String, path: String },
    /// 503 `unavailable`: DynamoDB failed; retry later.
    #[error(
        "the lock store is unavailable and could not {operation} {kind} \"{name}\"; retry shortly"
    )]
    Unavailable {
        operation: &'static str,
        kind: Kind,
        name: String,
    },
    /// 503 `unavailable`: this server is shutting down; another one can answer.
    #[error(
        "this fencelock server is shutting down and stopped waiting for lock \"{name}\"; retry on another server"
    )]
    ShuttingDown { name: LockName },
    /// 503 `unavailable`: a server limit (requests at once, request time) was reached.
    #[error("{0}")]
    OverLimit(String),
    /// 503 `unavailable`: `/readyz` found the store not ready.
    #[error("not ready: {0}")]
    NotReady(String),
    /// 500 `internal`: a fault of fencelock's own (for example an item it cannot read).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The error for a fence that does not hold `name`.
    pub fn rejected(name: LockName, rejection: LockRejection) -> Self {
        match rejection {
            LockRejection::NotFound => Self::LockNotFound { name },
            LockRejection::FenceMismatch { given, current } => Self::FenceMismatch {
                name,
                given,
                current,
            },
            LockRejection::LeaseExpired { fence, released } => Self::LeaseExpired {
                name,
                fence,
                released,
            },
            LockRejection::TokenMismatch => Self::TokenHoldsNothing { name },
            LockRejection::NotHolder { fence } => Self::NotHolder {
                kind: Kind::Lock,
                name,
                fence,
                missing: false,
            },
            LockRejection::WouldShorten { expires_at } => Self::WouldShorten { name, expires_at },
        }
    }

    /// The error for a term that does not lead election `name`.
    pub fn not_leader(name: LockName, term: Fence, reason: LockRejection) -> Self {
        match reason {
            LockRejection::NotHolder { fence } => Self::NotHolder {
                kind: Kind::Election,
                name,
                fence,
                missing: false,
            },
            reason => Self::NotLeader { name, term, reason },
        }
    }

    /// The error for a fence that does not hold a slot of semaphore `name`.
    pub fn slot_rejected(name: LockName, rejection: SlotRejection) -> Self {
        match rejection {
            SlotRejection::NotFound => Self::SemaphoreNotFound { name },
            SlotRejection::NotHeld { fence } => Self::SlotNotHeld { name, fence },
            SlotRejection::NotHolder { fence } => Self::NotHolder {
                kind: Kind::Semaphore,
                name,
                fence,
                missing: false,
            },
            SlotRejection::LeaseExpired { fence, released } => Self::SlotExpired {
                name,
                fence,
                released,
            },
        }
    }

    /// The error for a token that does not hold `name`, as Gorilla answers it: 404
    /// for any holding that is not live, 409 only for a refused shortening.
    pub fn token_rejected(name: LockName, rejection: LockRejection) -> Self {
        match rejection {
            LockRejection::WouldShorten { expires_at } => Self::WouldShorten { name, expires_at },
            _ => Self::TokenHoldsNothing { name },
        }
    }

    /// The error of a waiting acquire of `name` that ended without an answer about
    /// it; `subject` names what waited (`lock "x"`, …).
    pub fn waited(
        err: crate::wait::WaitError,
        name: &LockName,
        subject: impl FnOnce() -> String,
    ) -> Self {
        use crate::wait::WaitError;
        match err {
            WaitError::Store(err) => Self::from(err),
            WaitError::ShuttingDown => Self::ShuttingDown { name: name.clone() },
            WaitError::TooMany { limit } => Self::TooManyRequests {
                message: format!(
                    "{} already has {limit} waiters on this server, its limit; retry later",
                    subject()
                ),
                retry_after_secs: 1,
            },
        }
    }

    /// This error about one lock of a group, as a [`LockError`].
    fn lock_error(&self) -> LockError {
        let (name, fence) = match self {
            Self::FenceMismatch { name, current, .. } => (name.to_string(), Some(*current)),
            Self::LeaseExpired { name, fence, .. }
            | Self::NotHolder { name, fence, .. }
            | Self::LockDisabled { name, fence, .. } => (name.to_string(), Some(*fence)),
            Self::LockNotFound { name } | Self::TokenHoldsNothing { name } => {
                (name.to_string(), None)
            }
            _ => (String::new(), None),
        };
        LockError {
            name,
            code: self.code().as_str().to_owned(),
            error: self.to_string(),
            fence,
            owner: None,
            expire_time: None,
            reserved_until: None,
        }
    }

    fn status(&self) -> StatusCode {
        self.code().status()
    }

    /// The machine code of this error, which decides its status.
    pub fn code(&self) -> ErrorCode {
        use ErrorCode as C;
        match self {
            Self::InvalidRequest(_) | Self::Unreadable(Unreadable::Malformed) => C::InvalidRequest,
            Self::Unauthorized(_) => C::Unauthorized,
            Self::Forbidden(_) => C::Forbidden,
            Self::NotHolder { .. } => C::NotHolder,
            Self::TooManyRequests { .. } => C::TooManyRequests,
            Self::UriTooLong { .. } | Self::Unreadable(Unreadable::UriTooLong) => C::UriTooLong,
            Self::HeadersTooLarge { .. } | Self::Unreadable(Unreadable::HeadersTooLarge) => {
                C::HeadersTooLarge
            }
            Self::BodyTooLarge { .. } => C::BodyTooLarge,
            Self::LockHeld { .. } | Self::GroupHeld { .. } => C::LockHeld,
            Self::LockDisabled { .. } => C::LockDisabled,
            Self::GroupRefused { refusals } => refusals.first().map_or(C::Conflict, ApiError::code),
            Self::SemaphoreFull { .. } => C::SemaphoreFull,
            Self::ElectionLed { .. } => C::ElectionLed,
            Self::NotLeader { .. } => C::NotLeader,
            Self::LimitMismatch { .. } => C::LimitMismatch,
            Self::FenceMismatch { .. } | Self::SlotNotHeld { .. } => C::FenceMismatch,
            Self::LeaseExpired { .. } | Self::SlotExpired { .. } => C::LeaseExpired,
            Self::WouldShorten { .. } => C::LeaseLonger,
            Self::LockNotFound { .. }
            | Self::SemaphoreNotFound { .. }
            | Self::RouteNotFound { .. }
            | Self::TokenHoldsNothing { .. } => C::NotFound,
            Self::MethodNotAllowed { .. } => C::MethodNotAllowed,
            Self::Unavailable { .. }
            | Self::ShuttingDown { .. }
            | Self::NotReady(_)
            | Self::OverLimit(_) => C::Unavailable,
            Self::Internal(_) => C::Internal,
            Self::GroupsUnsupported { .. } => C::Unsupported,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable {
                operation,
                kind,
                name,
                ..
            } => Self::Unavailable {
                operation,
                kind,
                name,
            },
            StoreError::Malformed(malformed) => Self::Internal(malformed.to_string()),
        }
    }
}

/// The JSON of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// A sentence naming the lock and saying what was expected.
    #[schema(
        example = "lock \"job1\" is held by another holder until 2026-11-23T10:40:30.123Z; retry after that, or acquire with the holder's nonce"
    )]
    pub error: String,
    /// The machine-readable reason (one of [`ErrorCode`]'s; a client should treat one it
    /// does not know by its status).
    #[schema(value_type = ErrorCode, example = "lock_held")]
    pub code: String,
    /// With `lock_held`: the holder's fence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
    /// With `lock_held`: when the holder's lease ends; with `semaphore_full`: when
    /// the first slot may be free.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<String>,
    /// With `lock_held`: when a waiting lock group's reservation of the lock ends;
    /// until then, nobody else takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_until: Option<String>,
    /// For a lock group: each lock that refused, with its own error (for `lock_held`,
    /// its holder's fence, owner and lease end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locks: Option<Vec<LockError>>,
}

/// One lock of a group that refused, in an error answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockError {
    pub name: String,
    #[schema(value_type = ErrorCode)]
    pub code: String,
    pub error: String,
    /// With `lock_held`: the holder's fence; otherwise the lock's current fence, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<Fence>,
    /// With `lock_held`: who holds the lock, if its holder said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// With `lock_held`: when the holder's lease ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<String>,
    /// With `lock_held`: when another waiting lock group's reservation of the lock
    /// ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_until: Option<String>,
}

/// A holder that kept a group from being taken.
#[derive(Debug, Clone)]
pub struct GroupHolder {
    pub name: LockName,
    pub fence: Fence,
    pub owner: Option<String>,
    /// 0 when the last holder released the lock.
    pub expires_at: Millis,
    /// When another waiting group's reservation of the lock ends.
    pub reserved_until: Option<Millis>,
}

/// Why lock `name` cannot be taken: who disabled it, since when, and why.
fn disabled_sentence(name: &LockName, disabled: &Disabled) -> String {
    let reason = disabled
        .reason
        .as_deref()
        .map(|reason| format!(" ({reason})"))
        .unwrap_or_default();
    format!(
        "lock \"{name}\" was disabled by an operator (token {}) at {}{reason}; no acquire succeeds until it is enabled again (`fencelock enable {name}`)",
        disabled.by,
        rfc3339(disabled.at)
    )
}

/// Why lock `name` was not taken: a live lease ending at `expires_at` (0: released),
/// a waiting group's reservation ending at `reserved_until`, or both.
fn lock_held_sentence(
    name: &LockName,
    expires_at: Millis,
    reserved_until: Option<Millis>,
) -> String {
    let retry = match reserved_until {
        None => "retry after that, or acquire with the holder's nonce",
        Some(_) => "retry after that",
    };
    format!("{}; {retry}", held_clause(name, expires_at, reserved_until))
}

/// "lock "x" is held by another holder until …", and what reserves it after.
fn held_clause(name: &LockName, expires_at: Millis, reserved_until: Option<Millis>) -> String {
    match (reserved_until, expires_at) {
        (None, end) => format!(
            "lock \"{name}\" is held by another holder until {}",
            rfc3339(end)
        ),
        (Some(until), 0) => format!(
            "lock \"{name}\" was released and is reserved for a waiting lock group until {}, which takes it next",
            rfc3339(until)
        ),
        (Some(until), end) => format!(
            "lock \"{name}\" is held by another holder until {} and reserved for a waiting lock group until {}, which takes it next",
            rfc3339(end),
            rfc3339(until)
        ),
    }
}

fn group_held_sentence(holders: &[GroupHolder]) -> String {
    let each: Vec<String> = holders
        .iter()
        .map(|h| {
            let owner = h
                .owner
                .as_deref()
                .map(|owner| format!(", owner {owner:?}"))
                .unwrap_or_default();
            let why = match (h.reserved_until, h.expires_at) {
                (None, end) => format!("until {}", rfc3339(end)),
                (Some(until), 0) => format!(
                    "released, reserved for another waiting group until {}",
                    rfc3339(until)
                ),
                (Some(until), end) => format!(
                    "until {}, reserved for another waiting group until {}",
                    rfc3339(end),
                    rfc3339(until)
                ),
            };
            format!("\"{}\" (fence {}{owner}, {why})", h.name, h.fence)
        })
        .collect();
    let which = if holders.len() == 1 {
        "a lock of the group is held by another holder"
    } else {
        "locks of the group are held by other holders"
    };
    format!(
        "{which}: {}; nothing was taken; retry after that, or wait",
        each.join(", ")
    )
}

// Error answers shared by several routes, for the OpenAPI document only: the
// handlers answer `ApiError`, so these are never built.

/// Errors every lock route may answer.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum CommonErrors {
    /// `invalid_request`: bad input; nothing changed.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `unauthorized`: the server lists tokens and the request has none of them.
    #[response(status = 401, headers(("WWW-Authenticate" = String)))]
    Unauthorized(ErrorBody),
    /// `forbidden` (the token may not use this namespace, or list) or `not_holder`.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// `uri_too_long`.
    #[response(status = 414)]
    UriTooLong(ErrorBody),
    /// `too_many_requests`: the token's rate, or its or the lock's waiters, are over
    /// their limit.
    #[response(status = 429, headers(("Retry-After" = u64)))]
    TooManyRequests(ErrorBody),
    /// `headers_too_large`.
    #[response(status = 431)]
    HeadersTooLarge(ErrorBody),
    /// `unavailable`: DynamoDB failed or throttled, a server limit was reached, or the
    /// server is shutting down. Retrying is safe.
    #[response(status = 503, headers(("Retry-After" = u64)))]
    Unavailable(ErrorBody),
}

/// Errors of the routes that name a holding by its fence.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum FenceErrors {
    /// `not_found`: the lock has no record.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `fence_mismatch` (the lock has moved on) or `lease_expired`.
    #[response(status = 409)]
    NotHolder(ErrorBody),
}

/// Errors of the routes that may need the holder's nonce as proof.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ProofErrors {
    /// `not_holder`: the holder's nonce is missing (and required) or wrong; nothing changed.
    #[response(status = 403)]
    NotHolder(ErrorBody),
}

/// Errors of the Gorilla routes that name a holding by its token.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum TokenErrors {
    /// `not_found`: the token holds nothing.
    #[response(status = 404)]
    NotFound(ErrorBody),
}

impl ApiError {
    /// The status and JSON body of this error, without the details and headers some
    /// errors add: for an answer written beneath the router ([`crate::transport`]).
    pub fn plain(&self) -> (StatusCode, String) {
        let body = self.plain_body();
        let json = serde_json::to_string(&body).unwrap_or_else(|_| String::from("{}"));
        (self.status(), json)
    }

    fn plain_body(&self) -> ErrorBody {
        ErrorBody {
            error: self.to_string(),
            code: self.code().as_str().to_owned(),
            fence: None,
            expire_time: None,
            reserved_until: None,
            locks: None,
        }
    }
}

/// What an answer adds to its error's status, code and sentence.
#[derive(Debug, Default)]
struct Extras {
    /// The `Fencelock-Fence` header: the fence the answer is about.
    fence_header: Option<Fence>,
    /// The body's `fence`, `expireTime`, `reservedUntil` and `locks`.
    fence: Option<Fence>,
    expire_time: Option<String>,
    reserved_until: Option<String>,
    locks: Option<Vec<LockError>>,
    retry_after_secs: Option<u64>,
    /// A `WWW-Authenticate` challenge.
    authenticate: bool,
}

impl Extras {
    /// An answer about a holding whose fence is `fence`, in the header alone.
    fn about(fence: Fence) -> Self {
        Self {
            fence_header: Some(fence),
            ..Self::default()
        }
    }

    fn retry_after(secs: u64) -> Self {
        Self {
            retry_after_secs: Some(secs),
            ..Self::default()
        }
    }
}

impl ApiError {
    /// What the answer to this error carries besides its code and sentence: one
    /// description per variant, every variant named, so that a new one says its own.
    fn extras(&self) -> Extras {
        match self {
            Self::LockHeld {
                fence,
                expires_at,
                reserved_until,
                retry_after_secs,
                ..
            } => Extras {
                fence_header: Some(*fence),
                fence: Some(*fence),
                expire_time: (*expires_at != 0).then(|| rfc3339(*expires_at)),
                reserved_until: reserved_until.map(rfc3339),
                retry_after_secs: Some(*retry_after_secs),
                ..Extras::default()
            },
            Self::LeaseExpired { fence, .. }
            | Self::SlotExpired { fence, .. }
            | Self::LockDisabled { fence, .. } => Extras::about(*fence),
            Self::FenceMismatch { current, .. } => Extras::about(*current),
            Self::ElectionLed {
                term,
                expires_at,
                retry_after_secs,
                ..
            } => Extras {
                fence_header: Some(*term),
                fence: Some(*term),
                expire_time: Some(rfc3339(*expires_at)),
                retry_after_secs: Some(*retry_after_secs),
                ..Extras::default()
            },
            Self::NotLeader { term, reason, .. } => match reason {
                LockRejection::FenceMismatch { current, .. } => Extras::about(*current),
                _ => Extras::about(*term),
            },
            Self::GroupHeld {
                holders,
                retry_after_secs,
            } => Extras {
                locks: Some(holders.iter().map(GroupHolder::lock_error).collect()),
                retry_after_secs: Some(*retry_after_secs),
                ..Extras::default()
            },
            Self::GroupRefused { refusals } => Extras {
                locks: Some(refusals.iter().map(ApiError::lock_error).collect()),
                ..Extras::default()
            },
            Self::SemaphoreFull {
                free_at,
                retry_after_secs,
                ..
            } => Extras {
                expire_time: Some(rfc3339(*free_at)),
                retry_after_secs: Some(*retry_after_secs),
                ..Extras::default()
            },
            Self::TooManyRequests {
                retry_after_secs, ..
            } => Extras::retry_after(*retry_after_secs),
            Self::Unavailable { .. }
            | Self::ShuttingDown { .. }
            | Self::NotReady(_)
            | Self::OverLimit(_) => Extras::retry_after(UNAVAILABLE_RETRY_AFTER_SECS),
            Self::Unauthorized(_) => Extras {
                authenticate: true,
                ..Extras::default()
            },
            Self::InvalidRequest(_)
            | Self::GroupsUnsupported { .. }
            | Self::Unreadable(_)
            | Self::Forbidden(_)
            | Self::NotHolder { .. }
            | Self::UriTooLong { .. }
            | Self::HeadersTooLarge { .. }
            | Self::BodyTooLarge { .. }
            | Self::LimitMismatch { .. }
            | Self::SlotNotHeld { .. }
            | Self::WouldShorten { .. }
            | Self::LockNotFound { .. }
            | Self::SemaphoreNotFound { .. }
            | Self::RouteNotFound { .. }
            | Self::TokenHoldsNothing { .. }
            | Self::MethodNotAllowed { .. }
            | Self::Internal(_) => Extras::default(),
        }
    }
}

impl GroupHolder {
    /// This holder, as the `locks[]` entry of a refused group's answer.
    fn lock_error(&self) -> LockError {
        LockError {
            name: self.name.to_string(),
            code: ErrorCode::LockHeld.as_str().into(),
            error: held_clause(&self.name, self.expires_at, self.reserved_until),
            fence: Some(self.fence),
            owner: self.owner.clone(),
            expire_time: (self.expires_at != 0).then(|| rfc3339(self.expires_at)),
            reserved_until: self.reserved_until.map(rfc3339),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            // Logged once, where it is answered.
            tracing::error!(detail, "answered 500 internal");
        }
        let extras = self.extras();
        let body = ErrorBody {
            fence: extras.fence,
            expire_time: extras.expire_time,
            reserved_until: extras.reserved_until,
            locks: extras.locks,
            ..self.plain_body()
        };
        let mut response = with_fence(extras.fence_header, (self.status(), Json(body)));
        if let Some(secs) = extras.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if extras.authenticate {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fencelock\""),
            );
        }
        response
    }
}

fn not_leader_sentence(name: &LockName, term: Fence, reason: &LockRejection) -> String {
    let why = match reason {
        LockRejection::FenceMismatch { current, .. } => {
            format!("its current term is {current}")
        }
        LockRejection::LeaseExpired { released: true, .. } => "it resigned".to_owned(),
        LockRejection::LeaseExpired {
            released: false, ..
        } => "its lease ran out before this heartbeat".to_owned(),
        LockRejection::NotFound | LockRejection::TokenMismatch => {
            "the election has no record".to_owned()
        }
        LockRejection::NotHolder { .. } | LockRejection::WouldShorten { .. } => {
            "the server refused the change".to_owned()
        }
    };
    format!(
        "term {term} does not lead election \"{name}\": {why}; stop acting as its leader, and campaign again for a new term"
    )
}

fn not_holder_sentence(kind: Kind, name: &LockName, fence: Fence, missing: bool) -> String {
    let problem = if missing {
        "needs the holder's nonce"
    } else {
        "was sent with a nonce that is not the holder's"
    };
    format!(
        "a change to {kind} \"{name}\" by fence {fence} {problem}: send it in the Lock-Nonce header or the nonce query parameter; nothing changed"
    )
}

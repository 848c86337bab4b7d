//! [`ErrorCode`]: the machine-readable reason of every error answer, one word each,
//! with the HTTP status it is answered with. The server writes them
//! ([`super::ApiError::code`]) and the client library reads them
//! ([`crate::client`]), so neither spells one as a bare string.

use std::fmt;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request does not say what it must; nothing changed.
    InvalidRequest,
    /// 401: no bearer token, or not one in force.
    Unauthorized,
    /// 403: the token may not use this namespace, or may not list.
    Forbidden,
    /// 403: the holder's nonce is missing or wrong.
    NotHolder,
    /// 404: no such lock, semaphore, holding or route.
    NotFound,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 409: another holder's lease is live, or a waiting group reserved the lock.
    LockHeld,
    /// 409: an operator disabled the lock name; no acquire succeeds until it is
    /// enabled again. Waiting does not change it.
    LockDisabled,
    /// 409: every slot of the semaphore is held.
    SemaphoreFull,
    /// 409: the semaphore exists with another limit.
    LimitMismatch,
    /// 409: another candidate leads the election.
    ElectionLed,
    /// 409: the term does not lead the election (another does, it resigned, or its
    /// lease ran out).
    NotLeader,
    /// 409: the fence is not the lock's current one.
    FenceMismatch,
    /// 409: the fence is current, but its lease ran out or was released.
    LeaseExpired,
    /// 409: a Gorilla extend would end the lease sooner than now planned.
    LeaseLonger,
    /// 409: a lock group's request refused for reasons of each lock (see `locks`).
    Conflict,
    /// 413: the request body is over the limit.
    BodyTooLarge,
    /// 414: the request URI is over the limit.
    UriTooLong,
    /// 429: the token's request rate or waiters are over its limit.
    TooManyRequests,
    /// 431: the request headers are over the limit.
    HeadersTooLarge,
    /// 500: the table holds an item fencelock cannot read.
    Internal,
    /// 501: the lock table cannot do what the request needs (a lock group on a
    /// global table with multi-Region strong consistency, which has no transactions).
    Unsupported,
    /// 503: DynamoDB failed or a server limit was reached; retrying is safe.
    Unavailable,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: [ErrorCode; 23] = [
        Self::InvalidRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotHolder,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::LockHeld,
        Self::LockDisabled,
        Self::SemaphoreFull,
        Self::LimitMismatch,
        Self::ElectionLed,
        Self::NotLeader,
        Self::FenceMismatch,
        Self::LeaseExpired,
        Self::LeaseLonger,
        Self::Conflict,
        Self::BodyTooLarge,
        Self::UriTooLong,
        Self::TooManyRequests,
        Self::HeadersTooLarge,
        Self::Internal,
        Self::Unsupported,
        Self::Unavailable,
    ];

    /// The code as answers spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotHolder => "not_holder",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::LockHeld => "lock_held",
            Self::LockDisabled => "lock_disabled",
            Self::SemaphoreFull => "semaphore_full",
            Self::LimitMismatch => "limit_mismatch",
            Self::ElectionLed => "election_led",
            Self::NotLeader => "not_leader",
            Self::FenceMismatch => "fence_mismatch",
            Self::LeaseExpired => "lease_expired",
            Self::LeaseLonger => "lease_longer",
            Self::Conflict => "conflict",
            Self::BodyTooLarge => "body_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::TooManyRequests => "too_many_requests",
            Self::HeadersTooLarge => "headers_too_large",
            Self::Internal => "internal",
            Self::Unsupported => "unsupported",
            Self::Unavailable => "unavailable",
        }
    }

    /// The code an answer spells `raw`; `None` for one this version does not know.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == raw)
    }

    /// The status an answer with this code has.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::NotHolder => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::LockHeld
            | Self::LockDisabled
            | Self::SemaphoreFull
            | Self::LimitMismatch
            | Self::ElectionLed
            | Self::NotLeader
            | Self::FenceMismatch
            | Self::LeaseExpired
            | Self::LeaseLonger
            | Self::Conflict => StatusCode::CONFLICT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unsupported => StatusCode::NOT_IMPLEMENTED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_is_spelt_as_serde_spells_it_and_parses_back() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str());
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }
}

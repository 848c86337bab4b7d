//! The gate every request passes before a handler: size limits on the URI and the
//! headers, bearer-token authentication of the lock routes, the per-token request
//! rate, and `/metrics`' own token. What a token may do with a given lock (its
//! namespaces) is checked where the lock name is parsed, in [`super::extract`].

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{ApiError, AppState};
use crate::auth::{Auth, Grant, TokenDigest, same_secret};
use crate::domain::LockName;

/// The longest request URI accepted, in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) a request may carry.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most header fields a request may carry: HTTP/1.1's parser refuses more.
pub const MAX_HEADER_FIELDS: usize = 100;
/// The most bytes of request line and headers the parser reads before it refuses a
/// request; heads up to this long reach the checks of [`MAX_URI_BYTES`] and
/// [`MAX_HEADER_BYTES`], which say by how much they are over.
pub const MAX_HEAD_BYTES: usize = 128 * 1024;

/// Who may call, and how much.
#[derive(Debug, Clone)]
pub struct Security {
    /// The tokens in force; `None` runs the server open.
    pub auth: Option<Arc<Auth>>,
    /// The token `/metrics` asks for; open when `None`.
    pub metrics_token: Option<String>,
    /// Whether heartbeat, update and release need the holder's nonce as proof.
    pub require_nonce: bool,
    /// Whether, without tokens, every caller may take the break-glass actions.
    pub allow_admin_without_auth: bool,
    /// Requests per second each token may send (with as large a burst); unlimited when `None`.
    pub token_rate: Option<NonZeroU32>,
    /// Waiting acquires one token may have at once on one server.
    pub max_waiters_per_token: usize,
}

/// The waiting acquires one token may have at once unless told otherwise.
pub const DEFAULT_MAX_WAITERS_PER_TOKEN: usize = 1000;

/// An open server: no tokens, no holder proof, no rate limit.
impl Default for Security {
    fn default() -> Self {
        Self {
            auth: None,
            metrics_token: None,
            require_nonce: false,
            allow_admin_without_auth: false,
            token_rate: None,
            max_waiters_per_token: DEFAULT_MAX_WAITERS_PER_TOKEN,
        }
    }
}

/// [`Security`] and the state its limits keep.
#[derive(Debug)]
pub struct Guard {
    pub security: Security,
    rate: Option<DefaultKeyedRateLimiter<TokenDigest>>,
    waiters: Mutex<HashMap<TokenDigest, usize>>,
}

impl Guard {
    pub fn new(security: Security) -> Self {
        Self {
            rate: security
                .token_rate
                .map(|rate| RateLimiter::keyed(Quota::per_second(rate))),
            security,
            waiters: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a waiting acquire of `caller`'s until the answer is dropped, or refuses
    /// it when the token already has as many as it may.
    pub fn wait_slot(self: &Arc<Self>, caller: &Caller) -> Result<WaitSlot, ApiError> {
        let Caller::Token(grant) = caller else {
            return Ok(WaitSlot(None));
        };
        let limit = self.security.max_waiters_per_token;
        let digest = *grant.digest();
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        let count = waiters.entry(digest).or_default();
        if *count >= limit {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "this token already has {limit} waiting acquires on this server, its limit; retry when one ends"
                ),
                retry_after_secs: 1,
            });
        }
        *count += 1;
        Ok(WaitSlot(Some((self.clone(), digest))))
    }
}

/// One waiting acquire counted against its token; uncounted when dropped.
pub struct WaitSlot(Option<(Arc<Guard>, TokenDigest)>);

impl Drop for WaitSlot {
    fn drop(&mut self) {
        if let Some((guard, digest)) = self.0.take() {
            let mut waiters = guard.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = waiters.get_mut(&digest) {
                *count -= 1;
                if *count == 0 {
                    waiters.remove(&digest);
                }
            }
        }
    }
}

/// Who sent a request, as the handlers see it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The server runs without tokens: anyone may do anything.
    Open,
    /// The request carried this token.
    Token(Arc<Grant>),
}

impl Caller {
    /// Whether the caller may take the break-glass actions on `name` (whose namespace
    /// [`Caller::check`] allowed already): a token with the admin right, or anyone on
    /// an open server told to allow it. Answers who acts, as no secret, for the audit
    /// line; a 403 saying why not otherwise.
    pub fn check_admin(&self, name: &LockName, open_allowed: bool) -> Result<String, ApiError> {
        match self {
            Self::Token(grant) if grant.admin && grant.allows(name) => Ok(grant.label()),
            Self::Token(_) => Err(ApiError::Forbidden(format!(
                "this token has no admin right on namespace \"{}\" (of \"{name}\"); break-glass actions need a token with `admin = true` in the token file",
                name.namespace()
            ))),
            Self::Open if open_allowed => Ok(OPEN_CALLER.to_owned()),
            Self::Open => Err(ApiError::Forbidden(
                "this server has no token file, so break-glass actions are refused: anyone who can reach it could take them; give the server a token file with an `admin = true` token, or set FENCELOCK_ALLOW_ADMIN_WITHOUT_AUTH=true".to_owned(),
            )),
        }
    }

    /// Whether the caller may act on `name`; a 403 saying why not otherwise.
    pub fn check(&self, name: &LockName) -> Result<(), ApiError> {
        match self {
            Self::Token(grant) if !grant.allows(name) => Err(ApiError::Forbidden(format!(
                "this token may not use namespace \"{}\" (of \"{name}\"); ask for a token that lists it",
                name.namespace()
            ))),
            _ => Ok(()),
        }
    }

    /// Who the caller is, as no secret: the hex SHA-256 of its token; empty on a
    /// server without tokens, where every caller is the same one.
    pub fn identity(&self) -> String {
        match self {
            Self::Open => String::new(),
            Self::Token(grant) => hex::encode(grant.digest()),
        }
    }

    /// Whether the caller may list locks in `namespace`.
    pub fn sees_namespace(&self, namespace: &str) -> bool {
        match self {
            Self::Open => true,
            Self::Token(grant) => grant.allows_namespace(namespace),
        }
    }
}

/// Who takes a break-glass action on a server without tokens, in the audit line.
pub const OPEN_CALLER: &str = "open";

/// The roots of the routes that need a token when the server lists tokens (besides
/// `/api/…`).
const PROTECTED: [&str; 6] = [
    "/admin",
    "/locks",
    "/semaphores",
    "/lock-groups",
    "/elections",
    "/events",
];

/// The gate: size limits, then the token for `/admin…`, `/locks…`, `/semaphores…`,
/// `/lock-groups…`, `/elections…`, `/events…` and `/api/…`, the token's rate,
/// and `/metrics`' token. Puts the [`Caller`] in the request for the handlers.
pub async fn gate(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    match admit(&app, &mut request) {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

fn admit(app: &AppState, request: &mut Request) -> Result<(), ApiError> {
    let uri = request.uri();
    // Its length as sent, without writing it out again.
    let uri_length = uri.scheme_str().map_or(0, |scheme| scheme.len() + 3)
        + uri
            .authority()
            .map_or(0, |authority| authority.as_str().len())
        + uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_length > MAX_URI_BYTES {
        return Err(ApiError::UriTooLong {
            length: uri_length,
            limit: MAX_URI_BYTES,
        });
    }
    let header_bytes = header_bytes(request.headers());
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::HeadersTooLarge {
            size: header_bytes,
            limit: MAX_HEADER_BYTES,
        });
    }
    let guard = &app.guard;
    let path = request.uri().path();
    if path == "/metrics" {
        if let Some(expected) = &guard.security.metrics_token {
            let presented = bearer(request.headers())?;
            if !same_secret(presented, expected) {
                return Err(ApiError::Unauthorized("the token is not the metrics token"));
            }
        }
        return Ok(());
    }
    let protected = path.starts_with("/api/")
        || PROTECTED.iter().any(|root| {
            path.strip_prefix(root)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
    let caller = match (&guard.security.auth, protected) {
        (Some(auth), true) => {
            let grant =
                auth.authenticate(bearer(request.headers())?)
                    .ok_or(ApiError::Unauthorized(
                        "the bearer token is not one in force",
                    ))?;
            check_rate(guard, &grant)?;
            super::request_log::note_token(&grant.label());
            Caller::Token(grant)
        }
        _ => Caller::Open,
    };
    request.extensions_mut().insert(caller);
    Ok(())
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("the request has no bearer token"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::Unauthorized(
            "the Authorization header is not `Bearer <token>`",
        )),
    }
}

fn check_rate(guard: &Guard, grant: &Grant) -> Result<(), ApiError> {
    let Some(rate) = &guard.rate else {
        return Ok(());
    };
    rate.check_key(grant.digest()).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        ApiError::TooManyRequests {
            message: format!(
                "this token sent more than its {} requests per second; retry shortly",
                guard.security.token_rate.map_or(0, NonZeroU32::get)
            ),
            retry_after_secs: wait.as_millis().div_ceil(1000).max(1) as u64,
        }
    })
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

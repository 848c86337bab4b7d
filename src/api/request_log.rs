//! The request log, as `FENCELOCK_REQUEST_LOG` says: a line for every request (with
//! the request's span, whose fields every other line of the request carries), a line
//! for each request that failed, or none.
//!
//! A line for every request is a line for every heartbeat: 10,000 locks renewed every
//! 10 s are 1,000 lines a second, and in `make bench` the span and the line are about
//! a fifth of the server's CPU per operation. So by default only the requests an
//! operator must see are logged ([`failed`]), each with the fields the span would
//! have had.

use std::cell::RefCell;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use clap::ValueEnum;

use crate::domain::{Fence, LockName};

/// Which requests get a line in the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum RequestLog {
    /// Every request: a line at `info` when it is answered, and a span whose fields
    /// (method, route, request id, lock, fence, token) every line of it carries.
    All,
    /// Only those that failed: an answer of 5xx (at `warn`), or 401, 403 or 429 (at
    /// `info`), with the same fields in the line itself.
    #[default]
    Failed,
    /// None.
    Off,
}

impl std::fmt::Display for RequestLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::All => "all",
            Self::Failed => "failed",
            Self::Off => "off",
        })
    }
}

/// What a request came to be about, noted as it is known.
#[derive(Debug, Default)]
struct Noted {
    lock: Option<String>,
    fence: Option<Fence>,
    token: Option<String>,
}

tokio::task_local! {
    static NOTED: RefCell<Noted>;
}

/// Notes the lock the request names, in its span and for its line.
pub(crate) fn note_lock(name: &LockName) {
    tracing::Span::current().record("lock", name.as_str());
    let _ = NOTED.try_with(|noted| noted.borrow_mut().lock = Some(name.to_string()));
}

/// Notes the fence the answer carries.
pub(crate) fn note_fence(fence: Fence) {
    tracing::Span::current().record("fence", fence);
    let _ = NOTED.try_with(|noted| noted.borrow_mut().fence = Some(fence));
}

/// Notes the label of the caller's token.
pub(crate) fn note_token(label: &str) {
    tracing::Span::current().record("token", label);
    let _ = NOTED.try_with(|noted| noted.borrow_mut().token = Some(label.to_owned()));
}

/// Whether an answer of `status` is one an operator must see: the server failed
/// (5xx), or refused a caller (401, 403) or a caller's rate (429).
pub fn failed(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
        )
}

/// The middleware of [`RequestLog::Failed`]: a line for each request that
/// [`failed`], nothing for the others.
pub async fn log_failed(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let request_id = request.headers().get(super::REQUEST_ID).cloned();
    let (response, noted) = NOTED
        .scope(RefCell::default(), async {
            let response = next.run(request).await;
            (response, NOTED.with(|noted| noted.take()))
        })
        .await;
    let status = response.status();
    if failed(status) {
        let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let request_id = request_id.as_ref().and_then(|id| id.to_str().ok());
        let latency_us = started.elapsed().as_micros() as u64;
        let status = status.as_u16();
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: "fencelock::request",
                    %method,
                    route,
                    request_id,
                    lock = noted.lock.as_deref(),
                    fence = noted.fence,
                    token = noted.token.as_deref(),
                    status,
                    latency_us,
                    "request failed"
                )
            };
        }
        if status >= 500 {
            line!(warn);
        } else {
            line!(info);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failures_an_operator_must_see() {
        for status in [500, 503, 401, 403, 429] {
            assert!(failed(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        // A lock held, a bad request, a missing name: answers, not failures.
        for status in [200, 204, 400, 404, 409, 413] {
            assert!(!failed(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }
}

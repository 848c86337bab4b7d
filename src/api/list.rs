//! `GET /locks`: listing locks, a page at a time.

use axum::Json;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::CommonErrors;
use super::extract::Params;
use super::guard::Caller;
use super::view::LockView;
use super::{ApiError, AppState};
use crate::domain::{LockName, is_namespace};
use crate::store::{ListQuery, SEMAPHORE_KEY_PREFIX};

/// Locks per page when the request does not say.
const DEFAULT_LIMIT: usize = 100;
/// The most locks per page.
const MAX_LIMIT: usize = 1000;

/// Query parameters of `GET /locks`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only names that start with this.
    prefix: Option<String>,
    /// Only names in this namespace (the part before the first `:`; `default` also
    /// holds the names without one).
    namespace: Option<String>,
    /// Only locks whose lease is live now.
    held: Option<bool>,
    /// Locks per page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// One page of locks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockPage {
    pub locks: Vec<LockView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/locks", tag = "locks",
    params(ListParams),
    responses(
        (status = 200, description = "A page of locks", body = LockPage),
        CommonErrors,
    ))]
/// `GET /locks?prefix=&namespace=&held=true&limit=&cursor=`: locks in the table's
/// scan order (not name order), each as its status view with its waiters here.
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Params(params): Params<ListParams>,
) -> Result<Json<LockPage>, ApiError> {
    let query = listing(&caller, params)?;
    let page = app.store.list(&query).await?;
    let now = app.store.clock().now_millis();
    // A token sees only the namespaces it may use.
    let locks: Vec<_> = page
        .locks
        .into_iter()
        .filter(|lock| caller.sees_namespace(lock.name.namespace()))
        .collect();
    let waiters = app.waiters.waiting_for(locks.iter().map(|lock| &lock.name));
    Ok(Json(LockPage {
        locks: locks
            .into_iter()
            .zip(waiters)
            .map(|(lock, waiters)| LockView::new(lock, now).with_waiters(waiters))
            .collect(),
        next_cursor: page.next.map(|key| URL_SAFE_NO_PAD.encode(key)),
    }))
}

/// The query `params` ask for, once `caller` is known to be allowed to list, and to
/// list the namespace asked for.
pub(super) fn listing(caller: &Caller, params: ListParams) -> Result<ListQuery, ApiError> {
    if let Caller::Token(grant) = caller
        && !grant.list
    {
        return Err(ApiError::Forbidden(
            "this token may not list locks or semaphores; ask for a token with `list = true`"
                .into(),
        ));
    }
    let query = list_query(params)?;
    if let Some(namespace) = &query.namespace
        && !caller.sees_namespace(namespace)
    {
        return Err(ApiError::Forbidden(format!(
            "this token may not use namespace \"{namespace}\"; ask for a token that lists it"
        )));
    }
    Ok(query)
}

fn list_query(params: ListParams) -> Result<ListQuery, ApiError> {
    let invalid = |message: String| ApiError::InvalidRequest(message);
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(invalid(format!(
            "limit must be 1 to {MAX_LIMIT}, got {limit}"
        )));
    }
    if let Some(prefix) = params.prefix.as_deref().filter(|p| !p.is_empty()) {
        // A prefix is itself the start of a name.
        LockName::parse(prefix).map_err(|e| invalid(format!("prefix: {}", e.0)))?;
    }
    let namespace = params.namespace.filter(|n| !n.is_empty());
    if let Some(namespace) = &namespace
        && !is_namespace(namespace)
    {
        return Err(invalid(format!(
            "namespace {namespace:?} is not one; expected letters, digits, '.', '_' and '-' (the part of a lock name before its first ':')"
        )));
    }
    let after = params
        .cursor
        .map(|cursor| decode_cursor(&cursor))
        .transpose()?;
    Ok(ListQuery {
        prefix: params.prefix,
        namespace,
        held_only: params.held.unwrap_or(false),
        limit,
        after,
    })
}

/// The table key a cursor holds: a lock's name, or a semaphore's key.
fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|key| {
            let name = key.strip_prefix(SEMAPHORE_KEY_PREFIX).unwrap_or(key);
            LockName::parse(name).is_ok()
        })
        .ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "cursor {cursor:?} is not one this API returned; pass nextCursor from the previous page"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let cursor = URL_SAFE_NO_PAD.encode("billing:nightly");
        assert_eq!(decode_cursor(&cursor).unwrap(), "billing:nightly");
        let cursor = URL_SAFE_NO_PAD.encode("semaphore/pool");
        assert_eq!(decode_cursor(&cursor).unwrap(), "semaphore/pool");
        for bad in ["!!", "", &URL_SAFE_NO_PAD.encode("has space")] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }
}

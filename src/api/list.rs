//! `GET /locks`: listing locks, a page at a time.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::CommonErrors;
use super::extract::Params;
use super::guard::Caller;
use super::view::LockView;
use super::{ApiError, AppState};
use crate::domain::{LockName, ServerKey, is_namespace};
use crate::store::{ListQuery, is_listed_key};

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
    /// `nextCursor` of the previous page (opaque: sealed with the servers' key).
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
    let query = listing(&app, &caller, params, Listed::Locks).await?;
    let page = app.store.list(&query).await?;
    let now = app.clock.now_millis();
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
            .map(|(lock, waiters)| LockView::new(lock, now, &app.policy).with_waiters(waiters))
            .collect(),
        next_cursor: seal_cursor(&app, &caller, Listed::Locks, page.next).await?,
    }))
}

/// What a listing lists: a cursor of one opens only for the same listing by the
/// same caller.
#[derive(Debug, Clone, Copy)]
pub(super) enum Listed {
    Locks,
    Semaphores,
}

/// What a cursor of `listed` for `caller` is sealed for.
fn cursor_context(listed: Listed, caller: &Caller) -> String {
    let listed = match listed {
        Listed::Locks => "locks",
        Listed::Semaphores => "semaphores",
    };
    format!("cursor:{listed}:{}", caller.identity())
}

/// The cursor of the page after the one that ended at table key `next`: the key
/// sealed with the server key, so that no client reads it (it may name a record the
/// caller may not see) or makes one up.
pub(super) async fn seal_cursor(
    app: &AppState,
    caller: &Caller,
    listed: Listed,
    next: Option<String>,
) -> Result<Option<String>, ApiError> {
    let Some(next) = next else {
        return Ok(None);
    };
    let key = app.store.server_key().await?;
    Ok(Some(
        key.seal(&cursor_context(listed, caller), next.as_bytes()),
    ))
}

/// The query `params` ask for, once `caller` is known to be allowed to list, and to
/// list the namespace asked for.
pub(super) async fn listing(
    app: &AppState,
    caller: &Caller,
    mut params: ListParams,
    listed: Listed,
) -> Result<ListQuery, ApiError> {
    if let Caller::Token(grant) = caller
        && !grant.list
    {
        return Err(ApiError::Forbidden(
            "this token may not list locks or semaphores; ask for a token with `list = true`"
                .into(),
        ));
    }
    let cursor = params.cursor.take();
    let mut query = list_query(params)?;
    if let Some(cursor) = cursor {
        // One that cannot be a cursor is refused without reading the key.
        if !ServerKey::could_be_sealed(&cursor) {
            return Err(not_a_cursor());
        }
        let key = app.store.server_key().await?;
        query.after = Some(open_cursor(&key, &cursor_context(listed, caller), &cursor)?);
    }
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
    Ok(ListQuery {
        prefix: params.prefix,
        namespace,
        held_only: params.held.unwrap_or(false),
        limit,
        after: None,
    })
}

/// The table key a cursor sealed for `context` holds: a lock's name, or a
/// semaphore's key.
fn open_cursor(key: &ServerKey, context: &str, cursor: &str) -> Result<String, ApiError> {
    key.open(context, cursor)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|key| is_listed_key(key))
        .ok_or_else(not_a_cursor)
}

fn not_a_cursor() -> ApiError {
    ApiError::InvalidRequest(
        "cursor is not one this listing returned to this caller (it was altered, comes from another listing or token, or the table's server key changed since); pass nextCursor from the previous page, or start again without a cursor".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let key = ServerKey::generate();
        for table_key in ["billing:nightly", "semaphore/pool"] {
            let cursor = key.seal("ctx", table_key.as_bytes());
            assert_eq!(open_cursor(&key, "ctx", &cursor).unwrap(), table_key);
            assert!(open_cursor(&key, "other", &cursor).is_err());
        }
        let sealed_junk = key.seal("ctx", b"has space");
        // Cursors as they were before they were sealed: plain base64 of the key.
        let plain = URL_SAFE_NO_PAD.encode("billing:nightly");
        for bad in ["!!", "", &plain, &sealed_junk] {
            let err = open_cursor(&key, "ctx", bad).unwrap_err();
            assert!(err.to_string().contains("start again"), "{bad:?}: {err}");
        }
    }
}

#[utoipa::path(get, path = "/events/locks", tag = "locks",
    params(ListParams),
    responses(
        (status = 200, description = "A `text/event-stream` following one page of the listing `GET /locks` \
            answers with the same parameters: `snapshot` first (`{\"locks\": [lock view, ...], \
            \"nextCursor\"}`) and again whenever the page's names change, and between them one event per \
            change of a lock on it (`acquired`, `renewed`, `updated`, `released`, `reserved`, `expired`; \
            `gap` and `state` for changes not seen one by one), with the lock's view as data; a comment \
            every 15 s", content_type = "text/event-stream"),
        CommonErrors,
    ))]
/// `GET /events/locks[?prefix=…][&namespace=…][&held=true][&limit=N][&cursor=C]`:
/// one page of the listing, followed.
pub async fn follow(
    State(app): State<AppState>,
    caller: Caller,
    Params(params): Params<ListParams>,
) -> Result<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
    ApiError,
> {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use futures_util::stream::{self, StreamExt};

    let query = listing(&app, &caller, params, Listed::Locks).await?;
    let snapshots = app.listings.subscribe(&query);
    let events = stream::unfold(
        (snapshots, Shown::default(), app, caller),
        |(mut snapshots, mut shown, app, caller)| async move {
            loop {
                let current = snapshots.borrow_and_update().clone();
                if let Some(snapshot) = current {
                    let events = shown.next(&app, &caller, snapshot).await;
                    if !events.is_empty() {
                        return Some((stream::iter(events), (snapshots, shown, app, caller)));
                    }
                }
                // The server is stopping when the page's task is gone.
                snapshots.changed().await.ok()?;
            }
        },
    )
    .flatten()
    .map(Ok);
    let hello = stream::once(async {
        Ok(SseEvent::default()
            .retry(std::time::Duration::from_secs(1))
            .comment("fencelock"))
    });
    Ok(Sse::new(hello.chain(events))
        .keep_alive(KeepAlive::new().interval(super::watch::KEEP_ALIVE)))
}

/// What one follower of a page was last sent: the page's names and next key, and
/// each lock as seen.
#[derive(Default)]
struct Shown {
    sent: bool,
    names: Vec<String>,
    next: Option<String>,
    seen: std::collections::HashMap<String, crate::watch::Seen>,
}

impl Shown {
    /// The events that lead a follower from what it was sent to `snapshot`.
    async fn next(
        &mut self,
        app: &AppState,
        caller: &Caller,
        snapshot: crate::listing::Snapshot,
    ) -> Vec<axum::response::sse::Event> {
        use axum::response::sse::Event as SseEvent;

        let at = snapshot.at;
        // A token sees only the namespaces it may use.
        let locks: Vec<_> = snapshot
            .locks
            .into_iter()
            .filter(|lock| caller.sees_namespace(lock.name.namespace()))
            .collect();
        let names: Vec<String> = locks.iter().map(|lock| lock.name.to_string()).collect();
        let seen: std::collections::HashMap<String, crate::watch::Seen> = locks
            .iter()
            .map(|lock| {
                let version = lock.view_version(app.policy.lapsed_at(lock), at);
                let seen = crate::watch::Seen {
                    lock: Some(lock.clone()),
                    version,
                    at,
                };
                (lock.name.to_string(), seen)
            })
            .collect();
        let view = |lock: &crate::domain::Lock, at| {
            let waiters = app.waiters.waiting_for([&lock.name])[0];
            LockView::new(lock.clone(), at, &app.policy).with_waiters(waiters)
        };
        let mut events = Vec::new();
        if !self.sent || names != self.names || snapshot.next != self.next {
            let next_cursor = seal_cursor(app, caller, Listed::Locks, snapshot.next.clone())
                .await
                .unwrap_or(None);
            let page = LockPage {
                locks: locks.iter().map(|lock| view(lock, at)).collect(),
                next_cursor,
            };
            let data = serde_json::to_string(&page).unwrap_or_default();
            events.push(SseEvent::default().event("snapshot").data(data));
        } else {
            for name in &names {
                let (Some(before), Some(after)) = (self.seen.get(name), seen.get(name)) else {
                    continue;
                };
                for change in crate::watch::changes(Some(before), after) {
                    let data = match &change.lock {
                        _ if change.kind == crate::watch::EventKind::Gap => {
                            serde_json::json!({ "name": name, "missed": change.missed })
                        }
                        Some(lock) => {
                            let mut shown = view(lock, change.at);
                            shown.version = change.version.unwrap_or(shown.version);
                            serde_json::to_value(shown).unwrap_or_default()
                        }
                        None => serde_json::json!({ "name": name }),
                    };
                    events.push(
                        SseEvent::default()
                            .event(change.kind.as_str())
                            .data(data.to_string()),
                    );
                }
            }
        }
        self.sent = true;
        self.names = names;
        self.next = snapshot.next;
        self.seen = seen;
        events
    }
}

//! Watching a lock: the long-poll of `GET /locks/{name}?after=…&wait=…` and the
//! event stream of `GET /locks/{name}/events` ([`crate::watch`] follows the record);
//! elections' long-poll and stream are the same, with views of their own.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;

use super::error::CommonErrors;
use super::extract::LockPath;
use super::guard::Caller;
use super::terms::parse_duration_param;
use super::view::LockView;
use super::{ApiError, AppState};
use crate::domain::LockName;
use crate::watch::{Event, EventKind, Seen, Watches};

/// How often a stream sends a comment when nothing happens: well within the 60 s
/// idle timeout of common load balancers.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a stream's client waits before reconnecting (the stream's `retry`).
pub(super) const RECONNECT: Duration = Duration::from_secs(1);

/// The header a reconnecting event stream sends with the last id it received.
pub(super) const LAST_EVENT_ID: &str = "last-event-id";

/// Query parameters of status, for a long-poll.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// The `version` last seen: the answer waits (up to `wait`) until the lock's
    /// version is another.
    #[param(pattern = r"^[0-9]{1,19}$")]
    pub(super) after: Option<String>,
    /// How long to wait for a change after `after` (default 0; cut to the server's
    /// `FENCELOCK_MAX_WAIT`).
    #[param(pattern = r"^[0-9]{1,9}(ms|s|m|h)?$")]
    pub(super) wait: Option<String>,
}

pub(super) fn version(field: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::InvalidRequest(format!(
            "{field} {raw:?} is not a version; expected the whole number a lock's view carries \
             as `version`"
        ))
    })
}

/// The long-poll of a lock: the lock once its view version is not `after`, or when
/// `wait` runs out (then as it is, `after`'s version still); `Some(None)` when it has
/// no record. `None` for a plain status: without `after` or `wait`, or when the
/// watch could not read the lock in the whole wait (the status read then says why).
pub(super) async fn long_poll(
    app: &AppState,
    caller: &Caller,
    name: &LockName,
    query: StatusQuery,
) -> Result<Option<Option<LockView>>, ApiError> {
    long_poll_of(app, caller, &app.watches, name, query, |seen| {
        seen.lock
            .clone()
            .map(|lock| super::locks::status_view(app, lock))
    })
    .await
}

/// The long-poll of `name` as `watches` follow it: what `view` makes of its state
/// once its version is not `after`, or when `wait` runs out; `None` for a plain read
/// (no `after` or `wait`, or nothing read in the whole wait).
pub(super) async fn long_poll_of<T>(
    app: &AppState,
    caller: &Caller,
    watches: &Watches,
    name: &LockName,
    query: StatusQuery,
    view: impl Fn(&Seen) -> T,
) -> Result<Option<T>, ApiError> {
    let wait = parse_duration_param("wait", query.wait.as_deref())?;
    let Some(after) = query.after.as_deref() else {
        if wait.is_some() {
            return Err(ApiError::InvalidRequest(
                "wait is given without after; a long-poll needs the version last seen, as \
                 ?after=<version>&wait=30s"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let after = version("after", after)?;
    let wait = wait.unwrap_or_default().min(app.max_wait);
    if wait.is_zero() {
        return Ok(None);
    }
    let _slot = app.guard.wait_slot(caller)?;
    let mut latest = watches.subscribe(name, None).latest;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let changed = {
            let seen = latest.borrow_and_update();
            seen.as_ref()
                .filter(|seen| seen.version != after)
                .map(&view)
        };
        if let Some(view) = changed {
            return Ok(Some(view));
        }
        match tokio::time::timeout_at(deadline, latest.changed()).await {
            Ok(Ok(())) => {}
            // The wait ran out, or the server is stopping: the state as last read.
            Ok(Err(_)) | Err(_) => {
                let seen = latest.borrow().clone();
                return Ok(seen.as_ref().map(&view));
            }
        }
    }
}

#[utoipa::path(get, path = "/locks/{name}/events", tag = "locks",
    params(LockPath,
        ("Last-Event-ID" = Option<u64>, Header,
            description = "The last event id received, when reconnecting: the events after it follow, or a `gap`")),
    responses(
        (status = 200, description = "A `text/event-stream`: `state` first, then one event per change \
            (`acquired`, `renewed`, `updated`, `released`, `reserved`, `expired`, `deleted`; `gap` for \
            changes not seen), each with the lock's view as data (with `waiters`, as the server \
            that sends it counts them when it sends it) and its version as id; a comment every \
            15 s", content_type = "text/event-stream"),
        CommonErrors,
    ))]
/// `GET /locks/{name}/events`: the lock's changes as server-sent events.
pub async fn events(
    State(app): State<AppState>,
    LockPath(name): LockPath,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let watches = app.watches.clone();
    event_stream(&watches, name, &headers, move |name, event| {
        let data = event.lock.as_ref().map(|lock| {
            let mut view = LockView::new(lock.clone(), event.at, &app.policy)
                .with_waiters(app.waiters.waiting_for([name])[0]);
            view.version = event.version.unwrap_or(view.version);
            serde_json::to_value(view).unwrap_or_default()
        });
        sse_event(name, event, event.kind.as_str(), data)
    })
}

/// The stream of `name` as `watches` follow it, from what `headers` say was last
/// received: each event as `render` writes it.
pub(super) fn event_stream<R>(
    watches: &Watches,
    name: LockName,
    headers: &HeaderMap,
    render: R,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<R>>, ApiError>
where
    R: Fn(&LockName, &Event) -> SseEvent + Send + 'static,
{
    let last = headers
        .get(LAST_EVENT_ID)
        .map(|raw| {
            let raw = raw.to_str().map_err(|_| {
                ApiError::InvalidRequest("Last-Event-ID is not text; expected a version".into())
            })?;
            version("Last-Event-ID", raw.trim())
        })
        .transpose()?;
    let subscription = watches.subscribe(&name, last);
    let current = subscription.latest.borrow().clone();
    // What the stream begins with. Before the first read of the name there is
    // nothing to say yet: its `state` event comes as the first live one.
    let first: Vec<Event> = match (current, last) {
        (None, _) => Vec::new(),
        (Some(seen), None) => vec![Event::state(&seen)],
        (Some(seen), Some(last)) if seen.version == last => Vec::new(),
        (Some(seen), Some(_)) => subscription
            .missed
            .unwrap_or_else(|| vec![Event::gap(None), Event::state(&seen)]),
    };
    let live = stream::unfold(
        (subscription.events, subscription.latest),
        |(mut events, latest)| async move {
            let batch = match events.recv().await {
                Ok(event) => vec![event],
                // This stream fell behind: say how far, then where the lock is.
                Err(RecvError::Lagged(missed)) => {
                    let mut batch = vec![Event::gap(Some(missed))];
                    batch.extend(latest.borrow().as_ref().map(Event::state));
                    batch
                }
                // The server is stopping.
                Err(RecvError::Closed) => return None,
            };
            Some((stream::iter(batch), (events, latest)))
        },
    )
    .flatten();
    let events = stream::iter(first)
        .chain(live)
        .map(move |event| Ok(render(&name, &event)));
    let hello =
        stream::once(async { Ok(SseEvent::default().retry(RECONNECT).comment("fencelock")) });
    Ok(Sse::new(hello.chain(events)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One event as a stream sends it: named `kind`, its version as the id, and `data`
/// as of the change (or what the gap or deletion says, without it).
pub(super) fn sse_event(
    name: &LockName,
    event: &Event,
    kind: &str,
    data: Option<serde_json::Value>,
) -> SseEvent {
    let data = match (&event.kind, data) {
        (EventKind::Gap, _) => json!({ "name": name.as_str(), "missed": event.missed }),
        (_, None) => json!({ "name": name.as_str(), "version": event.version }),
        (_, Some(data)) => data,
    };
    let sse = SseEvent::default().event(kind).data(data.to_string());
    match event.version {
        Some(version) => sse.id(version.to_string()),
        None => sse,
    }
}

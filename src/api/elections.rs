//! Leader election under `/elections`. An election is kept as a lock is, in records
//! of its own ([`crate::store::Space::Elections`]): the leader is the holder, its
//! term the fence (so a term only grows, and anything a leader writes downstream can
//! be fenced by it), its value the body. Campaign is a waiting acquire that sets the
//! value; proclaim an update of the body by term; resign a release, which wakes the
//! next candidate waiting on this server at once. A candidacy is nothing but the
//! waiting request: it ends with the candidate's own wait, and leaves nothing behind.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{CommonErrors, ErrorBody, ProofErrors};
use super::extract::{ElectionPath, NonceHeader, OptionalJson, Params, TermPath, TextBody};
use super::guard::Caller;
use super::terms::{
    AcquireQuery, ReleaseQuery, RenewQuery, Terms, check_details, holder, now, renew_ttl,
    retry_after_secs, terms, ttl_value, wait_value,
};
use super::view::{Released, rfc3339, with_fence};
use super::watch::{StatusQuery, event_stream, long_poll_of, sse_event};
use super::{ApiError, AppState};
use crate::domain::{Fence, Kind, LeasePolicy, Lock, LockName, Millis, format_duration};
use crate::store::{AcquireOutcome, AcquireRequest, HolderOutcome};
use crate::watch::EventKind;

/// An election as everyone sees it: who leads now, or that nobody does.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ElectionView {
    pub name: String,
    /// Grows with every change, as a lock's `version` does; `GET
    /// /elections/{name}?after=<version>&wait=30s` waits for the next one. 0 for an
    /// election that has no record.
    pub version: u64,
    /// The leader, while its lease is live; `null` when nobody leads (never led,
    /// resigned, or its lease ran out).
    pub leader: Option<Leader>,
}

/// The leader of an election. Never its nonce.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Leader {
    /// The leader's term: its fence, greater than every term before it.
    pub term: Fence,
    /// What the leader proclaims (its address, say): set by campaign, changed by
    /// proclaim.
    pub value: String,
    pub owner: Option<String>,
    /// When this term began.
    pub since: String,
    pub heartbeat_time: String,
    /// When the lease ends unless renewed.
    pub expire_time: String,
    /// The lease length, as `30s` or `1500ms`.
    pub ttl: String,
}

impl ElectionView {
    /// The election `name` whose record is `lock` (if any), at time `now`.
    pub fn new(name: &LockName, lock: Option<Lock>, now: Millis, policy: &LeasePolicy) -> Self {
        let version = lock
            .as_ref()
            .map_or(0, |lock| lock.view_version(policy.lapsed_at(lock), now));
        Self {
            name: name.to_string(),
            version,
            leader: lock.filter(|lock| lock.is_held(now)).map(|lock| Leader {
                term: lock.fence,
                value: lock.body,
                owner: lock.owner,
                since: rfc3339(lock.acquired_at),
                heartbeat_time: rfc3339(lock.heartbeat_at),
                expire_time: rfc3339(lock.expires_at),
                ttl: format_duration(lock.ttl),
            }),
        }
    }
}

impl IntoResponse for ElectionView {
    fn into_response(self) -> Response {
        with_fence(self.leader.as_ref().map(|leader| leader.term), Json(self))
    }
}

type ElectionResult = Result<ElectionView, ApiError>;

/// JSON body of campaign; every field optional, `nonce` required here or in the query.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
    /// A value unique to this candidate, 1–64 printable characters: a campaign
    /// retried with it while it leads is granted again (under a new term).
    #[schema(pattern = r"^[!-~]{1,64}$")]
    nonce: Option<String>,
    /// What the candidate proclaims once it leads (default empty).
    value: Option<String>,
    /// The leader's lease length, as a lock's `ttl`.
    #[serde(default, deserialize_with = "ttl_value")]
    #[schema(value_type = Option<String>, example = "15s")]
    ttl: Option<Duration>,
    /// How long to stand as a candidate before answering `election_led`.
    #[serde(default, deserialize_with = "wait_value")]
    #[schema(value_type = Option<String>, example = "50s")]
    wait: Option<Duration>,
    /// Who the candidate is, shown with the leader; 1–255 bytes.
    owner: Option<String>,
}

#[utoipa::path(post, path = "/elections/{name}", tag = "elections",
    params(ElectionPath, AcquireQuery),
    request_body(content = Option<CampaignBody>, content_type = "application/json",
        description = "The candidate's value, lease and wait (nonce, ttl and wait may come in the query)"),
    responses(
        (status = 200, description = "The candidate leads, under a new term (also in the `Fence` header)",
            body = ElectionView),
        CommonErrors,
        (status = 409, description = "`election_led`: another candidate leads, and the wait ran out",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds until its lease may end"))),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
    ))]
/// `POST /elections/{name}`: campaign, waiting up to `wait` to lead.
pub async fn campaign(
    State(app): State<AppState>,
    caller: Caller,
    ElectionPath(name): ElectionPath,
    Params(query): Params<AcquireQuery>,
    OptionalJson(body): OptionalJson<CampaignBody>,
) -> ElectionResult {
    let body = body.unwrap_or_default();
    let Terms { nonce, ttl, wait } = terms(
        &app,
        &format!("election \"{name}\""),
        (query.nonce, query.ttl, query.wait),
        body.nonce,
        body.ttl,
        body.wait,
    )?;
    check_details(body.owner.as_deref(), None)?;
    let request = AcquireRequest {
        name: name.clone(),
        nonce,
        ttl,
        owner: body.owner,
        metadata: None,
        body: Some(body.value.unwrap_or_default()),
    };
    let elections = &app.elections;
    let wait = wait.min(app.max_wait);
    let outcome = if wait.is_zero() {
        elections.store.acquire(&request).await?
    } else {
        let _slot = app.guard.wait_slot(&caller)?;
        elections
            .waiters
            .acquire(request, wait)
            .await
            .map_err(|err| ApiError::waited(err, &name, || format!("election \"{name}\"")))?
    };
    match outcome {
        AcquireOutcome::Granted(lock, _) => Ok(view(&app, &name, Some(lock))),
        AcquireOutcome::Held(leader) => Err(ApiError::ElectionLed {
            retry_after_secs: retry_after_secs(app.policy.free_at(&leader), now(&app)),
            name,
            term: leader.fence,
            expires_at: leader.expires_at,
        }),
    }
}

fn view(app: &AppState, name: &LockName, lock: Option<Lock>) -> ElectionView {
    ElectionView::new(name, lock, now(app), &app.policy)
}

fn led(app: &AppState, name: LockName, term: Fence, outcome: HolderOutcome) -> ElectionResult {
    match outcome {
        Ok(lock) => Ok(view(app, &name, Some(lock))),
        Err(reason) => Err(ApiError::not_leader(name, term, reason)),
    }
}

#[utoipa::path(post, path = "/elections/{name}/{term}", tag = "elections",
    params(TermPath, RenewQuery, NonceHeader),
    request_body(content = String, content_type = "text/plain", description = "The new value: UTF-8 text"),
    responses(
        (status = 200, description = "The leader's new value; its lease extended", body = ElectionView),
        CommonErrors,
        (status = 409, description = "`not_leader`: the term does not lead the election", body = ErrorBody),
        ProofErrors,
        (status = 413, description = "`body_too_large`", body = ErrorBody),
    ))]
/// `POST /elections/{name}/{term}` with the new value as the body: proclaim.
pub async fn proclaim(
    State(app): State<AppState>,
    TermPath(name, term): TermPath,
    Params(query): Params<RenewQuery>,
    headers: HeaderMap,
    TextBody(value): TextBody,
) -> ElectionResult {
    let ttl = renew_ttl(&app, &query)?;
    let leader = holder(&app, Kind::Election, &name, term, &headers, query.nonce)?;
    let outcome = app
        .elections
        .store
        .update_body(&name, &leader, &value, ttl)
        .await?;
    led(&app, name, term, outcome)
}

#[utoipa::path(post, path = "/elections/{name}/{term}/heartbeat", tag = "elections",
    params(TermPath, RenewQuery, NonceHeader),
    responses(
        (status = 200, description = "The leader's lease, extended", body = ElectionView),
        CommonErrors,
        (status = 409, description = "`not_leader`: the term does not lead the election", body = ErrorBody),
        ProofErrors,
    ))]
/// `POST /elections/{name}/{term}/heartbeat[?ttl=…]`: the leader renews its lease.
pub async fn heartbeat(
    State(app): State<AppState>,
    TermPath(name, term): TermPath,
    Params(query): Params<RenewQuery>,
    headers: HeaderMap,
) -> ElectionResult {
    let ttl = renew_ttl(&app, &query)?;
    let leader = holder(&app, Kind::Election, &name, term, &headers, query.nonce)?;
    let outcome = app.elections.store.heartbeat(&name, &leader, ttl).await?;
    led(&app, name, term, outcome)
}

#[utoipa::path(delete, path = "/elections/{name}/{term}", tag = "elections",
    params(TermPath, ReleaseQuery, NonceHeader),
    responses(
        (status = 200, description = "Whether the term led, and now has resigned", body = Released),
        CommonErrors,
        ProofErrors,
    ))]
/// `DELETE /elections/{name}/{term}`: resign; idempotent.
pub async fn resign(
    State(app): State<AppState>,
    TermPath(name, term): TermPath,
    Params(query): Params<ReleaseQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let leader = holder(&app, Kind::Election, &name, term, &headers, query.nonce)?;
    let release = app
        .elections
        .store
        .release(&name, &leader)
        .await?
        .map_err(|reason| ApiError::not_leader(name.clone(), term, reason))?;
    if release.released {
        app.elections.waiters.released(&name);
    }
    Ok(Released::answer(release))
}

#[utoipa::path(get, path = "/elections/{name}", tag = "elections",
    params(ElectionPath, StatusQuery),
    responses(
        (status = 200, description = "Who leads, or `leader: null`; with `after` and `wait`, once the \
            election's `version` is not `after`, or as it is when the wait runs out", body = ElectionView),
        CommonErrors,
    ))]
/// `GET /elections/{name}[?after=<version>&wait=30s]`: the leader now.
pub async fn leader(
    State(app): State<AppState>,
    caller: Caller,
    ElectionPath(name): ElectionPath,
    Params(query): Params<StatusQuery>,
) -> ElectionResult {
    let elections = &app.elections;
    let polled = long_poll_of(&app, &caller, &elections.watches, &name, query, |seen| {
        let mut view = view(&app, &name, seen.lock.clone());
        view.version = seen.version;
        view
    })
    .await?;
    match polled {
        Some(view) => Ok(view),
        None => Ok(view(&app, &name, elections.store.get(&name).await?)),
    }
}

#[utoipa::path(get, path = "/elections/{name}/events", tag = "elections",
    params(ElectionPath,
        ("Last-Event-ID" = Option<u64>, Header,
            description = "The last event id received, when reconnecting: the events after it follow, or a `gap`")),
    responses(
        (status = 200, description = "A `text/event-stream` of the leaders: `state` first, then one \
            event per change (`elected`, `renewed`, `proclaimed`, `resigned`, `expired`, `deleted`; \
            `gap` for changes not seen), each with the election's view as data (`leader: null` when \
            nobody leads) and its version as id; a comment every 15 s",
            content_type = "text/event-stream"),
        CommonErrors,
    ))]
/// `GET /elections/{name}/events`: observe the election's leaders.
pub async fn observe(
    State(app): State<AppState>,
    ElectionPath(name): ElectionPath,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>, ApiError> {
    let policy = app.policy;
    event_stream(
        &app.elections.watches,
        name,
        &headers,
        move |name, event| {
            let data = (event.kind != EventKind::Gap).then(|| {
                let mut view = ElectionView::new(name, event.lock.clone(), event.at, &policy);
                view.version = event.version.unwrap_or(view.version);
                serde_json::to_value(view).unwrap_or_default()
            });
            sse_event(name, event, kind_name(event.kind), data)
        },
    )
}

/// An event's name in an election's stream.
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Acquired => "elected",
        EventKind::Updated => "proclaimed",
        EventKind::Released => "resigned",
        EventKind::State
        | EventKind::Renewed
        | EventKind::Reserved
        | EventKind::Expired
        | EventKind::Deleted
        | EventKind::Gap => kind.as_str(),
    }
}

//! The HTTP API: routes, extractors, responses and errors. Handlers parse, call the
//! store and map its outcome; no SDK type reaches this module.

mod admin;
mod code;
mod elections;
mod error;
mod extract;
mod gorilla;
mod groups;
mod guard;
mod list;
mod locks;
mod ops;
pub mod request_log;
mod semaphores;
mod terms;
#[cfg(test)]
mod tests;
mod ui;
mod view;
mod watch;

use std::sync::LazyLock;

use axum::BoxError;
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderName;
use axum::http::{Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use std::time::Instant;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::LatencyUnit;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use admin::{AdminDone, AdminRights, SlotDone};
pub use code::ErrorCode;
pub use elections::{ElectionView, Leader};
pub use error::{ApiError, ErrorBody, LockError, Unreadable};
pub use groups::{GroupReleased, GroupReleasedLock, GroupView};
pub use guard::{
    Caller, MAX_HEAD_BYTES, MAX_HEADER_BYTES, MAX_HEADER_FIELDS, MAX_URI_BYTES, Security,
};
pub use list::LockPage;
pub use terms::{MAX_JSON_DEPTH, NONCE_HEADER};
pub use ui::CONTENT_SECURITY_POLICY;
pub use view::{FENCE_HEADER, LockView, Released};

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::domain::{LeasePolicy, TtlBounds};
use crate::listing::Listings;
use crate::metrics::Metrics;
use crate::semaphore_watch::SemaphoreWatches;
use crate::store::DynamoStore;
use crate::wait::{Backoff, DEFAULT_MAX_WAITERS_PER_LOCK, Groups, Semaphores, Waiters};
use crate::watch::{WatchSettings, Watches};

/// The header that carries a request's id: taken from the request, or generated.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler shares: one [`Shared`] behind an `Arc`, so that the clone
/// axum makes for each extractor and middleware of every request is one count,
/// not one per waiting queue, watch and store inside it.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The server's state, as [`AppState`] shares it.
#[derive(Debug, Clone)]
pub struct Shared {
    pub store: DynamoStore,
    /// The clock the store decides by, for what the server reads of time.
    pub clock: Arc<dyn Clock>,
    /// The metrics of the server and of its store.
    pub metrics: Arc<Metrics>,
    /// When a lease that ended may be taken over, as the store decides it.
    pub policy: LeasePolicy,
    /// The waiting acquires of this server, of locks and of semaphores.
    pub waiters: Waiters,
    pub semaphore_waiters: Waiters<Semaphores>,
    pub group_waiters: Waiters<Groups>,
    /// The watches of this server: long-polls and event streams.
    pub watches: Watches,
    /// Elections: their records, campaigns waiting and watches, apart from locks'.
    pub elections: ElectionState,
    /// The pages of listings followed on this server.
    pub listings: Listings,
    /// The semaphores watched on this server.
    pub semaphore_watches: SemaphoreWatches,
    pub ttl: TtlBounds,
    /// The longest a request may wait for a lock; longer waits are cut to this.
    pub max_wait: Duration,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
    pub limits: Limits,
    /// Who may call, and the limits kept per token.
    pub guard: Arc<guard::Guard>,
    /// Which requests get a line in the log.
    pub request_log: request_log::RequestLog,
}

/// Limits on the server as a whole.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest a request may take; longer than the longest wait.
    pub request_timeout: Duration,
    /// Requests served at once (waiting acquires included); more are answered 503.
    pub max_concurrent: usize,
    /// Waiting acquires one lock may have at once on this server; more are answered 429.
    pub max_waiters_per_lock: usize,
    /// How often a waiting acquire retries a name held through another server.
    pub wait_backoff: Backoff,
    /// How long a request's line and headers may take to arrive, from their first
    /// byte (and a new connection's first request, from its opening).
    pub header_timeout: Duration,
    /// How long a connection with no request in progress is kept open.
    pub idle_timeout: Duration,
    /// How watched locks are read.
    pub watch: WatchSettings,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(90),
            max_concurrent: 10_000,
            max_waiters_per_lock: DEFAULT_MAX_WAITERS_PER_LOCK,
            wait_backoff: Backoff::default(),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            watch: WatchSettings::default(),
        }
    }
}

/// What a server keeps for elections: a store of election records (told to the
/// election watches of its writes), the campaigns waiting, and the observers.
#[derive(Debug, Clone)]
pub struct ElectionState {
    pub store: DynamoStore,
    pub waiters: Waiters,
    pub watches: Watches,
}

impl ElectionState {
    fn new(store: &DynamoStore, limits: &Limits) -> Self {
        let elections = store.elections();
        let watches = Watches::new(elections.clone(), limits.watch);
        let store = elections.on_write(watches.hook());
        Self {
            waiters: Waiters::with_backoff(
                store.clone(),
                limits.max_waiters_per_lock,
                limits.wait_backoff,
            ),
            watches,
            store,
        }
    }

    /// Ends every campaign waiting and every observer: the server is stopping.
    pub fn close(&self) {
        self.waiters.close();
        self.watches.close();
    }
}

impl AppState {
    /// The state of a server on `store`, with no one waiting yet.
    pub fn new(store: DynamoStore, ttl: TtlBounds, max_wait: Duration, max_body: usize) -> Self {
        let limits = Limits::default();
        let (watches, listings, semaphore_watches, store) = watching(store, limits.watch);
        Self(Arc::new(Shared {
            elections: ElectionState::new(&store, &limits),
            listings,
            semaphore_watches,
            waiters: Waiters::new(store.clone(), limits.max_waiters_per_lock),
            semaphore_waiters: Waiters::new(store.clone(), limits.max_waiters_per_lock),
            group_waiters: Waiters::new(store.clone(), limits.max_waiters_per_lock),
            watches,
            clock: store.clock().clone(),
            metrics: store.metrics().clone(),
            policy: store.policy(),
            store,
            ttl,
            max_wait,
            max_body,
            limits,
            guard: Arc::new(guard::Guard::new(Security::default())),
            request_log: request_log::RequestLog::default(),
        }))
    }

    /// The same state with other server limits (and no one waiting or watching yet).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        let state = Arc::make_mut(&mut self.0);
        (
            state.watches,
            state.listings,
            state.semaphore_watches,
            state.store,
        ) = watching(state.store.clone(), limits.watch);
        let (store, most, backoff) = (
            &state.store,
            limits.max_waiters_per_lock,
            limits.wait_backoff,
        );
        state.waiters = Waiters::with_backoff(store.clone(), most, backoff);
        state.semaphore_waiters = Waiters::with_backoff(store.clone(), most, backoff);
        state.group_waiters = Waiters::with_backoff(store.clone(), most, backoff);
        state.elections = ElectionState::new(store, &limits);
        state.limits = limits;
        self
    }

    /// The same state, logging the requests `log` says.
    pub fn with_request_log(mut self, log: request_log::RequestLog) -> Self {
        Arc::make_mut(&mut self.0).request_log = log;
        self
    }

    /// The same state with tokens, holder proof and per-token limits.
    pub fn with_security(mut self, security: Security) -> Self {
        Arc::make_mut(&mut self.0).guard = Arc::new(guard::Guard::new(security));
        self
    }
}

/// Watches, followed listings and watched semaphores reading `store`, and the store
/// that tells them of its writes.
fn watching(
    store: DynamoStore,
    settings: WatchSettings,
) -> (Watches, Listings, SemaphoreWatches, DynamoStore) {
    let watches = Watches::new(store.clone(), settings);
    let listings = Listings::new(store.clone(), settings);
    let semaphores = SemaphoreWatches::new(store.clone(), settings);
    let hooks = [watches.hook(), listings.hook(), semaphores.hook()];
    let store = store.on_write(Arc::new(move |name, written| {
        for hook in &hooks {
            hook(name, written);
        }
    }));
    (watches, listings, semaphores, store)
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let (max_body, limits) = (state.max_body, state.limits);
    let request_log = state.request_log;
    let (router, _) = documented_routes().split_for_parts();
    let router = router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |err: BoxError| async move {
                    over_limit(err, limits)
                }))
                .load_shed()
                // One limit for the whole server: a plain concurrency limit would be
                // cloned for each route.
                .layer(GlobalConcurrencyLimitLayer::new(limits.max_concurrent))
                .timeout(limits.request_timeout),
        )
        .layer(middleware::from_fn_with_state(state.clone(), guard::gate))
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        // Outermost last: an id is set (or kept) first, then the log reads it, and
        // the response echoes it.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID));
    let router = match request_log {
        request_log::RequestLog::All => router.layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(LatencyUnit::Micros),
                )
                .on_failure(()),
        ),
        request_log::RequestLog::Failed => {
            router.layer(middleware::from_fn(request_log::log_failed))
        }
        request_log::RequestLog::Off => router,
    };
    router
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// The OpenAPI document of [`router`], served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented_routes().into_openapi()
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "fencelock",
        description = "Named locks with leases and fences, over HTTP, on DynamoDB."
    ),
    tags(
        (name = "locks", description = "The glock-style API"),
        (name = "semaphores", description = "Counting semaphores: at most `limit` holders at once"),
        (name = "lock-groups", description = "Several locks taken, renewed and released together, all or nothing"),
        (name = "elections", description = "Leader election: campaign, proclaim, leader, observe, resign; the term is the leader's fence"),
        (name = "gorilla", description = "The Gorilla-compatible API"),
        (name = "admin", description = "Operators' break-glass actions: force-release, disable, enable, ask-release; a token with the admin right"),
        (name = "operations", description = "The service itself"),
        (name = "ui", description = "The web page, and the files it loads"),
    )
)]
struct ApiDoc;

/// Every route with its OpenAPI description: a route cannot be added without one.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list::list))
        .routes(routes!(locks::acquire, locks::status))
        .routes(routes!(locks::update, locks::release, locks::check_fence))
        .routes(routes!(locks::heartbeat))
        .routes(routes!(watch::events))
        .routes(routes!(list::follow))
        .routes(routes!(elections::campaign, elections::leader))
        .routes(routes!(elections::proclaim, elections::resign))
        .routes(routes!(elections::heartbeat))
        .routes(routes!(elections::observe))
        .routes(routes!(groups::acquire))
        .routes(routes!(groups::heartbeat))
        .routes(routes!(groups::release))
        .routes(routes!(semaphores::list))
        .routes(routes!(semaphores::acquire, semaphores::status))
        .routes(routes!(semaphores::release, semaphores::check_fence))
        .routes(routes!(semaphores::heartbeat))
        .routes(routes!(semaphores::events))
        .routes(routes!(admin::rights))
        .routes(routes!(admin::force_release))
        .routes(routes!(admin::disable))
        .routes(routes!(admin::enable))
        .routes(routes!(admin::ask_release))
        .routes(routes!(admin::force_release_slot))
        .routes(routes!(gorilla::acquire))
        .routes(routes!(gorilla::status, gorilla::extend, gorilla::release))
        .routes(routes!(openapi_json))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ui::index))
        .routes(routes!(ui::lock_page))
        .routes(routes!(ui::semaphore_page))
        .routes(routes!(ui::election_page))
        .routes(routes!(ui::asset))
}

/// This document, as JSON.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
        content_type = "application/json")))]
async fn openapi_json() -> impl IntoResponse {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        serde_json::to_string(&openapi()).unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// The span of one request: every log line of the request carries its fields. The
/// lock and fence are recorded once known ([`request_log::note_lock`]).
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
        lock = tracing::field::Empty,
        fence = tracing::field::Empty,
        token = tracing::field::Empty,
    )
}

/// The answer to a request the server limits stopped.
fn over_limit(err: BoxError, limits: Limits) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::OverLimit(format!(
            "the request took longer than the server's limit of {}",
            crate::domain::format_duration(limits.request_timeout)
        ))
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        ApiError::OverLimit(format!(
            "the server is answering its limit of {} requests at once; retry shortly",
            limits.max_concurrent
        ))
    } else {
        ApiError::Internal(format!("the request failed: {err}"))
    }
}

/// Counts every request in the metrics, by method, route template and status.
async fn count_request(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    app.metrics
        .http(method.as_str(), &route, status, started.elapsed());
    response
}

async fn route_not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

//! The HTTP API: routes, extractors, responses and errors. Handlers parse, call the
//! store and map its outcome; no SDK type reaches this module.

mod error;
mod extract;
mod gorilla;
mod list;
mod locks;
mod view;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use view::LockView;

use std::time::Duration;

use crate::domain::TtlBounds;
use crate::store::DynamoStore;
use crate::wait::Waiters;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: DynamoStore,
    /// The waiting acquires of this server.
    pub waiters: Waiters,
    pub ttl: TtlBounds,
    /// The longest a request may wait for a lock; longer waits are cut to this.
    pub max_wait: Duration,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
}

impl AppState {
    /// The state of a server on `store`, with no one waiting yet.
    pub fn new(store: DynamoStore, ttl: TtlBounds, max_wait: Duration, max_body: usize) -> Self {
        Self {
            waiters: Waiters::new(store.clone()),
            store,
            ttl,
            max_wait,
            max_body,
        }
    }
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route("/locks", get(list::list))
        .route(
            "/locks/{name}",
            post(locks::acquire).put(locks::acquire).get(locks::status),
        )
        .route(
            "/locks/{name}/{fence}",
            post(locks::update)
                .put(locks::update)
                .delete(locks::release)
                .get(locks::check_fence),
        )
        .route(
            "/locks/{name}/{fence}/heartbeat",
            post(locks::heartbeat).put(locks::heartbeat),
        )
        .route("/api/v1/locks/{resource}", post(gorilla::acquire))
        .route(
            "/api/v1/locks/{resource}/{token}",
            get(gorilla::status)
                .put(gorilla::extend)
                .delete(gorilla::release),
        )
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

fn request_span(request: &Request) -> tracing::Span {
    // Spans are named by route template, never by lock name, so they stay few.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::info_span!("request", method = %request.method(), route)
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

//! The routes that say how the service is doing: liveness and readiness.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::{ApiError, AppState};

/// What `/metrics` answers: the Prometheus text format, version 0.0.4.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves requests", body = Health)))]
/// `GET /healthz`: the process serves; it asks nothing of DynamoDB.
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "DynamoDB answers, the table is active, and this server's clock \
            agrees with DynamoDB's within the skew margin", body = Health),
        (status = 503, description = "`unavailable`, with the reason", body = ErrorBody,
            headers(("Retry-After" = u64))),
    ))]
/// `GET /readyz`: DynamoDB answers, and the lock table exists and is active.
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Health>, ApiError> {
    // The check's own request also measures the clock anew.
    app.store.check_ready().await.map_err(ApiError::NotReady)?;
    if let Some(problem) = app.store.clock_check().and_then(|check| check.problem()) {
        return Err(ApiError::NotReady(problem));
    }
    Ok(Json(Health { status: "ready" }))
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Every metric, in the Prometheus text format",
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, description = "`unauthorized`: FENCELOCK_METRICS_TOKEN is set and the request does not carry it",
            body = ErrorBody, headers(("WWW-Authenticate" = String))),
    ))]
/// `GET /metrics`: counters, gauges and latency histograms for Prometheus.
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        app.metrics.render(),
    )
}

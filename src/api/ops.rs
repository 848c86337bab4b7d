//! The routes that say how the service is doing: liveness and readiness.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::{ApiError, AppState};

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
        (status = 200, description = "DynamoDB answers and the table is active", body = Health),
        (status = 503, description = "`unavailable`, with the reason", body = ErrorBody,
            headers(("Retry-After" = u64))),
    ))]
/// `GET /readyz`: DynamoDB answers, and the lock table exists and is active.
pub async fn readyz(State(app): State<AppState>) -> Result<Json<Health>, ApiError> {
    app.store
        .check_ready()
        .await
        .map(|()| Json(Health { status: "ready" }))
        .map_err(ApiError::NotReady)
}

//! Liveness and readiness probes, outside `/api/v1` and without authentication.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::state::AppState;
use crate::error::{ApiError, ApiResult};

/// Below this much free space on the data folder's disk the service reports not ready.
const MIN_FREE_BYTES: u64 = 64 << 20;

/// `/healthz` and `/readyz`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// A probe's answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProbeStatus {
    /// `ok` (alive) or `ready`.
    status: &'static str,
    /// squeeze version (liveness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
}

/// Liveness
///
/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "Alive", body = ProbeStatus))
)]
async fn healthz() -> Json<ProbeStatus> {
    Json(ProbeStatus {
        status: "ok",
        version: Some(env!("CARGO_PKG_VERSION")),
    })
}

/// Readiness
///
/// The process can serve: PostgreSQL answers within two seconds and has not refused a write
/// for lack of disk space within the last 30 s, and the data folder's disk has room.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready", body = ProbeStatus),
        (status = 503, description = "The database is not reachable, or a disk is full"),
    )
)]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<ProbeStatus>> {
    if state.database_disk_recently_full() {
        return Err(ApiError::unavailable(format!(
            "the database's disk was full within the last {} s",
            crate::api::state::DISK_FULL_MEMORY.as_secs()
        )));
    }
    if state
        .blobs
        .free_bytes()
        .is_some_and(|free| free < MIN_FREE_BYTES)
    {
        return Err(ApiError::unavailable(format!(
            "the data folder's disk has less than {} MiB free",
            MIN_FREE_BYTES >> 20
        )));
    }
    let probe = sqlx::query_scalar::<_, i32>("select 1").fetch_one(&state.db);
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(_)) => Ok(Json(ProbeStatus {
            status: "ready",
            version: None,
        })),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness probe failed");
            Err(ApiError::unavailable("the database is not reachable"))
        }
        Err(_) => Err(ApiError::unavailable(
            "the database did not answer within 2 s",
        )),
    }
}

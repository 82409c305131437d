//! `/demo`: installs the bundled demo (a digits classifier, its evaluation set and one
//! evaluated job per variant) into the caller's team.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::state::AppState;
use crate::auth::Caller;
use crate::demo::{self, Installed};
use crate::error::ApiResult;
use crate::store::models::Owner;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(install_demo))
}

/// Install the demo
///
/// Uploads a small bundled classifier (handwritten digits, 98 % accurate) and its held-out
/// evaluation set into the team, and submits one job per variant (int8, int4 g32, Q4_0,
/// 16-cluster weight sharing, 50 % and 90 % pruning), each evaluated against the original with
/// a 1-point accuracy budget. Each call installs a fresh copy.
#[utoipa::path(
    post,
    path = "/demo",
    tag = "datasets",
    responses((status = 201, description = "The model, the set and the queued jobs", body = Installed))
)]
async fn install_demo(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<Installed>)> {
    let owner = Owner {
        team_id: caller.team_id,
        token_id: Some(caller.token_id),
    };
    let installed = demo::install(&state.db, &state.blobs, owner, state.limits.upload_idle).await?;
    Ok((StatusCode::CREATED, Json(installed)))
}

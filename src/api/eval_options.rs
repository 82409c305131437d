//! What evaluations can report and what a job on a model can evaluate: the figures'
//! catalogue (labels, units, which way is better, how a budget reads them) and one model's
//! options (its architecture, budget metrics, the team's sets that fit). Readers take both
//! from here rather than keeping their own copies of the rules.

use axum::Json;
use axum::extract::{Path, State};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::api::state::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::eval::FigureInfo;
use crate::jobs::eval_checks::{self, EvaluationOptions};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_figures))
        .routes(routes!(model_options))
}

/// List evaluation figures
///
/// Every figure an evaluation reports, with its label, unit, which way is better and how a
/// budget (`max_drop`) on it is read.
#[utoipa::path(
    get,
    path = "/evaluation/figures",
    tag = "datasets",
    responses((status = 200, description = "The figures", body = Vec<FigureInfo>))
)]
async fn list_figures(_caller: Caller) -> Json<Vec<FigureInfo>> {
    Json(crate::eval::figure_catalogue())
}

/// A model's evaluation options
///
/// The model's architecture as evaluation recognises it, the metrics a job's budget may name
/// (the default first), whether a raw-text set can be uploaded for it, and the team's newest
/// sets with whether each fits the model and why not.
#[utoipa::path(
    get,
    path = "/models/{id}/evaluation",
    tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    responses(
        (status = 200, description = "What a job on the model can evaluate", body = EvaluationOptions),
        (status = 404, description = "No such model in the caller's team"),
    )
)]
async fn model_options(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<EvaluationOptions>> {
    eval_checks::options(&state.db, &state.blobs, caller.team_id, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("model", id))
}

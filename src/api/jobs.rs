//! `/jobs` and `/presets`: submit (idempotent), list, read, cancel. A job's event streams are in
//! `job_events`, its report and artifact files in `job_files`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::api::state::AppState;
use crate::api::{Page, page_limit};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::eval::EvalSpec;
use crate::jobs::eval_checks;
use crate::jobs::queue::{self, Job, JobFilter, NewJob, SubmitError};
use crate::jobs::recipe::{self, Preset, Recipe};
use crate::store::models;

/// Attempts a job gets unless the request says otherwise.
const DEFAULT_MAX_ATTEMPTS: i32 = 3;

/// Routes of the jobs resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_presets))
        .routes(routes!(submit_job, list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
}

/// List presets
///
/// The built-in recipes, usable by name as `preset` when submitting a job (those that need a
/// calibration set, which jobs do not take yet, are left out: `squeeze compress` runs them).
#[utoipa::path(
    get,
    path = "/presets",
    tag = "jobs",
    responses((status = 200, description = "Every preset (one page)", body = Page<Preset>))
)]
async fn list_presets(_caller: Caller) -> Json<Page<Preset>> {
    Json(Page {
        items: recipe::presets()
            .into_iter()
            .filter(|p| !p.recipe.stages.iter().any(|s| s.is_calibrated()))
            .collect(),
        next_cursor: None,
    })
}

/// A job submission: the model and exactly one of `recipe` and `preset`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SubmitRequest {
    /// The model to compress.
    model_id: Uuid,
    /// A label (at most 255 characters).
    name: Option<String>,
    /// The recipe to run.
    #[schema(value_type = Option<Recipe>)]
    recipe: Option<serde_json::Value>,
    /// The name of a preset to run instead (see `GET /presets`).
    preset: Option<String>,
    /// Attempts allowed, 1-20 (default 3); bad-input failures never retry.
    #[schema(minimum = 1, maximum = 20)]
    max_attempts: Option<i32>,
    /// Evaluate the original and the compressed model on a dataset after compressing.
    eval: Option<EvalSpec>,
}

/// Submit a job
///
/// Validates the recipe against the model's tensors and queues the job. With an
/// `Idempotency-Key` header, the same key and body return the same job; the same key with
/// another body is refused. Keys are per team.
#[utoipa::path(
    post,
    path = "/jobs",
    tag = "jobs",
    params(("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters")),
    request_body = SubmitRequest,
    responses(
        (status = 202, description = "Queued (or the job this key already made)", body = Job),
        (status = 400, description = "Bad `Idempotency-Key`"),
        (status = 404, description = "No such model in the caller's team"),
        (status = 422, description = "The request or recipe breaks a rule (`tensor` names the tensor), or the key was used with another body"),
    )
)]
async fn submit_job(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let request: SubmitRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::unprocessable(
            "bad_request_body",
            format!("the job request is not valid: {e}"),
        )
    })?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_idempotency_key",
                        "Idempotency-Key must be 1-255 visible ASCII characters",
                    )
                })?;
            Some(key.to_owned())
        }
    };
    let recipe: Recipe = match (request.recipe, request.preset.as_deref()) {
        (Some(recipe), None) => serde_json::from_value(recipe).map_err(|e| {
            ApiError::unprocessable("bad_recipe", format!("the recipe is not valid: {e}"))
        })?,
        (None, Some(name)) => recipe::preset(name)?,
        _ => {
            return Err(ApiError::unprocessable(
                "recipe_or_preset",
                "give exactly one of \"recipe\" and \"preset\"",
            ));
        }
    };
    if recipe.stages.iter().any(|s| s.is_calibrated()) {
        return Err(ApiError::unprocessable(
            "calibration_unavailable",
            "wanda and sparsegpt prune from a calibration set, which jobs do not take yet; run them with squeeze compress --calibration FILE",
        ));
    }
    let max_attempts = request.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=20).contains(&max_attempts) {
        return Err(ApiError::unprocessable(
            "bad_max_attempts",
            "max_attempts must be between 1 and 20",
        ));
    }
    if request.name.as_ref().is_some_and(|n| n.len() > 255) {
        return Err(ApiError::unprocessable(
            "bad_name",
            "a job name has at most 255 characters",
        ));
    }
    if request.name.as_ref().is_some_and(|n| n.contains('\0'))
        || request
            .eval
            .as_ref()
            .is_some_and(|e| serde_json::to_value(e).is_ok_and(|v| crate::error::holds_nul(&v)))
    {
        return Err(ApiError::nul_character("the job's name or eval section"));
    }
    let (model_sha256, tensors) = models::tensor_metas(&state.db, caller.team_id, request.model_id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", request.model_id))?;
    // Compiling patterns and matching them against thousands of tensors is CPU work, bounded
    // by the recipe's limits but kept off the async threads all the same.
    let (recipe, tensors, planned) = tokio::task::spawn_blocking(move || {
        // The job keeps the recipe as asked, with an auto format resolved; the worker plans it
        // again (the same plan) and records where a tensor got other steps, and why.
        recipe
            .plan(&tensors)
            .map(|plan| {
                let mut stored = recipe.clone();
                stored.format = plan.recipe.format;
                let planned: Vec<String> = plan.tensors.into_iter().map(|t| t.name).collect();
                (stored, tensors, planned)
            })
            .map_err(ApiError::from)
    })
    .await
    .map_err(|e| ApiError::internal(format!("recipe validation stopped: {e}")))??;
    // The upload found these; the worker would only find them after the queue.
    let non_finite = models::non_finite_tensors(&state.db, request.model_id).await?;
    if let Some(name) = planned.iter().find(|name| non_finite.contains(name)) {
        return Err(ApiError::unprocessable(
            "non_finite_weights",
            format!(
                "tensor {name:?} holds NaN or infinite values (found at upload); leave it out with ignore"
            ),
        )
        .with("tensor", name.clone()));
    }
    if let Some(spec) = &request.eval {
        eval_checks::check_spec(
            &state.db,
            &state.blobs,
            caller.team_id,
            request.model_id,
            &tensors,
            spec,
        )
        .await?;
    }
    let new = NewJob {
        team_id: caller.team_id,
        created_by: Some(caller.token_id),
        model_id: request.model_id,
        model_sha256,
        name: request.name,
        recipe,
        eval: request.eval,
        max_attempts,
        idempotency: key.map(|k| (k, Sha256::digest(&body).to_vec())),
    };
    match queue::submit(&state.db, new).await {
        Ok((job, _replayed)) => Ok((StatusCode::ACCEPTED, Json(job))),
        Err(SubmitError::KeyReused(key)) => Err(ApiError::unprocessable(
            "idempotency_key_reused",
            format!("Idempotency-Key {key:?} was already used with a different request body"),
        )),
        Err(SubmitError::Db(err)) => Err(err.into()),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct JobListQuery {
    /// Only jobs of this model.
    model_id: Option<Uuid>,
    /// Only jobs in this state: queued, running, succeeded, failed or canceled.
    state: Option<String>,
    /// Only jobs with a stage of this kind (`prune`, `quantize`, `cluster`, `low_rank`), this
    /// quantization scheme (`int`, `fp8`, `nf4`, `gguf`) or this pruning method
    /// (`magnitude`, `semi_structured`, `channels`, `mlp_channels`).
    method: Option<String>,
    /// Only jobs whose name, model name or id contains this text (case-insensitive).
    q: Option<String>,
    /// Only jobs submitted at or after this time (RFC 3339).
    created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Only jobs submitted before this time (RFC 3339).
    created_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Page size, 1-100 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<Uuid>,
}

/// List jobs
///
/// The team's jobs, newest first, filtered by model, state, method, text and submission time.
#[utoipa::path(
    get,
    path = "/jobs",
    tag = "jobs",
    params(JobListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = Page<Job>),
        (status = 400, description = "Bad filter, `limit` or `cursor`"),
    )
)]
async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<JobListQuery>,
) -> ApiResult<Json<Page<Job>>> {
    let limit = page_limit(q.limit, 50, 100)?;
    if let Some(s) = &q.state
        && !["queued", "running", "succeeded", "failed", "canceled"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "bad_state",
            format!("state {s:?} is not one of queued, running, succeeded, failed, canceled"),
        ));
    }
    let blank_to_none = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let filter = JobFilter {
        model_id: q.model_id,
        state: q.state,
        method: blank_to_none(q.method),
        search: blank_to_none(q.q).map(|s| s.trim().to_owned()),
        created_after: q.created_after,
        created_before: q.created_before,
    };
    let items = queue::list(&state.db, caller.team_id, &filter, limit, q.cursor).await?;
    Ok(Json(Page::of(items, limit, |j| j.id.to_string())))
}

pub(crate) async fn job_of(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<Job> {
    queue::get(&state.db, caller.team_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", id))
}

/// Get a job
///
/// State, attempt, progress, timings, error and, once it succeeded, the result summary.
#[utoipa::path(
    get,
    path = "/jobs/{id}",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "No such job in the caller's team"),
    )
)]
async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Job>> {
    Ok(Json(job_of(&state, &caller, id).await?))
}

/// Cancel a job
///
/// A queued job is canceled at once and never starts; a running one stops within a second or
/// two (`cancel_requested` is true until it has); a finished job is returned unchanged.
#[utoipa::path(
    post,
    path = "/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 202, description = "The job after the request", body = Job),
        (status = 404, description = "No such job in the caller's team"),
    )
)]
async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let job = queue::cancel(&state.db, caller.team_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job", id))?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

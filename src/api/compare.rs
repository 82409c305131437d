//! `/compare`: one row per succeeded job of a model (or of a list of jobs), with size, error,
//! latency and accuracy side by side, the original's figures beside each compressed one.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::api::Page;
use crate::api::state::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::eval::EvalReport;
use crate::jobs::queue::{self, Job, JobFilter};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(compare))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CompareQuery {
    /// Every succeeded job of this model (the newest 500).
    model_id: Option<Uuid>,
    /// Or these jobs: comma-separated ids, at most 100.
    jobs: Option<String>,
}

/// One job in a comparison.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompareRow {
    pub job_id: Uuid,
    pub name: Option<String>,
    pub model_id: Option<Uuid>,
    /// The stage kinds in order (`prune`, `quantize int 4`, ...).
    pub method: String,
    pub format: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub ratio: f64,
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub bits_per_weight: f64,
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub sparsity: f64,
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub mean_rel_error: f64,
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub worst_rel_error: f64,
    #[serde(with = "crate::numeric::metric")]
    #[schema(value_type = crate::numeric::Metric)]
    pub wall_seconds: f64,
    /// Latency and accuracy of the original and the compressed model, when evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_error: Option<String>,
}

/// Compare jobs
///
/// Size, bits per weight and error of each succeeded job, and its evaluation (original and
/// compressed latency and accuracy) when it had one. Give `model_id` or `jobs`.
#[utoipa::path(
    get,
    path = "/compare",
    tag = "jobs",
    params(CompareQuery),
    responses(
        (status = 200, description = "One row per succeeded job, newest first", body = Page<CompareRow>),
        (status = 400, description = "Neither or both of `model_id` and `jobs`, or a bad id"),
    )
)]
async fn compare(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<CompareQuery>,
) -> ApiResult<Json<Page<CompareRow>>> {
    let jobs: Vec<Job> = match (query.model_id, query.jobs.as_deref()) {
        (Some(model_id), None) => {
            let filter = JobFilter {
                model_id: Some(model_id),
                state: Some("succeeded".into()),
                ..JobFilter::default()
            };
            queue::list(&state.db, caller.team_id, &filter, 500, None).await?
        }
        (None, Some(list)) => {
            let ids = list
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse::<Uuid>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    ApiError::bad_request("bad_jobs", "`jobs` is a comma-separated list of job ids")
                })?;
            if ids.is_empty() || ids.len() > 100 {
                return Err(ApiError::bad_request(
                    "bad_jobs",
                    "`jobs` names 1 to 100 job ids",
                ));
            }
            queue::get_many(&state.db, caller.team_id, &ids).await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "model_or_jobs",
                "give exactly one of `model_id` and `jobs`",
            ));
        }
    };
    let items = jobs.into_iter().filter_map(row).collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

fn row(job: Job) -> Option<CompareRow> {
    let summary = job.result?.0;
    Some(CompareRow {
        job_id: job.id,
        name: job.name,
        model_id: job.model_id,
        method: method(&job.recipe.0),
        format: summary.format,
        bytes_in: summary.bytes_in,
        bytes_out: summary.bytes_out,
        ratio: summary.ratio,
        bits_per_weight: summary.bits_per_weight,
        sparsity: summary.sparsity,
        mean_rel_error: summary.mean_rel_error,
        worst_rel_error: summary.worst_rel_error,
        wall_seconds: summary.wall_seconds,
        eval: summary.eval,
        eval_error: summary.eval_error,
    })
}

/// A short description of a recipe: `prune 0.5 + quantize int 4 g128 → compressed-tensors`.
fn method(recipe: &serde_json::Value) -> String {
    let stages = recipe["stages"].as_array().cloned().unwrap_or_default();
    let parts: Vec<String> = stages
        .iter()
        .filter_map(|stage| {
            let (kind, body) = stage.as_object()?.iter().next()?;
            let mut words = vec![kind.clone()];
            for key in [
                "scheme",
                "type",
                "method",
                "bits",
                "sparsity",
                "n",
                "m",
                "rank",
                "group_size",
            ] {
                if let Some(v) = body.get(key) {
                    words.push(match key {
                        "group_size" => format!("g{v}"),
                        _ => v
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    });
                }
            }
            Some(words.join(" "))
        })
        .collect();
    let stages = if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(" + ")
    };
    // The format is part of the method: the same int4 stage is a different file in each.
    match recipe["format"].as_str() {
        Some(format) => format!("{stages} → {format}"),
        None => stages,
    }
}

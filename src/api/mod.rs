//! The HTTP API under `/api/v1`: one file per resource. Handlers are thin: extract, call one
//! function of the owning module, map the result. Errors are `ApiError` (problem+json).

pub mod compare;
pub mod datasets;
pub mod demo;
pub mod eval_options;
pub mod health;
pub mod job_events;
pub mod job_files;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod session;
pub mod state;

use utoipa_axum::router::OpenApiRouter;

use crate::api::state::AppState;
use crate::error::{ApiError, ApiResult};

/// Every route of the HTTP surface except the dashboard, with its OpenAPI entries.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(health::router())
        .merge(metrics::router())
        .merge(openapi::router())
        .nest("/api/v1", v1())
}

/// Everything under `/api/v1`.
fn v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(models::router())
        .merge(jobs::router())
        .merge(job_events::router())
        .merge(job_files::router())
        .merge(datasets::router())
        .merge(eval_options::router())
        .merge(compare::router())
        .merge(demo::router())
        .merge(session::router())
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "unknown_endpoint",
                "no such API endpoint; the API reference is at /api/docs",
            )
        })
}

/// A page of results with an opaque cursor for the next one.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of `items` fetched with `limit`: a full page may have a next one, which starts
    /// after its last item's `cursor`.
    pub fn of(items: Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Page<T> {
        let next_cursor = (items.len() as i64 == limit)
            .then(|| items.last().map(cursor))
            .flatten();
        Page { items, next_cursor }
    }
}

/// The page size a list request asked for, `default` when absent; out of `1..=max` is a 400.
pub fn page_limit(requested: Option<i64>, default: i64, max: i64) -> ApiResult<i64> {
    match requested {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            "bad_limit",
            format!("limit {n} is out of range 1..={max}"),
        )),
    }
}

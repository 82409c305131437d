//! The HTTP API under `/api/v1`: one file per resource. Handlers are thin: extract, call one
//! function of the owning module, map the result. Errors are `ApiError` (problem+json).

pub mod health;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod session;

use axum::Router;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// Everything under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(models::router())
        .merge(jobs::router())
        .merge(session::router())
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such API endpoint",
            )
        })
}

/// A page of results with an opaque cursor for the next one.
#[derive(Debug, serde::Serialize)]
pub struct Page<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
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

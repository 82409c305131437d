//! A job's results: its per-tensor report and its artifact files, listed and downloaded
//! (streamed, with ETag and Range).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::api::Page;
use crate::api::openapi::Binary;
use crate::api::state::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::jobs::queue::{self, JobFile};
use crate::jobs::report::{Summary, TensorReport};

use crate::api::jobs::job_of;

/// Routes of a job's report and files.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(job_report))
        .routes(routes!(list_files))
        .routes(routes!(download_file))
}

/// A job's figures: the summary and every tensor's metrics.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Report {
    /// The job.
    job_id: Uuid,
    /// Its state.
    state: String,
    /// The summary, once it succeeded.
    summary: Option<Summary>,
    /// Per-tensor metrics against the original weights (empty until it succeeded).
    tensors: Vec<TensorReport>,
}

/// Get a job's report
#[utoipa::path(
    get,
    path = "/jobs/{id}/report",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The report", body = Report),
        (status = 404, description = "No such job in the caller's team"),
    )
)]
async fn job_report(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Report>> {
    let job = job_of(&state, &caller, id).await?;
    let tensors = queue::report(&state.db, caller.team_id, id).await?;
    Ok(Json(Report {
        job_id: id,
        state: job.state,
        summary: job.result.map(|r| r.0),
        tensors,
    }))
}

/// List a job's artifact files
///
/// Empty until the job succeeded.
#[utoipa::path(
    get,
    path = "/jobs/{id}/files",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The files (one page)", body = Page<JobFile>),
        (status = 404, description = "No such job in the caller's team"),
    )
)]
async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Page<JobFile>>> {
    job_of(&state, &caller, id).await?;
    let items = queue::files(&state.db, caller.team_id, id).await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// A byte range request, resolved against the file length.
fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            if n == 0 {
                return None;
            }
            (len.saturating_sub(n), len.checked_sub(1)?)
        }
        (s, "") => (s.parse().ok()?, len.checked_sub(1)?),
        (s, e) => (
            s.parse().ok()?,
            e.parse::<u64>().ok()?.min(len.checked_sub(1)?),
        ),
    };
    (start <= end && start < len).then_some((start, end))
}

/// Download an artifact file
///
/// Streams the file. Its ETag is its sha256: `If-None-Match` gives 304; a single byte `Range`
/// gives 206, or 416 when it cannot be satisfied.
#[utoipa::path(
    get,
    path = "/jobs/{id}/files/{name}",
    tag = "jobs",
    params(
        ("id" = Uuid, Path, description = "Job id"),
        ("name" = String, Path, description = "File name"),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-1023`"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier download"),
    ),
    responses(
        (status = 200, description = "The file", body = Binary, content_type = "application/octet-stream",
            headers(("ETag" = String, description = "The quoted sha256"))),
        (status = 206, description = "The requested range", body = Binary, content_type = "application/octet-stream",
            headers(("Content-Range" = String))),
        (status = 304, description = "Unchanged since the given ETag"),
        (status = 404, description = "No such job or file"),
        (status = 416, description = "The range lies outside the file"),
    )
)]
async fn download_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, name)): Path<(Uuid, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    job_of(&state, &caller, id).await?;
    let file = queue::files(&state.db, caller.team_id, id)
        .await?
        .into_iter()
        .find(|f| f.name == name)
        .ok_or_else(|| ApiError::not_found("file", &name))?;
    let etag = format!("\"{}\"", file.sha256);
    let len = file.bytes as u64;
    let mut response_headers = HeaderMap::new();
    response_headers.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a valid header"),
    );
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    let content_type = if name.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    };
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        response_headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    let (status, start, count) = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => (StatusCode::OK, 0, len),
        Some(range) => match parse_range(range, len) {
            Some((start, end)) => {
                let value = format!("bytes {start}-{end}/{len}");
                response_headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&value).expect("ascii"),
                );
                (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
            }
            None => {
                let value = format!("bytes */{len}");
                response_headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&value).expect("ascii"),
                );
                let problem = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    format!("the file has {len} bytes"),
                );
                let mut response = problem.into_response();
                response.headers_mut().extend(response_headers);
                return Ok(response);
            }
        },
    };
    let mut handle = tokio::fs::File::open(state.blobs.path(&file.sha256))
        .await
        .map_err(|e| {
            ApiError::internal(format_args!("artifact {} of job {id}: {e}", file.sha256))
        })?;
    handle
        .seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(ApiError::internal)?;
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        handle.take(count),
        256 * 1024,
    ));
    Ok((status, response_headers, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=9-3", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}

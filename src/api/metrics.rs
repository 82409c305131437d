//! `/metrics`: Prometheus text exposition. Job figures come from the database (so every
//! instance reports the same queue); process figures (uploads, workers) are this process's.
//! Counts only, all teams together, no names: safe to expose without a token.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::state::AppState;
use crate::error::ApiResult;
use crate::jobs::queue;
use crate::store::ingest::UPLOADED_BYTES;

/// `/metrics`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Prometheus metrics
///
/// Jobs by state, queue depth, claim latency, job durations, bytes processed, upload bytes,
/// workers, in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(()),
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain; version=0.0.4"))
)]
async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let s = queue::stats(&state.db).await?;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "squeeze_jobs",
        "gauge",
        "Jobs by state.",
        &[
            ("{state=\"queued\"}", s.queued as f64),
            ("{state=\"running\"}", s.running as f64),
            ("{state=\"succeeded\"}", s.succeeded as f64),
            ("{state=\"failed\"}", s.failed as f64),
            ("{state=\"canceled\"}", s.canceled as f64),
        ],
    );
    metric(
        "squeeze_queue_depth",
        "gauge",
        "Queued jobs ready to run now.",
        &[("", s.ready as f64)],
    );
    metric(
        "squeeze_job_duration_seconds",
        "summary",
        "Run time of succeeded jobs, first start to finish.",
        &[("_sum", s.duration_sum), ("_count", s.succeeded as f64)],
    );
    metric(
        "squeeze_job_claim_wait_seconds",
        "summary",
        "Wait from submission to first start.",
        &[("_sum", s.wait_sum), ("_count", s.started as f64)],
    );
    metric(
        "squeeze_processed_bytes_total",
        "counter",
        "Input bytes of succeeded jobs.",
        &[("", s.bytes_processed)],
    );
    metric(
        "squeeze_upload_bytes_total",
        "counter",
        "Bytes received by uploads in this process.",
        &[("", UPLOADED_BYTES.load(Ordering::Relaxed) as f64)],
    );
    metric(
        "squeeze_workers",
        "gauge",
        "Workers running in this process.",
        &[("", state.worker_count as f64)],
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

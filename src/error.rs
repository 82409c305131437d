//! The one error type that reaches HTTP clients: `ApiError`, rendered as RFC 9457
//! `application/problem+json` with a stable machine-readable `code`.
//!
//! Module errors (safetensors validation, storage, auth) convert into `ApiError` at the edge.
//! Server faults become a generic 500 whose cause is logged once, never echoed to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::eval::dataset::DatasetError;
use crate::jobs::eval_checks::EvalCheckError;
use crate::jobs::recipe::RecipeError;
use crate::store::models::PlanError;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error as the client sees it: status, stable code, human detail.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    /// Extra members merged into the problem object (e.g. the offending tensor name).
    extra: Option<serde_json::Map<String, serde_json::Value>>,
    /// PostgreSQL refused a write for lack of disk space (marks the response for `/readyz`).
    database_disk_full: bool,
}

/// A response extension: the request failed because PostgreSQL's disk is full.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseDiskFull;

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// An RFC 9457 problem object, the body of every error response
/// (`application/problem+json`). Some problems carry extra members that locate the fault:
/// `tensor`, `file`, `limit`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// `urn:squeeze:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(example = "urn:squeeze:problem:not_found")]
    pub kind: String,
    /// The HTTP reason phrase.
    #[schema(example = "Not Found")]
    pub title: &'a str,
    /// The HTTP status.
    #[schema(example = 404)]
    pub status: u16,
    /// What went wrong, for a human.
    #[schema(example = "model 0190d6a4-5f5e-7c1e-9a4b-1c2d3e4f5a6b not found")]
    pub detail: &'a str,
    /// Stable machine-readable code.
    #[schema(example = "not_found")]
    pub code: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    /// Any status with a stable code and a detail message.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            extra: None,
            database_disk_full: false,
        }
    }

    /// Adds a member to the problem object.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value.into());
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 401: no credentials, or credentials that match no live token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer sqz_...)",
        )
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404 for a resource kind and id. Used both for missing ids and for another team's
    /// resources, so the two are indistinguishable.
    pub fn not_found(kind: &str, id: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{kind} {id} not found"),
        )
    }

    /// 409: the resource is in a state that forbids the operation.
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// 413: the body is larger than allowed.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", detail)
    }

    /// 415: a format we refuse to read.
    pub fn unsupported(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, code, detail)
    }

    /// 422: well-formed request whose content breaks a rule.
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// 422: text that holds a NUL character, which PostgreSQL cannot store.
    pub fn nul_character(what: &str) -> Self {
        Self::unprocessable(
            "nul_character",
            format!("{what} holds a NUL character (U+0000), which is not allowed"),
        )
    }

    /// 500: logs the cause here, once, and returns a generic body.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error; the cause was logged on the server",
        )
    }

    /// 503: a dependency (the database) is unavailable.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: format!("urn:squeeze:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            extra: self.extra.as_ref(),
        };
        let mut response = (self.status, Json(&body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.database_disk_full {
            response.extensions_mut().insert(DatabaseDiskFull);
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        let sqlstate = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        match (&err, sqlstate.as_deref()) {
            (sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed, _) => {
                tracing::error!(error = %err, "database unavailable");
                Self::unavailable("the database is unavailable; retry shortly")
            }
            // disk_full: nothing was written; the client may retry once space is freed.
            (_, Some("53100")) => {
                tracing::error!(error = %err, "the database's disk is full");
                Self {
                    database_disk_full: true,
                    ..Self::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        "no_space",
                        "the database's disk is full; nothing was stored",
                    )
                }
            }
            // out_of_memory, too_many_connections, insufficient_resources: transient.
            (_, Some("53200" | "53300" | "53000")) => {
                tracing::error!(error = %err, "the database is out of resources");
                Self::unavailable("the database is out of resources; retry shortly")
            }
            _ => Self::internal(format_args!("database: {err}")),
        }
    }
}

// How each domain error becomes a problem, so handlers `?` them.

/// An evaluation that cannot run as asked.
impl From<EvalCheckError> for ApiError {
    fn from(err: EvalCheckError) -> Self {
        match err {
            EvalCheckError::Internal(e) => Self::internal(e),
            EvalCheckError::NoModel(id) => Self::not_found("model", id),
            other => Self::unprocessable(other.code(), other.to_string()),
        }
    }
}

/// A recipe that breaks a rule; `stage` (1-based) and `tensor` say where, so a form can show
/// the message next to the field it concerns.
impl From<RecipeError> for ApiError {
    fn from(err: RecipeError) -> Self {
        let mut problem = Self::unprocessable(err.code(), err.to_string());
        if let Some(stage) = err.stage() {
            problem = problem.with("stage", stage);
        }
        match err.tensor() {
            Some(t) => problem.with("tensor", t.to_owned()),
            None => problem,
        }
    }
}

/// Uploaded files that do not form one model; `tensor` names the one at fault.
impl From<PlanError> for ApiError {
    fn from(err: PlanError) -> Self {
        let problem = Self::unprocessable(err.code(), err.to_string());
        match &err {
            PlanError::IndexMismatch { tensor, .. } | PlanError::DuplicateTensor { tensor, .. } => {
                problem.with("tensor", tensor.clone())
            }
            _ => problem,
        }
    }
}

/// An evaluation set that cannot be read or does not fit.
impl From<DatasetError> for ApiError {
    fn from(err: DatasetError) -> Self {
        Self::unprocessable(err.code(), err.to_string())
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        Self::internal(format_args!("{err:#}"))
    }
}

/// Whether any string in a JSON document (keys included) holds a NUL character.
pub fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

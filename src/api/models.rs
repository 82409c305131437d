//! `/models`: upload (raw body or multipart, streamed), list, read, tensor inventory, delete.
//!
//! The upload handler turns the request body into a stream per file and hands each to
//! `store::ingest`; nothing here buffers a file. The model becomes visible only after every file
//! passed validation and the catalog transaction committed.

use axum::Json;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::api::openapi::Binary;
use crate::api::{Page, page_limit};

use crate::api::state::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::store::ingest::{self, FileKind, IngestError, IngestedFile};
use crate::store::models::{self, Deleted, Model, Owner, TensorEntry};

/// Most files one multipart upload may carry.
const MAX_FILES_PER_UPLOAD: usize = 512;

/// Routes of the models resource.
pub fn router() -> OpenApiRouter<AppState> {
    let (schemas, paths, collection) = routes!(list_models, upload_model, put_model);
    // Uploads are streamed and capped by `Limits::max_upload` instead.
    let collection = collection.layer(DefaultBodyLimit::disable());
    OpenApiRouter::new()
        .routes((schemas, paths, collection))
        .routes(routes!(get_model, delete_model))
        .routes(routes!(list_tensors))
        .routes(routes!(get_config))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ModelUploadQuery {
    /// Display name of the model (default: the last part of `config.json`'s `_name_or_path`,
    /// else the weight file's name without extension).
    name: Option<String>,
}

/// The multipart form of an upload.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the form; the handler streams the parts itself
struct UploadForm {
    /// One or more files: `.safetensors` weights (shards with `model.safetensors.index.json`),
    /// `config.json`, tokenizer and other small side files.
    #[schema(value_type = Vec<String>, format = Binary)]
    file: Vec<Vec<u8>>,
    /// Display name of the model.
    name: Option<String>,
}

/// Upload a model with PUT
///
/// The same upload as `POST /models`, for clients that send a file with PUT: `curl -T
/// model.safetensors '…/api/v1/models?name=my-model'` streams the file from disk.
#[utoipa::path(
    put,
    path = "/models",
    tag = "models",
    params(ModelUploadQuery),
    request_body(description = "One safetensors file", content((Binary = "application/octet-stream"))),
    responses(
        (status = 201, description = "The stored model", body = Model,
            headers(("Location" = String, description = "URL of the model"))),
        (status = 400, description = "Malformed request (bad name)"),
        (status = 408, description = "The client stopped sending"),
        (status = 413, description = "Larger than the server's upload limit"),
        (status = 415, description = "Not safetensors (pickle, zip, GGUF, ...)"),
        (status = 422, description = "The file breaks the safetensors rules"),
        (status = 507, description = "The server's storage is full"),
    )
)]
async fn put_model(
    state: State<AppState>,
    caller: Caller,
    query: Query<ModelUploadQuery>,
    request: Request,
) -> ApiResult<impl IntoResponse> {
    upload_model(state, caller, query, request).await
}

/// Upload a model
///
/// Send one safetensors file as `application/octet-stream` (name it with `?name=`), or several
/// files as `multipart/form-data` parts (a sharded checkpoint with its index, `config.json`,
/// tokenizer files). Every file is validated while it streams; pickle, zip and other formats
/// are refused. The model appears only when every file passed.
#[utoipa::path(
    post,
    path = "/models",
    tag = "models",
    params(ModelUploadQuery),
    request_body(
        description = "The model's files",
        content(
            (Binary = "application/octet-stream"),
            (UploadForm = "multipart/form-data"),
        )
    ),
    responses(
        (status = 201, description = "The stored model", body = Model,
            headers(("Location" = String, description = "URL of the model"))),
        (status = 400, description = "Malformed request (bad name, bad multipart body)"),
        (status = 408, description = "The client stopped sending"),
        (status = 413, description = "Larger than the server's upload limit"),
        (status = 415, description = "Not safetensors (pickle, zip, GGUF, ...)"),
        (status = 422, description = "A file breaks the safetensors rules, or the files do not form a model (`file`, `tensor` say where)"),
        (status = 507, description = "The server's storage is full"),
    )
)]
async fn upload_model(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ModelUploadQuery>,
    request: Request,
) -> ApiResult<impl IntoResponse> {
    if let Some(name) = &query.name {
        check_model_name(name)?;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > state.limits.max_upload
    {
        return Err(too_large(state.limits.max_upload));
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_ascii_lowercase();
    let (files, part_name) = if content_type.starts_with("multipart/form-data") {
        receive_multipart(&state, request).await?
    } else if content_type.starts_with("application/octet-stream") {
        (
            vec![receive_raw(&state, query.name.as_deref(), request).await?],
            None,
        )
    } else {
        return Err(ApiError::unsupported(
            "unsupported_media_type",
            format!(
                "Content-Type {content_type:?} is not accepted: send the file as application/octet-stream (with ?name=) or as multipart/form-data file parts"
            ),
        ));
    };
    let name = query
        .name
        .or(part_name)
        .unwrap_or_else(|| default_model_name(&files));
    check_model_name(&name)?;
    let plan = models::plan(files)?;
    let owner = Owner {
        team_id: caller.team_id,
        token_id: Some(caller.token_id),
    };
    let model = models::create(&state.db, &state.blobs, owner, &name, plan).await?;
    let location = format!("/api/v1/models/{}", model.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(model),
    ))
}

async fn receive_raw(
    state: &AppState,
    name: Option<&str>,
    request: Request,
) -> ApiResult<IngestedFile> {
    // The body is always treated as safetensors; a pickle-style name is refused before reading.
    if let Some(name) = name {
        ingest::refuse_foreign_name(name).map_err(|e| ingest_error(e, state.limits.max_upload))?;
    }
    let mut budget = state.limits.max_upload;
    let body = request.into_body().into_data_stream();
    ingest::ingest(
        &state.blobs,
        "model.safetensors".to_owned(),
        FileKind::Safetensors,
        body,
        &mut budget,
        state.limits.max_upload,
        state.limits.upload_idle,
    )
    .await
    .map_err(|e| ingest_error(e, state.limits.max_upload))
}

async fn receive_multipart(
    state: &AppState,
    request: Request,
) -> ApiResult<(Vec<IngestedFile>, Option<String>)> {
    let limit = state.limits.max_upload;
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::bad_request("bad_multipart", e.body_text()))?;
    let mut budget = limit;
    let mut files = Vec::new();
    let mut model_name = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) => return Err(multipart_error(err, limit)),
        };
        let Some(file_name) = field.file_name().map(str::to_owned) else {
            if field.name() == Some("name") {
                let text = field.text().await.map_err(|e| multipart_error(e, limit))?;
                check_model_name(&text)?;
                model_name = Some(text);
                continue;
            }
            return Err(ApiError::bad_request(
                "bad_multipart",
                format!(
                    "unexpected form field {:?}: send files as parts with a filename, and optionally a \"name\" field",
                    field.name().unwrap_or("")
                ),
            ));
        };
        if files.len() == MAX_FILES_PER_UPLOAD {
            return Err(ApiError::bad_request(
                "too_many_files",
                format!("at most {MAX_FILES_PER_UPLOAD} files per upload"),
            ));
        }
        let kind = ingest::classify(&file_name).map_err(|e| ingest_error(e, limit))?;
        let file = ingest::ingest(
            &state.blobs,
            file_name,
            kind,
            field,
            &mut budget,
            limit,
            state.limits.upload_idle,
        )
        .await
        .map_err(|e| ingest_error(e, limit))?;
        files.push(file);
    }
    if files.is_empty() {
        return Err(ApiError::bad_request(
            "no_files",
            "the multipart body has no file parts (use a part named \"file\" with a filename)",
        ));
    }
    Ok((files, model_name))
}

fn default_model_name(files: &[IngestedFile]) -> String {
    // A Hugging Face folder's config names the model it was saved from ("org/name"); its
    // weight files are all called "model".
    let from_config = files
        .iter()
        .find(|f| f.kind == FileKind::Config)
        .and_then(|f| f.json.as_ref())
        .and_then(|c| c["_name_or_path"].as_str())
        .and_then(|path| path.trim_end_matches('/').rsplit('/').next())
        .map(str::trim)
        .filter(|name| {
            !name.is_empty() && name.len() <= 255 && !name.chars().any(char::is_control)
        });
    if let Some(name) = from_config {
        return name.to_owned();
    }
    files
        .iter()
        .find(|f| f.kind == FileKind::Safetensors)
        .map(|f| {
            let stem = f.name.trim_end_matches(".safetensors");
            // Shards are named model-00001-of-0000N: the model is "model".
            match stem.split_once("-0") {
                Some((base, _)) if stem.contains("-of-") => base.to_owned(),
                _ => stem.to_owned(),
            }
        })
        .unwrap_or_else(|| "model".to_owned())
}

pub(crate) fn check_model_name(name: &str) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_name",
            "a model name needs 1-255 characters and no control characters",
        ));
    }
    Ok(())
}

fn too_large(limit: u64) -> ApiError {
    ApiError::too_large(format!(
        "the upload exceeds this server's limit of {limit} bytes (SQUEEZE_MAX_UPLOAD)"
    ))
    .with("limit", limit)
}

fn multipart_error(err: axum::extract::multipart::MultipartError, limit: u64) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limit)
    } else {
        ApiError::bad_request("bad_multipart", err.body_text())
    }
}

fn ingest_error(err: IngestError, limit: u64) -> ApiError {
    match err {
        IngestError::TooLarge { .. } => too_large(limit),
        IngestError::Invalid { name, source } => {
            let code = source.code();
            let tensor = source.tensor().map(str::to_owned);
            let mut problem =
                ApiError::unprocessable(code, format!("{name}: {source}")).with("file", name);
            if let Some(tensor) = tensor {
                problem = problem.with("tensor", tensor);
            }
            problem
        }
        IngestError::BadName(_) => ApiError::bad_request("bad_file_name", err.to_string()),
        IngestError::Unsupported { .. } => {
            ApiError::unsupported("unsupported_format", err.to_string())
        }
        IngestError::BadJson { .. } => ApiError::unprocessable("bad_json", err.to_string()),
        IngestError::SideFileTooLarge { .. } => ApiError::too_large(err.to_string()),
        IngestError::Body(_) => ApiError::bad_request("body_read_failed", err.to_string()),
        IngestError::Idle(_) => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "upload_idle", err.to_string())
        }
        IngestError::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "no_space",
            "the server's storage is full; nothing was kept",
        ),
        IngestError::Io(io) => ApiError::internal(format_args!("upload storage: {io}")),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ModelListQuery {
    /// Page size.
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List models
///
/// The team's models, newest first (`limit` 1-100, default 50).
#[utoipa::path(
    get,
    path = "/models",
    tag = "models",
    params(ModelListQuery),
    responses(
        (status = 200, description = "A page of models", body = Page<Model>),
        (status = 400, description = "Bad `limit` or `cursor`"),
    )
)]
async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ModelListQuery>,
) -> ApiResult<Json<Page<Model>>> {
    let limit = page_limit(query.limit, 50, 100)?;
    let cursor = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(Uuid::parse_str(c).map_err(|_| {
            ApiError::bad_request("bad_cursor", "cursor is not one this API issued")
        })?),
    };
    let items = models::list(&state.db, caller.team_id, limit, cursor).await?;
    Ok(Json(Page::of(items, limit, |m| m.id.to_string())))
}

/// Get a model
#[utoipa::path(
    get,
    path = "/models/{id}",
    tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    responses(
        (status = 200, description = "The model with its files", body = Model),
        (status = 404, description = "No such model in the caller's team"),
    )
)]
async fn get_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Model>> {
    models::get(&state.db, caller.team_id, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("model", id))
}

/// Get a model's config.json
///
/// The model's `config.json` as uploaded (validated JSON), or 404 `no_config` when it has none.
#[utoipa::path(
    get,
    path = "/models/{id}/config",
    tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    responses(
        (status = 200, description = "The config.json", body = Object),
        (status = 404, description = "No such model in the caller's team, or it has no config.json"),
    )
)]
async fn get_config(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    models::get(&state.db, caller.team_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", id))?;
    crate::jobs::eval_checks::model_config(&state.db, &state.blobs, id)
        .await
        .map_err(ApiError::internal)?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_config",
                "the model was uploaded without a config.json",
            )
        })
}

/// List a model's tensors
///
/// The tensor inventory in name order (`limit` 1-10000, default 1000).
#[utoipa::path(
    get,
    path = "/models/{id}/tensors",
    tag = "models",
    params(("id" = Uuid, Path, description = "Model id"), ModelListQuery),
    responses(
        (status = 200, description = "A page of tensors", body = Page<TensorEntry>),
        (status = 400, description = "Bad `limit`"),
        (status = 404, description = "No such model in the caller's team"),
    )
)]
async fn list_tensors(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(query): Query<ModelListQuery>,
) -> ApiResult<Json<Page<TensorEntry>>> {
    let limit = page_limit(query.limit, 1000, 10_000)?;
    let items = models::tensors(
        &state.db,
        caller.team_id,
        id,
        limit,
        query.cursor.as_deref(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("model", id))?;
    Ok(Json(Page::of(items, limit, |t| t.name.clone())))
}

/// Delete a model
///
/// Removes the model and, when no other model or artifact shares them, its files.
#[utoipa::path(
    delete,
    path = "/models/{id}",
    tag = "models",
    params(("id" = Uuid, Path, description = "Model id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such model in the caller's team"),
        (status = 409, description = "Queued or running jobs use it"),
    )
)]
async fn delete_model(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    match models::delete(&state.db, &state.blobs, caller.team_id, id).await? {
        Deleted::Yes => Ok(StatusCode::NO_CONTENT),
        Deleted::NotFound => Err(ApiError::not_found("model", id)),
        Deleted::InUse => Err(ApiError::conflict(
            "model_in_use",
            format!(
                "model {id} is used by queued or running jobs; cancel them or wait for them to finish"
            ),
        )),
    }
}

//! `/datasets`: evaluation sets. Upload (raw body, parsed and validated before anything is
//! stored, optionally against a model), list, read, delete.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::api::models::check_model_name;
use crate::api::openapi::Binary;
use crate::api::state::AppState;
use crate::api::{Page, page_limit};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::eval::dataset;
use crate::jobs::eval_checks;
use crate::store::datasets::{self, DatasetRow};
use crate::store::models::{self, Deleted, Owner};

pub fn router() -> OpenApiRouter<AppState> {
    let (schemas, paths, collection) = routes!(list_datasets, upload_dataset);
    let collection = collection.layer(axum::extract::DefaultBodyLimit::disable());
    OpenApiRouter::new()
        .routes((schemas, paths, collection))
        .routes(routes!(get_dataset, delete_dataset))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DatasetUploadQuery {
    /// Display name (required).
    name: String,
    /// Check the set against this model at upload (vocabulary, lengths, features, classes).
    model_id: Option<Uuid>,
    /// The model's architecture, when its config.json does not say.
    architecture: Option<String>,
    /// `text`: the body is raw UTF-8 text, tokenized with the `model_id` model's
    /// `tokenizer.json` into sequences of `window` tokens and stored as JSONL token sequences.
    /// Otherwise the kind is read from the content.
    format: Option<String>,
    /// Tokens per sequence for a text set (2-8192, default 512).
    window: Option<usize>,
}

/// Upload an evaluation set
///
/// The raw body is either JSONL token sequences, one `{"tokens": [ids...], "label"?: n}` per
/// line (decoders and encoders), or a safetensors file with `inputs` (float,
/// `[rows, features]`) and `labels` (integer, `[rows]`) for classifiers. The whole set is
/// parsed before anything is stored; with `model_id` it is also checked against that model.
/// With `format=text` (and `model_id`), the body is raw text that the model's `tokenizer.json`
/// turns into token sequences of `window` tokens.
#[utoipa::path(
    post,
    path = "/datasets",
    tag = "datasets",
    params(DatasetUploadQuery),
    request_body(description = "The set", content((Binary = "application/octet-stream"))),
    responses(
        (status = 201, description = "The stored set", body = DatasetRow,
            headers(("Location" = String, description = "URL of the set"))),
        (status = 400, description = "Bad name"),
        (status = 404, description = "No such model in the caller's team"),
        (status = 413, description = "Larger than the server's dataset limit"),
        (status = 422, description = "Not a valid set (empty, malformed line, wrong shapes, labels or token ids out of range for the model)"),
    )
)]
async fn upload_dataset(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<DatasetUploadQuery>,
    request: Request,
) -> ApiResult<impl IntoResponse> {
    check_model_name(&query.name)?;
    let limit = state.limits.max_dataset;
    let too_large = || {
        ApiError::too_large(format!(
            "the set exceeds this server's limit of {limit} bytes (SQUEEZE_MAX_DATASET)"
        ))
        .with("limit", limit)
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(request.into_body(), limit as usize)
        .await
        .map_err(|_| too_large())?;
    let bytes = match query.format.as_deref() {
        None => bytes,
        Some("text") => {
            let model_id = query.model_id.ok_or_else(|| {
                ApiError::unprocessable(
                    "model_required",
                    "a text set needs `model_id`: its tokenizer.json tokenizes the text",
                )
            })?;
            let tokenizer =
                eval_checks::tokenizer_json(&state.db, &state.blobs, caller.team_id, model_id)
                    .await?;
            let window = query.window.unwrap_or(512);
            tokio::task::spawn_blocking(move || dataset::tokenize_text(&tokenizer, &bytes, window))
                .await
                .map_err(ApiError::internal)??
                .into()
        }
        Some(other) => {
            return Err(ApiError::unprocessable(
                "bad_format",
                format!(
                    "format {other:?} is not known; give `text`, or nothing to read the kind from the content"
                ),
            ));
        }
    };
    let parsing = bytes.clone();
    let stats = tokio::task::spawn_blocking(move || dataset::stats(&parsing))
        .await
        .map_err(ApiError::internal)??;
    if let Some(model_id) = query.model_id {
        let (_, tensors) = models::tensor_metas(&state.db, caller.team_id, model_id)
            .await?
            .ok_or_else(|| ApiError::not_found("model", model_id))?;
        let arch = eval_checks::architecture(
            &state.db,
            &state.blobs,
            model_id,
            &tensors,
            query.architecture.as_deref(),
        )
        .await?;
        eval_checks::check_set(&stats, &arch)?;
    }
    let blobs = state.blobs.clone();
    let sealed = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut temp = blobs.create_temp()?;
        temp.write(&bytes)?;
        temp.seal()
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let owner = Owner {
        team_id: caller.team_id,
        token_id: Some(caller.token_id),
    };
    let row = datasets::create(&state.db, &state.blobs, owner, &query.name, sealed, &stats).await?;
    let location = format!("/api/v1/datasets/{}", row.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(row),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DatasetListQuery {
    /// Page size, 1-100 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<Uuid>,
}

/// List evaluation sets
///
/// The team's sets, newest first.
#[utoipa::path(
    get,
    path = "/datasets",
    tag = "datasets",
    params(DatasetListQuery),
    responses((status = 200, description = "A page of sets", body = Page<DatasetRow>))
)]
async fn list_datasets(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<DatasetListQuery>,
) -> ApiResult<Json<Page<DatasetRow>>> {
    let limit = page_limit(query.limit, 50, 100)?;
    let items = datasets::list(&state.db, caller.team_id, limit, query.cursor).await?;
    Ok(Json(Page::of(items, limit, |d| d.id.to_string())))
}

/// Get an evaluation set
#[utoipa::path(
    get,
    path = "/datasets/{id}",
    tag = "datasets",
    params(("id" = Uuid, Path, description = "Dataset id")),
    responses(
        (status = 200, description = "The set", body = DatasetRow),
        (status = 404, description = "No such set in the caller's team"),
    )
)]
async fn get_dataset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<DatasetRow>> {
    datasets::get(&state.db, caller.team_id, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("dataset", id))
}

/// Delete an evaluation set
#[utoipa::path(
    delete,
    path = "/datasets/{id}",
    tag = "datasets",
    params(("id" = Uuid, Path, description = "Dataset id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such set in the caller's team"),
        (status = 409, description = "Queued or running jobs will evaluate on it"),
    )
)]
async fn delete_dataset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    match datasets::delete(&state.db, &state.blobs, caller.team_id, id).await? {
        Deleted::Yes => Ok(StatusCode::NO_CONTENT),
        Deleted::NotFound => Err(ApiError::not_found("dataset", id)),
        Deleted::InUse => Err(ApiError::conflict(
            "dataset_in_use",
            format!("dataset {id} is used by queued or running jobs"),
        )),
    }
}

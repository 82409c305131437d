//! The model catalog: owns the `models`, `model_files` and `model_tensors` tables.
//!
//! A model is one upload: one safetensors file, or a sharded checkpoint with its index, plus an
//! optional `config.json` and side files. [`plan`] checks that the files form a coherent model
//! (pure, no I/O); [`create`] publishes the blobs and inserts the rows in one transaction, so a
//! model is either wholly visible or absent. Every query takes the caller's team.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::formats::safetensors::TensorInfo;
use crate::store::blobs::{self, BlobStore};
use crate::store::ingest::{FileKind, IngestedFile};

/// A model as the API returns it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Model {
    /// Model id.
    pub id: Uuid,
    /// Display name (the upload's `name`, or its file name).
    pub name: String,
    /// sha256 of the weights file for a single-file model; for several files, the sha256 of
    /// the manifest `"<sha256>  <name>\n"` lines sorted by name.
    pub sha256: String,
    /// Total bytes of all files.
    pub bytes: i64,
    /// Bytes of tensor data (without headers and side files).
    pub tensor_bytes: i64,
    /// Number of scalar parameters over all tensors.
    pub parameters: i64,
    /// Number of tensors.
    pub tensor_count: i32,
    /// Parameters per dtype.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub dtypes: Json<BTreeMap<String, u64>>,
    /// `architectures[0]` from config.json.
    pub architecture: Option<String>,
    /// `model_type` from config.json.
    pub model_type: Option<String>,
    /// Name of the token that uploaded it.
    pub created_by: Option<String>,
    /// Upload time.
    pub created_at: DateTime<Utc>,
    /// The team's earliest other model with the same content (the same sha256), if any: an
    /// identical upload.
    pub duplicate_of: Option<Uuid>,
    /// The stored files.
    #[sqlx(skip)]
    pub files: Vec<ModelFile>,
}

/// One stored file of a model.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ModelFile {
    #[serde(skip)]
    #[schema(ignore)]
    model_id: Uuid,
    /// File name as uploaded.
    pub name: String,
    /// `safetensors`, `index`, `config` or `side`.
    pub kind: String,
    /// Size in bytes.
    pub bytes: i64,
    /// Content digest.
    pub sha256: String,
}

/// One tensor of a model's inventory.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TensorEntry {
    /// Tensor name.
    pub name: String,
    /// safetensors dtype code.
    pub dtype: String,
    /// Dimensions.
    #[schema(value_type = Vec<u64>)]
    pub shape: Json<Vec<u64>>,
    /// Bytes of data.
    pub bytes: i64,
    /// Elements.
    pub parameters: i64,
    /// The file holding it.
    pub file: String,
    /// Absolute byte offset of its data in that file.
    pub offset: i64,
    /// Whether it holds a NaN or an infinity (found at upload): a job that selects it is
    /// refused.
    pub non_finite: bool,
}

/// Why a set of files is not a model.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no .safetensors file was uploaded")]
    NoWeights,
    #[error("file {0:?} was uploaded twice")]
    DuplicateFile(String),
    #[error("{0} safetensors files were uploaded without model.safetensors.index.json")]
    MissingIndex(usize),
    #[error("more than one shard index was uploaded")]
    SeveralIndexes,
    #[error("the shard index is malformed: {0}")]
    BadIndex(String),
    #[error("the shard index names {file:?}, which was not uploaded")]
    MissingShard { file: String },
    #[error("tensor {tensor:?}: {reason}")]
    IndexMismatch { tensor: String, reason: String },
    #[error("tensor {tensor:?} is in both {first:?} and {second:?}")]
    DuplicateTensor {
        tensor: String,
        first: String,
        second: String,
    },
    #[error("config.json must be a JSON object")]
    BadConfig,
}

impl PlanError {
    /// Stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            PlanError::NoWeights => "no_weights",
            PlanError::DuplicateFile(_) => "duplicate_file",
            PlanError::MissingIndex(_) => "missing_index",
            PlanError::SeveralIndexes | PlanError::BadIndex(_) => "bad_index",
            PlanError::MissingShard { .. } => "missing_shard",
            PlanError::IndexMismatch { .. } => "index_mismatch",
            PlanError::DuplicateTensor { .. } => "duplicate_tensor",
            PlanError::BadConfig => "bad_config",
        }
    }
}

/// A coherent set of files, ready to publish.
#[derive(Debug)]
pub struct ModelPlan {
    files: Vec<IngestedFile>,
    sha256: String,
    bytes: u64,
    tensor_bytes: u64,
    parameters: u64,
    tensor_count: usize,
    dtypes: BTreeMap<String, u64>,
    architecture: Option<String>,
    model_type: Option<String>,
}

/// Checks that uploaded files form one model and computes its summary.
pub fn plan(files: Vec<IngestedFile>) -> Result<ModelPlan, PlanError> {
    let mut by_name = HashMap::new();
    for f in &files {
        if by_name.insert(f.name.as_str(), f).is_some() {
            return Err(PlanError::DuplicateFile(f.name.clone()));
        }
    }
    let weights: Vec<&IngestedFile> = files
        .iter()
        .filter(|f| f.kind == FileKind::Safetensors)
        .collect();
    if weights.is_empty() {
        return Err(PlanError::NoWeights);
    }
    let indexes: Vec<&IngestedFile> = files
        .iter()
        .filter(|f| f.kind == FileKind::ShardIndex)
        .collect();
    if indexes.len() > 1 {
        return Err(PlanError::SeveralIndexes);
    }
    if weights.len() > 1 && indexes.is_empty() {
        return Err(PlanError::MissingIndex(weights.len()));
    }

    let mut home: HashMap<&str, &str> = HashMap::new();
    let mut parameters = 0u64;
    let mut tensor_bytes = 0u64;
    let mut dtypes = BTreeMap::new();
    for w in &weights {
        for t in tensors_of(w) {
            if let Some(first) = home.insert(&t.name, &w.name) {
                return Err(PlanError::DuplicateTensor {
                    tensor: t.name.clone(),
                    first: first.to_owned(),
                    second: w.name.clone(),
                });
            }
            parameters += t.elements();
            tensor_bytes += t.bytes();
            *dtypes.entry(t.dtype.as_str().to_owned()).or_insert(0) += t.elements();
        }
    }
    if let Some(index) = indexes.first() {
        check_index(index, &home, &by_name)?;
    }

    let (architecture, model_type) = match files.iter().find(|f| f.kind == FileKind::Config) {
        Some(config) => describe_config(config.json.as_ref())?,
        None => (None, None),
    };
    let sha256 = if files.len() == 1 {
        files[0].blob.sha256.clone()
    } else {
        let mut lines: Vec<String> = files
            .iter()
            .map(|f| format!("{}  {}\n", f.blob.sha256, f.name))
            .collect();
        lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
        hex::encode(Sha256::digest(lines.concat()))
    };
    Ok(ModelPlan {
        bytes: files.iter().map(|f| f.blob.len).sum(),
        tensor_count: home.len(),
        files,
        sha256,
        tensor_bytes,
        parameters,
        dtypes,
        architecture,
        model_type,
    })
}

fn tensors_of(file: &IngestedFile) -> &[TensorInfo] {
    file.header.as_ref().map_or(&[], |h| &h.tensors)
}

fn check_index(
    index: &IngestedFile,
    home: &HashMap<&str, &str>,
    by_name: &HashMap<&str, &IngestedFile>,
) -> Result<(), PlanError> {
    let map = index
        .json
        .as_ref()
        .and_then(|j| j.get("weight_map"))
        .and_then(|m| m.as_object())
        .ok_or_else(|| PlanError::BadIndex("it has no \"weight_map\" object".into()))?;
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| {
            PlanError::BadIndex(format!("weight_map[{tensor:?}] is not a file name"))
        })?;
        match by_name.get(file) {
            Some(f) if f.kind == FileKind::Safetensors => {}
            _ => {
                return Err(PlanError::MissingShard {
                    file: file.to_owned(),
                });
            }
        }
        match home.get(tensor.as_str()) {
            Some(actual) if *actual == file => {}
            Some(actual) => {
                return Err(PlanError::IndexMismatch {
                    tensor: tensor.clone(),
                    reason: format!("the index says {file:?} but it is in {actual:?}"),
                });
            }
            None => {
                return Err(PlanError::IndexMismatch {
                    tensor: tensor.clone(),
                    reason: format!("the index says {file:?} but no uploaded file has it"),
                });
            }
        }
    }
    if let Some((tensor, file)) = home.iter().find(|(t, _)| !map.contains_key(**t)) {
        return Err(PlanError::IndexMismatch {
            tensor: (*tensor).to_owned(),
            reason: format!("it is in {file:?} but missing from the index"),
        });
    }
    Ok(())
}

fn describe_config(
    config: Option<&serde_json::Value>,
) -> Result<(Option<String>, Option<String>), PlanError> {
    let obj = config
        .and_then(|c| c.as_object())
        .ok_or(PlanError::BadConfig)?;
    let architecture = obj
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(|a| a.as_str())
        .map(str::to_owned);
    let model_type = obj
        .get("model_type")
        .and_then(|m| m.as_str())
        .map(str::to_owned);
    Ok((architecture, model_type))
}

/// Who is creating the model.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    /// The team that will own it.
    pub team_id: Uuid,
    /// The token that uploaded it.
    pub token_id: Option<Uuid>,
}

/// Publishes the plan's blobs and inserts the model, its files and its tensor inventory in one
/// transaction.
#[tracing::instrument(skip_all, fields(model.name = %name))]
pub async fn create(
    pool: &PgPool,
    store: &BlobStore,
    owner: Owner,
    name: &str,
    plan: ModelPlan,
) -> anyhow::Result<Model> {
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into models (id, team_id, name, sha256, bytes, tensor_bytes, parameters,
                             tensor_count, dtypes, architecture, model_type, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(id)
    .bind(owner.team_id)
    .bind(name)
    .bind(&plan.sha256)
    .bind(plan.bytes as i64)
    .bind(plan.tensor_bytes as i64)
    .bind(plan.parameters as i64)
    .bind(plan.tensor_count as i32)
    .bind(Json(&plan.dtypes))
    .bind(&plan.architecture)
    .bind(&plan.model_type)
    .bind(owner.token_id)
    .execute(&mut *tx)
    .await?;

    let mut tensor_rows = TensorColumns::default();
    for file in &plan.files {
        if let Some(header) = &file.header {
            for t in &header.tensors {
                tensor_rows.push(&file.name, header.data_start(), t);
                tensor_rows
                    .non_finite
                    .push(file.non_finite.contains(&t.name));
            }
        }
    }
    sqlx::query(
        "insert into model_tensors
             (model_id, name, file_name, dtype, shape, file_offset, bytes, parameters, non_finite)
         select $1, t.name, t.file, t.dtype, t.shape::jsonb, t.off, t.len, t.params, t.bad
         from unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[],
                     $8::int8[], $9::bool[])
              as t(name, file, dtype, shape, off, len, params, bad)",
    )
    .bind(id)
    .bind(&tensor_rows.names)
    .bind(&tensor_rows.files)
    .bind(&tensor_rows.dtypes)
    .bind(&tensor_rows.shapes)
    .bind(&tensor_rows.offsets)
    .bind(&tensor_rows.lengths)
    .bind(&tensor_rows.parameters)
    .bind(&tensor_rows.non_finite)
    .execute(&mut *tx)
    .await?;

    let mut files = plan.files;
    files.sort_by(|a, b| a.blob.sha256.cmp(&b.blob.sha256));
    let mut rows = Vec::with_capacity(files.len());
    for file in files {
        rows.push((
            file.name.clone(),
            file.kind.as_str(),
            file.blob.sha256.clone(),
            file.blob.len as i64,
        ));
        blobs::acquire(&mut tx, store, file.blob).await?;
    }
    for (file_name, kind, sha, len) in &rows {
        sqlx::query(
            "insert into model_files (model_id, name, kind, blob_sha256, bytes)
             values ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(file_name)
        .bind(kind)
        .bind(sha)
        .bind(len)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    get(pool, owner.team_id, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("model {id} vanished after insert"))
}

#[derive(Default)]
struct TensorColumns {
    names: Vec<String>,
    files: Vec<String>,
    dtypes: Vec<&'static str>,
    shapes: Vec<String>,
    offsets: Vec<i64>,
    lengths: Vec<i64>,
    parameters: Vec<i64>,
    non_finite: Vec<bool>,
}

impl TensorColumns {
    fn push(&mut self, file: &str, data_start: u64, t: &TensorInfo) {
        self.names.push(t.name.clone());
        self.files.push(file.to_owned());
        self.dtypes.push(t.dtype.as_str());
        self.shapes
            .push(serde_json::to_string(&t.shape).expect("a shape serialises"));
        self.offsets.push((data_start + t.begin) as i64);
        self.lengths.push(t.bytes() as i64);
        self.parameters.push(t.elements() as i64);
    }
}

/// A `select` of model rows (with the uploader's token name) followed by `$tail`.
macro_rules! select_models {
    ($tail:literal) => {
        concat!(
            "select m.id, m.name, m.sha256, m.bytes, m.tensor_bytes, m.parameters, m.tensor_count,
                    m.dtypes, m.architecture, m.model_type, t.name as created_by, m.created_at,
                    (select d.id from models d
                     where d.team_id = m.team_id and d.sha256 = m.sha256 and d.id <> m.id
                     order by d.created_at, d.id limit 1) as duplicate_of
             from models m left join tokens t on t.id = m.created_by ",
            $tail
        )
    };
}

/// One of the team's models.
pub async fn get(pool: &PgPool, team_id: Uuid, id: Uuid) -> sqlx::Result<Option<Model>> {
    let model: Option<Model> = sqlx::query_as(select_models!("where m.id = $1 and m.team_id = $2"))
        .bind(id)
        .bind(team_id)
        .fetch_optional(pool)
        .await?;
    let Some(mut model) = model else {
        return Ok(None);
    };
    model.files = files_of(pool, &[id]).await?;
    Ok(Some(model))
}

/// A page of the team's models, newest first, starting after `cursor`.
pub async fn list(
    pool: &PgPool,
    team_id: Uuid,
    limit: i64,
    cursor: Option<Uuid>,
) -> sqlx::Result<Vec<Model>> {
    let mut models: Vec<Model> = sqlx::query_as(select_models!(
        "where m.team_id = $1 and ($2::uuid is null or m.id < $2) order by m.id desc limit $3"
    ))
    .bind(team_id)
    .bind(cursor)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let ids: Vec<Uuid> = models.iter().map(|m| m.id).collect();
    let mut files = files_of(pool, &ids).await?;
    for model in &mut models {
        model.files = files.extract_if(.., |f| f.model_id == model.id).collect();
    }
    Ok(models)
}

async fn files_of(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<ModelFile>> {
    sqlx::query_as(
        "select model_id, name, kind, bytes, blob_sha256 as sha256 from model_files
         where model_id = any($1) order by name",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// A model file to read for processing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredFile {
    /// Name in the model folder.
    pub name: String,
    /// `safetensors`, `index`, `config` or `side`.
    pub kind: String,
    /// Blob digest.
    pub sha256: String,
}

/// Every file of a model (any team: workers act on jobs already scoped at submission).
pub async fn files_for_processing(pool: &PgPool, id: Uuid) -> sqlx::Result<Vec<StoredFile>> {
    sqlx::query_as("select name, kind, blob_sha256 as sha256 from model_files where model_id = $1 order by name")
        .bind(id)
        .fetch_all(pool)
        .await
}

/// The tensor inventory of one of the team's models, for recipe validation; `None` when the
/// team has no such model.
/// The names of a model's tensors that hold a NaN or an infinity.
pub async fn non_finite_tensors(pool: &PgPool, id: Uuid) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "select name from model_tensors where model_id = $1 and non_finite order by name",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

pub async fn tensor_metas(
    pool: &PgPool,
    team_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<(String, Vec<crate::formats::TensorMeta>)>> {
    let sha: Option<String> =
        sqlx::query_scalar("select sha256 from models where id = $1 and team_id = $2")
            .bind(id)
            .bind(team_id)
            .fetch_optional(pool)
            .await?;
    let Some(sha) = sha else {
        return Ok(None);
    };
    let rows: Vec<(String, String, Json<Vec<u64>>)> = sqlx::query_as(
        "select name, dtype, shape from model_tensors where model_id = $1 order by name",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let metas = rows
        .into_iter()
        .filter_map(|(name, dtype, shape)| {
            Some(crate::formats::TensorMeta {
                name,
                dtype: crate::numeric::Dtype::parse(&dtype)?,
                shape: shape.0,
            })
        })
        .collect();
    Ok(Some((sha, metas)))
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The model and its unshared files are gone.
    Yes,
    /// The team has no such model.
    NotFound,
    /// Queued or running jobs still need it.
    InUse,
}

/// A page of a model's tensors by name, or `None` when the team has no such model.
pub async fn tensors(
    pool: &PgPool,
    team_id: Uuid,
    id: Uuid,
    limit: i64,
    after: Option<&str>,
) -> sqlx::Result<Option<Vec<TensorEntry>>> {
    let owned: Option<Uuid> =
        sqlx::query_scalar("select id from models where id = $1 and team_id = $2")
            .bind(id)
            .bind(team_id)
            .fetch_optional(pool)
            .await?;
    if owned.is_none() {
        return Ok(None);
    }
    let rows = sqlx::query_as(
        "select name, dtype, shape, bytes, parameters, file_name as file, file_offset as offset,
                non_finite
         from model_tensors where model_id = $1 and ($2::text is null or name > $2)
         order by name limit $3",
    )
    .bind(id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(Some(rows))
}

/// Deletes one of the team's models and releases its blobs, unless jobs still need it.
pub async fn delete(
    pool: &PgPool,
    store: &BlobStore,
    team_id: Uuid,
    id: Uuid,
) -> anyhow::Result<Deleted> {
    let mut tx = pool.begin().await?;
    let found: Option<Uuid> =
        sqlx::query_scalar("select id from models where id = $1 and team_id = $2 for update")
            .bind(id)
            .bind(team_id)
            .fetch_optional(&mut *tx)
            .await?;
    if found.is_none() {
        return Ok(Deleted::NotFound);
    }
    if in_use(&mut tx, id).await? {
        return Ok(Deleted::InUse);
    }
    let digests: Vec<String> =
        sqlx::query_scalar("delete from model_files where model_id = $1 returning blob_sha256")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
    sqlx::query("delete from models where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let released = blobs::release(&mut tx, store, digests).await?;
    blobs::commit_releasing(tx, released).await?;
    store.forget_derived(id).await;
    Ok(Deleted::Yes)
}

/// Whether any queued or running job uses this model: a read of the jobs table, under the
/// delete's transaction.
async fn in_use(conn: &mut sqlx::PgConnection, model_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "select exists (select 1 from jobs where model_id = $1 and state in ('queued', 'running'))",
    )
    .bind(model_id)
    .fetch_one(conn)
    .await
}

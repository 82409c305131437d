//! Evaluation sets and the original models' figures on them: owns the `datasets` and
//! `eval_baselines` tables. A set is published like a model file (a sealed temp blob taken into
//! the blob store in the transaction that inserts its row); its bytes were parsed and
//! validated before, by `eval::dataset`, and the figures kept about it travel with the row.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use crate::eval::{DatasetStats, Figures};
use crate::store::blobs::{self, BlobStore, SealedBlob};
use crate::store::models::{Deleted, Owner};

/// A set as the API returns it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DatasetRow {
    pub id: Uuid,
    pub name: String,
    /// sha256 of the uploaded bytes.
    #[sqlx(rename = "blob_sha256")]
    pub sha256: String,
    pub bytes: i64,
    /// `tokens` (JSONL sequences) or `tensors` (safetensors inputs and labels).
    pub kind: String,
    #[schema(value_type = DatasetStats)]
    pub stats: Json<DatasetStats>,
    /// Name of the token that uploaded it.
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A `select` of dataset rows (with the uploader's token name) followed by `$tail`.
macro_rules! select_datasets {
    ($tail:literal) => {
        concat!(
            "select d.id, d.name, d.blob_sha256, d.bytes, d.kind, d.stats,
                    t.name as created_by, d.created_at
             from datasets d left join tokens t on t.id = d.created_by ",
            $tail
        )
    };
}

/// Publishes the set's blob and inserts its row in one transaction.
pub async fn create(
    pool: &PgPool,
    store: &BlobStore,
    owner: Owner,
    name: &str,
    blob: SealedBlob,
    stats: &DatasetStats,
) -> anyhow::Result<DatasetRow> {
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    let (sha, len) = (blob.sha256.clone(), blob.len as i64);
    blobs::acquire(&mut tx, store, blob).await?;
    sqlx::query(
        "insert into datasets (id, team_id, name, blob_sha256, bytes, kind, stats, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(owner.team_id)
    .bind(name)
    .bind(&sha)
    .bind(len)
    .bind(&stats.kind)
    .bind(Json(stats))
    .bind(owner.token_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    get(pool, owner.team_id, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("dataset {id} vanished after insert"))
}

/// One of the team's sets.
pub async fn get(pool: &PgPool, team_id: Uuid, id: Uuid) -> sqlx::Result<Option<DatasetRow>> {
    sqlx::query_as(select_datasets!("where d.id = $1 and d.team_id = $2"))
        .bind(id)
        .bind(team_id)
        .fetch_optional(pool)
        .await
}

/// A page of the team's sets, newest first, after `cursor`.
pub async fn list(
    pool: &PgPool,
    team_id: Uuid,
    limit: i64,
    cursor: Option<Uuid>,
) -> sqlx::Result<Vec<DatasetRow>> {
    sqlx::query_as(select_datasets!(
        "where d.team_id = $1 and ($2::uuid is null or d.id < $2) order by d.id desc limit $3"
    ))
    .bind(team_id)
    .bind(cursor)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A set's blob digest, for a worker (jobs were scoped to the team at submission).
pub async fn blob_of(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("select blob_sha256 from datasets where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Deletes one of the team's sets, unless queued or running jobs will evaluate on it.
pub async fn delete(
    pool: &PgPool,
    store: &BlobStore,
    team_id: Uuid,
    id: Uuid,
) -> anyhow::Result<Deleted> {
    let mut tx = pool.begin().await?;
    let sha: Option<String> = sqlx::query_scalar(
        "select blob_sha256 from datasets where id = $1 and team_id = $2 for update",
    )
    .bind(id)
    .bind(team_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(sha) = sha else {
        return Ok(Deleted::NotFound);
    };
    if in_use(&mut tx, id).await? {
        return Ok(Deleted::InUse);
    }
    sqlx::query("delete from datasets where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let released = blobs::release(&mut tx, store, vec![sha]).await?;
    blobs::commit_releasing(tx, released).await?;
    store.forget_derived(id).await;
    Ok(Deleted::Yes)
}

/// The original model's figures on a set, measured earlier on the same runtime.
pub async fn baseline(
    pool: &PgPool,
    model_id: Uuid,
    dataset_id: Uuid,
    runtime: &str,
) -> sqlx::Result<Option<Figures>> {
    let row: Option<Json<Figures>> = sqlx::query_scalar(
        "select figures from eval_baselines where model_id = $1 and dataset_id = $2 and runtime = $3",
    )
    .bind(model_id)
    .bind(dataset_id)
    .bind(runtime)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|j| j.0))
}

/// Keeps the original's figures for later jobs (the first measurement stays).
pub async fn keep_baseline(
    pool: &PgPool,
    model_id: Uuid,
    dataset_id: Uuid,
    runtime: &str,
    figures: &Figures,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into eval_baselines (model_id, dataset_id, runtime, figures) values ($1, $2, $3, $4)
         on conflict do nothing",
    )
    .bind(model_id)
    .bind(dataset_id)
    .bind(runtime)
    .bind(Json(figures))
    .execute(pool)
    .await?;
    Ok(())
}

/// Whether any queued or running job will evaluate on this set: a read of the jobs table,
/// under the delete's transaction so no job can be submitted on the set in between.
async fn in_use(conn: &mut sqlx::PgConnection, dataset_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "select exists (select 1 from jobs where eval->>'dataset_id' = $1::text
                        and state in ('queued', 'running'))",
    )
    .bind(dataset_id)
    .fetch_one(conn)
    .await
}

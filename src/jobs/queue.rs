//! The job queue: owns the `jobs`, `job_tensors` and `job_files` tables.
//!
//! The job row is the product's resource and the queue entry at once. States:
//! `queued → running → succeeded | failed | canceled`; a running job whose lease expires goes back
//! to `queued` (or to `failed` once its attempts are spent). A worker claims with
//! `FOR UPDATE SKIP LOCKED`, holds a lease it renews, and every write it makes is fenced on
//! `(id, attempt, state = running)`: a worker that lost its lease can change nothing. No
//! transaction stays open while a kernel runs; each write is one short statement or transaction.
//! Changes are announced with NOTIFY: `squeeze_job_queued` wakes workers, `squeeze_jobs` (payload:
//! the job id) feeds the event streams.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::eval::EvalSpec;
use crate::jobs::recipe::Recipe;
use crate::jobs::report::{Progress, Summary, TensorReport};
use crate::store::blobs::{self, BlobStore, SealedBlob};

/// Channel that wakes idle workers.
pub const QUEUED_CHANNEL: &str = "squeeze_job_queued";
/// Channel that carries a job id whenever the job's row changes.
pub const EVENTS_CHANNEL: &str = "squeeze_jobs";

/// A job as the API returns it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Job {
    /// Job id.
    pub id: Uuid,
    /// Optional label.
    pub name: Option<String>,
    /// The model it compresses (null once the model was deleted).
    pub model_id: Option<Uuid>,
    /// That model's name (null once the model was deleted).
    pub model_name: Option<String>,
    /// sha256 of that model (kept for provenance).
    pub model_sha256: String,
    /// `queued`, `running`, `succeeded`, `failed` or `canceled`.
    #[schema(example = "running")]
    pub state: String,
    /// Attempts started so far.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Cancellation was asked and the worker has not stopped yet.
    pub cancel_requested: bool,
    /// Tensors and bytes done.
    #[schema(value_type = Progress)]
    pub progress: Json<Progress>,
    /// Why it failed, or why the last attempt failed.
    pub error: Option<String>,
    /// The summary of a succeeded job.
    #[schema(value_type = Option<Summary>)]
    pub result: Option<Json<Summary>>,
    /// The recipe it runs.
    #[schema(value_type = crate::jobs::recipe::Recipe)]
    pub recipe: Json<serde_json::Value>,
    /// The evaluation asked for, if any (its results are `result.eval`).
    #[schema(value_type = Option<crate::eval::EvalSpec>)]
    pub eval: Option<Json<serde_json::Value>>,
    /// Token name that submitted it.
    pub created_by: Option<String>,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// Earliest time of the next attempt (when queued).
    pub run_at: DateTime<Utc>,
    /// First start.
    pub started_at: Option<DateTime<Utc>>,
    /// Reaching a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Job {
    /// Whether the job reached a final state.
    pub fn is_terminal(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "canceled")
    }
}

macro_rules! select_jobs {
    ($tail:literal) => {
        concat!(
            "select j.id, j.name, j.model_id, m.name as model_name, j.model_sha256, j.state::text as state, j.attempt,
                    j.max_attempts, j.cancel_requested, j.progress, j.error, j.result, j.recipe,
                    j.eval,
                    k.name as created_by, j.created_at, j.run_at, j.started_at, j.finished_at,
                    j.updated_at
             from jobs j left join tokens k on k.id = j.created_by
                         left join models m on m.id = j.model_id ",
            $tail
        )
    };
}

/// A submission.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Owner.
    pub team_id: Uuid,
    /// Submitting token.
    pub created_by: Option<Uuid>,
    /// Model to compress.
    pub model_id: Uuid,
    /// Its digest.
    pub model_sha256: String,
    /// Label.
    pub name: Option<String>,
    /// The recipe, parsed and validated against the model at the edge.
    pub recipe: crate::jobs::recipe::Recipe,
    /// The evaluation section, checked against the model and the set at the edge.
    pub eval: Option<crate::eval::EvalSpec>,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Client's idempotency key and the digest of its request body.
    pub idempotency: Option<(String, Vec<u8>)>,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("Idempotency-Key {0:?} was already used with a different request")]
    KeyReused(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Inserts a job and wakes the workers, in one transaction. With an idempotency key already
/// used for the same request, returns the existing job (`replayed = true`).
pub async fn submit(pool: &PgPool, new: NewJob) -> Result<(Job, bool), SubmitError> {
    let mut tx = pool.begin().await?;
    let (key, hash) = match &new.idempotency {
        Some((k, h)) => (Some(k.as_str()), Some(h.as_slice())),
        None => (None, None),
    };
    let id: Option<Uuid> = sqlx::query_scalar(
        "insert into jobs (id, team_id, model_id, model_sha256, name, recipe, max_attempts,
                           idempotency_key, request_hash, created_by, eval)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (team_id, idempotency_key) where idempotency_key is not null do nothing
         returning id",
    )
    .bind(Uuid::now_v7())
    .bind(new.team_id)
    .bind(new.model_id)
    .bind(&new.model_sha256)
    .bind(&new.name)
    .bind(Json(&new.recipe))
    .bind(new.max_attempts)
    .bind(key)
    .bind(hash)
    .bind(new.created_by)
    .bind(new.eval.as_ref().map(Json))
    .fetch_optional(&mut *tx)
    .await?;
    let (id, replayed) = match id {
        Some(id) => {
            notify(&mut tx, QUEUED_CHANNEL, "").await?;
            notify(&mut tx, EVENTS_CHANNEL, &id.to_string()).await?;
            (id, false)
        }
        None => {
            let (id, stored): (Uuid, Option<Vec<u8>>) = sqlx::query_as(
                "select id, request_hash from jobs where team_id = $1 and idempotency_key = $2",
            )
            .bind(new.team_id)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            if stored.as_deref() != hash {
                return Err(SubmitError::KeyReused(key.unwrap_or_default().to_owned()));
            }
            (id, true)
        }
    };
    tx.commit().await?;
    let job = get(pool, new.team_id, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok((job, replayed))
}

async fn notify(conn: &mut PgConnection, channel: &str, payload: &str) -> sqlx::Result<()> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(conn)
        .await
        .map(drop)
}

/// One of the team's jobs.
pub async fn get(pool: &PgPool, team_id: Uuid, id: Uuid) -> sqlx::Result<Option<Job>> {
    sqlx::query_as(select_jobs!("where j.id = $1 and j.team_id = $2"))
        .bind(id)
        .bind(team_id)
        .fetch_optional(pool)
        .await
}

/// A job by id whatever its team, with the team: what the event fan-out reads once per change
/// and hands to every subscriber, each of which shows it only to its own team.
pub async fn get_with_team(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<(Uuid, Job)>> {
    let Some(team_id) = sqlx::query_scalar("select team_id from jobs where id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    Ok(get(pool, team_id, id).await?.map(|job| (team_id, job)))
}

/// Several of the team's jobs by id, newest first (missing ids are skipped).
pub async fn get_many(pool: &PgPool, team_id: Uuid, ids: &[Uuid]) -> sqlx::Result<Vec<Job>> {
    sqlx::query_as(select_jobs!(
        "where j.id = any($1) and j.team_id = $2 order by j.id desc"
    ))
    .bind(ids)
    .bind(team_id)
    .fetch_all(pool)
    .await
}

/// Filters for listing jobs.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this model's jobs.
    pub model_id: Option<Uuid>,
    /// Only jobs in this state.
    pub state: Option<String>,
    /// Only jobs with a stage of this kind (`prune`, `quantize`, `cluster`, `low_rank`), this
    /// quantization scheme (`int`, `fp8`, `nf4`, `gguf`) or this pruning method.
    pub method: Option<String>,
    /// Only jobs whose name, model name or id contains this text (case-insensitive).
    pub search: Option<String>,
    /// Only jobs submitted at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only jobs submitted before this time.
    pub created_before: Option<DateTime<Utc>>,
}

/// A page of the team's jobs, newest first.
pub async fn list(
    pool: &PgPool,
    team_id: Uuid,
    filter: &JobFilter,
    limit: i64,
    cursor: Option<Uuid>,
) -> sqlx::Result<Vec<Job>> {
    sqlx::query_as(select_jobs!(
        "where j.team_id = $1 and ($2::uuid is null or j.model_id = $2)
           and ($3::text is null or j.state::text = $3) and ($4::uuid is null or j.id < $4)
           and ($6::text is null or exists (
                 select 1 from jsonb_array_elements(j.recipe->'stages') st
                 where st ? $6 or st->'quantize'->>'scheme' = $6 or st->'prune'->>'method' = $6))
           and ($7::text is null or strpos(lower(coalesce(j.name, '')), lower($7)) > 0
                or strpos(lower(coalesce(m.name, '')), lower($7)) > 0
                or strpos(j.id::text, lower($7)) > 0)
           and ($8::timestamptz is null or j.created_at >= $8)
           and ($9::timestamptz is null or j.created_at < $9)
         order by j.id desc limit $5"
    ))
    .bind(team_id)
    .bind(filter.model_id)
    .bind(&filter.state)
    .bind(cursor)
    .bind(limit)
    .bind(&filter.method)
    .bind(&filter.search)
    .bind(filter.created_after)
    .bind(filter.created_before)
    .fetch_all(pool)
    .await
}

/// Cancels a job: a queued one at once (it never starts), a running one by asking its worker,
/// which stops between chunks. A finished job is left as it is. `None` when not found.
pub async fn cancel(pool: &PgPool, team_id: Uuid, id: Uuid) -> sqlx::Result<Option<Job>> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "update jobs set
             state = case when state = 'queued' then 'canceled'::job_state else state end,
             finished_at = case when state = 'queued' then now() else finished_at end,
             cancel_requested = (state = 'running'),
             updated_at = now()
         where id = $1 and team_id = $2 and state in ('queued', 'running')",
    )
    .bind(id)
    .bind(team_id)
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() > 0 {
        notify(&mut tx, EVENTS_CHANNEL, &id.to_string()).await?;
    }
    tx.commit().await?;
    get(pool, team_id, id).await
}

/// A JSON column read back as `T`, or why it no longer parses as one (a row an older version
/// wrote): the worker fails that job with the reason, where a typed decode would fail the claim
/// and leave the job running until its lease ran out, again and again.
#[derive(Debug, Clone)]
pub struct Stored<T>(pub Result<T, String>);

impl<T> sqlx::Type<sqlx::Postgres> for Stored<T> {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <Json<serde_json::Value> as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <Json<serde_json::Value> as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r, T: serde::de::DeserializeOwned> sqlx::Decode<'r, sqlx::Postgres> for Stored<T> {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let Json(json) = <Json<serde_json::Value> as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(Stored(
            serde_json::from_value(json).map_err(|e| e.to_string()),
        ))
    }
}

/// A job a worker holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// Job id.
    pub id: Uuid,
    /// This attempt's number: the fencing token.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The model.
    pub model_id: Option<Uuid>,
    /// Its digest.
    pub model_sha256: String,
    /// The recipe, as the API validated it.
    pub recipe: Stored<Recipe>,
    /// The evaluation section.
    pub eval: Option<Stored<EvalSpec>>,
}

/// Claims the oldest runnable job, if any, with a lease of `lease`.
pub async fn claim(pool: &PgPool, worker: &str, lease: Duration) -> sqlx::Result<Option<Claimed>> {
    let claimed: Option<Claimed> = sqlx::query_as(
        "with next as (
             select id from jobs where state = 'queued' and run_at <= now()
             order by run_at, id limit 1 for update skip locked
         )
         update jobs j set state = 'running', attempt = j.attempt + 1,
             lease_until = now() + make_interval(secs => $2), worker = $1,
             started_at = coalesce(j.started_at, now()), updated_at = now(), error = null
         from next where j.id = next.id
         returning j.id, j.attempt, j.max_attempts, j.model_id, j.model_sha256, j.recipe, j.eval",
    )
    .bind(worker)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    if let Some(job) = &claimed {
        sqlx::query("select pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(job.id.to_string())
            .execute(pool)
            .await?;
    }
    Ok(claimed)
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Still ours.
    Held,
    /// Still ours, and the user asked to cancel.
    CancelRequested,
    /// Lost: another attempt owns the job, or it was finished elsewhere.
    Lost,
}

/// Renews the lease and records progress, fenced by attempt.
pub async fn heartbeat(
    pool: &PgPool,
    id: Uuid,
    attempt: i32,
    lease: Duration,
    progress: Option<&Progress>,
) -> sqlx::Result<Lease> {
    let cancel: Option<bool> = sqlx::query_scalar(
        "with touched as (
             update jobs set lease_until = now() + make_interval(secs => $3),
                 progress = coalesce($4, progress), updated_at = now()
             where id = $1 and attempt = $2 and state = 'running'
             returning cancel_requested
         ), announced as (
             select pg_notify($5, $1::text) from touched where $4 is not null
         )
         select cancel_requested from touched, (select count(*) from announced) a",
    )
    .bind(id)
    .bind(attempt)
    .bind(lease.as_secs_f64())
    .bind(progress.map(Json))
    .bind(EVENTS_CHANNEL)
    .fetch_optional(pool)
    .await?;
    Ok(match cancel {
        None => Lease::Lost,
        Some(true) => Lease::CancelRequested,
        Some(false) => Lease::Held,
    })
}

/// One artifact file ready to publish.
#[derive(Debug)]
pub struct Artifact {
    /// File name.
    pub name: String,
    /// The sealed file (in the blob store's temp folder).
    pub blob: SealedBlob,
}

/// Records success, fenced: publishes the artifacts, stores the metrics and the summary, in one
/// transaction. `false` (and nothing kept) when the attempt no longer owns the job.
pub async fn complete(
    pool: &PgPool,
    store: &BlobStore,
    id: Uuid,
    attempt: i32,
    artifacts: Vec<Artifact>,
    tensors: &[TensorReport],
    summary: &Summary,
) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await?;
    let ours: Option<Uuid> = sqlx::query_scalar(
        "select id from jobs where id = $1 and attempt = $2 and state = 'running' for update",
    )
    .bind(id)
    .bind(attempt)
    .fetch_optional(&mut *tx)
    .await?;
    if ours.is_none() {
        return Ok(false);
    }
    let mut artifacts = artifacts;
    artifacts.sort_by(|a, b| a.blob.sha256.cmp(&b.blob.sha256));
    for artifact in artifacts {
        let (sha, len) = (artifact.blob.sha256.clone(), artifact.blob.len);
        blobs::acquire(&mut tx, store, artifact.blob).await?;
        sqlx::query(
            "insert into job_files (job_id, name, blob_sha256, bytes) values ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(&artifact.name)
        .bind(&sha)
        .bind(len as i64)
        .execute(&mut *tx)
        .await?;
    }
    let column = |f: fn(&TensorReport) -> String| tensors.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "insert into job_tensors (job_id, name, scheme, dtype, shape, bytes_in, bytes_out, sparsity,
                                  rel_error, sqnr_db, cosine, max_abs_error, note)
         select $1, t.* from unnest($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::int8[],
                                    $7::int8[], $8::float8[], $9::float8[], $10::float8[],
                                    $11::float8[], $12::float8[], $13::text[]) as t",
    )
    .bind(id)
    .bind(column(|t| t.name.clone()))
    .bind(column(|t| t.scheme.clone()))
    .bind(column(|t| t.dtype.clone()))
    .bind(tensors.iter().map(|t| serde_json::json!(t.shape)).collect::<Vec<_>>())
    .bind(tensors.iter().map(|t| t.bytes_in).collect::<Vec<_>>())
    .bind(tensors.iter().map(|t| t.bytes_out).collect::<Vec<_>>())
    .bind(tensors.iter().map(|t| t.sparsity).collect::<Vec<_>>())
    .bind(tensors.iter().map(|t| t.rel_error).collect::<Vec<_>>())
    .bind(tensors.iter().map(|t| t.sqnr_db).collect::<Vec<_>>())
    .bind(tensors.iter().map(|t| t.cosine).collect::<Vec<_>>())
    .bind(tensors.iter().map(|t| t.max_abs_error).collect::<Vec<_>>())
    .bind(tensors.iter().map(|t| t.note.clone()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update jobs set state = 'succeeded', result = $2, lease_until = null, worker = null,
             cancel_requested = false, finished_at = now(), updated_at = now(), error = null,
             progress = $3
         where id = $1",
    )
    .bind(id)
    .bind(Json(summary))
    .bind(Json(Progress {
        tensors_done: tensors.len() as u64,
        tensors_total: tensors.len() as u64,
        bytes_done: tensors.iter().map(|t| t.bytes_in as u64).sum(),
        bytes_total: tensors.iter().map(|t| t.bytes_in as u64).sum(),
        phase: None,
        evaluation: None,
        compressed: None,
    }))
    .execute(&mut *tx)
    .await?;
    notify(&mut tx, EVENTS_CHANNEL, &id.to_string()).await?;
    tx.commit().await?;
    Ok(true)
}

/// Delay before attempt `attempt + 1`: 2 s doubling per attempt, at most 5 minutes, ±10 % jitter.
pub fn backoff(attempt: i32) -> Duration {
    let base = 2f64 * 2f64.powi((attempt - 1).clamp(0, 20));
    let jitter = 0.9 + 0.2 * rand::random::<f64>();
    Duration::from_secs_f64(base.min(300.0) * jitter)
}

/// Records a failed attempt, fenced. A retryable failure goes back to the queue after
/// [`backoff`] while attempts remain; otherwise the job fails with `error`.
pub async fn fail(
    pool: &PgPool,
    id: Uuid,
    attempt: i32,
    error: &str,
    retryable: bool,
) -> sqlx::Result<bool> {
    let delay = backoff(attempt);
    let done = sqlx::query(
        "update jobs set
             state = case when $4 and attempt < max_attempts then 'queued'::job_state else 'failed'::job_state end,
             run_at = now() + make_interval(secs => $5),
             finished_at = case when $4 and attempt < max_attempts then null else now() end,
             lease_until = null, worker = null, error = $3, updated_at = now()
         where id = $1 and attempt = $2 and state = 'running'",
    )
    .bind(id)
    .bind(attempt)
    .bind(error)
    .bind(retryable)
    .bind(delay.as_secs_f64())
    .execute(pool)
    .await?;
    announce(pool, id, done.rows_affected() > 0).await
}

/// Records that the attempt stopped because the user canceled, fenced.
pub async fn mark_canceled(pool: &PgPool, id: Uuid, attempt: i32) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update jobs set state = 'canceled', lease_until = null, worker = null,
             finished_at = now(), updated_at = now()
         where id = $1 and attempt = $2 and state = 'running'",
    )
    .bind(id)
    .bind(attempt)
    .execute(pool)
    .await?;
    announce(pool, id, done.rows_affected() > 0).await
}

/// Gives a job back to the queue without counting the attempt (graceful shutdown), fenced.
pub async fn hand_back(pool: &PgPool, id: Uuid, attempt: i32) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "update jobs set state = 'queued', attempt = attempt - 1, lease_until = null, worker = null,
             run_at = now(), updated_at = now()
         where id = $1 and attempt = $2 and state = 'running'",
    )
    .bind(id)
    .bind(attempt)
    .execute(pool)
    .await?;
    if done.rows_affected() > 0 {
        sqlx::query("select pg_notify($1, '')")
            .bind(QUEUED_CHANNEL)
            .execute(pool)
            .await?;
    }
    announce(pool, id, done.rows_affected() > 0).await
}

async fn announce(pool: &PgPool, id: Uuid, changed: bool) -> sqlx::Result<bool> {
    if changed {
        sqlx::query("select pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(id.to_string())
            .execute(pool)
            .await?;
    }
    Ok(changed)
}

/// Requeues (or fails, when attempts are spent) up to `batch` running jobs whose lease expired.
/// Returns how many were rescued.
pub async fn rescue_expired(pool: &PgPool, batch: i64) -> sqlx::Result<u64> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "with expired as (
             select id from jobs where state = 'running' and lease_until < now()
             order by lease_until limit $1 for update skip locked
         )
         update jobs j set
             state = case when j.attempt < j.max_attempts then 'queued'::job_state else 'failed'::job_state end,
             finished_at = case when j.attempt < j.max_attempts then null else now() end,
             error = 'the worker stopped renewing its lease (crashed or cut off)',
             lease_until = null, worker = null, run_at = now(), updated_at = now()
         from expired where j.id = expired.id
         returning j.id",
    )
    .bind(batch)
    .fetch_all(pool)
    .await?;
    if !ids.is_empty() {
        sqlx::query("select pg_notify($1, '')")
            .bind(QUEUED_CHANNEL)
            .execute(pool)
            .await?;
        for id in &ids {
            announce(pool, *id, true).await?;
        }
    }
    Ok(ids.len() as u64)
}

/// Per-tensor metrics of one of the team's jobs (empty for another team's or a missing job;
/// callers check the job itself first).
pub async fn report(pool: &PgPool, team_id: Uuid, id: Uuid) -> sqlx::Result<Vec<TensorReport>> {
    sqlx::query_as(
        "select t.name, t.scheme, t.dtype, t.shape, t.bytes_in, t.bytes_out, t.sparsity,
                t.rel_error, t.sqnr_db, t.cosine, t.max_abs_error, t.note
         from job_tensors t join jobs j on j.id = t.job_id
         where j.id = $1 and j.team_id = $2 order by t.name",
    )
    .bind(id)
    .bind(team_id)
    .fetch_all(pool)
    .await
}

/// An artifact file as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct JobFile {
    /// File name.
    pub name: String,
    /// Size.
    pub bytes: i64,
    /// Content digest (also the ETag).
    pub sha256: String,
}

/// Artifact files of one of the team's jobs (empty for another team's or a missing job;
/// callers check the job itself first).
pub async fn files(pool: &PgPool, team_id: Uuid, id: Uuid) -> sqlx::Result<Vec<JobFile>> {
    sqlx::query_as(
        "select f.name, f.bytes, f.blob_sha256 as sha256
         from job_files f join jobs j on j.id = f.job_id
         where j.id = $1 and j.team_id = $2 order by f.name",
    )
    .bind(id)
    .bind(team_id)
    .fetch_all(pool)
    .await
}

/// Whole-service job figures for monitoring (all teams together; counts only).
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct QueueStats {
    /// Jobs per state: queued, running, succeeded, failed, canceled.
    pub queued: i64,
    /// Running.
    pub running: i64,
    /// Succeeded.
    pub succeeded: i64,
    /// Failed.
    pub failed: i64,
    /// Canceled.
    pub canceled: i64,
    /// Queued jobs whose time has come.
    pub ready: i64,
    /// Sum and count of run times of succeeded jobs, in seconds.
    pub duration_sum: f64,
    /// Sum of waits from submission to first start, in seconds.
    pub wait_sum: f64,
    /// Jobs that have started at least once.
    pub started: i64,
    /// Input weight bytes of succeeded jobs.
    pub bytes_processed: f64,
}

/// Counts for `/metrics`.
pub async fn stats(pool: &PgPool) -> sqlx::Result<QueueStats> {
    sqlx::query_as(
        "select count(*) filter (where state = 'queued') as queued,
                count(*) filter (where state = 'running') as running,
                count(*) filter (where state = 'succeeded') as succeeded,
                count(*) filter (where state = 'failed') as failed,
                count(*) filter (where state = 'canceled') as canceled,
                count(*) filter (where state = 'queued' and run_at <= now()) as ready,
                coalesce(sum(extract(epoch from finished_at - started_at)) filter (where state = 'succeeded'), 0)::float8 as duration_sum,
                coalesce(sum(extract(epoch from started_at - created_at)) filter (where started_at is not null), 0)::float8 as wait_sum,
                count(*) filter (where started_at is not null) as started,
                coalesce(sum((result->>'bytes_in')::float8) filter (where state = 'succeeded'), 0)::float8 as bytes_processed
         from jobs",
    )
    .fetch_one(pool)
    .await
}

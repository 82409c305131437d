//! `squeeze bench queue`: the job queue and the worker pool, on a private PostgreSQL created for
//! the run in a fresh folder and removed after it.
//!
//! Four figures: the rate of plain `select 1` round trips from `workers` concurrent tasks (the
//! baseline); queue throughput, jobs that are claimed and completed with no kernel in between,
//! from `workers` concurrent claimers; enqueue-to-start latency, one job at a time into idle
//! workers woken by NOTIFY; and tiny real jobs (int8 on a small model, artifacts written and
//! published) through the worker pool. Every job is checked to have run exactly once.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use uuid::Uuid;

use crate::jobs::queue::{self, NewJob};
use crate::jobs::recipe;
use crate::jobs::report::Summary;
use crate::store::blobs::BlobStore;
use crate::store::db::Database;
use crate::store::ingest::{self, FileKind};
use crate::store::models::{self, Owner};
use crate::worker::{WorkerConfig, WorkerPool};

/// What to run.
#[derive(Debug, Clone)]
pub struct QueueBench {
    /// Jobs for the queue-only throughput figure.
    pub jobs: usize,
    /// Concurrent workers (and claimers).
    pub workers: usize,
    /// Jobs submitted one at a time for the latency figure.
    pub latency_samples: usize,
}

/// Runs the benchmark in a fresh folder under `work_dir` and prints its figures.
pub async fn run(bench: &QueueBench, work_dir: &Path) -> anyhow::Result<()> {
    let dir = work_dir.join(format!("queue-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let database = Database::open(None, &dir, (bench.workers * 2 + 8) as u32).await?;
    let result = measure(bench, &database, &dir).await;
    database.close().await?;
    std::fs::remove_dir_all(&dir).ok();
    result
}

async fn measure(bench: &QueueBench, database: &Database, dir: &Path) -> anyhow::Result<()> {
    database.migrate().await?;
    let db = &database.pool;
    let blobs = BlobStore::open(&dir.join("blobs")).context("opening the blob store")?;
    let team_id = {
        let mut conn = db.acquire().await?;
        crate::auth::teams::ensure(&mut conn, "bench").await?
    };
    let model = tiny_model(db, &blobs, team_id).await?;
    let workers = bench.workers.max(1);

    let round_trips = select_one_rate(db, workers, Duration::from_secs(1)).await?;
    println!(
        "baseline: {round_trips:.0} `select 1` round trips/s from {workers} concurrent connections"
    );

    // Queue alone: submit, then claim + complete with no kernel in between.
    let submitted = Instant::now();
    for _ in 0..bench.jobs {
        submit(db, team_id, &model).await?;
    }
    let submit_rate = bench.jobs as f64 / submitted.elapsed().as_secs_f64();
    let started = Instant::now();
    let claimers: Vec<_> = (0..workers)
        .map(|n| {
            let db = db.clone();
            let blobs = blobs.clone();
            tokio::spawn(async move {
                let name = format!("bench:{n}");
                let summary = Summary::default();
                let mut done = 0usize;
                while let Some(job) = queue::claim(&db, &name, Duration::from_secs(30)).await? {
                    queue::complete(&db, &blobs, job.id, job.attempt, vec![], &[], &summary)
                        .await?;
                    done += 1;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut done = 0;
    for claimer in claimers {
        done += claimer.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let once = ran_once(db, team_id).await?;
    anyhow::ensure!(
        done == bench.jobs && once == bench.jobs as i64,
        "{done} claims, {once} jobs succeeded on their first attempt, of {}",
        bench.jobs
    );
    let rate = bench.jobs as f64 / seconds;
    println!(
        "queue: {} jobs claimed and completed by {workers} workers in {seconds:.2} s = {rate:.0} jobs/s ({:.3} of the baseline; {:.1} round-trip times per job per worker); submit {submit_rate:.0} jobs/s from one connection; each ran exactly once",
        bench.jobs,
        rate / round_trips,
        round_trips / rate,
    );

    // The worker pool on real (tiny) jobs.
    let pool = WorkerPool::start(
        db.clone(),
        blobs.clone(),
        WorkerConfig {
            count: workers,
            ..WorkerConfig::default()
        },
        crate::jobs::events::JobEvents::start(db.clone()).queued(),
    );
    // Let the idle workers and the wake-up listener settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::with_capacity(bench.latency_samples);
    for _ in 0..bench.latency_samples {
        let id = submit(db, team_id, &model).await?;
        wait_final(db, team_id, &[id]).await?;
        let waited: f64 = sqlx::query_scalar(
            "select extract(epoch from started_at - created_at)::float8 from jobs where id = $1",
        )
        .bind(id)
        .fetch_one(db)
        .await?;
        latencies.push(waited * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    if !latencies.is_empty() {
        println!(
            "enqueue to start, idle workers woken by NOTIFY ({} jobs one at a time): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({:.1} round-trip times at p50)",
            latencies.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            at(1.0),
            at(0.5) / 1000.0 * round_trips / workers as f64,
        );
    }
    let batch = (bench.jobs / 5).clamp(20, 400);
    let started = Instant::now();
    let mut ids = Vec::with_capacity(batch);
    for _ in 0..batch {
        ids.push(submit(db, team_id, &model).await?);
    }
    wait_final(db, team_id, &ids).await?;
    let seconds = started.elapsed().as_secs_f64();
    pool.shutdown().await;
    let once = ran_once(db, team_id).await?;
    let expected = (bench.jobs + bench.latency_samples + batch) as i64;
    anyhow::ensure!(
        once == expected,
        "{once} of {expected} jobs succeeded on their first attempt"
    );
    println!(
        "worker pool: {batch} tiny jobs (int8 per channel on 2 × 64×64 BF16, artifacts written, fsynced and published) by {workers} workers in {seconds:.2} s = {:.1} jobs/s; each ran exactly once",
        batch as f64 / seconds
    );
    Ok(())
}

/// A stored model of two 64×64 BF16 matrices.
pub(super) async fn tiny_model(
    db: &sqlx::PgPool,
    blobs: &BlobStore,
    team_id: Uuid,
) -> anyhow::Result<(Uuid, String)> {
    let mut bytes = Vec::new();
    super::pipeline::write_synthetic_model(&mut bytes, 2, 64, 64)?;
    let len = bytes.len() as u64;
    let mut budget = len;
    let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(bytes))]);
    let file = ingest::ingest(
        blobs,
        "model.safetensors".into(),
        FileKind::Safetensors,
        body,
        &mut budget,
        len,
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan = models::plan(vec![file]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let owner = Owner {
        team_id,
        token_id: None,
    };
    let model = models::create(db, blobs, owner, "bench", plan).await?;
    Ok((model.id, model.sha256))
}

pub(super) async fn submit(
    db: &sqlx::PgPool,
    team_id: Uuid,
    model: &(Uuid, String),
) -> anyhow::Result<Uuid> {
    let new = NewJob {
        team_id,
        created_by: None,
        model_id: model.0,
        model_sha256: model.1.clone(),
        name: None,
        recipe: recipe::preset("int8")?,
        eval: None,
        max_attempts: 1,
        idempotency: None,
    };
    let (job, _) = queue::submit(db, new).await?;
    Ok(job.id)
}

async fn wait_final(db: &sqlx::PgPool, team_id: Uuid, ids: &[Uuid]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let open: i64 = sqlx::query_scalar(
            "select count(*) from jobs where team_id = $1 and id = any($2)
               and state in ('queued', 'running')",
        )
        .bind(team_id)
        .bind(ids)
        .fetch_one(db)
        .await?;
        if open == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{open} jobs still open after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn ran_once(db: &sqlx::PgPool, team_id: Uuid) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from jobs where team_id = $1 and state = 'succeeded' and attempt = 1",
    )
    .bind(team_id)
    .fetch_one(db)
    .await?)
}

/// `select 1` round trips per second from `tasks` concurrent connections over `length`.
async fn select_one_rate(db: &sqlx::PgPool, tasks: usize, length: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let runners: Vec<_> = (0..tasks)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut conn = db.acquire().await?;
                let mut n = 0u64;
                while started.elapsed() < length {
                    sqlx::query_scalar::<_, i32>("select 1")
                        .fetch_one(&mut *conn)
                        .await?;
                    n += 1;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for runner in runners {
        total += runner.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

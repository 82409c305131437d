//! `squeeze bench events`: the team event stream's fan-out. A real `serve` (private PostgreSQL
//! in a fresh folder, no workers) with N subscribers on `GET /api/v1/events`; each round
//! notifies one job change and times how long each subscriber takes to receive it. The baseline
//! is the same measurement with one subscriber, in the same run; the fan-out's database reads per
//! change show that a change is read once, not once per subscriber.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::app::Application;
use crate::config::{DbArgs, ServeArgs};
use crate::jobs::events::JOB_READS;
use crate::jobs::queue::EVENTS_CHANNEL;
use crate::store::blobs::BlobStore;

/// What to run.
#[derive(Debug, Clone)]
pub struct EventsBench {
    /// Subscribers on the team stream.
    pub subscribers: usize,
    /// Job changes to time.
    pub rounds: usize,
}

/// Runs the benchmark in a fresh folder under `work_dir` and prints its figures.
pub async fn run(bench: &EventsBench, work_dir: &Path) -> anyhow::Result<()> {
    let dir = work_dir.join(format!("events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let token = crate::auth::tokens::generate();
    let app = Application::build(ServeArgs {
        addr: "127.0.0.1:0".parse()?,
        db: DbArgs {
            database_url: None,
            data_dir: dir.clone(),
        },
        max_upload: 1 << 30,
        max_dataset: 1 << 20,
        upload_idle_secs: 60,
        max_connections: 4096,
        header_timeout_secs: 60,
        admin_token: Some(token.clone()),
        static_dir: None,
        shutdown_grace_secs: 1,
        login_url: false,
        worker: crate::config::WorkerFlags {
            workers: 0,
            poll_secs: 2,
        },
    })
    .await?;
    let address = app.local_addr();
    let db = app.state().db.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let result = measure(bench, address, &token, &db, &dir).await;
    let _ = stop.send(());
    server.await??;
    std::fs::remove_dir_all(&dir).ok();
    result
}

async fn measure(
    bench: &EventsBench,
    address: std::net::SocketAddr,
    token: &str,
    db: &sqlx::PgPool,
    dir: &Path,
) -> anyhow::Result<()> {
    let blobs = BlobStore::open(&dir.join("blobs"))?;
    let team_id: uuid::Uuid =
        sqlx::query_scalar("select t.id from teams t where t.name = 'default'")
            .fetch_one(db)
            .await?;
    let model = super::queue::tiny_model(db, &blobs, team_id).await?;
    let job = super::queue::submit(db, team_id, &model).await?;
    let (one_p50, one_p99, _) = rounds(1, bench.rounds, address, token, db, job).await?;
    println!(
        "baseline: 1 subscriber, {} changes: delivery p50 {:.1} ms, p99 {:.1} ms",
        bench.rounds,
        one_p50 * 1e3,
        one_p99 * 1e3
    );
    let (p50, p99, per_change) =
        rounds(bench.subscribers, bench.rounds, address, token, db, job).await?;
    println!(
        "fan-out: {} subscribers, {} changes: delivery p50 {:.1} ms, p99 {:.1} ms ({:.1}x the baseline's p99); {:.1} database reads per change",
        bench.subscribers,
        bench.rounds,
        p50 * 1e3,
        p99 * 1e3,
        p99 / one_p99.max(1e-6),
        per_change
    );
    Ok(())
}

/// `subscribers` streams; `count` notified changes; (p50, p99) delivery seconds over every
/// subscriber and change, and the fan-out's database reads per change.
async fn rounds(
    subscribers: usize,
    count: usize,
    address: std::net::SocketAddr,
    token: &str,
    db: &sqlx::PgPool,
    job: uuid::Uuid,
) -> anyhow::Result<(f64, f64, f64)> {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Instant>();
    let mut streams = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(
                format!(
                    "GET /api/v1/events HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {token}\r\naccept: text/event-stream\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        let seen = seen_tx.clone();
        streams.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("event: job") && seen.send(Instant::now()).is_err() {
                    break;
                }
            }
            anyhow::Ok(())
        }));
    }
    // Every subscriber is listening once a first change reaches them all.
    let ready = Instant::now() + Duration::from_secs(30);
    loop {
        notify(db, job).await?;
        let mut got = 0;
        while got < subscribers {
            match tokio::time::timeout(Duration::from_millis(500), seen_rx.recv()).await {
                Ok(Some(_)) => got += 1,
                _ => break,
            }
        }
        if got == subscribers {
            break;
        }
        anyhow::ensure!(Instant::now() < ready, "subscribers did not connect");
    }
    let reads = || JOB_READS.load(std::sync::atomic::Ordering::Relaxed);
    let reads_before = reads();
    let mut delays = Vec::with_capacity(subscribers * count);
    for _ in 0..count {
        let sent = Instant::now();
        notify(db, job).await?;
        for _ in 0..subscribers {
            let at = tokio::time::timeout(Duration::from_secs(30), seen_rx.recv())
                .await
                .context("a subscriber missed a change")?
                .context("a subscriber stopped")?;
            delays.push(at.duration_since(sent).as_secs_f64());
        }
    }
    let per_change = (reads() - reads_before) as f64 / count as f64;
    for stream in streams {
        stream.abort();
    }
    delays.sort_by(f64::total_cmp);
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99), per_change))
}

async fn notify(db: &sqlx::PgPool, job: uuid::Uuid) -> sqlx::Result<()> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(EVENTS_CHANNEL)
        .bind(job.to_string())
        .execute(db)
        .await
        .map(drop)
}

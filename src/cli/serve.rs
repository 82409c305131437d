//! `squeeze serve` (the API, the dashboard and in-process workers) and `squeeze worker`
//! (workers alone, on the same database and data folder).

use super::*;

pub(super) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let app = Application::build(args).await?;
    let addr = app.local_addr();
    // Scripts read these lines: keep their shape.
    println!("squeeze listening on http://{addr}");
    match app.login_url() {
        Some(url) => println!("dashboard sign-in (single use, valid 10 minutes): {url}"),
        None => println!(
            "dashboard sign-in: `squeeze token login-url` prints a single-use link (or start with --login-url)"
        ),
    }
    if let Some(path) = app.admin_token_file() {
        println!("admin token written to {}", path.display());
    }
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, "serving");
    app.run_until(app::shutdown_signal()).await
}

pub(super) async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let database = open(&args.db).await?;
    database.migrate().await?;
    let blobs = crate::store::blobs::BlobStore::open(&args.db.data_dir.join("blobs"))
        .context("opening the blob store")?;
    match blobs.sweep_unowned() {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "removed temp files no live process owns"),
        Err(err) => tracing::warn!(error = %err, "could not sweep temp files"),
    }
    let pool = crate::worker::WorkerPool::start(
        database.pool.clone(),
        blobs,
        crate::worker::WorkerConfig {
            count: args.worker.workers.max(1),
            grace: std::time::Duration::from_secs(args.shutdown_grace_secs),
            lease: std::time::Duration::from_secs(args.lease_secs.max(1)),
            poll: std::time::Duration::from_secs(args.worker.poll_secs.max(1)),
        },
        crate::jobs::events::JobEvents::start(database.pool.clone()).queued(),
    );
    tracing::info!(workers = args.worker.workers.max(1), "workers running");
    app::shutdown_signal().await;
    tracing::info!("stopping: no new jobs; running jobs finish or are handed back");
    pool.shutdown().await;
    database.close().await
}

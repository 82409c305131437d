//! The connection pool and migrations: reaches the database named by `DATABASE_URL`, or the
//! private cluster in the data folder (see [`super::embedded`]), and applies `migrations/`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::embedded::{self, Cluster};

/// The migrations under `migrations/`, embedded at compile time (no database needed to build).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What to do with a private cluster when the process is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterPolicy {
    /// `serve` manages the cluster's life: stop it on exit.
    StopOnExit,
    /// Helper commands leave it as they found it: stop it only if they started it.
    StopIfStarted,
}

/// An open pool, and the private cluster behind it if there is one.
#[derive(Debug)]
pub struct Database {
    /// The pool every module queries through.
    pub pool: PgPool,
    cluster: Option<(Cluster, ClusterPolicy)>,
}

impl Database {
    /// Connects to `url` or, without one, to the private cluster under `data_dir`.
    pub async fn open(
        url: Option<&str>,
        data_dir: &Path,
        policy: ClusterPolicy,
        max_connections: u32,
    ) -> anyhow::Result<Database> {
        let (options, cluster) = match url {
            Some(url) => (
                PgConnectOptions::from_str(url)
                    .context("DATABASE_URL is not a valid PostgreSQL URL")?,
                None,
            ),
            None => {
                let dir = data_dir.to_path_buf();
                let cluster = tokio::task::spawn_blocking(move || Cluster::ensure(&dir)).await??;
                tracing::info!(url = %cluster.url(embedded::DB_NAME), started = cluster.started_here(), "private PostgreSQL ready");
                ensure_database(&cluster).await?;
                (
                    cluster.connect_options(embedded::DB_NAME),
                    Some((cluster, policy)),
                )
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .context("could not connect to PostgreSQL")?;
        Ok(Database { pool, cluster })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .context("applying migrations")?;
        Ok(())
    }

    /// Closes the pool and, as the policy says, stops the private cluster.
    pub async fn close(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some((cluster, policy)) = self.cluster {
            let stop = policy == ClusterPolicy::StopOnExit || cluster.started_here();
            if stop {
                tokio::task::spawn_blocking(move || cluster.stop()).await??;
                tracing::info!("private PostgreSQL stopped");
            }
        }
        Ok(())
    }
}

async fn ensure_database(cluster: &Cluster) -> anyhow::Result<()> {
    use sqlx::ConnectOptions;
    let mut conn = cluster
        .connect_options("postgres")
        .connect()
        .await
        .context("connecting to the private PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(embedded::DB_NAME)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // The name is the constant DB_NAME ("squeeze").
        sqlx::query("create database squeeze")
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

//! The connection pool and migrations: reaches the database named by `DATABASE_URL`, or the
//! private cluster in the data folder (see [`super::embedded`]), and applies `migrations/`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::embedded::{self, PostgresCluster};

/// The migrations under `migrations/`, embedded at compile time (no database needed to build).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// An open pool, and the private cluster behind it if there is one.
#[derive(Debug)]
pub struct Database {
    /// The pool every module queries through.
    pub pool: PgPool,
    cluster: Option<PostgresCluster>,
}

impl Database {
    /// Connects to `url` or, without one, to the private cluster under `data_dir`.
    pub async fn open(
        url: Option<&str>,
        data_dir: &Path,
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
                let cluster =
                    tokio::task::spawn_blocking(move || PostgresCluster::ensure(&dir)).await??;
                tracing::info!(url = %cluster.url(embedded::DB_NAME), started = cluster.started_here(), "private PostgreSQL ready");
                ensure_database(&cluster).await?;
                (cluster.connect_options(embedded::DB_NAME), Some(cluster))
            }
        };
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.application_name(&application_name()))
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

    /// Closes the pool and, when this process owns the private cluster (it started it, or
    /// took it over), stops it; but while other squeeze processes are still connected, it
    /// hands the ownership to one of them instead, which stops the cluster when it exits.
    pub async fn close(self) -> anyhow::Result<()> {
        let others = match &self.cluster {
            Some(cluster) if cluster.owned_here() => other_processes(&self.pool).await,
            _ => Vec::new(),
        };
        self.pool.close().await;
        if let Some(cluster) = self.cluster {
            if let Some(&heir) = others.first() {
                cluster.hand_over(heir)?;
                tracing::info!(
                    pid = heir,
                    "private PostgreSQL left running for another squeeze process"
                );
            } else if cluster.owned_here() {
                tokio::task::spawn_blocking(move || cluster.stop()).await??;
                tracing::info!("private PostgreSQL stopped");
            }
        }
        Ok(())
    }
}

/// The pids of the other live squeeze processes connected to this database (each names itself
/// in `application_name`).
async fn other_processes(pool: &PgPool) -> Vec<u32> {
    let names: Vec<String> = sqlx::query_scalar(
        "select distinct application_name from pg_stat_activity
         where application_name like 'squeeze:%' and application_name <> $1",
    )
    .bind(application_name())
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    names
        .iter()
        .filter_map(|n| n.strip_prefix("squeeze:")?.parse().ok())
        .filter(|&pid| embedded::process_alive(pid))
        .collect()
}

/// How this process's connections name themselves to PostgreSQL.
fn application_name() -> String {
    format!("squeeze:{}", std::process::id())
}

async fn ensure_database(cluster: &PostgresCluster) -> anyhow::Result<()> {
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
        // The name is the constant DB_NAME ("squeeze"). Another squeeze process that found the
        // cluster at the same moment may create it first: duplicate_database, or the catalog's
        // unique violation when both got past the check together, means it exists.
        if let Err(err) = sqlx::query("create database squeeze")
            .execute(&mut conn)
            .await
        {
            let code = err.as_database_error().and_then(|e| e.code());
            if !matches!(code.as_deref(), Some("42P04" | "23505")) {
                return Err(err.into());
            }
        }
    }
    Ok(())
}

//! What every handler shares: the database pool, the blob store, the upload limits, the job
//! event fan-out, the sign-in throttle and the disk-full memory. Built by `app` at startup,
//! owned here so that handlers need nothing above the API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef};
use sqlx::PgPool;

use crate::auth;
use crate::jobs::events::JobEvents;
use crate::store::blobs::BlobStore;

/// Limits applied to uploads.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// Largest request body for an upload.
    pub max_upload: u64,
    /// Largest evaluation set.
    pub max_dataset: u64,
    /// Longest wait for the next chunk of an upload.
    pub upload_idle: Duration,
}

/// State shared by all handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Database pool.
    pub db: PgPool,
    /// Uploaded files.
    pub blobs: BlobStore,
    /// Upload limits.
    pub limits: Arc<UploadLimits>,
    /// Job change notifications.
    pub events: JobEvents,
    /// Workers running in this process.
    pub worker_count: usize,
    /// Sign-in attempts per client address.
    pub login_throttle: Arc<auth::throttle::Throttle>,
    /// When PostgreSQL last refused a write for lack of disk space.
    pub database_disk_full_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// How long after PostgreSQL refused a write for lack of space `/readyz` says not ready.
pub const DISK_FULL_MEMORY: Duration = Duration::from_secs(30);

impl AppState {
    /// Whether PostgreSQL refused a write for lack of disk space within [`DISK_FULL_MEMORY`].
    pub fn database_disk_recently_full(&self) -> bool {
        self.database_disk_full_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|at| at.elapsed() < DISK_FULL_MEMORY)
    }
}

impl FromRef<AppState> for PgPool {
    fn from_ref(state: &AppState) -> PgPool {
        state.db.clone()
    }
}

/// The peer address as handlers see it.
pub type Peer = ConnectInfo<SocketAddr>;

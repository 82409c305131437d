//! Job change notifications inside one process: a single LISTEN connection on
//! `squeeze_jobs` reads each changed job once and fans it out, with its team, to every event
//! stream through a broadcast channel; each stream passes on only its own team's jobs. So a
//! change costs one database read however many streams are open. The listener reconnects
//! with backoff and then tells the streams to resync, so a lost notification only delays.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::queue::{self, EVENTS_CHANNEL, Job};

/// Changed jobs read from the database by the fan-out since the process started (for
/// `squeeze bench events`: one read per change, however many streams).
pub static JOB_READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What a stream receives.
#[derive(Debug)]
pub enum JobChange {
    /// A job as it is now, and its team.
    Changed { team_id: Uuid, job: Box<Job> },
    /// Notifications may have been missed (the listener reconnected): re-read.
    Resync,
}

/// Subscribe to learn which jobs changed.
#[derive(Debug, Clone)]
pub struct JobEvents {
    sender: broadcast::Sender<Arc<JobChange>>,
}

impl JobEvents {
    /// Starts the listener task.
    pub fn start(db: PgPool) -> JobEvents {
        let (sender, _) = broadcast::channel(1024);
        let events = JobEvents { sender };
        let fanout = events.sender.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let result: sqlx::Result<()> = async {
                    let mut listener = PgListener::connect_with(&db).await?;
                    listener.listen(EVENTS_CHANNEL).await?;
                    let _ = fanout.send(Arc::new(JobChange::Resync));
                    loop {
                        let note = listener.recv().await?;
                        let Ok(id) = note.payload().parse::<Uuid>() else {
                            continue;
                        };
                        JOB_READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        match queue::get_with_team(&db, id).await {
                            Ok(Some((team_id, job))) => {
                                let job = Box::new(job);
                                let _ = fanout.send(Arc::new(JobChange::Changed { team_id, job }));
                            }
                            Ok(None) => {}
                            Err(err) => {
                                tracing::warn!(error = %err, %id, "could not read a changed job");
                                let _ = fanout.send(Arc::new(JobChange::Resync));
                            }
                        }
                    }
                }
                .await;
                if db.is_closed() {
                    return;
                }
                if let Err(err) = result {
                    tracing::warn!(error = %err, "job event listener lost; reconnecting");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        });
        events
    }

    /// A receiver of changed jobs.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<JobChange>> {
        self.sender.subscribe()
    }
}

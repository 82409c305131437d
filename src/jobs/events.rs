//! Job notifications inside one process, on its single LISTEN connection: each changed job
//! (`squeeze_jobs`) is read once and fanned out, with its team, to every event stream through a
//! broadcast channel, each stream passing on only its own team's jobs, so a change costs one
//! database read however many streams are open (and none when no stream is open); each queued
//! job (`squeeze_job_queued`) wakes the idle workers. The listener reconnects with backoff and
//! then tells the streams to resync and wakes the workers, so a lost notification only delays.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use super::queue::{self, EVENTS_CHANNEL, Job, QUEUED_CHANNEL};

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

/// The process's job notifications: subscribe to learn which jobs changed, or wait on
/// [`JobEvents::queued`] for work.
#[derive(Debug, Clone)]
pub struct JobEvents {
    sender: broadcast::Sender<Arc<JobChange>>,
    queued: Arc<Notify>,
}

impl JobEvents {
    /// Starts the listener task: the process's one LISTEN connection.
    pub fn start(db: PgPool) -> JobEvents {
        let (sender, _) = broadcast::channel(1024);
        let events = JobEvents {
            sender,
            queued: Arc::new(Notify::new()),
        };
        let fanout = events.sender.clone();
        let queued = events.queued.clone();
        tokio::spawn(async move {
            const FIRST_BACKOFF: Duration = Duration::from_millis(200);
            let mut backoff = FIRST_BACKOFF;
            loop {
                let result: sqlx::Result<()> = async {
                    let mut listener = PgListener::connect_with(&db).await?;
                    listener
                        .listen_all([EVENTS_CHANNEL, QUEUED_CHANNEL])
                        .await?;
                    backoff = FIRST_BACKOFF;
                    let _ = fanout.send(Arc::new(JobChange::Resync));
                    // Jobs queued while the connection was down start now, not at the next poll.
                    queued.notify_waiters();
                    loop {
                        // Not `recv`, which reconnects without a word: the jobs queued while
                        // the connection was down would then wait for the next poll. A lost
                        // connection ends this session, and the next one resyncs and wakes.
                        let Some(note) = listener.try_recv().await? else {
                            return Ok(());
                        };
                        if note.channel() == QUEUED_CHANNEL {
                            queued.notify_waiters();
                            continue;
                        }
                        if fanout.receiver_count() == 0 {
                            continue;
                        }
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
                match result {
                    Err(err) => {
                        tracing::warn!(error = %err, "job event listener lost; reconnecting")
                    }
                    Ok(()) => tracing::warn!("job event listener's connection lost; reconnecting"),
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

    /// Woken at each queued job and whenever the listener (re)connects; idle workers wait on it
    /// (and poll besides, for the time the connection is down).
    pub fn queued(&self) -> Arc<Notify> {
        self.queued.clone()
    }
}

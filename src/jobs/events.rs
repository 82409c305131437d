//! Job change notifications inside one process: a single LISTEN connection on
//! `squeeze_jobs` fans job ids out to every event stream through a broadcast channel. It
//! reconnects with backoff; streams also re-read on a timer, so a lost notification only delays.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::queue::EVENTS_CHANNEL;

/// Subscribe to learn which jobs changed.
#[derive(Debug, Clone)]
pub struct JobEvents {
    sender: broadcast::Sender<Uuid>,
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
                    loop {
                        let note = listener.recv().await?;
                        if let Ok(id) = note.payload().parse() {
                            let _ = fanout.send(id);
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

    /// A receiver of changed job ids.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.sender.subscribe()
    }
}

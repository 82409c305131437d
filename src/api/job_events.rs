//! A job's changes as Server-Sent Events: one job's stream (`/jobs/{id}/events`), which ends
//! after a final state, and the team's (`/events`), both fed by the one LISTEN connection's
//! fan-out (`jobs::events`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::api::state::AppState;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::jobs::events::JobChange;
use crate::jobs::queue::{self, Job};

use crate::api::jobs::job_of;

/// Routes of the event streams.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(job_events))
        .routes(routes!(team_events))
}

struct Follow {
    state: AppState,
    team_id: Uuid,
    id: Uuid,
    events: tokio::sync::broadcast::Receiver<std::sync::Arc<JobChange>>,
    first: Option<Job>,
    last: Option<(String, serde_json::Value)>,
    done: bool,
    sequence: u64,
}

impl Follow {
    /// Waits for a change of this job: the job as the fan-out read it, or `None` when it
    /// should be re-read (a resync, a lag, or five quiet seconds).
    async fn wait(&mut self) -> Option<Job> {
        let id = self.id;
        let events = &mut self.events;
        let team_id = self.team_id;
        let notified = async {
            loop {
                match events.recv().await {
                    Ok(change) => match change.as_ref() {
                        JobChange::Changed { team_id: t, job } if *t == team_id && job.id == id => {
                            return Some(Job::clone(job));
                        }
                        JobChange::Resync => return None,
                        JobChange::Changed { .. } => {}
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await
                    }
                }
            }
        };
        // The timer is the fallback for a notification lost before the listener noticed.
        tokio::time::timeout(Duration::from_secs(5), notified)
            .await
            .ok()
            .flatten()
    }
}

/// Follow a job
///
/// Server-Sent Events: the job as it is now (event `state`), then one event per change of
/// state (`state`) or of progress (`progress`), each carrying the whole job as JSON in `data`;
/// the stream ends after a final state.
#[utoipa::path(
    get,
    path = "/jobs/{id}/events",
    tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "An event stream whose `data` are jobs", body = Job, content_type = "text/event-stream"),
        (status = 404, description = "No such job in the caller's team"),
    )
)]
async fn job_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let first = job_of(&state, &caller, id).await?;
    let follow = Follow {
        events: state.events.subscribe(),
        state,
        team_id: caller.team_id,
        id,
        first: Some(first),
        last: None,
        done: false,
        sequence: 0,
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        if f.done {
            return None;
        }
        loop {
            let job = match f.first.take() {
                Some(job) => job,
                None => match f.wait().await {
                    Some(job) => job,
                    None => match queue::get(&f.state.db, f.team_id, f.id).await {
                        Ok(Some(job)) => job,
                        _ => return None,
                    },
                },
            };
            let progress = serde_json::to_value(&job.progress.0).unwrap_or_default();
            let key = (job.state.clone(), progress);
            if f.last.as_ref() == Some(&key) {
                continue;
            }
            let kind = if f.last.as_ref().map(|l| &l.0) == Some(&job.state) {
                "progress"
            } else {
                "state"
            };
            f.last = Some(key);
            f.done = job.is_terminal();
            f.sequence += 1;
            let event = Event::default()
                .event(kind)
                .id(f.sequence.to_string())
                .json_data(&job)
                .unwrap_or_else(|_| Event::default().comment("unserialisable job"));
            return Some((Ok(event), f));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Follow every job of the team
///
/// Server-Sent Events for dashboards that watch a list: one `job` event (the whole job as
/// JSON in `data`) each time any of the caller's team's jobs is submitted or changes state or
/// progress, for as long as the client stays connected. A `resync` event (empty `data`) says
/// changes were missed because the client fell behind: read the list again.
#[utoipa::path(
    get,
    path = "/events",
    tag = "jobs",
    responses(
        (status = 200, description = "An event stream of `job` and `resync` events", body = Job, content_type = "text/event-stream"),
    )
)]
async fn team_events(
    State(state): State<AppState>,
    caller: Caller,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = state.events.subscribe();
    let stream = futures_util::stream::unfold(
        (state, caller.team_id, events),
        |(state, team_id, mut events)| async move {
            loop {
                let change = match events.recv().await {
                    Ok(change) => change,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let resync = Event::default().event("resync").data("");
                        return Some((Ok(resync), (state, team_id, events)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                };
                let job = match change.as_ref() {
                    JobChange::Changed { team_id: t, job } if *t == team_id => job,
                    // Another team's job.
                    JobChange::Changed { .. } => continue,
                    JobChange::Resync => {
                        let resync = Event::default().event("resync").data("");
                        return Some((Ok(resync), (state, team_id, events)));
                    }
                };
                let event = Event::default()
                    .event("job")
                    .json_data(job)
                    .unwrap_or_else(|_| Event::default().comment("unserialisable job"));
                return Some((Ok(event), (state, team_id, events)));
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

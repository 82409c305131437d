//! Workers: the claim loop, the lease keeper (heartbeat and progress), cancellation, the rescuer
//! of expired leases, graceful shutdown, and the one rayon pool on which all CPU work runs.
//!
//! A worker is a tokio task that claims a job, then hands the pipeline to the rayon pool and
//! waits on a oneshot; it never computes on a tokio thread. While the pipeline runs, a keeper
//! renews the lease and writes progress (a few times a second, fenced by attempt); when the lease
//! is lost or the user cancels, it sets the kernel's cancel flag, which the kernels check between
//! chunks. Idle workers sleep until the process's listener (`jobs::events`) hears of a queued job,
//! or a poll interval.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tracing::Instrument;
use uuid::Uuid;

use crate::eval::EvalSpec;
use crate::formats::writer::OutputDir;
use crate::jobs::queue::{self, Artifact, Claimed, Lease};
use crate::jobs::recipe::Recipe;
use crate::jobs::report::Progress;
use crate::numeric::Cancel;
use crate::pipeline::eval_step::Evaluation;
use crate::pipeline::{self, InputFile, InputKind, PipelineError};
use crate::store::blobs::{BlobStore, WorkDir};
use crate::store::{datasets, models};

/// How workers behave.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Number of concurrent jobs in this process.
    pub count: usize,
    /// Lease length; renewed every third of it.
    pub lease: Duration,
    /// Longest sleep between polls when no NOTIFY arrives.
    pub poll: Duration,
    /// How long running jobs may continue after shutdown is asked before they are handed back.
    pub grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            count: 1,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(2),
            grace: Duration::from_secs(20),
        }
    }
}

/// The process's pool for CPU work; every kernel runs here.
pub fn cpu_pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::env::var("SQUEEZE_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("squeeze-cpu-{i}"))
            // Jobs contain their own panics (`pipeline::contain_panic`); this handler is the
            // last line, so a panic that escapes one is logged instead of aborting the process.
            .panic_handler(|payload| {
                tracing::error!(
                    panic = %pipeline::panic_message(payload.as_ref()),
                    "a task on the CPU pool panicked"
                );
            })
            .build()
            .expect("the CPU pool starts")
    })
}

/// Running workers; dropping it does not stop them, [`WorkerPool::shutdown`] does.
pub struct WorkerPool {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts `config.count` workers and the lease rescuer. Idle workers wait on `wake`, the
    /// process's listener's wake-up for queued jobs ([`JobEvents::queued`]).
    pub fn start(
        db: PgPool,
        blobs: BlobStore,
        config: WorkerConfig,
        wake: Arc<Notify>,
    ) -> WorkerPool {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        if config.count > 0 {
            tasks.push(tokio::spawn(rescue_loop(
                db.clone(),
                config.lease,
                stopped.clone(),
            )));
        }
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
        for n in 0..config.count {
            let worker = Worker {
                name: format!("{host}:{}:{n}", std::process::id()),
                db: db.clone(),
                blobs: blobs.clone(),
                config: config.clone(),
                wake: wake.clone(),
                stopped: stopped.clone(),
            };
            tasks.push(tokio::spawn(worker.run()));
        }
        WorkerPool { stop, tasks }
    }

    /// Stops claiming; running jobs finish within the grace period or are handed back.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn rescue_loop(db: PgPool, lease: Duration, mut stopped: watch::Receiver<bool>) {
    let every = (lease / 2).max(Duration::from_millis(200));
    loop {
        match queue::rescue_expired(&db, 500).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                jobs = n,
                "requeued jobs whose worker stopped renewing its lease"
            ),
            Err(err) => tracing::warn!(error = %err, "lease rescue failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.changed() => break,
        }
    }
}

struct Worker {
    name: String,
    db: PgPool,
    blobs: BlobStore,
    config: WorkerConfig,
    wake: Arc<Notify>,
    stopped: watch::Receiver<bool>,
}

/// How an attempt ended, as far as the queue is concerned.
enum Ending {
    Succeeded,
    Failed { error: String, retryable: bool },
    Canceled,
    HandedBack,
    Lost,
}

impl Worker {
    async fn run(mut self) {
        while !*self.stopped.borrow() {
            let wake = self.wake.clone();
            let waiting = wake.notified();
            match queue::claim(&self.db, &self.name, self.config.lease).await {
                Ok(Some(job)) => {
                    let span = tracing::info_span!("job", job.id = %job.id, attempt = job.attempt);
                    self.run_job(job).instrument(span).await;
                    continue;
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "claim failed"),
            }
            tokio::select! {
                _ = waiting => {}
                _ = tokio::time::sleep(self.config.poll) => {}
                _ = self.stopped.changed() => {}
            }
        }
    }

    async fn run_job(&mut self, job: Claimed) {
        let started = Instant::now();
        tracing::info!("started");
        let ending = match self.attempt(&job).await {
            Ok(ending) => ending,
            Err(err) => Ending::Failed {
                error: format!("{err:#}"),
                retryable: true,
            },
        };
        let recorded = match &ending {
            Ending::Succeeded | Ending::Lost => Ok(true),
            Ending::Failed { error, retryable } => {
                queue::fail(&self.db, job.id, job.attempt, error, *retryable).await
            }
            Ending::Canceled => queue::mark_canceled(&self.db, job.id, job.attempt).await,
            Ending::HandedBack => queue::hand_back(&self.db, job.id, job.attempt).await,
        };
        let outcome = match ending {
            Ending::Succeeded => "succeeded",
            Ending::Failed { .. } => "failed",
            Ending::Canceled => "canceled",
            Ending::HandedBack => "handed back",
            Ending::Lost => "lost its lease",
        };
        match recorded {
            Ok(true) => tracing::info!(
                outcome,
                seconds = started.elapsed().as_secs_f64(),
                "finished"
            ),
            Ok(false) => tracing::warn!(
                outcome,
                "finished, but the lease had moved on: nothing recorded"
            ),
            Err(err) => {
                tracing::error!(outcome, error = %err, "could not record the outcome; the rescuer will retry the job")
            }
        }
    }

    async fn attempt(&mut self, job: &Claimed) -> anyhow::Result<Ending> {
        let recipe: Recipe = match &job.recipe.0 {
            Ok(recipe) => recipe.clone(),
            Err(err) => {
                return Ok(Ending::Failed {
                    error: format!("the stored recipe is not valid: {err}"),
                    retryable: false,
                });
            }
        };
        let Some(model_id) = job.model_id else {
            return Ok(Ending::Failed {
                error: "the model was deleted".into(),
                retryable: false,
            });
        };
        let inputs: Vec<InputFile> = models::files_for_processing(&self.db, model_id)
            .await?
            .into_iter()
            .map(|f| InputFile {
                kind: if f.kind == "safetensors" {
                    InputKind::Weights
                } else {
                    InputKind::Other
                },
                path: self.blobs.path(&f.sha256),
                name: f.name,
            })
            .collect();
        let work = self.work_dir(job.id, job.attempt)?;
        let work_dir = work.path().to_path_buf();
        let evaluation = match &job.eval {
            Some(spec) => {
                // What identifies the original's weights for its kept outputs: their blobs.
                let weights_identity: Vec<String> = inputs
                    .iter()
                    .filter(|f| f.kind == InputKind::Weights)
                    .map(|f| format!("{}={}", f.name, f.path.display()))
                    .collect();
                Some(
                    self.prepare_evaluation(model_id, &spec.0, weights_identity.join(","))
                        .await?,
                )
            }
            None => None,
        };
        let runtime_key = evaluation.as_ref().map(|_| baseline_key());

        let cancel = Cancel::new();
        let progress = Arc::new(Mutex::new(None::<Progress>));
        // A new phase or evaluation stage is published at once, not at the next tick: a short
        // evaluation would otherwise never show.
        let milestone = Arc::new(tokio::sync::Notify::new());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        {
            let cancel = cancel.clone();
            let progress = progress.clone();
            let milestone = milestone.clone();
            let work_dir = work_dir.clone();
            let sha = job.model_sha256.clone();
            let span = tracing::Span::current();
            cpu_pool().spawn(move || {
                let _entered = span.enter();
                let report = |p: &Progress| {
                    let mut current = progress
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    let stage = |p: &Progress| {
                        (
                            p.phase.clone(),
                            p.evaluation.as_ref().map(|e| e.stage.clone()),
                        )
                    };
                    if current.as_ref().map(stage) != Some(stage(p)) {
                        milestone.notify_one();
                    }
                    *current = Some(p.clone());
                };
                let result = pipeline::run_job(
                    &inputs,
                    &recipe,
                    sha,
                    &OutputDir::durable(&work_dir),
                    &cancel,
                    evaluation,
                    &report,
                );
                let _ = done_tx.send(result);
            });
        }

        // Keep the lease and publish progress until the pipeline returns.
        let mut done_rx = done_rx;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let renew_every = self.config.lease / 3;
        let mut last_renew = Instant::now();
        let mut last_progress: Option<Progress> = None;
        let mut stop_reason: Option<Ending> = None;
        let mut grace_deadline: Option<Instant> = None;
        let result = loop {
            tokio::select! {
                result = &mut done_rx => break result.map_err(|_| anyhow::anyhow!("the pipeline thread stopped"))?,
                _ = tick.tick() => {}
                _ = milestone.notified() => {}
            }
            if *self.stopped.borrow() && stop_reason.is_none() {
                let deadline =
                    *grace_deadline.get_or_insert_with(|| Instant::now() + self.config.grace);
                if Instant::now() >= deadline {
                    stop_reason = Some(Ending::HandedBack);
                    cancel.cancel();
                }
            }
            let current = progress
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            let changed = current.is_some() && current != last_progress;
            if changed || last_renew.elapsed() >= renew_every {
                match queue::heartbeat(
                    &self.db,
                    job.id,
                    job.attempt,
                    self.config.lease,
                    current.as_ref().filter(|_| changed),
                )
                .await
                {
                    Ok(Lease::Held) => {}
                    Ok(Lease::CancelRequested) => {
                        if stop_reason.is_none() {
                            stop_reason = Some(Ending::Canceled);
                        }
                        cancel.cancel();
                    }
                    Ok(Lease::Lost) => {
                        stop_reason = Some(Ending::Lost);
                        cancel.cancel();
                    }
                    // A database hiccup: keep working; the lease outlasts a few failed renewals.
                    Err(err) => tracing::warn!(error = %err, "heartbeat failed"),
                }
                last_renew = Instant::now();
                last_progress = current;
            }
        };
        let ending = match result {
            Ok(outcome) => {
                if let (Some(report), Some(key)) = (&outcome.summary.eval, &runtime_key)
                    && let Some(dataset_id) = report.dataset_id
                    && let Err(err) = datasets::keep_baseline(
                        &self.db,
                        model_id,
                        dataset_id,
                        key,
                        &report.original,
                    )
                    .await
                {
                    tracing::warn!(error = %err, "could not keep the original's figures");
                }
                if outcome.summary.eval.is_some() {
                    let blobs = self.blobs.clone();
                    let trimmed =
                        tokio::task::spawn_blocking(move || blobs.trim_derived(DERIVED_CAP)).await;
                    if let Ok(Err(err)) = trimmed {
                        tracing::warn!(error = %err, "could not trim the kept evaluation outputs");
                    }
                }
                let mut artifacts = Vec::with_capacity(outcome.files.len());
                for file in &outcome.files {
                    // The worker's output folder is `OutputDir::durable`: every file has one.
                    let sha256 = file.sha256.as_deref().ok_or_else(|| {
                        std::io::Error::other(format!("{} was written without a digest", file.name))
                    })?;
                    artifacts.push(Artifact {
                        name: file.name.clone(),
                        blob: self.blobs.adopt(&file.path, sha256, file.bytes)?,
                    });
                }
                let published = queue::complete(
                    &self.db,
                    &self.blobs,
                    job.id,
                    job.attempt,
                    artifacts,
                    &outcome.tensors,
                    &outcome.summary,
                )
                .await?;
                if published {
                    Ending::Succeeded
                } else {
                    Ending::Lost
                }
            }
            Err(PipelineError::Canceled) => stop_reason.unwrap_or(Ending::Canceled),
            Err(PipelineError::Input(error)) => Ending::Failed {
                error,
                retryable: false,
            },
            Err(PipelineError::Io(err)) => Ending::Failed {
                error: format!("I/O error: {err}"),
                retryable: true,
            },
            Err(err @ PipelineError::Internal(_)) => {
                tracing::error!(error = %err, "a job hit a defect; failed without retry");
                Ending::Failed {
                    error: err.to_string(),
                    retryable: false,
                }
            }
        };
        drop(work);
        Ok(ending)
    }

    /// Everything an evaluation needs from the database, fetched before the CPU work starts.
    async fn prepare_evaluation(
        &self,
        model_id: Uuid,
        spec: &Result<EvalSpec, String>,
        weights_identity: String,
    ) -> anyhow::Result<Evaluation> {
        let spec: EvalSpec = match spec {
            Ok(spec) => spec.clone(),
            Err(err) => {
                return Ok(Evaluation::refused(format!(
                    "the stored eval section is not valid: {err}"
                )));
            }
        };
        let Some(sha) = datasets::blob_of(&self.db, spec.dataset_id).await? else {
            return Ok(Evaluation::refused(format!(
                "dataset {} was deleted",
                spec.dataset_id
            )));
        };
        let config =
            crate::jobs::eval_checks::model_config(&self.db, &self.blobs, model_id).await?;
        let reuse =
            datasets::baseline(&self.db, model_id, spec.dataset_id, &baseline_key()).await?;
        let kept = self
            .blobs
            .derived_dir()
            .join(format!("{model_id}.{}.ref", spec.dataset_id));
        Ok(Evaluation {
            setup: Ok((spec, self.blobs.path(&sha), config)),
            reuse,
            reference: Some((kept, weights_identity)),
        })
    }

    /// A fresh folder for this attempt's outputs, inside the blob store's temp folder (same file
    /// system, so publishing is a rename), owned by this process and removed when the attempt
    /// ends however it ends; folders of earlier attempts of the job are removed.
    fn work_dir(&self, id: Uuid, attempt: i32) -> std::io::Result<WorkDir> {
        let prefix = format!("job-{id}.");
        self.blobs
            .create_work_dir(&prefix, &format!("{prefix}{attempt}"))
    }
}

/// The most the kept outputs of original models on evaluation sets may hold on disk; the least
/// recently made go first.
const DERIVED_CAP: u64 = 4 << 30;

/// Where the original's figures were measured: another CPU or thread count measures anew.
fn baseline_key() -> String {
    let runtime = crate::eval::Runtime::here();
    format!(
        "{} | {} threads | {} | squeeze {}",
        runtime.cpu,
        cpu_pool().current_num_threads(),
        runtime.engine,
        env!("CARGO_PKG_VERSION")
    )
}

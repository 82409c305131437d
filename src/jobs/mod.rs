//! Jobs: the recipe (what to do, validated against the model), the queue (the `jobs` table
//! and its results: submission, claiming, leases, fencing, retries, cancellation) and the
//! report a job produces (per-tensor metrics, summary, progress).

pub mod eval_checks;
pub mod events;
pub mod queue;
pub mod recipe;
pub mod report;

//! Jobs: the recipe (what to do, validated against the model) and the queue (the `jobs` table
//! and its results: submission, claiming, leases, fencing, retries, cancellation).

pub mod evaluation;
pub mod events;
pub mod queue;
pub mod recipe;
